"""Emulated runtime for the formats beyond W8A8 (mxfp8, mxfp6-mxfp8, mxfp4, nvfp4, int4-g128-marlin,
fp8-pertensor): **dequantize-then-GEMM**, on CPU and CUDA alike.

lightx2v runs these formats with Blackwell (sm120) CUTLASS kernels, Marlin, or ``torch._scaled_mm``; none of them
exists on a CPU. :class:`EmulatedLinear` computes the same function in plain torch: the stored codes and scales are
decoded once into an fp32 weight (exactly the values the kernel multiplies), and each call quantizes its input as
lightx2v does at run time (MX: dynamic E8M0 scales per 32; NVFP4: the stored static ``input_global_scale``, or the
one derived from ``input_absmax`` when that is stored, as lightx2v picks it, with dynamic e4m3 block scales;
fp8-pertensor: the static ``input_scale``; int4: none), dequantizes it and runs an fp32 ``F.linear``. The result
equals the quantized GEMM up to fp32 summation order; it is not faster than float.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vidquant.export.formats import (
    BLOCK_SCHEMES,
    detect_linear_scheme,
    expected_layout,
    unpack_linear,
)
from vidquant.export.io import QuantizedCheckpointError
from vidquant.models.layout import block_linear_names
from vidquant.quant.blockfmt import STATIC_INPUT_SCHEMES, MXQuantizer, fake_static_input, static_input_scale

__all__ = ["EmulatedLinear", "checkpoint_block_scheme", "install_emulated_linears"]


class EmulatedLinear(nn.Module):
    """One block-format linear, emulated: ``y = Q_a(x) · W_dqᵀ + b`` in fp32, returned in ``x``'s dtype."""

    def __init__(self, scheme: str, tensors: dict[str, Tensor], bias: Tensor | None, out_features: int,
                 in_features: int) -> None:
        super().__init__()
        if scheme not in BLOCK_SCHEMES:
            raise ValueError(f"scheme must be one of {sorted(BLOCK_SCHEMES)}, got {scheme!r}")
        self.scheme, self.in_features, self.out_features = scheme, in_features, out_features
        self.register_buffer("weight", unpack_linear(scheme, tensors, out_features, in_features).float())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer("input_scale", _static_input_scale(scheme, tensors))
        act_elem = {"mxfp8": "e4m3", "mxfp6-mxfp8": "e4m3", "mxfp4": "e2m1"}.get(scheme)
        self._mx = MXQuantizer(act_elem) if act_elem else None

    def quantize_input(self, x: Tensor) -> Tensor:
        """The input as lightx2v's kernel sees it (quantized, then dequantized), fp32."""
        x = x.float()
        if self._mx is not None:
            return self._mx.fake(x)
        if self.scheme in STATIC_INPUT_SCHEMES:  # nvfp4, fp8-pertensor (the fake-quant model's function too)
            return fake_static_input(self.scheme, x, self.input_scale)
        return x  # int4-g128-marlin: weight-only

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.float()
        return F.linear(self.quantize_input(x), self.weight, bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.scheme}, in_features={self.in_features}, out_features={self.out_features} (emulated)"


def _static_input_scale(scheme: str, tensors: dict[str, Tensor]) -> Tensor | None:
    """The stored activation scale, as lightx2v picks it: nvfp4's ``input_global_scale`` is derived from
    ``input_absmax`` when that is present (``(2688 / input_absmax).float()``; lightx2v then also recomputes
    ``alpha``, so the stored ``input_global_scale`` / ``alpha`` are unused), else read; fp8-pertensor's
    ``input_scale``; None for the dynamic and weight-only schemes."""
    if scheme == "nvfp4":
        if "input_absmax" in tensors:
            return static_input_scale(scheme, tensors["input_absmax"]).clone()
        return tensors["input_global_scale"].float().reshape(()).clone()
    if scheme == "fp8-pertensor":
        return tensors["input_scale"].float().reshape(()).clone()
    return None


def _linear_tensors(state: dict[str, Tensor], key: str) -> dict[str, Tensor]:
    prefix = key + "."
    return {k[len(prefix):]: t for k, t in state.items() if k.startswith(prefix) and "." not in k[len(prefix):]}


def checkpoint_block_scheme(state: dict[str, Tensor], num_blocks: int, names: list[str]) -> str | None:
    """The block scheme of a checkpoint (diffusers keys), from its first linear; None for W8A8 / float."""
    if num_blocks == 0 or not names:
        return None
    tensors = _linear_tensors(state, f"blocks.0.{names[0]}")
    return detect_linear_scheme({k: (t.dtype, tuple(t.shape)) for k, t in tensors.items()})


def install_emulated_linears(model: nn.Module, state: dict[str, Tensor], scheme: str, where: str) -> int:
    """Replace every block linear of ``model`` by an :class:`EmulatedLinear` built from (and popped out of)
    ``state``; every linear must have exactly the scheme's tensors. Returns the number installed."""
    n = 0
    for i, block in enumerate(model.blocks):
        for name in block_linear_names(block):
            key = f"blocks.{i}.{name}"
            lin = block.get_submodule(name)
            layout = expected_layout(scheme, lin.out_features, lin.in_features)
            found = {s: state.get(f"{key}.{s}") for s in layout}
            bad = [f"{key}.{s}: {'missing' if t is None else f'{t.dtype} {tuple(t.shape)}'} (expected {dt} {shape})"
                   for s, (dt, shape) in layout.items() for t in [found[s]]
                   if t is None or t.dtype != dt or tuple(t.shape) != shape]
            if bad:
                raise QuantizedCheckpointError(f"{where}: {scheme} linear does not fit the base model: "
                                               + "; ".join(bad[:4]))
            for s in layout:
                state.pop(f"{key}.{s}")
            bias = state.pop(f"{key}.bias", None)
            block.set_submodule(name, EmulatedLinear(scheme, found, bias, lin.out_features, lin.in_features))
            n += 1
    return n
