"""AWQ (Lin et al. 2024) for Wan blocks: a searched smoothing scale, then optional weight clipping
(llmc_reference §5).

Scale search, per subset (linears sharing one input X, read by the `inspect` module M):

    a_i   = mean over tokens of |X_i|                        (one vector per calibration sample i)
    v2:  s_i(r) = clamp_min(a_i^r, 1e-4)
    v1:  s_i(r) = clamp_min(a_i^r / w_mean^(1−r), 1e-4)      (w_mean: mean over rows of |W| / rowmax|W|)
    s_i(r) ← s_i(r) / sqrt(max s_i(r) · min s_i(r))
    loss_i(r) = mean( (M(X_i) − M_q(X_i; s_i(r)))² )

where M_q is M with the subset's weights replaced by Q_w(W · diag(s)) and its input by Q_a(X / s) (Q_a
only when activations are quantized; the rest of M stays float, as in LLMC). r runs over n/n_grid,
n = 0..n_grid−1 (1.0 excluded; r = 0 gives s = 1, i.e. "no smoothing"). The chosen ratio r* minimises
the mean loss over all samples (`ratio_selection: mean`), or, for LLMC parity, the loss of the first
sample only (`first_sample`; LLMC's best-check sits inside its per-sample loop). The scale folded into
the block is, as in LLMC, the mean over samples of the per-sample normalised scales: s = (1/N) Σ_i s_i(r*).

Weight clipping (`weight_clip`, v1), per linear after the scales are folded: for shrink factors
f = 1.0, 0.95, ..., 0.55, clamp W to [f·min, f·max] per output channel (per group for per_group;
[−f·absmax, f·absmax] when symmetric), quantize, and keep per channel the f with the smallest
mean over ~512 strided calibration tokens of (Q_a(x)·Q_w(W_f) − x·W)². Layers whose name contains
`q_`, `k_`, `query`, `key` or `Wqkv` are skipped, as LLMC does: in Wan that skips only the I2V
`attn2.add_k_proj` (a substring accident upstream, reproduced for parity; `to_q` / `to_k` are clipped).

Differences from LLMC, on purpose: fp32 scales (LLMC: bf16); the ratio chosen from all samples by
default; samples are visited one at a time (each input and its float output are moved to the device
once, instead of keeping all of them on the device); activations in the clip search are quantized per
token over the whole row (as deployment does; LLMC quantizes per token *and group* for per_group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from vidquant.algos.base import Algorithm, BlockContext, MethodConfig, register
from vidquant.algos.fold import fold_smoothing
from vidquant.models.layout import SUBSETS, Subset

SCALE_EPS = 1e-4  # LLMC's floor for s in the search
CLIP_SKIP = ("q_", "k_", "query", "key", "Wqkv")  # LLMC's auto-clip name filter (substring match)
CLIP_SHRINKS = tuple(1.0 - i / 20 for i in range(10))  # 1.0, 0.95, ..., 0.55 (max_shrink 0.5, n_grid 20)
CLIP_ROW_BATCH = 256  # output channels per clip-search batch (bounds memory)


# ------------------------------------------------------------------------------------------------ the maths
def act_channel_mean(x: Tensor) -> Tensor:
    """a = mean over tokens of |x|, per input channel (fp32)."""
    return x.detach().float().abs().reshape(-1, x.shape[-1]).mean(dim=0)


def weight_channel_mean(weights: list[Tensor], wq) -> Tensor:
    """v1's w_mean: |W| / max|W| over each row (each group for per_group), averaged over rows, then over
    the subset's layers. A row of zeros contributes zeros (its max is floored at 1e-8)."""
    means = []
    for w in weights:
        w = w.detach().float().abs()
        rows = w.reshape(-1, wq.group_size) if wq.granularity == "per_group" else w
        rel = rows / rows.amax(dim=1, keepdim=True).clamp_min(1e-8)
        means.append(rel.reshape(w.shape).mean(dim=0))
    return torch.stack(means).mean(dim=0)


def awq_scale(a: Tensor, ratio: float, w_mean: Tensor | None = None) -> Tensor:
    """s = clamp_min(a^r [/ w_mean^(1−r)], 1e-4), normalised by sqrt(max s · min s)."""
    s = a.pow(ratio)
    if w_mean is not None:
        s = s / w_mean.clamp_min(1e-8).pow(1.0 - ratio)  # v1; the floor keeps a dead column finite
    s = s.clamp_min(SCALE_EPS)
    return s / (s.max() * s.min()).sqrt()


