"""What the blockwise algorithms decided, as tables (from `BlockwiseResult.logs`): SmoothQuant's scales, AWQ's
search, any method's scalar log entries; and what calibration captured and one block's linears read from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Number
from typing import Any

import numpy as np
import pandas as pd
import torch

from vidquant.records import to_scalar

__all__ = ["smoothing_table", "smoothing_summary", "algo_log_table", "awq_search_curves", "block_input_stats",
           "calib_shapes"]


def smoothing_table(blockwise) -> pd.DataFrame:
    """SmoothQuant's decisions as a long table: one row per (block, subset, input channel) with the
    activation's max |x| before smoothing (`x_max`), the scale `s` and the max after (`x_max / s`)."""
    frames = []
    for block, log in sorted(blockwise.logs.items()):
        for subset, entry in log.get("smoothquant", {}).items():
            x_max, scale = entry["x_max"].float(), entry["scale"].float()
            frames.append(pd.DataFrame({
                "block": block, "subset": subset, "channel": np.arange(x_max.numel()),
                "x_max": x_max.numpy(), "scale": scale.numpy(), "x_max_smoothed": (x_max / scale).numpy(),
            }))
    if not frames:
        return pd.DataFrame(columns=["block", "subset", "channel", "x_max", "scale", "x_max_smoothed"])
    return pd.concat(frames, ignore_index=True)


def smoothing_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (block, subset): how much smoothing tamed the outliers: max/median of the per-channel activation
    max before and after, and the range of the scales."""
    def one(g: pd.DataFrame) -> pd.Series:
        before, after = g["x_max"], g["x_max_smoothed"]
        return pd.Series({
            "outlier_ratio_before": before.max() / max(before.median(), 1e-30),
            "outlier_ratio_after": after.max() / max(after.median(), 1e-30),
            "scale_min": g["scale"].min(), "scale_max": g["scale"].max(),
        })
    if table.empty:
        return pd.DataFrame()
    return table.groupby(["block", "subset"])[["x_max", "x_max_smoothed", "scale"]].apply(one)


def algo_log_table(blockwise, method: str) -> pd.DataFrame:
    """The scalar entries an algorithm logged per block (`BlockwiseResult.logs[block][method][name]`), one row
    per (block, name): e.g. AWQ's chosen ratio and loss per subset, GPTQ's loss and damping per linear."""
    rows = []
    for block, log in sorted(blockwise.logs.items()):
        for name, record in log.get(method, {}).items():
            if not isinstance(record, Mapping):
                continue
            scalars = {k: to_scalar(v) for k, v in record.items() if _is_scalar(v)}
            rows.append({"block": block, "name": name, **scalars})
    return pd.DataFrame(rows)


def _is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    return isinstance(value, str | bool | Number | np.generic)


def awq_search_curves(blockwise, block: int = 0) -> pd.DataFrame:
    """AWQ's grid search in one block: mean loss over the calibration samples per candidate ratio and
    subset (columns subset, ratio, loss, chosen)."""
    rows = []
    for subset, rec in blockwise.logs.get(block, {}).get("awq", {}).items():
        if not isinstance(rec, Mapping) or "ratios" not in rec:
            continue
        losses = torch.as_tensor(rec["losses"]).double().mean(dim=1)
        for r, loss in zip(rec["ratios"], losses.tolist()):
            rows.append({"subset": subset, "ratio": float(r), "loss": loss, "chosen": float(r) == rec["ratio"]})
    return pd.DataFrame(rows)


@torch.no_grad()
def block_input_stats(transformer, calib, block: int = 0, device: str | torch.device = "cpu"
                      ) -> tuple[dict[str, torch.Tensor], pd.DataFrame]:
    """What one block's linears read during calibration.

    Returns ({subset name: max |x| per input channel over every captured call}, a table with one row per
    (captured call, subset): the call's meta (sample, step, branch, timestep) plus `absmax` (max |x| over
    the call) and `token_absmax_median` (the median over tokens of the per-token max |x|, what a per-token
    activation scale follows)).
    """
    from vidquant.algos.engine import collect_linear_inputs
    from vidquant.algos.smoothquant import act_channel_max
    from vidquant.models.layout import SUBSETS

    blk = transformer.blocks[block]
    inputs, _ = collect_linear_inputs(blk, calib.hidden_states, calib.block_kwargs, device)
    channel_max = {s.name: act_channel_max(inputs[s.input]) for s in SUBSETS}
    rows = []
    for s in SUBSETS:
        for meta, x in zip(calib.meta, inputs[s.input]):
            tok = x.float().abs().reshape(-1, x.shape[-1]).amax(dim=-1)
            rows.append({**meta, "subset": s.name, "absmax": float(tok.max()),
                         "token_absmax_median": float(tok.median())})
    return channel_max, pd.DataFrame(rows)


def calib_shapes(calib) -> pd.DataFrame:
    """What one captured call holds: name, shape and dtype of block 0's inputs and the denoiser's inputs."""
    rows = [{"part": "block input", "name": "hidden_states", "shape": tuple(calib.hidden_states[0].shape),
             "dtype": str(calib.hidden_states[0].dtype)}]
    for part, mapping in (("block input", calib.block_kwargs[0]), ("denoiser input", calib.denoiser_inputs[0])):
        for name, value in mapping.items():
            tensors = value if isinstance(value, tuple | list) else [value]
            for j, t in enumerate(tensors):
                if isinstance(t, torch.Tensor):
                    label = name if len(tensors) == 1 else f"{name}[{j}]"
                    rows.append({"part": part, "name": label, "shape": tuple(t.shape), "dtype": str(t.dtype)})
    return pd.DataFrame(rows)
