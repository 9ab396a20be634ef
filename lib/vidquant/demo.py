"""`make demo`: the seed's LLMC -> lightx2v workflow, end to end, on the tiny I2V model.

1. model: ``assets/models/tiny-wan-i2v`` (falls back, loudly, to a random tiny model built under the output dir);
2. config: ``configs/quantization/video_gen/tiny_i2v/smoothquant_w_a.yaml`` (SmoothQuant alpha 0.75, W8A8 int8
   per-channel weights / per-token activations), or the same config built in code;
3. calibrate, fake-quant evaluation and lightx2v export (``vidquant quantize``);
4. convert the export to the Wan layout (``scripts/converter.py -d backward --copy_no_weight_files``);
5. verify the converted checkpoint;
6. write the lightx2v inference JSON;
7. quantized inference with the runtime: once through ``vidquant infer`` (step 1.4.2 of the seed), then every
   eval sample with the same settings;
8. float vs LLMC fake-quant vs W8A8 runtime over the 32 prompts of ``assets/eval/tiny_i2v_32`` × seeds 42 and 43
   (``--prompts``, ``--seeds``): per-clip metrics in ``metrics.csv``; in ``metrics.md`` each metric's mean with its
   95 % bootstrap interval per model and the paired difference runtime − fake-quant (same prompts and seeds,
   ``vidquant.eval.intervals``), beside the noise floor (the float model with its latent nudged by one ulp,
   ``vidquant.eval.noise``): a difference under it is marked ``~``; side-by-side mp4 + gif of the first seed's
   first 8 samples.

Everything lands in ``results/demo/`` (cleaned first); ``metrics.md`` and ``metrics.csv`` are committed. About 10
minutes on a busy 2-core CPU (``--prompts 4 --seeds 42``: under 2).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

__all__ = ["DEFAULT_CONFIG", "DEFAULT_MODEL", "DEFAULT_PROMPTS", "DEFAULT_SEEDS", "EVAL_SET", "check_plan", "main",
           "run_demo"]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "assets/models/tiny-wan-i2v"
DEFAULT_CONFIG = "configs/quantization/video_gen/tiny_i2v/smoothquant_w_a.yaml"
DEFAULT_OUT = "results/demo"
LABELS = ("float", "LLMC fake-quant", "W8A8 runtime")
FLOAT, FAKE_QUANT, RUNTIME = LABELS
NOISE_FLOOR = "noise floor"  # the float model, its latent nudged by one ulp (vidquant.eval.noise)
EVAL_SET = "assets/eval/tiny_i2v_32"  # the demo's prompts, whatever the config's eval.path
DEFAULT_PROMPTS = 32
DEFAULT_SEEDS = (42, 43)
GRID_SAMPLES = 8  # the side-by-side videos show the first seed's first 8 samples (small files)

# The seed's SmoothQuant W8A8 recipe at the tiny model's sizes, used when the shipped YAML is missing.
FALLBACK_CONFIG: dict = {
    "base": {"seed": 42},
    "model": {"type": "WanI2V", "path": DEFAULT_MODEL, "torch_dtype": "torch.float32", "device": "cpu"},
    "calib": {"name": "i2v", "path": "assets/calib/tiny_i2v", "sample_steps": 8, "target_height": 64,
              "target_width": 64, "num_frames": 9, "guidance_scale": 5.0, "num_inference_steps": 20,
              "max_sequence_length": 512},
    "eval": {"eval_pos": ["pretrain", "fake_quant"], "name": "i2v", "path": EVAL_SET,
             "target_height": 64, "target_width": 64, "num_frames": 9, "guidance_scale": 5.0,
             "num_inference_steps": 20, "max_sequence_length": 512, "output_video_path": "videos", "fps": 8},
    "quant": {"video_gen": {"method": "SmoothQuant",
                            "weight": {"bit": 8, "symmetric": True, "granularity": "per_channel"},
                            "act": {"bit": 8, "symmetric": True, "granularity": "per_token"},
                            "special": {"alpha": 0.75}}},
    "save": {"save_lightx2v": True, "save_path": "llmc"},
}


_T0 = [time.time()]


def _step(n: int, text: str) -> None:
    print(f"\n[{n}/8] {text}   (t = {time.time() - _T0[0]:.0f} s)", flush=True)


def _banner(lines: Sequence[str]) -> None:
    width = max(len(line) for line in lines) + 4
    print("\n" + "!" * width)
    for line in lines:
        print(f"! {line.ljust(width - 4)} !")
    print("!" * width, flush=True)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------------------------- steps 1-2


def choose_model(model: Path, out: Path) -> tuple[Path, bool]:
    """The trained tiny I2V model if it loads, else a random tiny one built under ``out`` (returns is_random)."""
    from vidquant.models.loading import ModelLoadError, inspect_checkpoint

    try:
        inspect_checkpoint(model)
        return model, False
    except ModelLoadError as err:
        reason = str(err)
    from vidquant.models.tiny import build_tiny_pipeline, save_tiny_pipeline

    path = out / "random-tiny-wan-i2v"
    save_tiny_pipeline(build_tiny_pipeline("i2v", seed=0), path)
    _banner([
        "NO TRAINED TINY I2V MODEL: using a RANDOM, UNTRAINED tiny Wan I2V model instead.",
        f"reason: {reason[:100]}",
        f"built: {_rel(path)} (same architecture and sizes as the shipped model)",
        "The workflow and the float-vs-quantized agreement are real; the videos are noise and the",
        f"task accuracy is meaningless. Train the model ('vidquant train-tiny') into {DEFAULT_MODEL}.",
    ])
    return path, True


def _absolute(raw: dict, key: str, root: Path) -> None:
    """Make a relative path field absolute against the repository, so the demo runs from any directory."""
    value = raw.get(key)
    if value and not Path(value).is_absolute():
        raw[key] = str(root / value)


def _parts(section) -> list[dict]:
    """A config section that may be one mapping or a list of them (eval), as a list."""
    if not section:
        return []
    return section if isinstance(section, list) else [section]


def check_plan(prompts: int, seeds: Sequence[int]) -> None:
    """Refuse an eval plan the demo cannot run (``--prompts``, ``--seeds``), before any work, with a ValueError
    whose message names the option and what is allowed."""
    from vidquant.calib.samples import load_samples
    from vidquant.config import MAX_SEED

    available = len(load_samples(REPO / EVAL_SET, "i2v"))
    if isinstance(prompts, bool) or not isinstance(prompts, int) or not 1 <= prompts <= available:
        raise ValueError(f"--prompts: got {prompts!r}; expected an integer in 1..{available} (the prompts of "
                         f"{EVAL_SET})")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED for s in seeds):
        raise ValueError(f"--seeds: got {list(seeds)}; expected one or more integers in 0..2**63-1")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: got {list(seeds)}; expected distinct seeds (a repeated seed repeats its clips)")


def build_config(config_path: Path, model: Path, out: Path, device: str | None = None,
                 prompts: int = DEFAULT_PROMPTS, seeds: Sequence[int] = DEFAULT_SEEDS):
    """The shipped SmoothQuant W8A8 config (or the same one built in code), pointed at ``model`` and ``out``, its
    eval section at the first ``prompts`` samples of :data:`EVAL_SET` × ``seeds`` (I2V batches the seeds of one
    sample: ``eval.bs`` is their number)."""
    from vidquant.config import parse_config

    if config_path.is_file():
        raw, source = yaml.safe_load(config_path.read_text()), str(config_path)
        print(f"config: {_rel(config_path)}")
    else:
        raw, source = json.loads(json.dumps(FALLBACK_CONFIG)), None
        print(f"config: {_rel(config_path)} not found; using the same SmoothQuant W8A8 recipe built in code")
    raw["model"]["path"] = str(model)
    if device is not None:
        raw["model"]["device"] = device
    for part in _parts(raw.get("calib")):
        _absolute(part, "path", REPO)
    for part in _parts(raw.get("eval")):
        part.update(path=str(REPO / EVAL_SET), num_samples=prompts, seeds=list(seeds), bs=len(seeds),
                    output_video_path=str(out / "llmc" / "videos"), noise_floor=True, jitter=True)
    raw["save"] = {**raw.get("save", {}), "save_lightx2v": True, "save_path": str(out / "llmc"), "overwrite": True}
    return parse_config(raw, source=source)


# ----------------------------------------------------------------------------------------------- steps 4-7


def convert_export(export: Path, converted: Path) -> None:
    """The seed's step 1.4.1, through the same entry point as ``scripts/converter.py``."""
    from vidquant.export.converter import main as converter_main

    argv = ["-s", str(export), "-o", str(converted), "-d", "backward", "--copy_no_weight_files", "--overwrite"]
    print("python scripts/converter.py " + " ".join(argv))
    if converter_main(argv) != 0:
        raise RuntimeError(f"converter failed on {export}")


