"""One config, end to end — what `vidquant quantize` and `scripts/run_llmc.sh` run (llmc_reference §0):

validate → load the float pipeline → float reference videos → calibration capture → blockwise PTQ →
lightx2v export (from the calibrated float weights) → fake-quant deploy → per-layer, per-timestep and video
metrics → tables and clips under `save.save_path`.

Each step is a plain function a notebook can call on its own; `quantize` strings them together.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vidquant.algos.deploy import deploy_fake_quant
from vidquant.algos.engine import BlockwiseResult, build_algorithms, run_blockwise
from vidquant.cache import cached_capture, cached_clips
from vidquant.calib.capture import CalibData
from vidquant.calib.samples import Sample, load_samples
from vidquant.config import Config
from vidquant.eval.denoiser import denoiser_outputs, timestep_errors
from vidquant.eval.video import save_video, side_by_side
from vidquant.export.lightx2v_export import EXPORT_DIRNAME, check_lightx2v_exportable, export_lightx2v
from vidquant.generate import GenParams, generate_video
from vidquant.models.loading import check_task, inspect_checkpoint, load_pipeline, resolve_device, resolve_dtype
from vidquant.quant import build_quantizer

__all__ = ["RunResult", "quantize", "seed_all", "build_quantizers", "prepare", "load_eval_samples",
           "video_metrics", "write_tables"]

log = logging.getLogger("vidquant")


@dataclass
class RunResult:
    config: Config
    out_dir: Path
    layer_metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    timestep_metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    video_metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    export_dir: Path | None = None
    summary: dict = field(default_factory=dict)
    blockwise: BlockwiseResult | None = None
    videos: dict = field(default_factory=dict)


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (LLMC re-seeds before every eval position too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_quantizers(cfg: Config):
    vg = cfg.quant.video_gen
    return build_quantizer(vg.weight), (build_quantizer(vg.act) if vg.act is not None else None)


def prepare(cfg: Config) -> dict:
    """Every check that can fail before expensive work: config ↔ export, checkpoint, sample sets."""
    info = inspect_checkpoint(cfg.resolve_path(cfg.model.path))
    check_task(info, cfg.model.type)
    checks = {"checkpoint": info}
    if cfg.save.save_lightx2v:
        checks["scheme"] = check_lightx2v_exportable(cfg.quant.video_gen)
        _check_output(cfg.resolve_path(cfg.save.save_path) / EXPORT_DIRNAME, cfg.save.overwrite)
    if cfg.calib is not None:
        checks["calib_samples"] = load_samples(cfg.resolve_path(cfg.calib.path), cfg.task)
    checks["eval_samples"] = [load_samples(cfg.resolve_path(ev.path), cfg.task) for ev in cfg.evals]
    build_quantizers(cfg)
    return checks


def _check_output(path: Path, overwrite: bool) -> None:
    """Refuse an existing export (unless overwrite) or an unwritable location before any work is done."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: export directory already exists (set save.overwrite: true to replace it)")
    parent = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"{parent}: not writable (save.save_path)")


def load_eval_samples(cfg: Config) -> list[tuple]:
    """Each eval section with its samples: the first `eval.num_samples` of the set when that is set."""
    out = []
    for ev in cfg.evals:
        samples = load_samples(cfg.resolve_path(ev.path), cfg.task)
        out.append((ev, samples[: ev.num_samples] if ev.num_samples else samples))
    return out


_WORDS = {
    "colour": ("red", "green", "blue", "yellow"),
    "shape": ("square", "circle"),
    "direction": ("left", "right", "up", "down"),
}


def _task_spec(prompt: str) -> dict | None:
    """Attributes of a procedural prompt ('a red square moving left ...'), None for other prompts."""
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    spec = {}
    for attr, vocab in _WORDS.items():
        hits = [w for w in vocab if w in words]
        if len(hits) != 1:
            return None
        spec[attr] = hits[0]
    return spec


def video_metrics(clip: np.ndarray, reference: np.ndarray, prompt: str) -> dict:
    """Fidelity against the float clip, plus task accuracy when the prompt is a procedural one."""
    from vidquant.eval.metrics import video_fidelity
    from vidquant.eval.task import detect

    row = dict(video_fidelity(clip, reference))
    spec = _task_spec(prompt)
    if spec is not None:
        det, ref = detect(clip), detect(reference)
        row.update(colour_ok=det.colour == spec["colour"], direction_ok=det.direction == spec["direction"],
                   float_colour_ok=ref.colour == spec["colour"], float_direction_ok=ref.direction == spec["direction"])
    return row


def _generate_all(pipe, samples: list[Sample], params: GenParams, seed: int, progress: bool = False,
                  desc: str = "clips") -> list[np.ndarray]:
    from tqdm.auto import tqdm

    seed_all(seed)
    return [generate_video(pipe, s, params) for s in tqdm(samples, desc=desc, disable=not progress)]


