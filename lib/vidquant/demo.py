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
8. float vs LLMC fake-quant vs W8A8 runtime: side-by-side mp4 + gif, metrics csv + md.

Everything lands in ``results/demo/`` (cleaned first). A few minutes on a 2-core CPU.
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

__all__ = ["DEFAULT_CONFIG", "DEFAULT_MODEL", "main", "run_demo"]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "assets/models/tiny-wan-i2v"
DEFAULT_CONFIG = "configs/quantization/video_gen/tiny_i2v/smoothquant_w_a.yaml"
DEFAULT_OUT = "results/demo"
LABELS = ("float", "LLMC fake-quant", "W8A8 runtime")

# The seed's SmoothQuant W8A8 recipe at the tiny model's sizes, used when the shipped YAML is missing.
FALLBACK_CONFIG: dict = {
    "base": {"seed": 42},
    "model": {"type": "WanI2V", "path": DEFAULT_MODEL, "torch_dtype": "torch.float32", "device": "cpu"},
    "calib": {"name": "i2v", "path": "assets/calib/tiny_i2v", "sample_steps": 8, "target_height": 64,
              "target_width": 64, "num_frames": 9, "guidance_scale": 5.0, "num_inference_steps": 20,
              "max_sequence_length": 512},
    "eval": {"eval_pos": ["pretrain", "fake_quant"], "name": "i2v", "path": "assets/eval/tiny_i2v",
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


def build_config(config_path: Path, model: Path, out: Path, device: str | None = None):
    """The shipped SmoothQuant W8A8 config (or the same one built in code), pointed at ``model`` and ``out``."""
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
        _absolute(part, "path", REPO)
        part["output_video_path"] = str(out / "llmc" / "videos")
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


def runtime_clips(model: Path, config_json: Path, samples, out: Path, device: str, dtype: str) -> list[np.ndarray]:
    """Seed step 1.4.2 once through the CLI, then every sample with the same settings and one loaded pipeline."""
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
          f"{len(samples)} eval samples")
    return [generate(pipe, settings, s.prompt, s.negative_prompt, s.image)
            for s in tqdm(samples, desc="W8A8 runtime", unit="clip")]


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


def metrics_table(samples, floats, fakes, runtimes) -> pd.DataFrame:
    """One row per (sample, model): fidelity vs the float clip and task accuracy (procedural prompts)."""
    from vidquant.eval.metrics import psnr
    from vidquant.run import video_metrics

    rows = []
    for i, (s, ref, fq, rt) in enumerate(zip(samples, floats, fakes, runtimes)):
        for label, clip in zip(LABELS, (ref, fq, rt)):
            row = {"sample": i, "prompt": s.prompt, "model": label, **video_metrics(clip, ref, s.prompt)}
            row["psnr_vs_fake_quant"] = psnr(clip, fq)
            rows.append(row)
    return pd.DataFrame(rows)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("psnr", "ssim", "flicker_error", "colour_ok", "direction_ok", "traj_drift_px",
                        "colour_drift_de", "traj_err_px", "colour_de", "psnr_vs_fake_quant")
            if c in df]
    out = df.groupby("model", sort=False)[cols].agg(lambda c: float(np.mean(c.astype(float))))
    out = out.rename(columns={"colour_ok": "colour_acc", "direction_ok": "direction_acc"})
    return out.join(_intervals(df))


