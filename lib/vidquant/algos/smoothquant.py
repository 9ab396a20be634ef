"""SmoothQuant (Xiao et al. 2023) for Wan blocks (llmc_reference §4).

For each subset (linears sharing one input X) and each input channel j:

    s_j = max|X_j|^α / max|W_j|^(1−α)

where max|X_j| runs over every token of every captured sample (all timesteps, both CFG branches) and
max|W_j| over the output rows of all the subset's linears. X/s has tamer outliers, W·diag(s) absorbs
them, and the product is unchanged; s is folded into the op before the subset (vidquant.algos.fold).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from vidquant.algos.base import Algorithm, BlockContext, MethodConfig, register
from vidquant.algos.fold import fold_smoothing
from vidquant.models.layout import SUBSETS

EPS = 1e-5  # LLMC's floor for max|W| and for s


def act_channel_max(inputs: list[torch.Tensor]) -> torch.Tensor:
    """max |x| per input channel over every token of every sample (fp32)."""
    amax = None
    for x in inputs:
        m = x.abs().reshape(-1, x.shape[-1]).amax(dim=0).float()
        amax = m if amax is None else torch.maximum(amax, m)
    return amax


def weight_channel_max(weights: list[torch.Tensor]) -> torch.Tensor:
    """max |W[o, j]| over output rows o and over the subset's weights, per input channel j (fp32)."""
    return torch.stack([w.detach().abs().amax(dim=0).float() for w in weights]).amax(dim=0).clamp_min(EPS)


def smoothing_scale(x_max: torch.Tensor, w_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = max|X|^α / max|W|^(1−α), floored at 1e-5 (a dead channel gets a tiny but finite scale)."""
    return (x_max.pow(alpha) / w_max.pow(1.0 - alpha)).clamp_min(EPS)


@dataclass(frozen=True)
class SmoothQuantConfig(MethodConfig):
    """SmoothQuant's options (LLMC `special`): α, the migration strength, 0 ≤ α ≤ 1."""

    name: ClassVar[str] = "SmoothQuant"
    alpha: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.alpha <= 1.0:
            self.fail("alpha", self.alpha, "0 <= alpha <= 1")


@register
class SmoothQuant(Algorithm):
    name = "SmoothQuant"
    config_class = SmoothQuantConfig

    def transform_block(self, ctx: BlockContext) -> None:
        alpha = float(self.special["alpha"])
        for subset in SUBSETS:
            weights = [ctx.linears[n].weight for n in subset.layers]
            x_max = act_channel_max(ctx.subset_inputs(subset))
            s = smoothing_scale(x_max.to(weights[0].device), weight_channel_max(weights), alpha)
            fold_smoothing(ctx, subset, s)
            ctx.log.setdefault("smoothquant", {})[subset.name] = {"x_max": x_max.cpu(), "scale": s.cpu()}