def verify_checkpoint(converted: Path) -> None:
    from vidquant.export.verify import inspect_checkpoint

    problems, summary = inspect_checkpoint(converted)
    for p in problems:
        print(f"  {p}")
    if problems:
        raise RuntimeError(f"{converted}: {len(problems)} problem(s) found by verify")
    print(f"OK: {summary['layout']} layout, {summary['blocks']} blocks, I2V={summary['i2v']}, "
          f"{summary['tensors']} tensors, advanced_ptq={summary['advanced_ptq']}")


def write_infer_config(path: Path, cfg, converted: Path, scheme: str) -> dict:
    """lightx2v JSON with the eval section's generation settings, so runtime clips match the eval clips."""
    from vidquant.export.lightx2v_config import write_lightx2v_config

    ev = cfg.evals[0]
    config = write_lightx2v_config(
        path, task="i2v", scheme=scheme, quantized_ckpt=converted, vocabulary="both",
        infer_steps=ev.num_inference_steps, target_height=ev.target_height, target_width=ev.target_width,
        target_video_length=ev.num_frames, guidance_scale=ev.guidance_scale, seed=cfg.base.seed, fps=ev.fps)
    config["text_len"] = ev.max_sequence_length  # diffusers' I2V needs 512 (lightx2v's default text_len)
    path.write_text(json.dumps(config, indent=4) + "\n")
    print(json.dumps(config, indent=2))
    return config