def _intervals(df: pd.DataFrame) -> pd.DataFrame:
    """95 % bootstrap interval of the mean over the samples (vidquant.eval.stats), per model; a column of
    "[low, high]" per metric (a bit-identical clip's inf PSNR is left out of its interval)."""
    from vidquant.eval.stats import mean_ci

    cols = [c for c in ("psnr", "traj_drift_px", "colour_drift_de", "traj_err_px", "colour_de") if c in df]
    rows = {}
    for model, group in df.groupby("model", sort=False):
        cis = {c: mean_ci(group[c]) for c in cols}
        rows[model] = {f"{c}_ci95": f"[{iv.low:.4g}, {iv.high:.4g}]" if iv.n else "–" for c, iv in cis.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def write_results(out: Path, samples, floats, fakes, runtimes, fps: int, notes: list[str]) -> pd.DataFrame:
    from vidquant.eval.video import save_video

    rows = list(zip(floats, fakes, runtimes))
    for i, row in enumerate(rows):
        save_video(comparison_grid([row]), out / "videos" / f"sample_{i}_float_fake_w8a8.mp4", fps)
    grid = comparison_grid(rows)
    save_video(grid, out / "float_vs_quantized.mp4", fps)
    save_video(grid, out / "float_vs_quantized.gif", fps)
    df = metrics_table(samples, floats, fakes, runtimes)
    df.to_csv(out / "metrics.csv", index=False)
    summary = summary_table(df)
    md = ["# vidquant demo: float vs quantized (tiny Wan2.1 I2V)", "", *notes, "",
          "Mean over the eval samples with its 95 % bootstrap interval (`_ci95`). psnr/ssim/flicker_error, and",
          "traj_drift_px / colour_drift_de (the object's centroid distance and CIEDE2000 colour difference), are",
          "against the float clip; traj_err_px (object motion, pixels per frame) and colour_de (CIEDE2000) against",
          "the prompt; psnr_vs_fake_quant shows how closely the real W8A8 runtime follows LLMC's fake-quant model",
          "of the same export.", "",
          summary.to_markdown(floatfmt=".4g"), "", "## Per sample", "",
          df.drop(columns=["temporal_flicker", "temporal_flicker_ref"], errors="ignore")
            .to_markdown(index=False, floatfmt=".4g"), ""]
    (out / "metrics.md").write_text("\n".join(md))
    return summary


# ----------------------------------------------------------------------------------------------- driver


def _fresh(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


def _fake_quant_clips(result, cfg) -> tuple[list, list, list]:
    """Samples, float and fake-quant clips of the first eval set, from the quantize run."""
    from vidquant.calib.samples import load_samples

    ev = cfg.evals[0]
    samples = load_samples(cfg.resolve_path(ev.path), cfg.task)
    pairs = [result.videos[(ev.path, i)] for i in range(len(samples))]
    return samples, [p[0] for p in pairs], [p[1] for p in pairs]


def run_demo(model: str | Path = DEFAULT_MODEL, config: str | Path = DEFAULT_CONFIG, out: str | Path = DEFAULT_OUT,
             device: str | None = None) -> Path:
    """Run the whole workflow; returns the output directory."""
    from vidquant.export.lightx2v_export import check_lightx2v_exportable
    from vidquant.models.loading import resolve_device
    from vidquant.run import quantize

    t0 = _T0[0] = time.time()
    out, model, config = (Path(p) if Path(p).is_absolute() else REPO / p for p in (out, model, config))
    _fresh(out)
    _step(1, "model")
    model, is_random = choose_model(model, out)
    (out / "MODEL_PATH").write_text(f"{model.resolve()}\n")  # for scripts/run_wan_i2v_advanced_ptq.sh
    print(f"model: {_rel(model)}{' (RANDOM, untrained)' if is_random else ''}")
    _step(2, "quantization config")
    cfg = build_config(config, model, out, device)
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
    runtimes = runtime_clips(model, config_json, samples, out, device, dtype)
    _step(8, "float vs quantized")
    notes = [f"model: `{_rel(model)}`" + (" — **RANDOM, UNTRAINED fallback: videos are noise**" if is_random
                                          else ""),
             f"recipe: {'+'.join(vg.methods)} {vg.special}, W8A8 {scheme}; checkpoint `{_rel(converted)}`"]
    summary = write_results(out, samples, floats, fakes, runtimes, cfg.evals[0].fps, notes)
    print(summary.to_string(float_format=lambda v: f"{v:.4g}"))
    _report(out, is_random, time.time() - t0)
    return out


def _report(out: Path, is_random: bool, seconds: float) -> None:
    print(f"\ndemo finished in {seconds:.0f} s. Results in {_rel(out)}/:")
    for name, what in (("float_vs_quantized.mp4", "float | LLMC fake-quant | W8A8 runtime, every eval sample"),
                       ("float_vs_quantized.gif", "the same as a gif"),
                       ("metrics.md", "metrics table (also metrics.csv)"),
                       ("lightx2v_output.mp4", "the `vidquant infer` output (seed step 1.4.2)"),
                       ("lightx2v_converted/", "the converted quantized checkpoint"),
                       ("wan_i2v_advanced_ptq.json", "the lightx2v inference config"),
                       ("llmc/", "the quantize run: export, layer/timestep/video metrics")):
        print(f"  {name:28s} {what}")
    if is_random:
        print("  (RANDOM untrained model: see the banner above)")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``vidquant demo [--model DIR] [--config YAML] [--out DIR] [--device cpu|cuda]``."""
    p = argparse.ArgumentParser(prog="vidquant demo", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="tiny I2V pipeline directory")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="LLMC-style SmoothQuant W8A8 config")
    p.add_argument("--out", default=DEFAULT_OUT, help="output directory (deleted and rewritten)")
    p.add_argument("--device", default=None, help="default: the config's model.device")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the tiny model's matmuls gain nothing from more, and "
                   "OpenMP threads spin-waiting on a shared CPU made generation ~25x slower in our runs)")
    args = p.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    run_demo(args.model, args.config, args.out, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
