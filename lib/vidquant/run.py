"""One config, end to end — what `vidquant quantize` and `scripts/run_llmc.sh` run (llmc_reference §0):

validate → load the float pipeline → float reference videos → calibration capture → blockwise PTQ →
lightx2v export (from the calibrated float weights) → fake-quant deploy → per-layer, per-timestep and video
metrics → tables and clips under `save.save_path`.

Each step is a plain function a notebook can call on its own; `quantize` strings them together.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vidquant.algos.deploy import deploy_fake_quant
from vidquant.algos.engine import BlockwiseResult, build_algorithms, run_blockwise
from vidquant.cache import cached_capture, cached_clips
from vidquant.calib.capture import CalibData, capture_block_inputs, capture_expert_inputs
from vidquant.calib.samples import Sample, load_samples
from vidquant.config import Config, ConfigError, check_device
from vidquant.eval.denoiser import denoiser_outputs, timestep_errors
from vidquant.eval.noise import JITTER_CLIPS, EvalPlan, floor_metrics, jitter_metrics, nudge_first_latent
from vidquant.eval.video import save_video, side_by_side
from vidquant.export.experts import export_lightx2v_experts
from vidquant.export.lightx2v_export import EXPORT_DIRNAME, check_lightx2v_exportable, export_lightx2v
from vidquant.fsutil import clean_stale, contains, fresh_sibling, normal_permissions, refuse_overlap, replace_dir
from vidquant.generate import GenParams, generate_videos, seed_all
from vidquant.lora import check_lora, merge_lora_into
from vidquant.models.layout import pipeline_experts
from vidquant.models.loading import check_task, inspect_checkpoint, load_pipeline, resolve_device, resolve_dtype
from vidquant.quant import build_quantizer
from vidquant.quant.blockfmt import static_input_scheme
from vidquant.runtime.moe import guard_experts
from vidquant.stream import stream_export, stream_quantize, streamed_transformer, weights_exceed_memory

__all__ = ["RunResult", "quantize", "quantize_streaming", "seed_all", "build_quantizers", "prepare",
           "load_eval_samples", "video_metrics", "write_tables"]

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
    blockwise: BlockwiseResult | None = None  # of `transformer` (a Wan2.2 mixture's high-noise expert)
    videos: dict = field(default_factory=dict)  # (eval path, sample) -> (float, fake-quant) clip, first seed
    seed_videos: dict = field(default_factory=dict)  # (eval path, seed, sample) -> the same pair, every seed
    experts: dict[str, BlockwiseResult] = field(default_factory=dict)  # every expert's, by pipeline attribute


def build_quantizers(cfg: Config):
    vg = cfg.quant.video_gen
    return build_quantizer(vg.weight), (build_quantizer(vg.act) if vg.act is not None else None)


def prepare(cfg: Config) -> dict:
    """Every check that can fail before expensive work: config ↔ export, checkpoint, sample sets, output folders,
    device, LoRA."""
    cfg.warn_no_effect()
    check_device(cfg.model.device)
    info = inspect_checkpoint(cfg.resolve_path(cfg.model.path))
    check_task(info, cfg.model.type)
    _check_group_size(cfg, info.path)
    checks = {"checkpoint": info}
    inputs = [cfg.resolve_path(p) for p in (cfg.model.path, cfg.model.lora_path, cfg.calib and cfg.calib.path,
                                            *(ev.path for ev in cfg.evals)) if p]
    if cfg.model.lora_path:
        checks["lora_keys"] = check_lora(cfg.resolve_path(cfg.model.lora_path))
    if cfg.save.save_lightx2v:
        checks["scheme"] = check_lightx2v_exportable(cfg.quant.video_gen)
        _check_marlin_shapes(checks["scheme"], info.path)
        export = cfg.resolve_path(cfg.save.save_path) / EXPORT_DIRNAME
        _check_output(export, cfg.save.overwrite, "save.save_path")
        refuse_overlap(export, inputs, "export directory (save.save_path)")
    _check_output(cfg.resolve_path(cfg.save.save_path), True, "save.save_path")
    for ev in cfg.evals:
        videos = cfg.resolve_path(ev.output_video_path)
        _check_output(videos, True, "eval.output_video_path")
        if cfg.save.save_lightx2v and contains(cfg.resolve_path(cfg.save.save_path) / EXPORT_DIRNAME, videos):
            raise ConfigError(f"eval.output_video_path: {videos} is inside the export directory, which is written "
                              "as a whole; choose a folder outside it")
    if cfg.calib is not None:
        checks["calib_samples"] = load_samples(cfg.resolve_path(cfg.calib.path), cfg.task)
    checks["eval_samples"] = [load_samples(cfg.resolve_path(ev.path), cfg.task) for ev in cfg.evals]
    build_quantizers(cfg)
    return checks


def _check_group_size(cfg: Config, model_dir: Path) -> None:
    """per_group weights: the group size must divide the input width of every block linear (else the quantizer
    would fail on the first such layer, after loading and calibration)."""
    spec = cfg.quant.video_gen.weight
    if spec.granularity != "per_group":
        return
    widths = sorted(_block_widths(model_dir)[0])
    if any(w % spec.group_size for w in widths):
        raise ConfigError(f"quant.video_gen.weight.group_size: got {spec.group_size}; allowed: a divisor of every "
                          f"linear's input width in {model_dir} ({', '.join(map(str, widths))})")


def _block_widths(model_dir: Path) -> tuple[set[int], set[int]]:
    """(input widths, output widths) of the block linears of the transformer in `model_dir`."""
    tc = json.loads((model_dir / "transformer" / "config.json").read_text())
    dim = tc["num_attention_heads"] * tc["attention_head_dim"]
    return {w for w in (dim, tc["ffn_dim"], tc.get("added_kv_proj_dim")) if w}, {dim, tc["ffn_dim"]}


def _check_marlin_shapes(scheme: str | None, model_dir: Path) -> None:
    """int4-g128-marlin: lightx2v's Marlin layout tiles in_features by 128 and out_features by 256, so a model
    whose block linears do not fit would fail at export, after the whole calibration."""
    if scheme != "int4-g128-marlin":
        return
    ins, outs = _block_widths(model_dir)
    bad = [f"in_features {w}" for w in sorted(ins) if w % 128] + [f"out_features {w}" for w in sorted(outs) if w % 256]
    if bad:
        raise ConfigError(f"quant.video_gen.weight: int4-g128-marlin needs in_features % 128 == 0 and out_features % "
                          f"256 == 0 for every block linear; {model_dir} has {', '.join(bad)} (export another "
                          "format, or set save.save_lightx2v: false)")


def _check_output(path: Path, overwrite: bool, field: str) -> None:
    """Refuse an existing output (unless overwrite), a file where a folder goes, or an unwritable location,
    before any work is done."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path}: exists and is not a directory ({field} names a folder)")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: export directory already exists (set save.overwrite: true to replace it)")
    parent = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not parent.is_dir():
        raise FileExistsError(f"{parent}: is a file, so {path} cannot be created ({field})")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"{parent}: not writable ({field})")


