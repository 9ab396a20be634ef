"""The figures the notebooks show. Each function takes plain data (tensors, arrays, the tables that
`vidquant.run`, `vidquant.compare` and the report modules produce) and returns a labelled matplotlib Figure: a
title, both axes named with their units, a legend where there is more than one series.

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
from matplotlib.ticker import MaxNLocator

__all__ = [
    "paired_differences",
    "activation_outliers",
    "smoothing",
    "layer_sqnr",
    "timestep_error",
    "frames_side_by_side",
    "sample_images",
    "captured_calls",
    "awq_search",
    "activation_range",
    "fp8_rounding",
    "fp8_code_mismatch",
    "checkpoint_sizes",
    "metric_vs_param",
    "metric_bars",
    "sweep",
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
    """SmoothQuant in one block (`vidquant.algos.report.smoothing_table`): top row, each subset's activation max
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


def sample_images(samples: Sequence[Any], *, max_images: int = 8, title: str = "Calibration samples") -> Figure:
    """The conditioning images of an I2V sample set (`vidquant.calib.Sample`), each titled with its prompt;
    for a T2V set (no images) one text panel listing the prompts."""
    from PIL import Image

    shown = list(samples)[:max_images]
    with_images = [s for s in shown if getattr(s, "image", None) is not None]
    if not with_images:
        fig, axes = _new(1, 1, width=8, height=0.4 + 0.3 * len(shown))
        ax = axes[0, 0]
        ax.axis("off")
        ax.text(0, 1, "\n".join(f"{i}: {s.prompt}" for i, s in enumerate(shown)), va="top", fontsize=9,
                family="monospace")
        return _done(fig, f"{title}: {len(shown)} prompts (text only)")
    fig, axes = _new(1, len(with_images), width=2.2 * len(with_images), height=2.6)
    for i, (ax, s) in enumerate(zip(axes[0], with_images)):
        with Image.open(s.image) as im:
            ax.imshow(np.asarray(im.convert("RGB")))
        ax.set_title("\n".join(_wrap(f"{i}: {s.prompt}", 24)), fontsize=7)
        ax.set_xlabel(f"{im.width}×{im.height} px", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    return _done(fig, f"{title}: conditioning images and prompts")


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("denoising step (0 = pure noise)" if timesteps is None else "denoising step (timestep above)")
    ax.set_ylabel("selection rule")
    if timesteps is not None:
        top = ax.secondary_xaxis("top")
        idx = np.linspace(0, num_steps - 1, min(num_steps, 6)).round().astype(int)
        top.set_xticks(idx, [f"{timesteps[i]:.0f}" for i in idx])
        top.set_xlabel("timestep (1000 = pure noise)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _done(fig, "Captured transformer calls per denoising step")


def awq_search(curves: pd.DataFrame, block: int = 0) -> Figure:
    """AWQ's grid search (`vidquant.algos.report.awq_search_curves`): the block-output loss of each subset against
    the candidate ratio (s = mean|x|^ratio), the chosen ratio marked."""
    subsets = list(dict.fromkeys(curves["subset"]))
    fig, axes = _new(1, len(subsets), width=4.2 * len(subsets), height=3.4)
    for ax, name in zip(axes[0], subsets):
        g = curves[curves["subset"] == name].sort_values("ratio")
        ax.plot(g["ratio"], g["loss"], "o-", ms=3, label="mean loss over samples")
        best = g[g["chosen"]]
        ax.scatter(best["ratio"], best["loss"], s=80, facecolors="none", edgecolors="tab:red", label="chosen")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("ratio (s = mean|x|^ratio)")
        ax.set_ylabel("MSE of the subset's output")
        ax.legend(fontsize=8)
    return _done(fig, f"AWQ scale search in block {block}")


def activation_range(stats: pd.DataFrame) -> Figure:
    """Block input ranges per captured call (`vidquant.algos.report.block_input_stats`): max |x| and the median
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
    column, e.g. from `vidquant.compare.method_layers`)."""
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
    finite = df["sqnr_db"][np.isfinite(df["sqnr_db"])]
    if len(finite):  # start near the worst layer: the differences between methods are a few dB at 40+
        ax.set_ylim(max(0.0, float(finite.min()) - 5.0), float(finite.max()) + 2.0)
    ax.set_xlabel("block.linear")
    ax.set_ylabel("SQNR (dB, higher is better)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _done(fig, title)


def timestep_error(timesteps: pd.DataFrame, *, metric: str = "rel_err", boundary: float | None = None,
                   title: str = "Denoiser error per timestep (teacher-forced, vs the float model)") -> Figure:
    """The quantized denoiser's error per captured timestep (`RunResult.timestep_metrics`, several runs or the
    experts of a mixture via a `method` column), averaged over samples; one line per run and CFG branch.
    `boundary`: a Wan2.2 mixture's expert boundary (a timestep), drawn as a dashed line."""
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
    if boundary is not None:
        ax.axvline(boundary, ls="--", color="grey", label=f"expert boundary (t = {boundary:g})")
    ax.invert_xaxis()
    ax.set_xlabel("timestep (1000 = pure noise → 0 = clean)")
    ax.set_ylabel({"rel_err": "relative L2 error (‖ŷ − y‖ / ‖y‖)", "cosine": "cosine similarity"}.get(metric, metric))
    if metric == "rel_err":
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return _done(fig, title)


# ----------------------------------------------------------------------------------------------- frames
def _nice_floor(x: float) -> float:
    """The largest 1-2-5 number (…, 5, 10, 20, 50, …) not above x (x >= 1)."""
    if x < 1:
        return 1.0
    base = 10 ** np.floor(np.log10(x))
    return float(max(m * base for m in (1, 2, 5) if m * base <= x))


def frames_side_by_side(clips: Mapping[str, Any], *, max_frames: int = 9, diff_gain: float | None = None,
                        title: str = "Float vs quantized frames (same seed and prompt)") -> Figure:
    """Frames of several clips in rows (the first is the reference), followed by one row per other clip with
    |clip − reference| amplified by `diff_gain` (None: so that the largest difference is about full scale;
    the gain is written in the row label). Columns are frame indices."""
    labels = list(clips)
    arrays = [np.clip(_array(clips[k]), 0, 1) for k in labels]
    n = min(a.shape[0] for a in arrays)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int))
    ref = arrays[0]
    diffs = [np.abs(a[:n] - ref[:n]) for a in arrays[1:]]
    if diff_gain is None:
        peak = max((float(np.percentile(d, 99.5)) for d in diffs), default=0.0)
        diff_gain = _nice_floor(min(1000.0, 1.0 / peak)) if peak > 0 else 1.0
    rows = [(lab, a) for lab, a in zip(labels, arrays)]
    rows += [(f"|{lab} − {labels[0]}| ×{diff_gain:g}", np.clip(d * diff_gain, 0, 1))
             for lab, d in zip(labels[1:], diffs)]
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
                ax.set_ylabel("\n".join(_wrap(lab, 16)), fontsize=7)
    fig.supxlabel(f"frame index (of {n}); each panel {w}×{h} px", fontsize=8)
    return _done(fig, title)


# ----------------------------------------------------------------------------------------------- fp8
def fp8_rounding(table: pd.DataFrame, fmt: str = "e4m3") -> Figure:
    """qtorch vs native (torch cast) fp8 rounding on inputs (`vidquant.quant.fp8_rounding.fp8_rounding_table`): the
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
    rel = (diff["qtorch"] - diff["native"]).abs() / diff["x"].abs()
    ax.scatter(diff["x"].abs(), rel, s=10, color="tab:red")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("|x| (units of the quantization scale)")
    ax.set_ylabel("|qtorch − native| / |x|")
    ax.set_title("where they differ: size of the difference, relative to x", fontsize=10)
    return _done(fig, f"FP8 {fmt} rounding: qtorch (LLMC / converter) vs torch cast (ties to even)")


def fp8_code_mismatch(mismatch: pd.DataFrame) -> Figure:
    """Fraction of each layer's fp8 weight codes that differ between qtorch and native rounding
    (`vidquant.quant.fp8_rounding.fp8_code_mismatch`)."""
    names = "b" + mismatch["block"].astype(str) + "." + mismatch["layer"].astype(str)
    fig, axes = _new(1, 1, width=max(8.0, 0.18 * len(names) + 2), height=3.6)
    ax = axes[0, 0]
    ax.bar(np.arange(len(names)), 100 * mismatch["frac"].to_numpy(), color="tab:purple")
    ax.set_xticks(np.arange(len(names)), names, rotation=90, fontsize=6)
    ax.set_xlabel("block.linear")
    ax.set_ylabel("weight codes that differ (%)")
    if int(mismatch["differ"].sum()) == 0:
        ax.text(0.5, 0.5, f"no code differs in {int(mismatch['n'].sum()):,} weights: x / scale never lands exactly on "
                "a tie", transform=ax.transAxes, ha="center", va="center", fontsize=9)
    return _done(fig, "Per-channel fp8 weight codes: qtorch vs native rounding")


# ----------------------------------------------------------------------------------------------- checkpoints
def checkpoint_sizes(sizes: Mapping[str, pd.DataFrame]) -> Figure:
    """Bytes per dtype of several checkpoints (`vidquant.export.listing.checkpoint_table`), stacked bars in MiB."""
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
                    title: str | None = None, baseline_label: str = "baseline") -> Figure:
    """One panel per metric against a swept parameter (one point per run), with an optional horizontal
    baseline per metric (e.g. RTN)."""
    units = dict(units or {})
    df = table.sort_values(param)
    fig, axes = _new(1, len(metrics), width=4.2 * len(metrics), height=3.4)
    for ax, metric in zip(axes[0], metrics):
        ax.plot(df[param], df[metric].astype(float), "o-", label=metric)
        if baselines and metric in baselines:
            ax.axhline(float(baselines[metric]), color="grey", ls="--", label=baseline_label)
        ax.set_xlabel(param)
        ax.set_ylabel(f"{metric} ({units[metric]})" if metric in units else metric)
        ax.set_title(metric, fontsize=10)
        ax.legend(fontsize=8)
    return _done(fig, title or f"Sweep over {param}")


def metric_bars(table: pd.DataFrame, metrics: Sequence[str], *, label: str = "run",
                units: Mapping[str, str] | None = None, title: str = "Methods compared") -> Figure:
    """One panel per metric, one horizontal bar per row of `table` (labelled by column `label`, shared)."""
    units = {k: v for k, v in (units or {}).items() if v}
    metrics = [m for m in metrics if m in table]
    names = table[label].astype(str).tolist()
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.2 + 2.8 * len(metrics), 0.9 + 0.35 * len(names)),
                             dpi=_DPI, squeeze=False, sharey=True)
    y = np.arange(len(names))
    for ax, metric in zip(axes[0], metrics):
        vals = pd.to_numeric(table[metric], errors="coerce").to_numpy(dtype=float)
        ax.barh(y, vals, color=[f"C{i}" for i in range(len(names))])
        for yi, v in zip(y, vals):
            if np.isfinite(v):
                ax.text(v, yi, f" {v:.3g}", va="center", fontsize=7)
        ax.set_xlabel(f"{metric} ({units[metric]})" if metric in units else metric)
        ax.set_title(metric, fontsize=10)
        ax.margins(x=0.25)
    axes[0, 0].set_yticks(y, names, fontsize=8)
    axes[0, 0].invert_yaxis()
    axes[0, 0].set_ylabel(label)
    return _done(fig, title)


def paired_differences(intervals: pd.DataFrame, metrics: Sequence[str] = ("psnr", "traj_drift_px"), *,
                       baseline: str = "RTN", title: str = "Paired differences against RTN") -> Figure | None:
    """A forest plot of an interval table (`vidquant.eval.intervals.interval_table`): per metric, each (method,
    format)'s paired difference against `baseline` in the same format as a dot with its 95 % interval, the cell's
    jitter as a grey band around 0 (a difference inside it is not a finding), real differences (`*`) filled.
    None when the table has no paired difference."""
    metrics = [m for m in metrics if f"d_{m}" in intervals and intervals[f"d_{m}"].notna().any()]
    if not metrics:
        return None
    rows = intervals[intervals[f"d_{metrics[0]}"].notna()].reset_index(drop=True)
    names = (rows["method"].astype(str) + " · " + rows["format"].astype(str)).tolist()
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 + 3.2 * len(metrics), 0.9 + 0.32 * len(names)),
                             dpi=_DPI, squeeze=False, sharey=True)
    y = np.arange(len(names))
    for ax, metric in zip(axes[0], metrics):
        d = rows[f"d_{metric}"].to_numpy(dtype=float)
        lo, hi = rows[f"d_{metric}_lo"].to_numpy(dtype=float), rows[f"d_{metric}_hi"].to_numpy(dtype=float)
        jitter = rows.get(f"{metric}_jitter", pd.Series(np.nan, index=rows.index)).to_numpy(dtype=float)
        real = rows[f"d_{metric}_sig"].astype(str).eq("*").to_numpy()
        for yi, j in zip(y, jitter):
            if np.isfinite(j):
                ax.fill_betweenx([yi - 0.4, yi + 0.4], -j, j, color="0.88", lw=0)
        ax.errorbar(d, y, xerr=[d - lo, hi - d], fmt="none", ecolor="C0", capsize=2)
        ax.scatter(d[real], y[real], color="C0", zorder=3, label="real (*)")
        ax.scatter(d[~real], y[~real], facecolor="white", edgecolor="C0", zorder=3, label="within noise")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(f"Δ{metric} vs {baseline}")
        ax.set_title(metric, fontsize=10)
    axes[0, 0].set_yticks(y, names, fontsize=8)
    axes[0, 0].invert_yaxis()
    axes[0, 0].set_ylabel("method · format")
    axes[0, -1].legend(fontsize=7, loc="lower right")
    return _done(fig, title + " (95 % intervals; grey: the cell's jitter)")


#: The headline metrics of a run and their units ("" = unitless).
SWEEP_METRICS = {"video_psnr": "dB", "mean_sqnr_db": "dB", "mean_timestep_rel_err": "‖ŷ−y‖/‖y‖", "video_ssim": ""}


def sweep(table: pd.DataFrame, *, title: str = "sweep", metrics: Sequence[str] | None = None) -> Figure | None:
    """A sweep table (`vidquant sweep`) against its one varying parameter, with the RTN baseline (columns
    ``rtn.<metric>``) dashed; None when the table has no single varying parameter or fewer than two runs."""
    from vidquant.records import swept_params

    varying = [p for p in swept_params(table) if table[p].nunique() > 1]
    metrics = [m for m in (metrics or SWEEP_METRICS) if m in table]
    if len(table) < 2 or len(varying) != 1 or not metrics:
        return None
    param = varying[0]
    base = {m: float(pd.to_numeric(table[f"rtn.{m}"], errors="coerce").mean()) for m in metrics if f"rtn.{m}" in table}
    units = {m: u for m, u in SWEEP_METRICS.items() if u}
    return metric_vs_param(table, param, metrics, baselines=base, units=units, baseline_label="RTN",
                           title=f"{title}: sweep over {param}" + (" (dashed: RTN)" if base else ""))
