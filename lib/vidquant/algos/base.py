"""What every algorithm sees: one block, its captured inputs, and the quantizers (the plug-in interface).

An algorithm is a class with a `name` and `transform_block(ctx)`. It may change the block's weights
(smoothing folds, GPTQ's error compensation, clipping) and may fix a layer's weight grid
(`ctx.weight_qparams`); it never quantizes the model itself: deployment does that, once, afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from vidquant.models.layout import Subset

__all__ = ["Algorithm", "BlockContext", "ALGORITHMS", "register"]


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
        return {own: _to(self.kwargs[i][blk], self.device) for blk, own in subset.kwargs}

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


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple | list):
        return type(obj)(_to(v, device) for v in obj)
    return obj


class Algorithm:
    """Base class: `special` holds the method's options with defaults filled in (vidquant.config.METHODS)."""

    name: ClassVar[str] = ""

    def __init__(self, special: dict[str, Any]):
        self.special = special

    def transform_block(self, ctx: BlockContext) -> None:  # pragma: no cover - interface
        raise NotImplementedError


ALGORITHMS: dict[str, type[Algorithm]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    ALGORITHMS[cls.name] = cls
    return cls