def _infer_argv(model: Path, config_json: Path, sample, video: Path, device: str, dtype: str) -> list[str]:
    return ["--model_cls", "wan2.1", "--task", "i2v", "--model_path", str(model), "--config_json",
            str(config_json), "--prompt", sample.prompt, "--negative_prompt", sample.negative_prompt,
            "--image_path", str(sample.image), "--save_video_path", str(video), "--device", device,
            "--dtype", dtype]


def runtime_clips(model: Path, config_json: Path, samples, seeds: Sequence[int], out: Path, device: str,
                  dtype: str) -> dict[int, list[np.ndarray]]:
    """Seed step 1.4.2 once through the CLI, then every sample at every seed (``{seed: [clip per sample]}``) with
    the same settings and one loaded pipeline: each clip's noise comes from its own seed, as its fake-quant and
    float twins'."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    from vidquant.export.lightx2v_config import read_lightx2v_config
    from vidquant.runtime.infer import generate, load_runtime_pipeline, resolve_settings
    from vidquant.runtime.infer import main as infer_main

    argv = _infer_argv(model, config_json, samples[0], out / "lightx2v_output.mp4", device, dtype)
    print("vidquant infer " + shlex.join(argv))
    if infer_main(argv) != 0:
        raise RuntimeError("vidquant infer failed")
    settings = resolve_settings(read_lightx2v_config(config_json), config_path=config_json, task="i2v",
                                model_path=model, device=device, dtype=dtype)
    pipe = load_runtime_pipeline(settings)
    print(f"runtime: {pipe.transformer.quant_info.num_linears} W8A8Linear ({settings.scheme}); generating "
          f"{len(samples)} eval samples × {len(seeds)} seed(s)")
    clips: dict[int, list[np.ndarray]] = {seed: [] for seed in seeds}
    with tqdm(total=len(samples) * len(seeds), desc="W8A8 runtime", unit="clip") as bar:
        for seed in seeds:
            seeded = replace(settings, seed=seed)
            for s in samples:
                clips[seed].append(generate(pipe, seeded, s.prompt, s.negative_prompt, s.image))
                bar.update()
    return clips


# ----------------------------------------------------------------------------------------------- step 8


def _label_strip(widths: Sequence[int], gap: int, height: int = 12) -> np.ndarray:
    """A black strip with one white label per column (PIL's built-in bitmap font)."""
    from PIL import Image, ImageDraw

    total = sum(widths) + gap * (len(widths) - 1)
    image = Image.new("RGB", (total, height))
    draw = ImageDraw.Draw(image)
    x = 0
    for label, w in zip(LABELS, widths):
        draw.text((x + 1, 0), label if len(label) * 6 <= w else label.split()[-1], fill=(255, 255, 255))
        x += w + gap
    return np.asarray(image, dtype=np.float32) / 255.0


def comparison_grid(rows: Sequence[Sequence[np.ndarray]], gap: int = 2) -> np.ndarray:
    """float | fake-quant | runtime per sample, samples stacked, with a label strip on top."""
    from vidquant.eval.video import side_by_side

    strips = [side_by_side(*row, gap=gap) for row in rows]
    frames, _, width, _ = strips[0].shape
    bar = np.ones((frames, gap, width, 3), dtype=np.float32)
    labels = _label_strip([c.shape[2] for c in rows[0]], gap)
    parts = [np.broadcast_to(labels, (frames, *labels.shape))]
    for strip in strips:
        parts += [bar, strip]
    return np.concatenate(parts, axis=1)


Clips = dict[int, list[np.ndarray]]  # {seed: [clip per eval sample]}

# Per-clip metrics summarised beside vidquant.eval.intervals.INTERVAL_METRICS: the runtime's distance to the
# fake-quant clip and the task accuracies (fractions of clips), each mean with its interval.
EXTRA_METRICS = {"psnr_vs_fake_quant": "psnr_vs_fake_quant", "colour_ok": "colour_acc",
                 "direction_ok": "direction_acc"}


def metrics_table(samples, clips: dict[str, Clips], noise: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (seed, sample, model) for ``clips`` ``{label: {seed: [clip per sample]}}``: fidelity against
    the float clip of the same prompt and seed, task accuracy and errors against the prompt (procedural prompts),
    and the PSNR against the fake-quant clip. ``noise``: the quantize run's per-clip rows (``RunResult.
    video_metrics``); their ``floor_*`` columns (a property of the prompt and seed) go on every model's row, their
    ``jitter_*`` columns (the fake-quant model's) on the fake-quant rows."""
    from vidquant.eval.metrics import psnr
    from vidquant.run import video_metrics

    rows = []
    for seed, floats in clips[FLOAT].items():
        for i, (s, ref) in enumerate(zip(samples, floats)):
            fq = clips[FAKE_QUANT][seed][i]
            for label in LABELS:
                clip = clips[label][seed][i]
                rows.append({"sample": i, "seed": seed, "prompt": s.prompt, "model": label,
                             **video_metrics(clip, ref, s.prompt), "psnr_vs_fake_quant": psnr(clip, fq)})
    df = pd.DataFrame(rows)
    if noise is None or not len(noise):
        return df
    key = ["seed", "sample"]
    floor = noise[key + [c for c in noise if c.startswith("floor_")]]
    jitter = noise[key + [c for c in noise if c.startswith("jitter_")]].assign(model=FAKE_QUANT)
    return df.merge(floor, on=key, how="left").merge(jitter, on=[*key, "model"], how="left")


def _fmt(x: float, spec: str = ".4g") -> str:
    return format(x, spec) if pd.notna(x) and np.isfinite(x) else "–"


def _interval(mean: float, low: float, high: float) -> str:
    return "–" if not np.isfinite(mean) else f"{_fmt(mean)} [{_fmt(low)}, {_fmt(high)}]"


def summary_tables(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """From :func:`metrics_table`: per model, each metric's mean with its 95 % bootstrap interval; and per model
    the paired difference ``model - LLMC fake-quant`` over the same (prompt, seed) clips with its interval and
    marker (``*``: the interval excludes 0). The statistics are :func:`vidquant.eval.intervals.interval_table`'s
    (one cell per model), the extra metrics' intervals :func:`vidquant.eval.stats.mean_ci`."""
    from vidquant.eval.intervals import INTERVAL_METRICS, interval_table

    table = interval_table(df.assign(method=df["model"], format="", eval=EVAL_SET), baseline=FAKE_QUANT)
    table = table.set_index("method")
    metrics = [m for m in INTERVAL_METRICS if m in table]
    means: dict[str, dict] = {}
    for model, clips in df.groupby("model", sort=False):
        r = table.loc[model]
        means[model] = {"clips": len(clips), **{m: _interval(r[m], r[f"{m}_lo"], r[f"{m}_hi"])
                                                + (" ≤floor" if model != FLOAT and _at_floor(r, m) else "")
                                                for m in metrics}}
        means[model].update({name: _column_interval(clips, column) for column, name in EXTRA_METRICS.items()
                             if column in clips})
    floors = df[df["model"] == FLOAT]  # one row per clip
    if any(f"floor_{m}" in floors for m in metrics):
        means[NOISE_FLOOR] = {"clips": len(floors), **{m: _column_interval(floors, f"floor_{m}") for m in metrics}}
    diffs = {f"{model} − {FAKE_QUANT}": {m: _difference(table.loc[model], m) for m in metrics}
             for model in (RUNTIME, FLOAT) if model in table.index}
    return (pd.DataFrame.from_dict(means, orient="index").rename_axis("model").fillna("–"),
            pd.DataFrame.from_dict(diffs, orient="index").rename_axis("paired difference"))


def _at_floor(row: pd.Series, metric: str) -> bool:
    flag = row.get(f"{metric}_at_floor")
    return isinstance(flag, (bool, np.bool_)) and bool(flag)


def _column_interval(df: pd.DataFrame, column: str) -> str:
    """``mean [low, high]`` of a per-clip column (``–`` where the column is absent)."""
    from vidquant.eval.stats import mean_ci

    if column not in df:
        return "–"
    iv = mean_ci(df[column].astype(float))
    return _interval(iv.mean, iv.low, iv.high)


def _difference(row: pd.Series, metric: str) -> str:
    """``Δ [lo, hi] marker`` of an interval_table row, ``–`` where there is none (PSNR of float vs float is inf)."""
    if pd.isna(row.get(f"d_{metric}")):
        return "–"
    sig = row[f"d_{metric}_sig"] if isinstance(row[f"d_{metric}_sig"], str) else ""
    return f"{row[f'd_{metric}']:+.3g} [{row[f'd_{metric}_lo']:+.3g}, {row[f'd_{metric}_hi']:+.3g}]{sig}"


def _explanation(n_prompts: int, seeds: Sequence[int], n_grid: int) -> list[str]:
    """What metrics.md measures, as markdown lines."""
    return [
        f"- Clips: the first {n_prompts} prompts of `{EVAL_SET}` × seeds {', '.join(map(str, seeds))} = "
        f"{n_prompts * len(seeds)} clips per model; the three models' clips of a (prompt, seed) start from the same "
        "image and noise (float and fake-quant: a sample's seeds in one batch, equal to one clip per call up to the "
        "last bits; runtime: one clip per call).",
        "- `psnr` (dB), `ssim`, `flicker_error`: against the float clip (the float clip against itself: PSNR "
        "infinite, `–`); `traj_drift_px` / `colour_drift_de`: the object's centroid distance (pixels) and "
        "CIEDE2000 colour difference against the float clip's object. `traj_err_px` (object motion, pixels per "
        "frame) and `colour_de` (CIEDE2000): against the prompt. `psnr_vs_fake_quant`: against LLMC's fake-quant "
        "clip of the same export, i.e. how faithfully the real W8A8 runtime runs what LLMC simulated. "
        "`colour_acc` / `direction_acc`: fraction of clips whose "
        "detected colour / direction is the prompt's. Higher is better for psnr and ssim, lower for the errors.",
        "- Each cell: the mean over the clips with its 95 % bootstrap interval `[low, high]` (BCa, "
        "`vidquant.eval.stats`; non-finite values left out). Generation is chaotic, so one clip's number is a "
        "draw: compare intervals, not single clips.",
        f"- `{NOISE_FLOOR}`: the float model with its latent nudged by one ulp after the first step, a change no "
        "quantizer should be judged by: for psnr / ssim / flicker_error / the drifts, the nudged float clip "
        "against the float clip; for traj_err_px / colour_de, how far the nudge moves the error against the "
        "prompt. `≤floor`: the model is as close to the float clip as the nudged float clip is.",
        f"- Per-clip rows: `metrics.csv`. Videos (`float_vs_quantized.mp4` / `.gif`): the first {n_grid} samples "
        f"of seed {seeds[0]}.",
    ]


def write_results(out: Path, samples, clips: dict[str, Clips], fps: int, notes: list[str],
                  noise: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Videos of the first seed's first :data:`GRID_SAMPLES` samples, per-clip ``metrics.csv`` and the summary
    ``metrics.md``; returns the two summary tables (:func:`summary_tables`). ``noise``: the quantize run's
    per-clip rows, for the noise floor and the fake-quant model's jitter (:func:`metrics_table`)."""
    from vidquant.eval.video import save_video

    seeds = list(clips[FLOAT])
    rows = [tuple(clips[label][seeds[0]][i] for label in LABELS) for i in range(min(GRID_SAMPLES, len(samples)))]
    for i, row in enumerate(rows):
        save_video(comparison_grid([row]), out / "videos" / f"sample_{i}_float_fake_w8a8.mp4", fps)
    grid = comparison_grid(rows)
    save_video(grid, out / "float_vs_quantized.mp4", fps)
    save_video(grid, out / "float_vs_quantized.gif", fps)
    df = metrics_table(samples, clips, noise)
    df.to_csv(out / "metrics.csv", index=False)
    means, diffs = summary_tables(df)
    md = ["# vidquant demo: float vs quantized (tiny Wan2.1 I2V)", "", *notes, "",
          *_explanation(len(samples), seeds, len(rows)), "",
          "## Mean [95 % interval] per model", "", means.to_markdown(), "",
          f"## Paired differences against {FAKE_QUANT} (same prompts and seeds)", "",
          "Mean of the per-clip difference with its 95 % bootstrap interval; `*`: the interval excludes 0 and the "
          "difference exceeds the fake-quant model's jitter (how much its own metric moves when its latent is "
          f"nudged by one ulp, on the first seed's first clips) and, for traj_err_px / colour_de, the {NOISE_FLOOR}; "
          "`~`: it excludes 0 but is under them (real at this sample size, but no larger than a one-ulp nudge's "
          "effect); no mark: it covers 0 (no difference shown).", "",
          diffs.to_markdown(), ""]
    (out / "metrics.md").write_text("\n".join(md))
    return means, diffs


# ----------------------------------------------------------------------------------------------- driver


def _fresh(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


def _fake_quant_clips(result, cfg) -> tuple[list, Clips, Clips]:
    """Samples, float and fake-quant clips (``{seed: [clip per sample]}``) of the first eval set, from the
    quantize run (``RunResult.seed_videos``: every seed's pairs)."""
    from vidquant.run import load_eval_samples

    ev, samples = load_eval_samples(cfg)[0]
    pairs = {seed: [result.seed_videos[(ev.path, seed, i)] for i in range(len(samples))]
             for seed in ev.seeds or [cfg.base.seed]}
    return (samples, {seed: [p[0] for p in ps] for seed, ps in pairs.items()},
            {seed: [p[1] for p in ps] for seed, ps in pairs.items()})


def run_demo(model: str | Path = DEFAULT_MODEL, config: str | Path = DEFAULT_CONFIG, out: str | Path = DEFAULT_OUT,
             device: str | None = None, prompts: int = DEFAULT_PROMPTS, seeds: Sequence[int] = DEFAULT_SEEDS) -> Path:
    """Run the whole workflow on the first ``prompts`` samples of :data:`EVAL_SET` × ``seeds``; returns the output
    directory. A bad ``prompts`` / ``seeds`` raises ValueError before anything is written."""
    from vidquant.export.lightx2v_export import check_lightx2v_exportable
    from vidquant.models.loading import resolve_device
    from vidquant.run import quantize

    check_plan(prompts, seeds)
    t0 = _T0[0] = time.time()
    out, model, config = (Path(p) if Path(p).is_absolute() else REPO / p for p in (out, model, config))
    _fresh(out)
    _step(1, "model")
    model, is_random = choose_model(model, out)
    (out / "MODEL_PATH").write_text(f"{model.resolve()}\n")  # for scripts/run_wan_i2v_advanced_ptq.sh
    print(f"model: {_rel(model)}{' (RANDOM, untrained)' if is_random else ''}")
    _step(2, "quantization config")
    cfg = build_config(config, model, out, device, prompts, seeds)
    vg = cfg.quant.video_gen
    scheme = check_lightx2v_exportable(vg)
    device = str(resolve_device(cfg.model.device))
    dtype = str(cfg.model.torch_dtype).removeprefix("torch.").replace("auto", "bfloat16")
    print(f"{'+'.join(vg.methods)} {vg.special}, weights {vg.weight.label} {vg.weight.granularity}, "
          f"activations {vg.act.label} {vg.act.granularity} -> lightx2v {scheme}")
    _step(3, "calibrate, evaluate the fake-quant model, export for lightx2v (vidquant quantize)")
    result = quantize(cfg)  # its progress bars: calibration capture, blockwise PTQ, clips
    print(f"export: {_rel(result.export_dir)}; mean layer SQNR {result.summary.get('mean_sqnr_db', float('nan')):.1f}"
          f" dB, fake-quant video PSNR {result.summary.get('video_psnr', float('nan')):.1f} dB")
    _step(4, "convert to the lightx2v (Wan) layout")
    converted = out / "lightx2v_converted"
    convert_export(result.export_dir, converted)
    _step(5, "verify the converted checkpoint")
    verify_checkpoint(converted)
    _step(6, "lightx2v inference config")
    config_json = out / "wan_i2v_advanced_ptq.json"
    write_infer_config(config_json, cfg, converted, scheme)
    _step(7, "quantized inference with the W8A8 runtime")
    samples, floats, fakes = _fake_quant_clips(result, cfg)
    runtimes = runtime_clips(model, config_json, samples, list(floats), out, device, dtype)
    _step(8, "float vs quantized")
    notes = [f"model: `{_rel(model)}`" + (" — **RANDOM, UNTRAINED fallback: videos are noise**" if is_random
                                          else ""),
             f"recipe: {'+'.join(vg.methods)} {vg.special}, W8A8 {scheme}; checkpoint `{_rel(converted)}`"]
    clips = {FLOAT: floats, FAKE_QUANT: fakes, RUNTIME: runtimes}
    means, diffs = write_results(out, samples, clips, cfg.evals[0].fps, notes, result.video_metrics)
    print(means.to_string(), diffs.to_string(), sep="\n\n")
    _report(out, is_random, time.time() - t0)
    return out


def _report(out: Path, is_random: bool, seconds: float) -> None:
    print(f"\ndemo finished in {seconds:.0f} s. Results in {_rel(out)}/:")
    grid = f"float | LLMC fake-quant | W8A8 runtime, the first {GRID_SAMPLES} samples of the first seed"
    for name, what in (("float_vs_quantized.mp4", grid),
                       ("float_vs_quantized.gif", "the same as a gif"),
                       ("metrics.md", "means with 95 % intervals, paired differences"),
                       ("metrics.csv", "one row per clip and model"),
                       ("lightx2v_output.mp4", "the `vidquant infer` output (seed step 1.4.2)"),
                       ("lightx2v_converted/", "the converted quantized checkpoint"),
                       ("wan_i2v_advanced_ptq.json", "the lightx2v inference config"),
                       ("llmc/", "the quantize run: export, layer/timestep/video metrics")):
        print(f"  {name:28s} {what}")
    if is_random:
        print("  (RANDOM untrained model: see the banner above)")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``vidquant demo [--model DIR] [--config YAML] [--out DIR] [--device cpu|cuda] [--prompts N]
    [--seeds S ...]``; a bad option exits with status 2 and a one-line message, before any work."""
    p = argparse.ArgumentParser(prog="vidquant demo", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="tiny I2V pipeline directory")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="LLMC-style SmoothQuant W8A8 config")
    p.add_argument("--out", default=DEFAULT_OUT, help="output directory (deleted and rewritten)")
    p.add_argument("--device", default=None, help="default: the config's model.device")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the tiny model's matmuls gain nothing from more, and "
                   "OpenMP threads spin-waiting on a shared CPU made generation ~25x slower in our runs)")
    p.add_argument("--prompts", type=int, default=DEFAULT_PROMPTS,
                   help=f"eval prompts: the first N of {EVAL_SET} (default {DEFAULT_PROMPTS})")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), metavar="S",
                   help="generation seeds of every eval clip (default: %(default)s); quick run: "
                   "--prompts 4 --seeds 42")
    args = p.parse_args(argv)
    try:
        check_plan(args.prompts, args.seeds)
    except ValueError as err:
        p.error(str(err))  # exit status 2
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    run_demo(args.model, args.config, args.out, args.device, args.prompts, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
