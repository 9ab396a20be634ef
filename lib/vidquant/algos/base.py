"""What every algorithm sees: one block, its captured inputs, and the quantizers (the plug-in interface).

An algorithm is a class with a `name` and `transform_block(ctx)`. It may change the block's weights
(smoothing folds, GPTQ's error compensation, clipping) and may fix a layer's weight grid
(`ctx.weight_qparams`); it never quantizes the model itself: deployment does that, once, afterwards.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_type_hints

import torch
from torch import nn

from vidquant.calib.capture import to_device
from vidquant.models.layout import Subset

__all__ = ["Algorithm", "BlockContext", "MethodConfig", "ALGORITHMS", "METHOD_CONFIGS", "register"]


@dataclass
class BlockContext:
    """One block during calibration. Tensors in `inputs` / `hidden_states` / `kwargs` live on the CPU."""

    index: int
    block: nn.Module
    linears: dict[str, nn.Linear]
    inputs: dict[str, list[torch.Tensor]]  # layers that read the same activation share one list
    hidden_states: list[torch.Tensor]
    kwargs: list[dict]
    wq: Any  # weight quantizer (vidquant.quant)
    aq: Any | None  # activation quantizer, None = weight-only
    device: torch.device
    # The per-input-channel factor each linear's input has been divided by (smoothing), for metrics/runtime.
    smooth: dict[str, torch.Tensor] = field(default_factory=dict)
    # Fixed (scale, zero) weight grids chosen by an algorithm (GPTQ); others use dynamic min-max.
    weight_qparams: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)

    def subset_inputs(self, subset: Subset) -> list[torch.Tensor]:
        return self.inputs[subset.input]

    def inspect_kwargs(self, subset: Subset, i: int) -> dict:
        """kwargs for `subset.inspect` on sample i, on the compute device."""
        return {own: to_device(self.kwargs[i][blk], self.device) for blk, own in subset.kwargs}

    def divide_inputs(self, layers: tuple[str, ...], s: torch.Tensor) -> None:
        """After folding 1/s into the op before `layers`, their cached inputs are x / s."""
        done = set()
        for name in layers:
            lst = self.inputs[name]
            if id(lst) in done:
                continue
            done.add(id(lst))
            lst[:] = [(x.float() / s.cpu().float()).to(x.dtype) for x in lst]
            self.smooth[name] = self.smooth.get(name, torch.ones_like(s.cpu().float())) * s.cpu().float()
        for name in layers:  # layers sharing the list share the factor
            self.smooth[name] = self.smooth[layers[0]]


@dataclass(frozen=True)
class MethodConfig:
    """A method's options: a frozen dataclass beside the method's maths (e.g. `SmoothQuant(alpha=0.75)`).

    The fields are LLMC's `quant.video_gen.special` keys for that method, with their defaults; every field is
    type-checked here and each subclass checks its ranges in `__post_init__`, so a bad option fails when the
    recipe is written, naming the method, the field and what is allowed.
    """

    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _is_instance(value, hints[f.name]):
                self.fail(f.name, value, _describe(hints[f.name]))
            if isinstance(value, int) and not isinstance(value, bool) and hints[f.name] is float:
                object.__setattr__(self, f.name, float(value))  # 1 -> 1.0: equal recipes compare equal

    def fail(self, field_name: str, value: Any, allowed: str) -> typing.NoReturn:
        raise ValueError(f"{self.name}.{field_name}: got {value!r}; allowed: {allowed}")

    def to_special(self) -> dict[str, Any]:
        """The options as LLMC `special` keys."""
        return dataclasses.asdict(self)

    @classmethod
    def from_special(cls, special: dict[str, Any]) -> MethodConfig:
        """The options from an LLMC `special` dict (which a chain of methods shares): this method's keys are
        taken, the rest (other methods' keys, LLMC's generic ones) are left to their owners."""
        from vidquant.config import _GENERIC_SPECIAL

        names = {f.name for f in dataclasses.fields(cls)}
        others = set(_GENERIC_SPECIAL).union(*({f.name for f in dataclasses.fields(c)}
                                                for c in METHOD_CONFIGS.values()))
        unknown = sorted(set(special) - names - others)
        if unknown:  # a typo would otherwise fall back to the default silently
            raise ValueError(f"{cls.name}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
        return cls(**{k: v for k, v in special.items() if k in names})


def _is_instance(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(value, h) for h in typing.get_args(hint))
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)  # list[int]: a list (the items are not checked)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    names = {type(None): "None", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


class Algorithm:
    """Base class. `options` is the method's `MethodConfig` (a dict of LLMC `special` keys is accepted and
    validated into one); `special` is the same options as a dict, as the maths reads them."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, options: MethodConfig | dict[str, Any] | None = None):
        if options is None or isinstance(options, dict):
            options = self.config_class.from_special(options or {})
        if not isinstance(options, self.config_class):
            raise TypeError(f"{self.name}: expected {self.config_class.__name__} options, got {type(options).__name__}")
        self.options = options
        self.special = options.to_special()

    def transform_block(self, ctx: BlockContext) -> None:  # pragma: no cover - interface
        raise NotImplementedError


ALGORITHMS: dict[str, type[Algorithm]] = {}
METHOD_CONFIGS: dict[str, type[MethodConfig]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    ALGORITHMS[cls.name] = cls
    METHOD_CONFIGS[cls.name] = cls.config_class
    return cls
