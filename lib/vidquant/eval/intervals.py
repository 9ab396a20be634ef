"""Interval tables: per (method, format) cell, each per-clip video metric's mean with its 95 % interval, noise
floor and jitter, and the paired difference against a baseline (``vidquant.eval.stats``), as a table and as
markdown. Shared by `vidquant tables` (methods × formats) and the sweeps' aggregates (`vidquant.sweep`, one row
per run).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vidquant.eval.stats import Interval, marker, mean_ci, paired_difference

__all__ = ["BASELINE", "FIDELITY_METRICS", "HIGHER_IS_BETTER", "INTERVAL_METRICS", "interval_markdown",
           "interval_rows", "interval_table", "paired"]

# Per-clip video metrics with an interval in the table; lower is better for all but PSNR and SSIM.
INTERVAL_METRICS = ("psnr", "ssim", "flicker_error", "traj_drift_px", "colour_drift_de", "traj_err_px", "colour_de")
HIGHER_IS_BETTER = {"psnr", "ssim"}
# against the float clip (their floor: the nudged float clip's value); the others against the prompt
FIDELITY_METRICS = {"psnr", "ssim", "flicker_error", "traj_drift_px", "colour_drift_de"}
BASELINE = "RTN"  # the method the others are paired against, in the same format


def paired(clips: pd.DataFrame, method: str, fmt: str, metric: str, baseline: str | None = BASELINE,
           baseline_format: str | None = None) -> Interval | None:
    """Paired difference ``method - baseline`` of ``metric`` over the clips both have, in format ``fmt`` (the
    baseline in ``baseline_format`` when given)."""
    key = ["eval", "sample", "seed"]
    base_fmt = baseline_format or fmt
    if (method, fmt) == (baseline, base_fmt) or metric not in clips:
        return None
    a = clips[(clips["method"] == method) & (clips["format"] == fmt)][[*key, metric]]
    b = clips[(clips["method"] == baseline) & (clips["format"] == base_fmt)][[*key, metric]]
    both = a.merge(b, on=key, suffixes=("", "_base"))
    return None if both.empty else paired_difference(both[metric], both[f"{metric}_base"])


def interval_table(clips: pd.DataFrame, baseline: str | None = BASELINE) -> pd.DataFrame:
    """One row per (method, format): for each metric its mean, 95 % interval, noise floor, the paired difference
    against ``baseline`` in the same format (same prompts and seeds; default RTN) with its interval, and a
    marker (``vidquant.eval.stats.marker``).

    Fidelity metrics (against the float clip): ``<m>_at_floor`` is True when the cell is as close to the float
    clip as the float model's own nudged clip (the quantization error is lost in the generation noise).
    ``<m>_jitter``: the mean change of the cell's metric when its own latent is nudged by one ulp. A difference
    smaller than the larger jitter of the two cells (and, for task errors, than the float floor) is marked ``~``.
    """
    rows = []
    for (method, fmt), cell in clips.groupby(["method", "format"], sort=False):
        row: dict = {"method": method, "format": fmt, "n_clips": len(cell)}
        base = clips[(clips["method"] == baseline) & (clips["format"] == fmt)]
        for m in (m for m in INTERVAL_METRICS if m in cell):
            iv = mean_ci(cell[m])
            floor, jitter = column_mean(cell, f"floor_{m}"), column_mean(cell, f"jitter_{m}")
            row.update({m: iv.mean, f"{m}_lo": iv.low, f"{m}_hi": iv.high, f"{m}_floor": floor,
                        f"{m}_jitter": jitter})
            if m in FIDELITY_METRICS and np.isfinite(floor):
                row[f"{m}_at_floor"] = bool(iv.mean >= floor if m in HIGHER_IS_BETTER else iv.mean <= floor)
            diff = paired(clips, method, fmt, m, baseline)
            if diff is not None:
                floors = [jitter, column_mean(base, f"jitter_{m}")] + ([] if m in FIDELITY_METRICS else [floor])
                threshold = max((f for f in floors if np.isfinite(f)), default=None)
                row.update({f"d_{m}": diff.mean, f"d_{m}_lo": diff.low, f"d_{m}_hi": diff.high,
                            f"d_{m}_sig": marker(diff, threshold)})
        rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["method", "format", "n_clips"])


def column_mean(df: pd.DataFrame, column: str) -> float:
    """Mean of the finite values of a column; NaN when the column is absent or has none."""
    if column not in df:
        return float("nan")
    values = df[column].astype(float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def _fmt(x: float) -> str:
    return f"{x:.4g}" if pd.notna(x) else "–"


def interval_markdown(table: pd.DataFrame, cells: pd.DataFrame, baseline: str = BASELINE,
                      label: str = "method") -> str:
    """The headline table (:func:`interval_rows`) in markdown."""
    if table.empty:
        return "(no cell with per-clip video metrics)"
    return interval_rows(table, cells, baseline, label).to_markdown(index=False)


def interval_rows(table: pd.DataFrame, cells: pd.DataFrame, baseline: str = BASELINE,
                  label: str = "method") -> pd.DataFrame:
    """The headline table: deterministic metrics first (the primary ranking), then each video metric as
    ``mean [lo, hi]``, its floor, and ``Δ vs <baseline> [lo, hi] marker`` (``label``: the name of the first
    column; an all-empty format column is left out)."""
    det = cells.set_index(["method", "format"])
    lines = []
    for _, r in table.iterrows():
        out = {"method": r["method"], "format": r["format"], "clips": int(r["n_clips"])}
        key = (r["method"], r["format"])
        for c in ("mean_sqnr_db", "mean_timestep_rel_err"):
            out[c] = _fmt(det.loc[key, c]) if key in det.index and c in det else "–"
        for m in (m for m in INTERVAL_METRICS if m in table):
            floor = " ≤floor" if r.get(f"{m}_at_floor") is True else ""
            out[m] = f"{_fmt(r[m])} [{_fmt(r[f'{m}_lo'])}, {_fmt(r[f'{m}_hi'])}]{floor}"
            out[f"{m} floor"] = _fmt(r[f"{m}_floor"])
            out[f"{m} jitter"] = _fmt(r.get(f"{m}_jitter", float("nan")))
            if pd.notna(r.get(f"d_{m}")):
                sig = r[f"d_{m}_sig"] if isinstance(r[f"d_{m}_sig"], str) else ""  # "" reads back as NaN
                out[f"Δ{m} vs {baseline}"] = (f"{r[f'd_{m}']:+.3g} [{r[f'd_{m}_lo']:+.3g}, {r[f'd_{m}_hi']:+.3g}]"
                                              f"{sig}")
            else:
                out[f"Δ{m} vs {baseline}"] = ""
        lines.append(out)
    df = pd.DataFrame(lines).rename(columns={"method": label})
    if (df["format"] == "").all():
        df = df.drop(columns="format")
    unmeasured = [c for c in df if c.endswith((" floor", " jitter")) and (df[c] == "–").all()]
    return df.drop(columns=unmeasured)  # runs without the noise-floor / jitter plan
