"""The deterministic ranking of methods reproduces across CPU classes.

The primary ranking of the methods × formats tables is by the deterministic metrics (mean per-layer output SQNR
on the calibration data, teacher-forced denoiser error), not by the chaotic video metrics. This check runs the
same cells (calibration + PTQ + teacher-forced error, no video generation) in fresh interpreters with the CPU
ISA limited (``vidquant.quant.int8_gemm.CPU_CLASS_LIMITS``: oneDNN and ATen kernels of another CPU class) and
compares the rankings:

    python -m vidquant.eval.ranking                      # native vs avx2, W8A8 and W4A8, 5 methods
    python -m vidquant.eval.ranking --methods RTN GPTQ --formats W4A8 --classes native avx512

Two methods count as ordered when their metric differs by more than ``--tol`` (dB for SQNR, relative for the
timestep error) on the first class; the check fails (exit 1) when another class orders such a pair the other
way. Ties within the tolerance are reported, not ranked.

The video metrics do not reproduce clip for clip (generation is chaotic), so for them the check is statistical:
the same table cells run on two CPU classes (``vidquant tables --runs A`` natively and ``--runs B`` under the
limited ISA) must give overlapping 95 % intervals, and no paired difference against RTN that is significant on
one class may be significant the other way on the other:

    python -m vidquant.eval.ranking --video results/runs/tables results/runs/tables_avx2 --formats W8A8-int8 W4A8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from itertools import combinations
from pathlib import Path

__all__ = ["cell_metrics", "run_class", "order_conflicts", "main"]

METRICS = {"mean_sqnr_db": True, "mean_timestep_rel_err": False}  # metric -> higher is better
SMALL = {"calib.sample_steps": 4}  # small settings: 4 captured steps per calibration prompt


def cell_metrics(task: str, methods: list[str], formats: list[str], out_root: Path) -> dict[str, dict]:
    """The deterministic metrics of each (method, format) cell, keyed ``"method/format"`` (no video eval)."""
    from vidquant.run import quantize
    from vidquant.tables import cell_config

    out = {}
    for fmt in formats:
        for method in methods:
            cfg = cell_config(task, method, fmt, out_root, extra={"eval": None, "save.save_lightx2v": False,
                                                                   **SMALL})
            summary = quantize(cfg, progress=False).summary
            out[f"{method}/{fmt}"] = {k: summary[k] for k in METRICS}
    return out


_CHILD = """
import json, sys
from pathlib import Path
from vidquant.eval.ranking import cell_metrics
task, methods, formats, out = json.loads(sys.argv[1])
print(json.dumps(cell_metrics(task, methods, formats, Path(out))))
"""


def run_class(label: str, task: str, methods: list[str], formats: list[str], timeout: float = 3600) -> dict:
    """:func:`cell_metrics` in a fresh interpreter with the ISA of CPU class ``label``."""
    from vidquant.quant.int8_gemm import CPU_CLASS_LIMITS

    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")}
    env.update(CPU_CLASS_LIMITS[label])
    lib = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([lib, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with tempfile.TemporaryDirectory(prefix=f"vidquant-ranking-{label}-") as tmp:
        args = json.dumps([task, methods, formats, tmp])
        res = subprocess.run([sys.executable, "-c", _CHILD, args], env=env, capture_output=True, text=True,
                             timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"CPU class {label}: the child run failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def order_conflicts(first: dict, other: dict, formats: list[str], tol: float) -> list[str]:
    """Pairs of methods (same format) that ``first`` orders (difference > ``tol``) and ``other`` reverses."""
    conflicts = []
    for metric in METRICS:
        for fmt in formats:
            cells = sorted(k for k in first if k.endswith(f"/{fmt}"))
            for a, b in combinations(cells, 2):
                d_first = first[a][metric] - first[b][metric]
                scale = 1.0 if metric == "mean_sqnr_db" else max(abs(first[a][metric]), abs(first[b][metric]))
                if abs(d_first) > tol * scale and d_first * (other[a][metric] - other[b][metric]) < 0:
                    conflicts.append(f"{metric} {fmt}: {a} vs {b}: {first[a][metric]:.5g} vs {first[b][metric]:.5g}"
                                     f" here, {other[a][metric]:.5g} vs {other[b][metric]:.5g} there")
    return conflicts


def _ranking(report: dict, fmt: str, metric: str) -> str:
    cells = [k for k in report if k.endswith(f"/{fmt}")]
    cells.sort(key=lambda k: report[k][metric], reverse=METRICS[metric])
    return " > ".join(f"{k.split('/')[0]} ({report[k][metric]:.4g})" for k in cells)


VIDEO_METRICS = ("psnr", "traj_drift_px", "colour_drift_de", "traj_err_px", "colour_de")


def video_overlap(task: str, roots: tuple[Path, Path], methods: list[str], formats: list[str]):
    """Per cell and video metric: the interval on each class, whether they overlap, and the paired difference
    against RTN on each class with its marker. A cell counts only where both classes have its per-clip rows."""
    import pandas as pd

    from vidquant.tables import interval_table, read_runs

    tables = [interval_table(read_runs(task, root, methods, formats)[1]).set_index(["method", "format"])
              for root in roots]
    rows = []
    for key in tables[0].index.intersection(tables[1].index):
        for m in (m for m in VIDEO_METRICS if m in tables[0] and m in tables[1]):  # older runs lack some
            a, b = tables[0].loc[key], tables[1].loc[key]
            row = {"method": key[0], "format": key[1], "metric": m, "n_clips": int(a["n_clips"]),
                   "a": f"{a[m]:.4g} [{a[f'{m}_lo']:.4g}, {a[f'{m}_hi']:.4g}]",
                   "b": f"{b[m]:.4g} [{b[f'{m}_lo']:.4g}, {b[f'{m}_hi']:.4g}]",
                   "overlap": bool(a[f"{m}_lo"] <= b[f"{m}_hi"] and b[f"{m}_lo"] <= a[f"{m}_hi"])}
            if pd.notna(a.get(f"d_{m}")) and pd.notna(b.get(f"d_{m}")):
                sig = [x if isinstance(x, str) else "" for x in (a[f"d_{m}_sig"], b[f"d_{m}_sig"])]
                row.update({"d_a": f"{a[f'd_{m}']:+.3g}{sig[0]}", "d_b": f"{b[f'd_{m}']:+.3g}{sig[1]}",
                            "d_conflict": bool("*" in sig[0] and "*" in sig[1]
                                               and a[f"d_{m}"] * b[f"d_{m}"] < 0)})
            rows.append(row)
    df = pd.DataFrame(rows)
    df["d_conflict"] = df["d_conflict"].fillna(False).astype(bool) if "d_conflict" in df else False
    return df


def main(argv=None) -> int:
    from vidquant.tables import FORMATS, METHODS

    p = argparse.ArgumentParser(prog="python -m vidquant.eval.ranking", description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=["t2v", "i2v"], default="t2v")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--formats", nargs="+", choices=list(FORMATS), default=["W8A8-int8", "W4A8"])
    p.add_argument("--classes", nargs=2, default=["native", "avx2"],
                   help="two CPU classes of vidquant.quant.int8_gemm.CPU_CLASS_LIMITS")
    p.add_argument("--tol", type=float, default=0.05, help="dB (SQNR) / relative (timestep error) treated as a tie")
    p.add_argument("--video", nargs=2, metavar=("RUNS_A", "RUNS_B"),
                   help="compare the video intervals of the table cells run under two roots (two CPU classes)")
    args = p.parse_args(argv)
    if args.video:
        df = video_overlap(args.task, (Path(args.video[0]), Path(args.video[1])), args.methods, args.formats)
        if df.empty:
            p.error(f"--video: no cell has per-clip metrics under both {args.video[0]} and {args.video[1]}")
        table = df.rename(columns={"a": args.video[0], "b": args.video[1]})
        print(table.to_markdown(index=False, disable_numparse=True))
        conflicts = int(df["d_conflict"].sum())
        print(f"\n{len(df)} cell metrics: {int(df['overlap'].sum())} intervals overlap; {conflicts} significant "
              "differences against RTN reversed")
        return 1 if conflicts or not df["overlap"].all() else 0
    from vidquant.quant.int8_gemm import CPU_CLASS_LIMITS

    for label in args.classes:
        if label not in CPU_CLASS_LIMITS:
            p.error(f"--classes: got {label!r}; allowed: {', '.join(CPU_CLASS_LIMITS)}")
    reports = {label: run_class(label, args.task, args.methods, args.formats) for label in args.classes}
    for label, report in reports.items():
        for fmt in args.formats:
            for metric in METRICS:
                print(f"[{label}] {fmt} {metric}, best first: {_ranking(report, fmt, metric)}")
    first, second = (reports[c] for c in args.classes)
    conflicts = order_conflicts(first, second, args.formats, args.tol)
    worst = max(abs(first[k]["mean_sqnr_db"] - second[k]["mean_sqnr_db"]) for k in first)
    print(f"largest SQNR difference between the classes: {worst:.3g} dB")
    print("\n".join(conflicts) if conflicts else "same ranking on both CPU classes")
    return 1 if conflicts else 0


if __name__ == "__main__":
    sys.exit(main())