def load_eval_samples(cfg: Config) -> list[tuple]:
    """Each eval section with its samples: the first `eval.num_samples` of the set when that is set."""
    out = []
    for ev in cfg.evals:
        samples = load_samples(cfg.resolve_path(ev.path), cfg.task)
        out.append((ev, samples[: ev.num_samples] if ev.num_samples else samples))
    return out


def video_metrics(clip: np.ndarray, reference: np.ndarray, prompt: str) -> dict:
    """Fidelity against the float clip, plus task accuracy, task errors (against the prompt) and task drift
    (the object against the float clip's object) when the prompt is a procedural one."""
    from vidquant.eval.metrics import video_fidelity
    from vidquant.eval.task import detect, prompt_attributes, task_drift, task_errors

    row = dict(video_fidelity(clip, reference))
    spec = prompt_attributes(prompt)
    if spec is not None:
        det, ref = detect(clip), detect(reference)
        row.update(colour_ok=det.colour == spec["colour"], direction_ok=det.direction == spec["direction"],
                   float_colour_ok=ref.colour == spec["colour"], float_direction_ok=ref.direction == spec["direction"])
        row.update(task_errors(clip, prompt))
        row.update({f"float_{k}": v for k, v in task_errors(reference, prompt).items()})
        row.update(task_drift(clip, reference))
    return row


