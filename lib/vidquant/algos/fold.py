"""Folding a smoothing vector s into a block (llmc_reference §3.5).

For a subset of linears that read x = prev_op(·): x' = x / s is absorbed by the previous op (its weight
and bias divided by s: the fake-affine vectors for adaLN norms, the real affine of `norm2`), and every
linear's weight columns are multiplied by s, so  W' x' = (W · diag(s)) (x / s) = W x  exactly in real
arithmetic. Done in fp32 and cast back once, to avoid LLMC's double bf16 rounding.
"""

from __future__ import annotations

import torch

from vidquant.algos.base import BlockContext
from vidquant.models.layout import Subset


@torch.no_grad()
def fold_smoothing(ctx: BlockContext, subset: Subset, s: torch.Tensor) -> None:
    """Apply s (one factor per input channel, > 0) to `subset` in ctx.block and its cached inputs."""
    if not torch.isfinite(s).all() or (s <= 0).any():
        raise ValueError(f"block {ctx.index} subset {subset.name}: smoothing scale has non-finite or "
                         "non-positive entries")
    prev = ctx.block.get_submodule(subset.prev_op)
    s32 = s.detach().float()
    prev.weight.copy_((prev.weight.float() / s32.to(prev.weight.device)).to(prev.weight.dtype))
    if getattr(prev, "bias", None) is not None:
        prev.bias.copy_((prev.bias.float() / s32.to(prev.bias.device)).to(prev.bias.dtype))
    for name in subset.layers:
        w = ctx.linears[name].weight
        w.copy_((w.float() * s32.to(w.device)).to(w.dtype))
    ctx.divide_inputs(subset.layers, s32)
