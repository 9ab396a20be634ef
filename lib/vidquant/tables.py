"""The methods × formats results table on the tiny models (`make tables`, `vidquant tables`).

Each cell is one `vidquant.run.quantize` run of the shipped tiny config with the method and format swapped in
by overrides, so every number comes from the same code path as `vidquant quantize`:

    vidquant tables --task t2v            # → results/tables/methods_formats_t2v.{csv,md}, ..._clips.csv
    vidquant tables --task t2v --full     # the eval at 32 prompts × 2 seeds (default: 8 prompts × 2 seeds)

The deterministic metrics (per-layer SQNR, teacher-forced timestep error) are the primary ranking: they
reproduce across CPUs. The video metrics are per clip (prompt × seed, ``..._clips.csv``) and each cell reports
their mean with a 95 % bootstrap interval, the noise floor (``vidquant.eval.noise``) and the paired difference
against RTN in the same format (``vidquant.eval.stats``).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vidquant.eval.intervals import (
    BASELINE,
    FIDELITY_METRICS,
    column_mean,
    interval_markdown,
    interval_table,
    paired,
)
from vidquant.eval.noise import EvalPlan
from vidquant.eval.stats import marker
from vidquant.jobs import Run, SweepError, add_job_arguments, job_options, progress_bar, run_all
from vidquant.sweep import point_config, quantize_run

FORMATS: dict[str, dict] = {
    "W8A8-int8": {"weight": {"bit": 8, "symmetric": True, "granularity": "per_channel"},
                  "act": {"bit": 8, "symmetric": True, "granularity": "per_token"}},
    "FP8-e4m3": {"weight": {"quant_type": "float-quant", "bit": "e4m3", "granularity": "per_channel",
                            "use_qtorch": True},
                 "act": {"quant_type": "float-quant", "bit": "e4m3", "granularity": "per_token", "use_qtorch": True}},
    "W6A6": {"weight": {"bit": 6, "symmetric": True, "granularity": "per_channel"},
             "act": {"bit": 6, "symmetric": True, "granularity": "per_token"}},
    "W4A8": {"weight": {"bit": 4, "symmetric": True, "granularity": "per_channel"},
             "act": {"bit": 8, "symmetric": True, "granularity": "per_token"}},
}
# The formats lightx2v runs beyond W8A8 (docs/formats.md §5), exported in its layout; act None = weight-only.
_MX = {"quant_type": "mx-quant", "granularity": "per_block", "block_size": 32}
_NV = {"quant_type": "nvfp4-quant", "bit": "e2m1", "granularity": "per_block", "block_size": 16}
_FP8T = {"quant_type": "float-quant", "bit": "e4m3", "granularity": "per_tensor"}
BLOCK_FORMATS: dict[str, dict] = {
    "MXFP8": {"weight": {**_MX, "bit": "e4m3"}, "act": {**_MX, "bit": "e4m3"}},
    "MXFP6-MXFP8": {"weight": {**_MX, "bit": "e3m2"}, "act": {**_MX, "bit": "e4m3"}},
    "MXFP4": {"weight": {**_MX, "bit": "e2m1"}, "act": {**_MX, "bit": "e2m1"}},
    "NVFP4": {"weight": _NV, "act": _NV},
    "W4A16-g128": {"weight": {"bit": 4, "symmetric": True, "granularity": "per_group", "group_size": 128},
                   "act": None},
    "FP8-pertensor": {"weight": _FP8T, "act": {**_FP8T, "static": True}},
}
FORMATS.update(BLOCK_FORMATS)
EXPORTED = {"W8A8-int8", "FP8-e4m3", *BLOCK_FORMATS}
METHODS: dict[str, list[str]] = {
    "RTN": ["RTN"],
    "SmoothQuant": ["SmoothQuant"],
    "AWQ": ["Awq"],
    "GPTQ": ["GPTQ"],
    "SQ+GPTQ": ["SmoothQuant", "GPTQ"],
}
SPECIAL = {"SmoothQuant": {"alpha": 0.75}, "Awq": {}, "GPTQ": {}, "RTN": {}}
COLUMNS = ["method", "format", "mean_sqnr_db", "min_sqnr_db", "mean_timestep_rel_err", "video_psnr", "video_ssim",
           "video_flicker_error", "video_colour_ok", "video_direction_ok", "video_float_colour_ok",
           "video_float_direction_ok", "seconds"]
DEFAULT_PROMPTS, FULL_PROMPTS, DEFAULT_SEEDS = 8, 32, (42, 43)


# The formats whose cells are also evaluated on video (32 prompts × 2 seeds each is the slow part); the others are
# ranked by the deterministic metrics alone (--video-formats changes the set).
VIDEO_FORMATS = ("W8A8-int8", "FP8-e4m3", "W4A8", "W4A16-g128", "MXFP4", "NVFP4")
EVAL_BATCH = 16  # clips per pipeline call (vidquant.generate.generate_videos): ~3x faster on a CPU


@dataclass(frozen=True)
class EvalSettings:
    """The eval behind the interval columns: the first ``prompts`` of assets/eval/tiny_<task>_32 × ``seeds``,
    with the noise floor and jitter, for the cells in ``video_formats``."""

    prompts: int = DEFAULT_PROMPTS
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    video_formats: tuple[str, ...] = VIDEO_FORMATS

    def __post_init__(self) -> None:
        if not 1 <= self.prompts <= FULL_PROMPTS:
            raise ValueError(f"--prompts: got {self.prompts}; allowed: 1..{FULL_PROMPTS}")
        EvalPlan(seeds=self.seeds)  # distinct, at least one
        unknown = [f for f in self.video_formats if f not in FORMATS]
        if unknown:
            raise ValueError(f"--video-formats: unknown {unknown}; allowed: {list(FORMATS)}")

    @property
    def label(self) -> str:
        return f"{self.prompts} prompts × {len(self.seeds)} seeds ({', '.join(map(str, self.seeds))})"


def cell_overrides(task: str, method: str, fmt: str, settings: EvalSettings | None = None,
                   model_path: str | None = None) -> dict:
    """The dotted config fields that make the shipped tiny RTN config one cell: method, format, and the eval
    (``settings``: the 32-prompt set with seeds, noise floor and jitter, or no eval for a format outside
    ``settings.video_formats``; None: the config's own eval)."""
    chain = METHODS[method]
    special = {k: v for m in chain for k, v in SPECIAL[m].items()}
    if "GPTQ" in chain and fmt in BLOCK_FORMATS:
        special["static_groups"] = True  # block grids fixed up front (actorder needs it; nvfp4 always)
    overrides = {
        "quant.video_gen.method": chain if len(chain) > 1 else chain[0],
        "quant.video_gen.weight": FORMATS[fmt]["weight"],
        "quant.video_gen.act": FORMATS[fmt]["act"],
        "quant.video_gen.special": special,
        # only what lightx2v can run is exported; W6A6 / W4A8 are simulated (fake-quant) only
        "save.save_lightx2v": fmt in EXPORTED,
    }
    if settings is not None and fmt in settings.video_formats:
        overrides.update({"eval.path": f"assets/eval/tiny_{task}_32", "eval.num_samples": settings.prompts,
                          "eval.seeds": list(settings.seeds), "eval.noise_floor": True, "eval.jitter": True,
                          "eval.bs": EVAL_BATCH})
    elif settings is not None:
        overrides["eval"] = None
    if model_path:
        overrides["model.path"] = model_path
    return overrides


def cell_config(task: str, method: str, fmt: str, out_root: Path, model_path: str | None = None,
                settings: EvalSettings | None = None, extra: dict | None = None):
    """The validated config of one cell, its outputs in :func:`cell_dir` (``extra``: more overrides, e.g.
    ``{"eval": None}`` for the deterministic metrics alone)."""
    overrides = {**cell_overrides(task, method, fmt, settings, model_path), **(extra or {})}
    return point_config(config_path(task), cell_dir(out_root, task, method, fmt).absolute(), {}, overrides)


def config_path(task: str) -> Path:
    return Path(f"configs/quantization/video_gen/tiny_{task}/rtn_w_a.yaml")


def cell_dir(out_root: Path, task: str, method: str, fmt: str) -> Path:
    """The run folder of one cell under ``out_root``."""
    return Path(out_root) / task / f"{method}_{fmt}".replace("+", "_")


def read_runs(task: str, out_root: Path, methods=None, formats=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cells table and per-clip metrics of the complete cell runs already under ``out_root`` (a run is
    complete when its summary.json exists: it is written last), without running anything. A cell without
    video eval has no per-clip rows."""
    import json

    rows, clips = [], []
    for method in methods or METHODS:
        for fmt in formats or FORMATS:
            run_dir = cell_dir(out_root, task, method, fmt)
            if not (run_dir / "summary.json").is_file():
                continue
            rows.append({**json.loads((run_dir / "summary.json").read_text()), "method": method, "format": fmt})
            if (run_dir / "video_metrics.csv").is_file() and (run_dir / "video_metrics.csv").stat().st_size > 1:
                clips.append(pd.read_csv(run_dir / "video_metrics.csv").assign(method=method, format=fmt))
    if not rows:
        raise FileNotFoundError(f"{out_root}: no complete cell run of the {task} table (summary.json)")
    df = pd.DataFrame(rows)
    clips_df = pd.concat(clips, ignore_index=True) if clips else pd.DataFrame(columns=["method", "format"])
    return df[[c for c in COLUMNS if c in df.columns]], clips_df


def build_table(task: str, out_root: Path, methods=None, formats=None, model_path: str | None = None,
                settings: EvalSettings | None = None, jobs=None, force: bool = False,
                echo=print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every (method, format) cell as a `vidquant quantize` run (`vidquant.sweep.quantize_run`: resumable,
    complete cells skipped unless ``force``), in this process or as submitit jobs (``jobs``), then read the
    cells table and the per-clip video metrics from the run folders. The float reference clips, their noise
    floor and the calibration capture are shared by every cell through the on-disk cache (``VIDQUANT_CACHE_DIR``,
    default ``<out_root>/.cache``): the first cell computes them, before the others start."""
    settings = settings or EvalSettings()
    os.environ.setdefault("VIDQUANT_CACHE_DIR", str(Path(out_root).absolute() / ".cache"))
    cells = [(m, f) for m in methods or METHODS for f in formats or FORMATS]
    pending = [Run(config_path(task), {"config": f"{m} × {f}"}, cell_dir(out_root, task, m, f)) for m, f in cells]
    overrides = {run.run_dir: cell_overrides(task, m, f, settings, model_path) for run, (m, f) in zip(pending, cells)}

    def call(run: Run) -> tuple[tuple, dict]:
        return (run.notebook.absolute(), run.run_dir.absolute(), run.params, overrides[run.run_dir]), {"force": force}

    name = f"tables-{task}"
    runs = []
    with progress_bar(len(pending), f"{task} table", unit="cell") as bar:
        for batch in (pending[:1], pending[1:]):  # the first cell fills the shared cache
            if batch:
                runs += run_all(quantize_run, batch, call, jobs, out=out_root, name=name, on_finish=None, echo=echo,
                                bar=bar)
    failed = [r for r in runs if r.status == "failed"]
    for r in failed:
        logs = f" (logs: {', '.join(map(str, r.logs))})" if getattr(r, "logs", None) else ""
        echo(f"[tables] {r.params['config']} failed: {r.error}{logs}")
    if len(failed) == len(runs):
        raise SweepError(f"every cell of the {task} table failed")
    return read_runs(task, out_root, methods, formats)


def merge_cells(old: pd.DataFrame, new: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """``old`` with the (method, format) rows of ``new`` replaced or added, in METHODS x FORMATS order (stable
    within a cell, so per-clip rows keep their order). ``columns``: the columns kept (default: COLUMNS)."""
    done = set(zip(new["method"], new["format"]))
    keep = old[[(m, f) not in done for m, f in zip(old["method"], old["format"])]]
    df = pd.concat([keep, new], ignore_index=True)
    order = {(m, f): i for i, (m, f) in enumerate((m, f) for m in METHODS for f in FORMATS)}
    df = df.iloc[sorted(range(len(df)), key=lambda i: order.get((df["method"][i], df["format"][i]), len(order)))]
    columns = columns or COLUMNS
    return df[[c for c in columns if c in df.columns]].reset_index(drop=True)


_UNITS = {"psnr": " dB", "traj_err_px": " px/frame", "colour_de": " ΔE", "traj_drift_px": " px",
          "colour_drift_de": " ΔE"}
_VERDICT_METRICS = ("psnr", "traj_drift_px", "colour_drift_de", "traj_err_px", "colour_de")
_SIG_WORDS = {"*": "real", "~": "below the noise floor or jitter", "": "not significant"}


def verdict(intervals: pd.DataFrame, cells: pd.DataFrame) -> list[str]:
    """In words, per format: the deterministic ranking (SQNR, primary) and which video differences against RTN
    are real (interval excludes 0 and beyond the jitter), with their intervals."""
    lines = []
    for fmt in dict.fromkeys(cells["format"]):
        here = cells[cells["format"] == fmt].sort_values("mean_sqnr_db", ascending=False)
        ranking = " > ".join(f"{m} ({v:.3g} dB)" for m, v in zip(here["method"], here["mean_sqnr_db"]))
        lines.append(f"{fmt}: by per-layer SQNR (deterministic, primary): {ranking}.")
        rows = intervals[(intervals["format"] == fmt) & (intervals["method"] != BASELINE)]
        for _, r in rows.iterrows():
            parts = []
            for m in (m for m in _VERDICT_METRICS if f"d_{m}" in r and pd.notna(r[f"d_{m}"])):
                mark = r[f"d_{m}_sig"] if isinstance(r[f"d_{m}_sig"], str) else ""  # "" reads back from csv as NaN
                sig = _SIG_WORDS[mark]
                parts.append(f"{m} {r[f'd_{m}']:+.3g}{_UNITS[m]} [{r[f'd_{m}_lo']:+.3g}, {r[f'd_{m}_hi']:+.3g}] "
                             f"({sig})")
            if parts:
                lines.append(f"  {r['method']} vs RTN over {int(r['n_clips'])} clips: " + "; ".join(parts) + ".")
    return lines


REFERENCE_FORMAT = "W8A8-int8"


def format_verdict(clips: pd.DataFrame, method: str = BASELINE, reference: str = REFERENCE_FORMAT) -> list[str]:
    """In words: ``method`` in each other format against ``method`` in ``reference`` (paired on the same prompts
    and seeds), for the video metrics; the marker's threshold is the larger jitter of the two cells (and, for the
    errors against the prompt, the float floor), as in :func:`interval_table`."""
    lines = []
    cells = clips[clips["method"] == method]
    for fmt in (f for f in dict.fromkeys(cells["format"]) if f != reference):
        parts, n = [], 0
        for m in _VERDICT_METRICS:
            diff = paired(clips, method, fmt, m, method, reference)
            if diff is None:
                continue
            here, there = cells[cells["format"] == fmt], cells[cells["format"] == reference]
            floors = [column_mean(here, f"jitter_{m}"), column_mean(there, f"jitter_{m}")]
            floors += [] if m in FIDELITY_METRICS else [column_mean(here, f"floor_{m}")]
            threshold = max((f for f in floors if np.isfinite(f)), default=None)
            parts.append(f"{m} {diff.mean:+.3g}{_UNITS[m]} [{diff.low:+.3g}, {diff.high:+.3g}] "
                         f"({_SIG_WORDS[marker(diff, threshold)]})")
            n = max(n, diff.n)
        if parts:
            lines.append(f"{method} {fmt} vs {method} {reference} over {n} clips: " + "; ".join(parts) + ".")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="vidquant tables", description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=["t2v", "i2v"], default="t2v")
    p.add_argument("--methods", nargs="*", choices=list(METHODS))
    p.add_argument("--formats", nargs="*", choices=list(FORMATS))
    p.add_argument("--video-formats", nargs="*", choices=list(FORMATS), default=list(VIDEO_FORMATS),
                   help="the formats whose cells are also evaluated on video (default: %(default)s); the others "
                        "get the deterministic metrics only")
    p.add_argument("--model-path")
    p.add_argument("--out", default="results/tables")
    p.add_argument("--runs", default="results/runs/tables")
    p.add_argument("--prompts", type=int, default=DEFAULT_PROMPTS,
                   help=f"eval prompts per clip set (default {DEFAULT_PROMPTS}; --full: {FULL_PROMPTS})")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="generation seeds")
    p.add_argument("--full", action="store_true", help=f"{FULL_PROMPTS} prompts (the whole eval set)")
    p.add_argument("--force", action="store_true", help="redo complete cells (default: skip them: resumable)")
    p.add_argument("--from-runs", action="store_true",
                   help="tabulate the complete cell runs already under --runs; run nothing (the settings flags "
                        "must say how they were run: they label the table)")
    add_job_arguments(p)
    args = p.parse_args(argv)
    try:
        settings = EvalSettings(FULL_PROMPTS if args.full else args.prompts, tuple(args.seeds),
                                tuple(args.video_formats))
        jobs = job_options(args)
    except (ValueError, SweepError) as e:
        p.error(str(e))  # exit code 2, before any run
    out = Path(args.out)
    stem = out / f"methods_formats_{args.task}"
    try:
        if args.from_runs:
            cells, clips = read_runs(args.task, Path(args.runs), args.methods, args.formats)
        else:
            cells, clips = build_table(args.task, Path(args.runs), args.methods, args.formats, args.model_path,
                                       settings, jobs, args.force)
    except (FileNotFoundError, SweepError) as e:
        p.error(str(e))
    if (args.methods or args.formats) and Path(f"{stem}.csv").is_file():  # a subset updates its cells
        cells = merge_cells(pd.read_csv(f"{stem}.csv"), cells)
        if Path(f"{stem}_clips.csv").is_file():
            old = pd.read_csv(f"{stem}_clips.csv")
            clips = merge_cells(old, clips, list(dict.fromkeys([*old.columns, *clips.columns])))
    write_tables(stem, args.task, cells, clips, settings)
    print(f"wrote {stem}.csv, _clips.csv, _intervals.csv and .md")
    return 0


def _format_section(clips: pd.DataFrame) -> str:
    """The markdown paragraph comparing RTN across formats (empty without two formats with per-clip rows)."""
    lines = format_verdict(clips) if len(clips) else []
    if not lines:
        return ""
    return (f"**Formats against {REFERENCE_FORMAT}** ({BASELINE} in both, paired on the same prompts and seeds; "
            "traj_drift_px / colour_drift_de: the object's centroid distance and colour difference against the "
            "float clip's object, where the float model's own error against the prompt cancels):\n\n"
            + "\n".join(f"- {line}" for line in lines) + "\n\n")


def _older_cells_note(cells: pd.DataFrame, clips: pd.DataFrame) -> str:
    """Which cells have the deterministic metrics only (no per-clip video rows: no video eval here)."""
    with_clips = set(zip(clips["method"], clips["format"])) if len(clips) else set()
    parts = []
    for fmt, group in cells.groupby("format", sort=False):
        bare = [m for m in group["method"] if (m, fmt) not in with_clips]
        if bare:
            parts.append(fmt if len(bare) == len(group) else f"{fmt} ({', '.join(bare)})")
    if not parts:
        return ""
    return (f"Deterministic metrics only (no video eval at these settings; `--video-formats` adds it): "
            f"{', '.join(parts)}.\n\n")


def without_unbacked_video(cells: pd.DataFrame, clips: pd.DataFrame) -> pd.DataFrame:
    """``cells`` with the video means blanked where no per-clip rows back them (a cell run without video eval,
    or an older run's single-seed means): a video number is only reported with its interval."""
    backed = set(zip(clips["method"], clips["format"])) if len(clips) else set()
    unbacked = [(m, f) not in backed for m, f in zip(cells["method"], cells["format"])]
    video = [c for c in cells.columns if c.startswith("video_")]
    out = cells.copy()
    out.loc[unbacked, video] = float("nan")
    return out


def write_tables(stem: Path, task: str, cells: pd.DataFrame, clips: pd.DataFrame, settings: EvalSettings) -> None:
    """The cells table, the per-clip metrics, the interval table (csv) and the markdown report."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    cells = without_unbacked_video(cells, clips)
    intervals = interval_table(clips)
    cells.to_csv(f"{stem}.csv", index=False)
    clips.to_csv(f"{stem}_clips.csv", index=False)
    intervals.to_csv(f"{stem}_intervals.csv", index=False)
    flags = "" if settings.prompts == DEFAULT_PROMPTS else f" --prompts {settings.prompts}"
    flags += "" if settings.seeds == DEFAULT_SEEDS else " --seeds " + " ".join(map(str, settings.seeds))
    md = (f"# Methods × formats on the tiny {task.upper()} model\n\n"
          f"Generated by `vidquant tables --task {task}{flags}` (each row is one `vidquant quantize` run; see "
          f"lib/vidquant/tables.py). Video eval: {settings.label}, the first prompts of "
          f"assets/eval/tiny_{task}_32.\n\n"
          "**Primary ranking: the deterministic metrics** (per-layer output SQNR on the calibration data, dB, "
          "higher is better; teacher-forced relative error of the denoiser prediction, lower is better); they "
          "reproduce across CPUs.\n\n"
          "Video metrics, per clip then averaged: `mean [95 % bootstrap interval]` over the clips. psnr / ssim / "
          "flicker_error: against the float model's clip at the same prompt and seed; traj_drift_px / "
          "colour_drift_de: the object's mean centroid distance (pixels) and CIEDE2000 colour difference against "
          "the float clip's object; traj_err_px: the object "
          "centroid's motion against the prompt's (pixels per frame); colour_de: CIEDE2000 ΔE of the object's "
          "colour against the prompt's. *floor*: the same metric for the float model with its latent nudged by one "
          "ulp after the first step (for the task errors: how far that nudge moves them) — `≤floor` marks a cell "
          "as close to the float clip as the nudged float clip itself. *jitter*: how much the cell's own metric "
          "moves when its latent is nudged by one ulp (the quantizers make generation chaotic; this is the size "
          "of a change another CPU can cause). *Δ vs RTN*: paired difference against RTN "
          "in the same format on the same prompts and seeds, `[95 % interval]`; `*` the interval excludes 0 and "
          "the difference exceeds the jitter (and, for task errors, the floor), `~` it excludes 0 but is below "
          "them, nothing: not significant.\n\n"
          + "\n".join(f"- {line.strip()}" for line in verdict(intervals, cells)) + "\n\n"
          + _format_section(clips)
          + interval_markdown(intervals, cells)
          + "\n\n## Per-cell summary (means)\n\n" + _older_cells_note(cells, clips)
          + cells.to_markdown(index=False, floatfmt=".4g") + "\n")
    Path(f"{stem}.md").write_text(md)