def _generate_seeds(pipe, ev, samples: list[Sample], seeds: tuple[int, ...], what: str, aq=None,
                    nudged: bool = False, progress: bool = False, cached: bool = False) -> dict[int, list[np.ndarray]]:
    """The eval set's clips for every seed (the noise-floor clips with ``nudged``), checked finite, ``eval.bs``
    clips per pipeline call (1 when the activation quantizer ``aq`` would couple a batch's clips). ``cached``:
    through the clip cache (the float model's clips: computed once per process, or once on disk, vidquant.cache)."""
    params = GenParams.from_section(ev, seeds[0])
    batch = ev.bs if batch_independent(aq) else 1
    callback = nudge_first_latent if nudged else None
    if cached:
        clips = cached_clips(pipe, samples, params, seeds, batch_size=batch, nudged=nudged, progress=progress,
                             desc=what)
    else:
        clips = generate_videos(pipe, samples, params, seeds, batch, callback, progress, what)
    return {seed: [_finite_clip(c, f"{ev.path}: {what}") for c in clips[seed]] for seed in seeds}


def batch_independent(aq) -> bool:
    """Whether the deployed activation quantizer treats each row on its own, so that clips generated in one batch
    do not change each other: per token and per block are, and so is a calibrated static scale (nvfp4's global
    scale, fp8-pertensor's, deploy_fake_quant); a dynamic per-tensor scale is taken over the whole batch."""
    if aq is None or static_input_scheme(aq) is not None:
        return True
    return aq.granularity in ("per_token", "per_group")


