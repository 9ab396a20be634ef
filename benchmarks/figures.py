"""Figures of the benchmark tables: what people would rather look at than read.

    python benchmarks/figures.py [results/benchmarks]

Reads ``gemm.csv`` and ``calibration.csv`` (whichever exist) and writes beside them:

* ``gemm_speedup.png`` (``gemm_cuda_speedup.png`` from ``gemm_cuda.csv``): W8A8 speed-up over bf16 against
  token count, one panel per Wan shape: the int8 GEMM alone on each exact path, the W8A8 linear the runtime
  runs (the gap is the activation quantization and the epilogue), fp32, and fp8 where it ran;
* ``calibration_memory.png``: peak resident memory of calibration against the checkpoint's weight bytes, in
  memory and streamed, with each mode's bound.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from common import RESULTS

_GIB = 2**30
GEMM_SERIES = {
    **{f"int8_gemm_{name}_speedup_vs_bf16": (f"int8 GEMM alone, {name} (codes given)", ":") for name in
       ("onednn-u8s8", "int-mm", "fp32-codes")},
    "w8a8_int8_speedup_vs_bf16": ("W8A8 int8 linear (the runtime: act quant + exact GEMM)", "-"),
    "fp32_speedup_vs_bf16": ("fp32 F.linear", "--"),
    "w8a8_fp8_eager_speedup_vs_bf16": ("W8A8 fp8 (torch._scaled_mm)", "-."),
}


def gemm_figure(csv: Path, out: Path) -> Path | None:
    """Speed-up over bf16 against tokens: a row of panels per model, a column per layer shape."""
    df = pd.read_csv(csv)
    if df.empty:
        return None
    models, layers = list(dict.fromkeys(df["model"])), list(dict.fromkeys(df["layer"]))
    fig, axes = plt.subplots(len(models), len(layers), figsize=(3.6 * len(layers), 3.0 * len(models)),
                             sharey=True, squeeze=False)
    for (model, layer), rows in df.groupby(["model", "layer"], sort=False):
        ax = axes[models.index(model)][layers.index(layer)]
        for col, (label, style) in GEMM_SERIES.items():
            if col in rows and rows[col].notna().any():
                ax.plot(rows["tokens"], rows[col], style, marker="o", label=label)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.axhline(2.0, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{model} {layer}\n({rows['K'].iloc[0]}→{rows['N'].iloc[0]})", fontsize=9)
        ax.set_xlabel("tokens (M)")
    for row in axes:
        row[0].set_ylabel("speed-up over bf16 (×)")
    axes[0][0].legend(fontsize=7, loc="lower left")
    where = (df["machine_gpu"].iloc[0] if "machine_gpu" in df else
             f"{df['machine_cpu'].iloc[0]}, {df['machine_torch_threads'].iloc[0]} threads")
    fig.suptitle(f"W8A8 linear vs bf16 on {where}, torch {df['machine_torch'].iloc[0]} "
                 "(1: as fast as bf16; 2: int8's peak)", fontsize=10)
    return _save(fig, out / f"{csv.stem}_speedup.png")


def calibration_figure(csv: Path, out: Path) -> Path | None:
    """Peak RSS of the calibration against the weight bytes, both modes (RTN at every depth, the other
    methods as single points)."""
    df = pd.read_csv(csv)
    if df.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    weights = df["weights_bytes"] / _GIB
    top = max(weights.max(), (df["calib_peak_rss_bytes"] / _GIB).max()) * 1.1
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls=":", label="the weights once (y = x)")
    for mode, color in (("memory", "tab:red"), ("stream", "tab:blue")):
        rows = df[df["mode"] == mode]
        rtn = rows[rows["method"] == "RTN"].sort_values("weights_bytes")
        ax.plot(rtn["weights_bytes"] / _GIB, rtn["calib_peak_rss_bytes"] / _GIB, "-o", color=color,
                label=f"{mode}: RTN peak")
        ax.plot(rtn["weights_bytes"] / _GIB, rtn["bound_bytes"] / _GIB, "--", color=color, lw=1,
                label=f"{mode}: bound")
        for marker, (method, m_rows) in zip("s^D", rows[rows["method"] != "RTN"].groupby("method")):
            ax.scatter(m_rows["weights_bytes"] / _GIB, m_rows["calib_peak_rss_bytes"] / _GIB, marker=marker,
                       color=color, label=f"{mode}: {method}")
    ax.set_xlabel("bf16 weights of the checkpoint (GiB; 8, 16, 30 Wan-1.3B-shaped blocks)")
    ax.set_ylabel("calibration peak RSS (GiB)")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_title("Calibration peak memory vs model size: in memory vs streamed", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out / "calibration_memory.png")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version string: same data, same bytes
    plt.close(fig)
    return path


def run(out_dir: Path = RESULTS) -> list[Path]:
    """Every figure whose table exists in ``out_dir`` (``gemm_cuda.csv`` gives ``gemm_cuda_speedup.png``)."""
    out_dir = Path(out_dir)
    tables = [(csv, gemm_figure) for csv in sorted(out_dir.glob("gemm*.csv"))]
    tables += [(csv, calibration_figure) for csv in [out_dir / "calibration.csv"] if csv.is_file()]
    return [path for csv, make in tables if (path := make(csv, out_dir)) is not None]


if __name__ == "__main__":
    for p in run(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS):
        print(p)