def quantize(cfg: Config, progress: bool = True, out_dir: str | Path | None = None,
             stream: bool | None = None) -> RunResult:
    """Run a config end to end and write its results under `save.save_path` (or `out_dir`). `stream`: one block
    in memory at a time (vidquant.stream.quantize_streaming); None = when the weights exceed available memory."""
    t0 = time.time()
    checks = prepare(cfg)
    if stream is not False:
        from vidquant import stream as streaming

        if stream or streaming.weights_exceed_memory(checks["checkpoint"].path / "transformer",
                                                     resolve_dtype(cfg.model.torch_dtype)):
            return streaming.quantize_streaming(cfg, checks, progress, out_dir)
    out = Path(out_dir or cfg.resolve_path(cfg.save.save_path))
    out.mkdir(parents=True, exist_ok=True)
    result = RunResult(cfg, out)
    device = resolve_device(cfg.model.device)
    seed_all(cfg.base.seed)
    pipe = load_pipeline(checks["checkpoint"].path, cfg.model.type, cfg.model.torch_dtype, device)
    wq, aq = build_quantizers(cfg)
    vg = cfg.quant.video_gen

    evals = load_eval_samples(cfg)
    reference = {}
    for ev, samples in evals:
        params = GenParams.from_section(ev, cfg.base.seed)
        reference[ev.path] = cached_clips(pipe, samples, params, cfg.base.seed, progress=progress)  # once

    calib: CalibData | None = None
    float_preds = None
    if cfg.calib is not None:
        params = GenParams.from_section(cfg.calib, cfg.base.seed)
        calib = cached_capture(pipe, checks["calib_samples"], params, cfg.calib.sample_steps,
                               cfg.calib.step_selection, progress)
        float_preds = denoiser_outputs(pipe.transformer, calib, device)
        algos = build_algorithms(vg.methods, vg.special_for)
        result.blockwise = run_blockwise(pipe.transformer, calib, algos, wq, aq, device, vg.quant_out, progress)
        result.layer_metrics = result.blockwise.layer_metrics
    qparams = result.blockwise.weight_qparams if result.blockwise else {}

    if cfg.save.save_lightx2v:
        scale_dtype = torch.float32 if cfg.save.weight_scale_dtype == "float32" else torch.bfloat16
        result.export_dir = export_lightx2v(pipe.transformer, wq, out, weight_qparams=qparams,
                                            scale_dtype=scale_dtype, max_shard_size=cfg.save.max_shard_size,
                                            overwrite=cfg.save.overwrite)

    deploy_fake_quant(pipe.transformer, wq, aq, qparams)
    if calib is not None:
        quant_preds = denoiser_outputs(pipe.transformer, calib, device)
        result.timestep_metrics = timestep_errors(float_preds, quant_preds, calib)

    rows = []
    for ev, samples in evals:
        params = GenParams.from_section(ev, cfg.base.seed)
        clips = _generate_all(pipe, samples, params, cfg.base.seed, progress, "fake-quant clips")
        video_dir = cfg.resolve_path(ev.output_video_path)
        for i, (clip, ref, sample) in enumerate(zip(clips, reference[ev.path], samples)):
            if "pretrain" in ev.eval_pos or "transformed" in ev.eval_pos:
                save_video(ref, video_dir / f"pretrain_output_{i}.mp4", ev.fps)
            save_video(clip, video_dir / f"fake_quant_output_{i}.mp4", ev.fps)
            save_video(side_by_side(ref, clip), video_dir / f"float_vs_fake_quant_{i}.mp4", ev.fps)
            rows.append({"eval": ev.path, "sample": i, "prompt": sample.prompt,
                         **video_metrics(clip, ref, sample.prompt)})
            result.videos[(ev.path, i)] = (ref, clip)
    result.video_metrics = pd.DataFrame(rows)
    result.summary = summarize(result, time.time() - t0)
    write_tables(result)
    return result


def summarize(result: RunResult, seconds: float) -> dict:
    cfg = result.config
    vg = cfg.quant.video_gen
    s = {
        "model": cfg.model.path, "task": cfg.task, "method": "+".join(vg.methods),
        "weight": vg.weight.label, "act": vg.act.label if vg.act else "none",
        "seconds": round(seconds, 2),
    }
    lm, tm, vm = result.layer_metrics, result.timestep_metrics, result.video_metrics
    if not lm.empty:
        s.update(mean_sqnr_db=float(lm["sqnr_db"].mean()), min_sqnr_db=float(lm["sqnr_db"].min()))
    if not tm.empty:
        s.update(mean_timestep_rel_err=float(tm["rel_err"].mean()))
    if not vm.empty:
        for col in ("psnr", "ssim", "flicker_error", "colour_ok", "direction_ok", "float_colour_ok",
                    "float_direction_ok"):
            if col in vm:
                s[f"video_{col}"] = float(vm[col].astype(float).mean())
    if result.export_dir is not None:
        s["export_dir"] = str(result.export_dir)
    return s


def write_tables(result: RunResult) -> None:
    out = result.out_dir
    for name, df in (("layer_metrics", result.layer_metrics), ("timestep_metrics", result.timestep_metrics),
                     ("video_metrics", result.video_metrics)):
        if not df.empty:
            df.to_csv(out / f"{name}.csv", index=False)
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2, sort_keys=True) + "\n")