class _Staging:
    """Everything a run writes, held in hidden temporaries (one inside each output folder, so moves are renames)
    until the whole run has succeeded: then moved into place, summary.json last; on failure, removed. Results,
    clips and export are complete or absent; a killed run leaves only temporaries, cleaned at the next run."""

    def __init__(self) -> None:
        self.dirs: dict[Path, Path] = {}  # final folder -> its staging folder
        self.created: list[Path] = []  # folders that did not exist before the run

    def folder(self, final: Path) -> Path:
        final = Path(final).absolute()
        if final not in self.dirs:
            self.created += [p for p in (final, *final.parents) if not p.exists()][::-1]
            final.mkdir(parents=True, exist_ok=True)
            clean_stale(final)
            self.dirs[final] = fresh_sibling(final, "run", "tmp")
        return self.dirs[final]

    def commit(self, overwrite: bool) -> None:
        """Move everything into place; summary.json (the mark of a complete run) last of all."""
        self.created = []
        for final, tmp in sorted(self.dirs.items(), key=lambda item: (item[1] / "summary.json").exists()):
            normal_permissions(tmp)
            for entry in sorted(tmp.iterdir(), key=lambda p: (p.name == "summary.json", p.name)):
                target = final / entry.name
                if entry.is_dir():
                    if target.exists() and not overwrite:
                        raise FileExistsError(f"{target}: appeared during the run (set save.overwrite: true)")
                    replace_dir(entry, target)
                else:
                    os.replace(entry, target)

    def discard(self) -> None:
        """Remove the temporaries, and after a failure the (then empty) folders the run created."""
        for tmp in self.dirs.values():
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(self.created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty


def _finite_clip(clip: np.ndarray, what: str) -> np.ndarray:
    bad = int(clip.size - np.isfinite(clip).sum())
    if bad:
        raise FloatingPointError(f"{what}: {bad} NaN/Inf values in the generated video; nothing is written")
    return clip


def quantize(cfg: Config, progress: bool = True, out_dir: str | Path | None = None,
             stream: bool | None = None, plan: EvalPlan | None = None) -> RunResult:
    """Run a config end to end and write its results under `save.save_path` (or `out_dir`): all of them once
    the run succeeds, none if it fails (see :class:`_Staging`). `stream`: one block in memory at a time
    (:func:`quantize_streaming`); None = when the weights exceed available memory. `plan` (seeds, noise
    floor, jitter) replaces the eval sections' own ``seeds`` / ``noise_floor`` / ``jitter``."""
    t0 = time.time()
    checks = prepare(cfg)
    if stream is not False:
        if stream or weights_exceed_memory(checks["checkpoint"].path / "transformer",
                                           resolve_dtype(cfg.model.torch_dtype)):
            return quantize_streaming(cfg, checks, progress, out_dir)
    out = Path(out_dir or cfg.resolve_path(cfg.save.save_path))
    staging = _Staging()
    try:
        result = _run(cfg, checks, out, staging, progress, plan)
        result.summary = summarize(result, time.time() - t0)
        write_tables(result, staging.folder(out))
        staging.commit(cfg.save.overwrite)
    finally:
        staging.discard()
    return result


def quantize_streaming(cfg: Config, checks: dict, progress: bool = True,
                       out_dir: str | Path | None = None) -> RunResult:
    """``vidquant quantize --stream``: the in-memory flow's calibration and export with one block in memory.

    The pipeline runs with a streamed transformer (:func:`vidquant.stream.streamed_transformer`), so the capture
    is the real trajectory's, identical to the in-memory capture; calibration and export stream the blocks
    (:func:`vidquant.stream.stream_quantize`). The export has the same tensors (keys, dtypes, bytes) and
    ``config.json`` as the in-memory one, in lightx2v's by-block layout. The evaluation videos need the whole
    model and are skipped (run ``vidquant infer`` on the export instead).
    """
    t0 = time.time()
    if not cfg.save.save_lightx2v:
        raise ConfigError(f"{cfg.source or 'config'}: save.save_lightx2v: got false; --stream writes the lightx2v "
                          "export (set save.save_lightx2v: true)")
    out = Path(out_dir or cfg.resolve_path(cfg.save.save_path))
    out.mkdir(parents=True, exist_ok=True)
    result = RunResult(cfg, out)
    device, dtype = resolve_device(cfg.model.device), resolve_dtype(cfg.model.torch_dtype)
    vg = cfg.quant.video_gen
    wq, aq = build_quantizers(cfg)
    if cfg.evals:
        log.info("--stream: the eval videos need the whole model; skipped (vidquant infer runs the export)")
    seed_all(cfg.base.seed)
    checkpoint = checks["checkpoint"].path / "transformer"
    calib = None
    if cfg.calib is not None:
        transformer = streamed_transformer(checkpoint, dtype, device)
        pipe = load_pipeline(checks["checkpoint"].path, cfg.model.type, cfg.model.torch_dtype, device,
                             components={"transformer": transformer}, task=cfg.task)
        params = GenParams.from_section(cfg.calib, cfg.base.seed)
        calib = capture_block_inputs(pipe, checks["calib_samples"], params, cfg.calib.sample_steps,
                                     cfg.calib.step_selection, progress)
        del pipe, transformer
    scale_dtype = torch.float32 if cfg.save.weight_scale_dtype == "float32" else torch.bfloat16
    if calib is None:
        result.export_dir = stream_export(checkpoint, wq, out, dtype=dtype, scale_dtype=scale_dtype,
                                          overwrite=cfg.save.overwrite, progress=progress)
    else:
        streamed = stream_quantize(checkpoint, calib, build_algorithms(vg.methods, vg.special_for), wq, aq, out,
                                   dtype=dtype, device=device, quant_out=vg.quant_out, scale_dtype=scale_dtype,
                                   overwrite=cfg.save.overwrite, progress=progress)
        result.export_dir, result.blockwise = streamed.export_dir, streamed.blockwise
        result.layer_metrics = streamed.blockwise.layer_metrics
    result.summary = {**summarize(result, time.time() - t0), "streamed": True}
    write_tables(result)
    return result


def _run(cfg: Config, checks: dict, out: Path, staging: _Staging, progress: bool,
         plan: EvalPlan | None) -> RunResult:
    result = RunResult(cfg, out)
    device = resolve_device(cfg.model.device)
    seed_all(cfg.base.seed)
    pipe = load_pipeline(checks["checkpoint"].path, cfg.model.type, cfg.model.torch_dtype, device, task=cfg.task)
    if cfg.model.lora_path:  # as LLMC: merged at build time, before the float reference and calibration
        n = merge_lora_into(pipe.transformer, cfg.resolve_path(cfg.model.lora_path), cfg.model.lora_alpha)
        log.info("merged %d LoRA updates from %s (alpha %g)", n, cfg.model.lora_path, cfg.model.lora_alpha)
    wq, aq = build_quantizers(cfg)
    vg = cfg.quant.video_gen

    # each eval section with its plan (seeds, noise floor, jitter): the one given, else the section's own fields
    evals = [(ev, samples, plan or EvalPlan.from_section(ev)) for ev, samples in load_eval_samples(cfg)]
    seeds = {ev.path: p.seeds_for(cfg.base.seed) for ev, _, p in evals}
    reference = {ev.path: _generate_seeds(pipe, ev, samples, seeds[ev.path], "float reference", progress=progress,
                                          cached=True) for ev, samples, _ in evals}
    floor = {ev.path: _generate_seeds(pipe, ev, samples, seeds[ev.path], "float, nudged", nudged=True,
                                      progress=progress, cached=True)
             for ev, samples, p in evals if p.noise_floor}

    # Each expert (one for Wan2.1 / TI2V; high- and low-noise for Wan2.2 A14B) with its own calibration data
    experts = [e.name for e in pipeline_experts(pipe)]
    calib: dict[str, CalibData] = {}
    float_preds = {}
    if cfg.calib is not None:
        params = GenParams.from_section(cfg.calib, cfg.base.seed)
        if len(experts) == 1:  # cached: a notebook that quantizes twice captures once
            calib = {"transformer": cached_capture(pipe, checks["calib_samples"], params, cfg.calib.sample_steps,
                                                   cfg.calib.step_selection, progress)}
        else:
            calib = capture_expert_inputs(pipe, checks["calib_samples"], params, cfg.calib.sample_steps,
                                          cfg.calib.step_selection, progress)
        for name in experts:
            float_preds[name] = denoiser_outputs(getattr(pipe, name), calib[name], device)
            algos = build_algorithms(vg.methods, vg.special_for)
            result.experts[name] = run_blockwise(getattr(pipe, name), calib[name], algos, wq, aq, device,
                                                 vg.quant_out, progress)
        result.blockwise = result.experts["transformer"]
        result.layer_metrics = _by_expert({n: b.layer_metrics for n, b in result.experts.items()})
    qparams = {name: result.experts[name].weight_qparams if name in result.experts else {} for name in experts}

    if cfg.save.save_lightx2v:
        scale_dtype = torch.float32 if cfg.save.weight_scale_dtype == "float32" else torch.bfloat16
        kwargs = dict(scale_dtype=scale_dtype, max_shard_size=cfg.save.max_shard_size, scheme=checks["scheme"])
        absmax = {n: b.input_absmax for n, b in result.experts.items()}
        if len(experts) > 1:  # lightx2v's wan2.2_moe: high_noise_model/ and low_noise_model/
            export_lightx2v_experts({n: getattr(pipe, n) for n in experts}, wq, staging.folder(out),
                                    weight_qparams=qparams, input_absmax=absmax, **kwargs)
        else:
            export_lightx2v(pipe.transformer, wq, staging.folder(out), weight_qparams=qparams["transformer"],
                            input_absmax=absmax.get("transformer"), **kwargs)
        result.export_dir = out.absolute() / EXPORT_DIRNAME

    for name in experts:  # static activation scales (nvfp4, fp8-pertensor) from calibration, as exported
        expert_absmax = result.experts[name].input_absmax if name in result.experts else None
        deploy_fake_quant(getattr(pipe, name), wq, aq, qparams[name], expert_absmax)
    guard_experts(pipe)  # a non-finite or constant prediction (a black clip) stops the eval, naming the expert
    if calib:
        result.timestep_metrics = _by_expert({
            n: timestep_errors(float_preds[n], denoiser_outputs(getattr(pipe, n), calib[n], device), calib[n])
            for n in experts})

    rows = []
    for ev, samples, ev_plan in evals:
        ev_seeds = seeds[ev.path]
        clips = _generate_seeds(pipe, ev, samples, ev_seeds, "fake-quant model", aq, progress=progress)
        # the jitter is the size of a perturbation's effect, estimated on the first seed's first clips
        jitter_samples = samples[:JITTER_CLIPS] if ev_plan.jitter else []
        jittered = (_generate_seeds(pipe, ev, jitter_samples, ev_seeds[:1], "fake-quant, nudged", aq, nudged=True,
                                    progress=progress) if jitter_samples else {})
        video_dir = staging.folder(cfg.resolve_path(ev.output_video_path))
        for seed in ev_seeds:
            for i, (clip, ref, sample) in enumerate(zip(clips[seed], reference[ev.path][seed], samples)):
                row = {"eval": ev.path, "sample": i, "seed": seed, "prompt": sample.prompt,
                       **video_metrics(clip, ref, sample.prompt)}
                if ev_plan.noise_floor:
                    row.update(floor_metrics(floor[ev.path][seed][i], ref, sample.prompt))
                if seed in jittered and i < len(jittered[seed]):
                    row.update(jitter_metrics(video_metrics(jittered[seed][i], ref, sample.prompt), row))
                rows.append(row)
                result.seed_videos[(ev.path, seed, i)] = (ref, clip)
                if seed != ev_seeds[0]:
                    continue  # clips on disk: the first seed's, named as LLMC names them
                if "pretrain" in ev.eval_pos or "transformed" in ev.eval_pos:
                    save_video(ref, video_dir / f"pretrain_output_{i}.mp4", ev.fps)
                save_video(clip, video_dir / f"fake_quant_output_{i}.mp4", ev.fps)
                save_video(side_by_side(ref, clip), video_dir / f"float_vs_fake_quant_{i}.mp4", ev.fps)
                result.videos[(ev.path, i)] = (ref, clip)
    result.video_metrics = pd.DataFrame(rows)
    return result


def _by_expert(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One table; with several experts, their rows stacked under an `expert` column."""
    if len(tables) == 1:
        return next(iter(tables.values()))
    return pd.concat([df.assign(expert=name)[["expert", *df.columns.drop("expert", errors="ignore")]]
                      for name, df in tables.items()], ignore_index=True)


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
                    "float_direction_ok", "traj_err_px", "colour_de", "float_traj_err_px", "float_colour_de",
                    "traj_drift_px", "colour_drift_de",
                    "floor_psnr", "floor_ssim", "floor_flicker_error", "floor_traj_err_px", "floor_colour_de",
                    "floor_traj_drift_px", "floor_colour_drift_de",
                    "jitter_psnr", "jitter_traj_err_px", "jitter_colour_de", "jitter_traj_drift_px",
                    "jitter_colour_drift_de"):
            if col in vm:
                s[f"video_{col}"] = float(vm[col].astype(float).mean())
    if result.export_dir is not None:
        s["export_dir"] = str(result.export_dir)
    if len(result.experts) > 1:  # per-expert calibration error (Wan2.2 mixture)
        s["experts"] = {}
        for name in result.experts:
            e = {"mean_sqnr_db": float(lm.loc[lm["expert"] == name, "sqnr_db"].mean())}
            if not tm.empty:
                e["mean_timestep_rel_err"] = float(tm.loc[tm["expert"] == name, "rel_err"].mean())
            s["experts"][name] = e
    return s


def write_tables(result: RunResult, out: Path | None = None) -> None:
    """The metrics tables and summary.json, into `out` (default: the run's folder)."""
    out = Path(out or result.out_dir)
    for name, df in (("layer_metrics", result.layer_metrics), ("timestep_metrics", result.timestep_metrics),
                     ("video_metrics", result.video_metrics)):
        if not df.empty:
            df.to_csv(out / f"{name}.csv", index=False)
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2, sort_keys=True) + "\n")