def strided_tokens(inputs: list[Tensor], n_tokens: int) -> Tensor:
    """x[::step] of the concatenation of all samples' tokens, step = max(1, T // n_tokens) (LLMC's
    subsample), gathered sample by sample so that the concatenation is never built."""
    rows = [x.reshape(-1, x.shape[-1]) for x in inputs]
    step = max(1, sum(r.shape[0] for r in rows) // n_tokens)
    picked, offset = [], 0
    for r in rows:
        picked.append(r[(-offset) % step::step])
        offset += r.shape[0]
    return torch.cat(picked)


@torch.no_grad()
def best_clip(w: Tensor, x: Tensor, wq, aq, symmetric: bool) -> tuple[Tensor, Tensor]:
    """Per output channel (and group) clamp range [lo, hi] minimising mean_t (Q_a(x)·Q_w(clamp W) − x·W)².

    w: (out, in); x: (T, in) on the same device. Returns lo, hi of shape (out, n_groups, 1), fp32.
    """
    out_f, in_f = w.shape
    g = wq.group_size if wq.granularity == "per_group" else in_f
    x = x.float()
    xg = x.reshape(-1, in_f // g, g)  # (T, G, g)
    xqg = xg if aq is None else aq.fake(x).reshape(xg.shape)
    his, los = [], []
    for wb in w.detach().float().split(CLIP_ROW_BATCH):  # (b, in)
        wb = wb.reshape(wb.shape[0], -1, g)  # (b, G, g)
        ref = torch.einsum("tgk,bgk->btg", xg, wb)
        hi0 = wb.abs().amax(-1, keepdim=True) if symmetric else wb.amax(-1, keepdim=True)
        lo0 = -hi0 if symmetric else wb.amin(-1, keepdim=True)
        best_err = torch.full(wb.shape[:2], float("inf"), device=wb.device)
        best_hi, best_lo = hi0.clone(), lo0.clone()
        for f in CLIP_SHRINKS:
            hi, lo = hi0 * f, lo0 * f
            qw = wq.fake(torch.clamp(wb, lo, hi).reshape(wb.shape[0], in_f)).reshape(wb.shape)
            err = (torch.einsum("tgk,bgk->btg", xqg, qw) - ref).pow(2).mean(dim=1)  # (b, G)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_hi = torch.where(better[..., None], hi, best_hi)
            best_lo = torch.where(better[..., None], lo, best_lo)
        his.append(best_hi)
        los.append(best_lo)
    return torch.cat(los), torch.cat(his)


# ------------------------------------------------------------------------------------------- the plug-in
@dataclass(frozen=True)
class AwqConfig(MethodConfig):
    """AWQ's options (LLMC `special`). LLMC's scale/clip file options are accepted and must stay off."""

    name: ClassVar[str] = "Awq"
    trans: bool = True  # search and fold the smoothing scale
    trans_version: Literal["v1", "v2"] = "v2"  # v1 divides by w_mean^(1-r)
    weight_clip: bool = False  # search a per-channel clamp range after the fold
    clip_sym: bool | None = None  # None = the weight quantizer's `symmetric`
    clip_version: Literal["v1"] = "v1"  # LLMC's v2 needs calib_algo: learnable
    awq_bs: int | None = None
    save_mem: bool = True
    save_scale: bool = False
    scale_path: str | None = None
    save_clip: bool = False
    clip_path: str | None = None
    n_grid: int = 20  # ratios r = n / n_grid, n = 0 .. n_grid-1
    # ours: "mean" = the ratio with the mean loss over all samples; "first_sample" = LLMC's behaviour
    ratio_selection: Literal["mean", "first_sample"] = "mean"
    clip_max_tokens: int = 512  # strided calibration tokens in the clip search

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("n_grid", "clip_max_tokens"):
            if getattr(self, key) < 1:
                self.fail(key, getattr(self, key), "an integer >= 1")
        for key in ("save_scale", "save_clip"):
            if getattr(self, key):
                self.fail(key, True, "False (the scales are returned in BlockwiseResult.smooth; clipping changes "
                                     "the weights themselves)")


@register
class Awq(Algorithm):
    name = "Awq"
    config_class = AwqConfig

    def transform_block(self, ctx: BlockContext) -> None:
        self._check_options(ctx)
        log = ctx.log.setdefault("awq", {})
        if self.special["trans"]:
            for subset in SUBSETS:
                s, record = self.search_scale(ctx, subset)
                fold_smoothing(ctx, subset, s)
                log[subset.name] = record
        if self.special["weight_clip"]:
            ctx.log["awq_clip"] = self.clip_weights(ctx)

    def _check_options(self, ctx: BlockContext) -> None:
        """What depends on the quantizers (the options alone are checked by AwqConfig)."""
        if self.options.weight_clip and ctx.wq.granularity == "per_tensor":
            raise ValueError("Awq weight_clip needs per_channel or per_group weights, got per_tensor")

    # --- scale search -----------------------------------------------------------------------------------
    @torch.no_grad()
    def search_scale(self, ctx: BlockContext, subset: Subset) -> tuple[Tensor, dict[str, Any]]:
        """Grid-search s for one subset; returns (s, log record). The block is left as it was."""
        n_grid = int(self.special["n_grid"])
        ratios = [n / n_grid for n in range(n_grid)]
        module = ctx.block.get_submodule(subset.inspect)
        layers = [ctx.linears[n] for n in subset.layers]
        originals = [lin.weight.detach().clone() for lin in layers]
        w_mean = weight_channel_mean(originals, ctx.wq) if self.special["trans_version"] == "v1" else None
        inputs = ctx.subset_inputs(subset)
        a: list[Tensor] = []  # mean |x| per channel, per sample
        losses = torch.zeros(n_grid, len(inputs), dtype=torch.float64)
        for i, x in enumerate(inputs):  # one sample (and its float output) on the device at a time
            x = x.to(ctx.device)
            a.append(act_channel_mean(x))
            kwargs = ctx.inspect_kwargs(subset, i)
            ref = module(x, **kwargs).float()
            for n, r in enumerate(ratios):
                s = awq_scale(a[i], r, w_mean)
                losses[n, i] = self._trial_loss(ctx, module, layers, originals, x, s, ref, kwargs)
        score = losses.mean(dim=1) if self.special["ratio_selection"] == "mean" else losses[:, 0]
        best = int(torch.argmin(score))  # ties -> smaller ratio, as LLMC's strict "<"
        s = torch.stack([awq_scale(ai, ratios[best], w_mean) for ai in a]).mean(dim=0)
        record = {"ratio": ratios[best], "ratios": ratios, "losses": losses, "loss": float(score[best]),
                  "loss_ratio0": float(score[0]), "scale": s.cpu()}
        return s, record

    def _trial_loss(self, ctx, module: nn.Module, layers, originals, x: Tensor, s: Tensor, ref: Tensor,
                    kwargs: dict) -> float:
        """MSE of M's output with weights Q_w(W·s) and input Q_a(x/s) against the float output."""
        try:
            for lin, w in zip(layers, originals):
                lin.weight.copy_(ctx.wq.fake(w.float() * s).to(w.dtype))
            xs = (x.float() / s).to(x.dtype)
            if ctx.aq is not None:
                xs = ctx.aq.fake(xs)
            return float((module(xs, **kwargs).float() - ref).pow(2).mean())
        finally:
            for lin, w in zip(layers, originals):
                lin.weight.copy_(w)

    # --- weight clipping --------------------------------------------------------------------------------
    @torch.no_grad()
    def clip_weights(self, ctx: BlockContext) -> dict[str, dict[str, Any]]:
        """Clamp every clippable linear's weight in place to its best range. Returns, per linear, whether
        it was skipped and the mean over channels (and groups) of chosen range / original range."""
        sym = self.special["clip_sym"]
        sym = ctx.wq.symmetric if sym is None else bool(sym)
        n_tokens = self.options.clip_max_tokens
        record: dict[str, dict[str, Any]] = {}
        for name, lin in ctx.linears.items():
            if any(k in name for k in CLIP_SKIP):
                record[name] = {"skipped": True, "mean_shrink": 1.0}
                continue
            x = strided_tokens(ctx.inputs[name], n_tokens).to(ctx.device)
            lo, hi = best_clip(lin.weight, x, ctx.wq, ctx.aq, sym)
            w = lin.weight.detach().float().reshape(*lo.shape[:2], -1)  # (out, groups, group)
            shrink = torch.maximum(hi.abs(), lo.abs()) / w.abs().amax(-1, keepdim=True).clamp_min(1e-12)
            record[name] = {"skipped": False, "mean_shrink": float(shrink.mean())}
            lin.weight.copy_(torch.clamp(w, lo, hi).reshape(lin.weight.shape).to(lin.weight.dtype))
        return record
