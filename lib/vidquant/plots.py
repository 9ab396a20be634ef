"""The figures the notebooks show. Each function takes plain data (tensors, arrays, the tables that
`vidquant.run` and `vidquant.notebook` produce) and returns a labelled matplotlib Figure: a title, both axes
named with their units, a legend where there is more than one series.

Figures are created through pyplot and closed before they are returned, so a notebook shows each one once
(as the cell's value) and a script can `fig.savefig(...)` without a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = [
    "activation_outliers",
    "smoothing",
    "layer_sqnr",
    "timestep_error",
    "frames_side_by_side",
    "captured_calls",
    "activation_range",
    "fp8_rounding",
    "fp8_code_mismatch",
    "checkpoint_sizes",
    "metric_vs_param",
    "metric_bars",
]

_DPI = 80


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _new(nrows: int = 1, ncols: int = 1, *, width: float = 10.0, height: float = 3.2, **kw) -> tuple[Figure, Any]:
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height * nrows), dpi=_DPI, squeeze=False, **kw)
    return fig, axes


def _done(fig: Figure, title: str) -> Figure:
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


# ----------------------------------------------------------------------------------------------- activations
def _channel_panel(ax, before: np.ndarray, after: np.ndarray | None, name: str) -> None:
    ch = np.arange(before.size)
    ax.plot(ch, before, lw=0.8, color="tab:red", label="before smoothing" if after is not None else "max |x|")
    if after is not None:
        ax.plot(ch, after, lw=0.8, color="tab:blue", label="after smoothing (x / s)")
    ratio = before.max() / max(np.median(before), 1e-30)
    ax.set_yscale("log")
    ax.set_title(f"{name}: max/median = {ratio:.1f}×", fontsize=10)
    ax.set_xlabel("input channel (index)")
    ax.set_ylabel("max |x| over calib tokens")
    ax.legend(fontsize=8, loc="upper right")


def activation_outliers(channel_max: Mapping[str, Any], smoothed: Mapping[str, Any] | None = None, *,
                        title: str = "Activation outliers per input channel") -> Figure:
    """One panel per linear input (e.g. per smoothing subset): max |x| per input channel over every captured
    calibration token, log scale; with `smoothed`, the same after dividing by the smoothing scale."""
    names = list(channel_max)
    fig, axes = _new(1, len(names), width=4.2 * len(names), height=3.4)
    for ax, name in zip(axes[0], names):
        after = None if smoothed is None else _array(smoothed[name])
        _channel_panel(ax, _array(channel_max[name]), after, name)
    return _done(fig, title)


def smoothing(table: pd.DataFrame, block: int = 0, *, alpha: float | None = None) -> Figure:
    """SmoothQuant in one block (`vidquant.notebook.smoothing_table`): top row, each subset's activation max
    per channel before and after smoothing; bottom row, the smoothing scale s per channel."""
    sub = table[table["block"] == block]
    subsets = list(dict.fromkeys(sub["subset"]))
    if not subsets:
        raise ValueError(f"no SmoothQuant entries for block {block} (blocks: {sorted(set(table['block']))})")
    fig, axes = _new(2, len(subsets), width=4.2 * len(subsets), height=3.2)
    for j, name in enumerate(subsets):
        g = sub[sub["subset"] == name].sort_values("channel")
        _channel_panel(axes[0, j], g["x_max"].to_numpy(), g["x_max_smoothed"].to_numpy(), name)
        ax = axes[1, j]
        ax.plot(g["channel"], g["scale"], lw=0.8, color="tab:green")
        ax.set_yscale("log")
        ax.set_title(f"{name}: scale s", fontsize=10)
        ax.set_xlabel("input channel (index)")
        ax.set_ylabel("s = max|x|^α / max|W|^(1−α)")
    a = f", α = {alpha:g}" if alpha is not None else ""
    return _done(fig, f"SmoothQuant in block {block}{a}: activation outliers and smoothing scales")


def captured_calls(selections: Mapping[str, Sequence[int]], calls_per_step: int, num_steps: int,
                   timesteps: Sequence[float] | None = None) -> Figure:
    """Which denoising steps and CFG branches each selection rule captures (one row per rule)."""
    fig, axes = _new(1, 1, width=10, height=0.7 + 0.6 * len(selections))
    ax = axes[0, 0]
    for row, calls in enumerate(selections.values()):
        calls = np.asarray(list(calls))
        steps, branch = calls // calls_per_step, calls % calls_per_step
        for b, (marker, label) in enumerate((("o", "cond"), ("x", "uncond"))[:calls_per_step]):
            sel = steps[branch == b]
            ax.scatter(sel, np.full(sel.size, row) + (0.12 * b), marker=marker, s=40,
                       color=f"C{b}", label=label if row == 0 else None)
    ax.set_yticks(range(len(selections)), list(selections))
    ax.set_ylim(-0.6, len(selections) - 0.4)
    ax.set_xlim(-0.5, num_steps - 0.5)
    ax.set_xlabel("denoising step (0 = pure noise)" if timesteps is None else "denoising step (timestep above)")
    ax.set_ylabel("selection rule")
    if timesteps is not None:
        top = ax.secondary_xaxis("top")
        idx = np.linspace(0, num_steps - 1, min(num_steps, 6)).round().astype(int)
        top.set_xticks(idx, [f"{timesteps[i]:.0f}" for i in idx])
        top.set_xlabel("timestep (1000 = pure noise)")
    ax.legend(fontsize=8, loc="center right")
    return _done(fig, "Captured transformer calls per denoising step")


def activation_range(stats: pd.DataFrame) -> Figure:
    """Block input ranges per captured call (`vidquant.notebook.block_input_stats`): max |x| and the median
    per-token max |x| against the timestep, per subset and CFG branch."""
    subsets = list(dict.fromkeys(stats["subset"]))
    fig, axes = _new(1, len(subsets), width=4.2 * len(subsets), height=3.4)
    for ax, name in zip(axes[0], subsets):
        g = stats[stats["subset"] == name]
        for b, (branch, gb) in enumerate(g.groupby("branch", sort=False)):
            gb = gb.groupby("timestep", as_index=False)[["absmax", "token_absmax_median"]].mean()
            gb = gb.sort_values("timestep", ascending=False)
            ax.plot(gb["timestep"], gb["absmax"], "o-", color=f"C{b}", label=f"{branch}: max over tokens")
            ax.plot(gb["timestep"], gb["token_absmax_median"], "s--", color=f"C{b}", alpha=0.6,
                    label=f"{branch}: median token max")
        ax.set_yscale("log")
        ax.invert_xaxis()
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("timestep (1000 = pure noise)")
        ax.set_ylabel("|x| (activation units)")
        ax.legend(fontsize=7)
    return _done(fig, "Activation range of block inputs across denoising (mean over samples)")


# ----------------------------------------------------------------------------------------------- errors
def layer_sqnr(layers: pd.DataFrame, *, title: str = "Per-layer SQNR on the calibration inputs") -> Figure:
    """Bars of SQNR (dB) per quantized linear (`RunResult.layer_metrics`; several runs via a `method`
    column, e.g. from `vidquant.notebook.method_layers`)."""
    df = layers.copy()
    if "method" not in df:
        df["method"] = "quantized"
    df["name"] = "b" + df["block"].astype(str) + "." + df["layer"].astype(str)
    names = list(dict.fromkeys(df["name"]))
    methods = list(dict.fromkeys(df["method"]))
    x = np.arange(len(names))
    width = 0.8 / len(methods)
    fig, axes = _new(1, 1, width=max(8.0, 0.18 * len(names) * max(1, len(methods) ** 0.5) + 2), height=4.0)
    ax = axes[0, 0]
    for i, m in enumerate(methods):
        vals = df[df["method"] == m].set_index("name").reindex(names)["sqnr_db"]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, label=f"{m} (mean {vals.mean():.1f} dB)")
    ax.set_xticks(x, names, rotation=90, fontsize=6)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_xlabel("block.linear")
    ax.set_ylabel("SQNR (dB, higher is better)")
    ax.legend(fontsize=8)
    return _done(fig, title)


def timestep_error(timesteps: pd.DataFrame, *, metric: str = "rel_err",
                   title: str = "Denoiser error per timestep (teacher-forced, vs the float model)") -> Figure:
    """The quantized denoiser's error per captured timestep (`RunResult.timestep_metrics`, several runs via
    a `method` column), averaged over samples; one line per run and CFG branch."""
    df = timesteps.copy()
    if "method" not in df:
        df["method"] = "quantized"
    fig, axes = _new(1, 1, width=8, height=3.6)
    ax = axes[0, 0]
    for i, (method, g) in enumerate(df.groupby("method", sort=False)):
        for branch, gb in g.groupby("branch", sort=False):
            gb = gb.groupby("timestep", as_index=False)[metric].mean().sort_values("timestep", ascending=False)
            ax.plot(gb["timestep"], gb[metric], "o-" if branch == "cond" else "x--", color=f"C{i}",
                    label=f"{method} ({branch})")
    ax.invert_xaxis()
    ax.set_xlabel("timestep (1000 = pure noise → 0 = clean)")
    ax.set_ylabel({"rel_err": "relative L2 error (‖ŷ − y‖ / ‖y‖)", "cosine": "cosine similarity"}.get(metric, metric))
    if metric == "rel_err":
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return _done(fig, title)


# ----------------------------------------------------------------------------------------------- frames
def frames_side_by_side(clips: Mapping[str, Any], *, max_frames: int = 9, diff_gain: float = 4.0,
                        title: str = "Float vs quantized frames (same seed and prompt)") -> Figure:
    """Frames of several clips in rows (the first is the reference), followed by one row per other clip with
    |clip − reference| amplified by `diff_gain`. Columns are frame indices."""
    labels = list(clips)
    arrays = [np.clip(_array(clips[k]), 0, 1) for k in labels]
    n = min(a.shape[0] for a in arrays)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int))
    rows = [(lab, a) for lab, a in zip(labels, arrays)]
    ref = arrays[0]
    rows += [(f"|{lab} − {labels[0]}| ×{diff_gain:g}", np.clip(np.abs(a[:n] - ref[:n]) * diff_gain, 0, 1))
             for lab, a in zip(labels[1:], arrays[1:])]
    h, w = ref.shape[1:3]
    cell = 1.3 if max(h, w) <= 128 else 2.0
    fig, axes = plt.subplots(len(rows), len(idx), figsize=(cell * len(idx) * w / max(h, w) + 1.2,
                                                           cell * len(rows) * h / max(h, w) + 0.8),
                             dpi=_DPI, squeeze=False)
    for r, (lab, a) in enumerate(rows):
        for c, t in enumerate(idx):
            ax = axes[r, c]
            ax.imshow(a[t], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {t}", fontsize=8)
            if c == 0:
                ax.set_ylabel(lab, fontsize=8)
    fig.supxlabel(f"frame index (of {n}); each panel {w}×{h} px", fontsize=8)
    return _done(fig, title)


# ----------------------------------------------------------------------------------------------- fp8
def fp8_rounding(table: pd.DataFrame, fmt: str = "e4m3") -> Figure:
    """qtorch vs native (torch cast) fp8 rounding on inputs (`vidquant.notebook.fp8_rounding_table`): the
    difference of the two results in grid steps, against |x|."""
    fig, axes = _new(1, 2, width=11, height=3.6)
    ax = axes[0, 0]
    ax_x = np.abs(table["x"].to_numpy())
    for sign, colour, label in ((1, "tab:blue", "x > 0"), (-1, "tab:orange", "x < 0")):
        m = np.sign(table["x"].to_numpy()) == sign
        ax.scatter(ax_x[m], table["steps"].to_numpy()[m], s=10, color=colour, label=label, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("|x| (units of the quantization scale)")
    ax.set_ylabel("qtorch − native (grid steps)")
    ax.set_title(f"{int(table['differ'].sum())} of {len(table)} inputs round differently", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    diff = table[table["differ"]]
    ax.scatter(diff["x"], diff["qtorch"] - diff["native"], s=10, color="tab:red")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xscale("symlog", linthresh=2**-6)
    ax.set_xlabel("x (units of the quantization scale)")
    ax.set_ylabel("qtorch − native (value)")
    ax.set_title("where they differ: signed value difference", fontsize=10)
    return _done(fig, f"FP8 {fmt} rounding: qtorch (LLMC / converter) vs torch cast (ties to even)")


def fp8_code_mismatch(mismatch: pd.DataFrame) -> Figure:
    """Fraction of each layer's fp8 weight codes that differ between qtorch and native rounding
    (`vidquant.notebook.fp8_code_mismatch`)."""
    names = "b" + mismatch["block"].astype(str) + "." + mismatch["layer"].astype(str)
    fig, axes = _new(1, 1, width=max(8.0, 0.18 * len(names) + 2), height=3.6)
    ax = axes[0, 0]
    ax.bar(np.arange(len(names)), 100 * mismatch["frac"].to_numpy(), color="tab:purple")
    ax.set_xticks(np.arange(len(names)), names, rotation=90, fontsize=6)
    ax.set_xlabel("block.linear")
    ax.set_ylabel("weight codes that differ (%)")
    return _done(fig, "Per-channel fp8 weight codes: qtorch vs native rounding")


# ----------------------------------------------------------------------------------------------- checkpoints
def checkpoint_sizes(sizes: Mapping[str, pd.DataFrame]) -> Figure:
    """Bytes per dtype of several checkpoints (`vidquant.notebook.checkpoint_table`), stacked bars in MiB."""
    dtypes = sorted({d for t in sizes.values() for d in t["dtype"]})
    fig, axes = _new(1, 1, width=7, height=3.6)
    ax = axes[0, 0]
    bottom = np.zeros(len(sizes))
    for i, d in enumerate(dtypes):
        vals = np.array([t.loc[t["dtype"] == d, "bytes"].sum() / 2**20 for t in sizes.values()])
        ax.bar(list(sizes), vals, bottom=bottom, label=d, color=f"C{i}")
        bottom += vals
    for x, total in enumerate(bottom):
        ax.text(x, total, f"{total:.2f} MiB", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("checkpoint")
    ax.set_ylabel("size (MiB)")
    ax.legend(title="dtype", fontsize=8)
    return _done(fig, "Checkpoint size by tensor dtype")


# ----------------------------------------------------------------------------------------------- results
def metric_vs_param(table: pd.DataFrame, param: str, metrics: Sequence[str], *,
                    baselines: Mapping[str, float] | None = None, units: Mapping[str, str] | None = None,
                    title: str | None = None) -> Figure:
    """One panel per metric against a swept parameter (one point per run), with an optional horizontal
    baseline per metric (e.g. RTN)."""
    units = dict(units or {})
    df = table.sort_values(param)
    fig, axes = _new(1, len(metrics), width=4.2 * len(metrics), height=3.4)
    for ax, metric in zip(axes[0], metrics):
        ax.plot(df[param], df[metric].astype(float), "o-", label=metric)
        if baselines and metric in baselines:
            ax.axhline(float(baselines[metric]), color="grey", ls="--", label="baseline")
        ax.set_xlabel(param)
        ax.set_ylabel(f"{metric} ({units[metric]})" if metric in units else metric)
        ax.set_title(metric, fontsize=10)
        ax.legend(fontsize=8)
    return _done(fig, title or f"Sweep over {param}")


def metric_bars(table: pd.DataFrame, metrics: Sequence[str], *, label: str = "run",
                units: Mapping[str, str] | None = None, title: str = "Methods compared") -> Figure:
    """One panel per metric, one bar per row of `table` (labelled by column `label`)."""
    units = dict(units or {})
    fig, axes = _new(1, len(metrics), width=4.2 * len(metrics), height=3.8)
    for ax, metric in zip(axes[0], metrics):
        vals = pd.to_numeric(table[metric], errors="coerce")
        ax.bar(table[label].astype(str), vals, color=[f"C{i}" for i in range(len(table))])
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel(f"{metric} ({units[metric]})" if metric in units else metric)
        ax.set_title(metric, fontsize=10)
    return _done(fig, title)
