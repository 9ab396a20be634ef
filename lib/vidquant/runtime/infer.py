"""``vidquant infer``: lightx2v's ``python -m lightx2v.infer`` command line on vidquant's quantized runtime.

    vidquant infer --model_cls wan2.1 --task i2v --model_path MODEL --config_json CFG.json \\
        --prompt "..." --negative_prompt "..." --image_path IMG --save_video_path out.mp4 [--seed N --device cpu]

The JSON is a lightx2v inference config (lightx2v_reference §4.3), read with
:func:`vidquant.export.lightx2v_config.read_lightx2v_config`, so both matmul vocabularies work
(``mm_config.mm_type`` and ``dit_quantized`` / ``dit_quant_scheme``). Matmuls: per-channel W8A8 (``int8`` /
``fp8``) as real int8 / fp8 GEMMs; the formats beyond W8A8 (``dit_quant_scheme`` ``mxfp8``, ``mxfp6-mxfp8``,
``mxfp4``, ``nvfp4``, ``int4-g128-marlin``, ``fp8-pertensor``) **emulated**: decoded once to fp32 weights, inputs
quantized as lightx2v's kernels do, fp32 GEMM (:mod:`vidquant.runtime.emulated`; the log line says so).

Fields used: ``dit_quantized_ckpt`` (default ``<model_path>/<first token of the scheme>``, e.g. ``int8``,
``mxfp6``, as lightx2v), ``quant_method``, ``infer_steps``, ``target_height`` / ``target_width`` (I2V: the area;
the size follows the image's aspect ratio), ``target_video_length``, ``sample_guide_scale`` / ``enable_cfg``,
``sample_shift``, ``text_len``, ``seed`` and ``fps``; ``num_channels_latents`` / ``vae_stride`` (lightx2v's TI2V-5B
JSONs: 48, [4, 16, 16]) must match the model's VAE. Attention backends, offloading and caching fields are
accepted and have no effect (diffusers' SDPA attention is used).

``--model_cls`` must name the model directory's kind (``wan2.1``; ``wan2.2``: TI2V-5B, ``expand_timesteps``, which
runs ``--task t2v`` and, image-conditioned, ``--task i2v``; ``wan2.2_moe``: two experts, :mod:`vidquant.runtime.moe`).

Precedence as lightx2v (§4.1): CLI < config JSON < ``<dit_quantized_ckpt>/config.json`` (only its
``quant_method``, and only when ``dit_quantized_ckpt`` is set explicitly); ``--seed`` overrides the JSON's
seed. The dtype follows lightx2v's ``DTYPE`` environment variable (``BF16`` -> bfloat16) unless ``--dtype``
is given; otherwise fp32.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidquant.export.lightx2v_config import (
    BLOCK_DIT_QUANT_SCHEMES,
    MAX_SEED,
    ConfigError,
    read_config_json,
    read_lightx2v_config,
)
from vidquant.runtime import moe

__all__ = ["InferError", "InferSettings", "build_parser", "describe_matmul", "generate", "load_runtime_pipeline",
           "main", "resolve_settings", "run_moe"]

log = logging.getLogger("vidquant.runtime")

MODEL_CLASSES = ("wan2.1", "wan2.1_distill", "wan2.1_causvid", "wan2.1_skyreels_v2_df", "wan2.1_audio",
                 "wan2.2", "wan2.2_moe", "hunyuan", "cogvideox")  # lightx2v's choices
SUPPORTED_MODEL_CLASSES = ("wan2.1", "wan2.2", "wan2.2_moe")  # wan2.2_moe: run_moe
DEFAULT_TEXT_LEN = 512  # lightx2v's text_len (Wan's T5 context); diffusers' I2V needs exactly 512
DEFAULT_GUIDE_SCALE = 5.0


class InferError(ValueError):
    """A user error in the inference inputs (flags, config, files); the message says what to change."""


@dataclass(frozen=True)
class InferSettings:
    """Everything one generation needs, resolved from the CLI flags and the lightx2v JSON."""

    task: str
    model_path: Path
    quantized: bool
    scheme: str | None  # "int8" | "fp8" (W8A8) | a BLOCK_DIT_QUANT_SCHEMES name (emulated) | None (float)
    quantized_ckpt: Path | None
    quant_method: str | None
    infer_steps: int
    target_height: int
    target_width: int
    target_video_length: int
    guidance_scale: float
    seed: int
    fps: int
    text_len: int
    sample_shift: float | None
    device: str
    dtype: torch.dtype
    round_scale_bf16: bool = False
    numerics: str = "lightx2v"  # W8A8 activation quant: lightx2v's kernels (with bf16 scales) or "vidquant"
    compile_kernels: bool | None = None  # fused W8A8 act-quant / epilogue kernels; None = for wide models


# ----------------------------------------------------------------------------------------------- settings


def _required(cfg: dict, field: str, source: str):
    if cfg.get(field) is None:
        raise InferError(f"{source}: field '{field}' is required (lightx2v has no default for it)")
    return cfg[field]


def _resolve_path(value: str, config_path: Path) -> Path:
    """As lightx2v: relative to the working directory; if nothing is there, relative to the JSON's folder."""
    path = Path(os.path.expanduser(value))
    if path.is_absolute() or path.exists():
        return path
    alt = config_path.parent / path
    return alt if alt.exists() else path


def _check_matmul(cfg: dict, source: str) -> str | None:
    """The quantization scheme this runtime will run: 'int8' / 'fp8' (per-channel W8A8, real GEMMs), one of
    BLOCK_DIT_QUANT_SCHEMES (mxfp8, ..., fp8-pertensor: emulated, runtime/emulated.py), None for a float config."""
    mm_type = (cfg.get("mm_config") or {}).get("mm_type") or ""
    alias = cfg.get("dit_quant_scheme") or ""
    if (cfg.get("mm_config") or {}).get("weight_auto_quant"):
        raise InferError(f"{source}: mm_config.weight_auto_quant (quantize a float checkpoint at load time) is "
                         "not supported; convert the checkpoint offline (vidquant quantize + converter.py)")
    scheme = cfg.get("quant_scheme")
    if scheme is None:
        return None
    if cfg.get("dit_quantized") and alias in BLOCK_DIT_QUANT_SCHEMES:
        return alias  # the kernel's name: quant_scheme is only its first token (fp8-pertensor -> fp8)
    if scheme not in ("int8", "fp8") or "block128" in mm_type or "b128" in alias:
        what = mm_type or alias
        raise InferError(f"{source}: matmul {what!r} is not supported by vidquant's runtime; use a per-channel "
                         "W8A8 type (W-int8-channel-sym-A-int8-channel-sym-dynamic-Vllm / int8-vllm, or fp8) or "
                         f"one of the emulated formats ({', '.join(BLOCK_DIT_QUANT_SCHEMES)})")
    return scheme


def _checkpoint_quant_method(ckpt: Path, cfg: dict) -> str | None:
    """lightx2v merges ``<dit_quantized_ckpt>/config.json`` only when the path is explicit (§9 item 10)."""
    from vidquant.runtime.model import resolve_checkpoint_dir

    method = cfg.get("quant_method")
    config = resolve_checkpoint_dir(ckpt) / "config.json"
    if cfg.get("dit_quantized_ckpt") and config.is_file():
        try:
            method = json.loads(config.read_text()).get("quant_method", method)
        except (OSError, ValueError, AttributeError) as exc:  # ValueError: bad JSON or not UTF-8
            raise InferError(f"{config}: cannot read the checkpoint's config.json: {exc}") from exc
    return method


def _quantized_checkpoint(cfg: dict, model_path: Path, config_path: Path) -> Path:
    """``dit_quantized_ckpt``, else lightx2v's default ``<model_path>/<first token of the scheme name>``."""
    explicit = cfg.get("dit_quantized_ckpt")
    subdir = cfg["quant_scheme"]
    ckpt = _resolve_path(explicit, config_path) if explicit else model_path / subdir
    if not ckpt.exists():
        how = "dit_quantized_ckpt" if explicit else f"the default <model_path>/{subdir} (dit_quantized_ckpt unset)"
        raise InferError(f"{config_path}: quantized checkpoint {ckpt} ({how}) does not exist; run the converter "
                         "(converter.py -s <export> -o <out> -d backward) and point dit_quantized_ckpt at it")
    return ckpt


def describe_matmul(settings: InferSettings) -> str:
    """What the runtime will run, for the log line: W8A8 GEMMs, an emulated block format, or float."""
    if not settings.quantized:
        return "float"
    if settings.scheme in BLOCK_DIT_QUANT_SCHEMES:
        return (f"{settings.scheme} from {settings.quantized_ckpt}, EMULATED (dequantize-then-GEMM in fp32: "
                "lightx2v's kernel's function up to fp32 rounding, not its speed)")
    return f"{settings.scheme} W8A8 from {settings.quantized_ckpt}"


def _dtype(flag: str | None) -> torch.dtype:
    if flag is None or flag == "auto":
        return torch.bfloat16 if os.environ.get("DTYPE", "").upper() == "BF16" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[flag]


def resolve_settings(cfg: dict, *, config_path: str | os.PathLike, task: str, model_path: str | os.PathLike,
                     seed: int | None = None, device: str = "auto", dtype: str | None = None,
                     round_scale_bf16: bool = False, numerics: str = "lightx2v",
                     compile_kernels: bool | None = None) -> InferSettings:
    """Turn a normalised lightx2v config (``read_lightx2v_config``) plus CLI values into :class:`InferSettings`."""
    from vidquant.models.loading import resolve_device

    config_path, model_path = Path(config_path), Path(model_path)
    source = str(config_path)
    if cfg.get("task") not in (None, task):
        raise InferError(f"{source}: field 'task' is {cfg['task']!r} but --task is {task!r}")
    scheme = _check_matmul(cfg, source)
    ckpt = _quantized_checkpoint(cfg, model_path, config_path) if scheme else None
    scale = cfg.get("sample_guide_scale")
    if isinstance(scale, list):
        raise InferError(f"{source}: field 'sample_guide_scale' is a [high, low] pair, which only a two-expert "
                         "Wan2.2 model uses (--model_cls wan2.2_moe); expected one number")
    _check_latent_layout(cfg, model_path, source)
    cfg_on = cfg.get("enable_cfg") is not False  # absent or null: lightx2v's default, on
    guidance = float(DEFAULT_GUIDE_SCALE if scale is None else scale) if cfg_on else 1.0
    shift = cfg.get("sample_shift")
    return InferSettings(
        task=task, model_path=model_path, quantized=scheme is not None, scheme=scheme, quantized_ckpt=ckpt,
        quant_method=_checkpoint_quant_method(ckpt, cfg) if ckpt else None,
        infer_steps=int(_required(cfg, "infer_steps", source)),
        target_height=int(_required(cfg, "target_height", source)),
        target_width=int(_required(cfg, "target_width", source)),
        target_video_length=int(cfg["target_video_length"]), guidance_scale=guidance,
        seed=int(cfg["seed"] if seed is None else seed), fps=int(cfg["fps"]),
        text_len=_text_len(cfg, source), sample_shift=None if shift is None else float(shift),
        device=str(resolve_device(device)), dtype=_dtype(dtype),
        round_scale_bf16=round_scale_bf16 or numerics == "lightx2v", numerics=numerics,
        compile_kernels=compile_kernels,
    )


def _text_len(cfg: dict, source: str) -> int:
    value = cfg.get("text_len", DEFAULT_TEXT_LEN)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InferError(f"{source}: field 'text_len': expected a positive integer, got {value!r}")
    return value


# ----------------------------------------------------------------------------------------------- pipeline


def _check_model_task(model_path: Path, task: str) -> None:
    """``task`` must be the directory's own, except for TI2V-5B (``expand_timesteps``), which runs both."""
    from vidquant.models.loading import inspect_checkpoint

    info = inspect_checkpoint(model_path)
    if info.task != task and not info.expand_timesteps:
        raise InferError(f"--task {task} but --model_path {model_path} is a {info.pipeline_class} "
                         f"({info.task.upper()}); use --task {info.task} or the matching model")


_FAMILY_NAMES = {"wan2.1": "a Wan2.1 model", "wan2.2": "a Wan2.2 TI2V-5B-style model (expand_timesteps)",
                 "wan2.2_moe": "a two-expert Wan2.2 mixture (transformer_2)"}


def _check_model_class(model_cls: str, model_path: Path) -> None:
    """``--model_cls`` must name the directory's model, as lightx2v builds a different runner for each (a
    ``wan2.1`` runner has no per-token timesteps; a single-model one would leave a mixture's second expert float)."""
    from vidquant.models.loading import inspect_checkpoint

    family = inspect_checkpoint(model_path).family
    if model_cls != family:
        raise InferError(f"--model_cls {model_cls} but --model_path {model_path} is {_FAMILY_NAMES[family]}; "
                         f"use --model_cls {family}")


def _check_latent_layout(cfg: dict, model_path: Path, source: str) -> None:
    """lightx2v sizes the latents from the JSON (``num_channels_latents``, ``vae_stride``; TI2V-5B's: 48 and
    [4, 16, 16]), vidquant from the VAE's config: a JSON written for another VAE is refused, not ignored."""
    vae_config = model_path / "vae" / "config.json"
    fields = [f for f in ("num_channels_latents", "vae_stride") if cfg.get(f) is not None]
    if not fields or not vae_config.is_file():
        return  # nothing to compare (a missing VAE is load_pipeline's error)
    try:
        vae = json.loads(vae_config.read_text())
    except (OSError, ValueError) as exc:
        raise InferError(f"{vae_config}: cannot read: {exc}") from exc
    spatial = vae.get("scale_factor_spatial") or 8
    actual = {"num_channels_latents": vae.get("z_dim", 16),
              "vae_stride": [vae.get("scale_factor_temporal") or 4, spatial, spatial]}
    for field in fields:
        if cfg[field] != actual[field]:
            raise InferError(f"{source}: field '{field}' is {cfg[field]!r} but the VAE of {model_path} "
                             f"({vae_config}) gives {actual[field]!r}; this config is for another model")


def _apply_shift(pipe, shift: float | None) -> None:
    """lightx2v's ``sample_shift`` is the flow-matching shift; diffusers keeps it in the scheduler config."""
    if shift is None:
        return
    if "flow_shift" not in pipe.scheduler.config:
        warnings.warn(f"sample_shift={shift} ignored: {type(pipe.scheduler).__name__} has no flow_shift",
                      stacklevel=2)
        return
    if float(pipe.scheduler.config.flow_shift) != shift:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, flow_shift=shift)


def load_runtime_pipeline(settings: InferSettings):
    """The pipeline for ``settings``: quantized transformer (W8A8Linear) or, for a float config, the float one."""
    from vidquant.models.loading import load_pipeline
    from vidquant.runtime.model import load_quantized_pipeline

    _check_model_task(settings.model_path, settings.task)
    if settings.quantized:
        pipe = load_quantized_pipeline(settings.model_path, settings.quantized_ckpt, settings.device,
                                       settings.dtype, quant_method=settings.quant_method,
                                       scheme=settings.scheme, round_scale_bf16=settings.round_scale_bf16,
                                       numerics=settings.numerics, compile_kernels=settings.compile_kernels,
                                       task=settings.task)
    else:
        warnings.warn("the config selects no quantized matmul (mm_type Default / dit_quantized false): running "
                      f"the float transformer of {settings.model_path}", stacklevel=2)
        pipe = load_pipeline(settings.model_path, None, settings.dtype, settings.device, task=settings.task)
    _apply_shift(pipe, settings.sample_shift)
    return pipe


def generate(pipe, settings: InferSettings, prompt: str, negative_prompt: str = "",
             image_path: str | os.PathLike | None = None) -> np.ndarray:
    """One clip, float32 (frames, H, W, 3) in [0, 1]. The noise comes from ``settings.seed`` alone, so the same
    settings give the same noise as vidquant's float / fake-quant evaluation (vidquant.generate)."""
    from vidquant.calib.samples import Sample
    from vidquant.generate import GenParams, generate_video

    params = GenParams(settings.target_height, settings.target_width, settings.target_video_length,
                       settings.guidance_scale, settings.infer_steps, settings.seed, settings.text_len)
    sample = Sample(prompt=prompt, negative_prompt=negative_prompt,
                    image=None if image_path is None else Path(image_path))
    return generate_video(pipe, sample, params)


# ----------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """lightx2v's ``infer`` flags plus ``--seed``, ``--device``, ``--dtype``, ``--round_scale_bf16``, ``--numerics``."""
    p = argparse.ArgumentParser(prog="vidquant infer", description=__doc__.splitlines()[0])
    p.add_argument("--model_cls", required=True, choices=MODEL_CLASSES)
    p.add_argument("--task", required=True, choices=["t2v", "i2v"])
    p.add_argument("--model_path", required=True, help="diffusers Wan pipeline directory (VAE, encoders, ...)")
    p.add_argument("--config_json", required=True, help="lightx2v inference config")
    p.add_argument("--prompt", default="", help="text prompt")
    p.add_argument("--negative_prompt", default="")
    p.add_argument("--image_path", default=None, help="conditioning image (i2v)")
    p.add_argument("--save_video_path", "--save_result_path", dest="save_video_path", default="./output_lightx2v.mp4",
                   help=".mp4 (or .gif) to write (--save_result_path: the name in newer lightx2v scripts)")
    p.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="activation dtype; auto = bfloat16 if DTYPE=BF16 (lightx2v's variable) else float32")
    p.add_argument("--round_scale_bf16", action="store_true",
                   help="round weight scales to bf16 first, as lightx2v's non-lazy loader (implied by "
                        "--numerics lightx2v)")
    p.add_argument("--numerics", choices=["lightx2v", "vidquant"], default="lightx2v",
                   help="W8A8 activation quantization: lightx2v's kernels bit for bit (x * (127/absmax), bf16-rounded "
                        "weight scales; default) or vidquant's (x / s, fp32 scales: what fake-quant evaluated)")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="fuse the W8A8 activation quantization and epilogue with torch.compile (CPU; same bits; "
                        "~10-20 s on first use). auto: for models with hidden size >= 1024")
    return p


VIDEO_SUFFIXES = (".mp4", ".gif")


def _check_inputs(args: argparse.Namespace) -> None:
    if args.model_cls not in SUPPORTED_MODEL_CLASSES:
        raise InferError(f"--model_cls {args.model_cls}: not supported by vidquant's runtime "
                         f"(supported: {', '.join(SUPPORTED_MODEL_CLASSES)})")
    if not args.prompt.strip():
        raise InferError("--prompt is required")
    _check_video_path(Path(args.save_video_path))
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise InferError(f"--seed {args.seed}: expected an integer in 0..{MAX_SEED}")
    _check_device(args.device)
    if args.task == "i2v":
        if not args.image_path:
            raise InferError("--task i2v needs --image_path")
        _check_image(Path(args.image_path))
    elif args.image_path:
        warnings.warn(f"--image_path {args.image_path} ignored for --task t2v", stacklevel=2)
        args.image_path = None


def _check_video_path(path: Path) -> None:
    """Before any work: a known extension, not a folder, in a folder we can create and write."""
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InferError(f"--save_video_path {path}: expected a {' or '.join(VIDEO_SUFFIXES)} file")
    if path.is_dir():
        raise InferError(f"--save_video_path {path}: is a directory; expected a video file name")
    parent = next((p for p in path.absolute().parents if p.exists()), Path("/"))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InferError(f"--save_video_path {path}: {parent} is not a writable directory")


def _check_device(device: str) -> None:
    from vidquant.config import ConfigError as BaseConfigError
    from vidquant.config import check_device

    try:
        check_device(device, "--device")
    except BaseConfigError as exc:
        raise InferError(str(exc)) from None


def _check_image(path: Path) -> None:
    from vidquant.calib.samples import SampleSetError, check_image

    if not path.is_file():
        raise InferError(f"--image_path {path}: no such file")
    try:
        check_image(path)
    except SampleSetError as exc:
        raise InferError(f"--image_path {exc}") from None


def _user_errors() -> tuple[type[BaseException], ...]:
    from vidquant.calib.samples import SampleSetError
    from vidquant.export.io import CheckpointError
    from vidquant.models.loading import ModelLoadError

    return (InferError, ConfigError, CheckpointError, ModelLoadError, SampleSetError, FileNotFoundError)


def run_moe(args: argparse.Namespace) -> Path:
    """``vidquant infer --model_cls wan2.2_moe``: lightx2v's MoE JSON on the quantized runtime; returns the video."""
    from vidquant.eval.video import save_video
    from vidquant.export.experts import EXPERT_DIRS, read_moe_config
    from vidquant.models.loading import inspect_checkpoint, load_pipeline

    config_path, model_path = Path(args.config_json), Path(args.model_path)
    info = inspect_checkpoint(model_path)
    if info.family != "wan2.2_moe":
        raise InferError(f"--model_cls wan2.2_moe but --model_path {model_path} has one transformer; use "
                         f"--model_cls {info.family}")
    cfg, moe_cfg = read_moe_config(read_config_json(config_path), source=str(config_path))
    settings = {}
    for name, ckpt in moe_cfg["ckpts"].items():  # lightx2v's default: <model_path>/{high,low}_noise_model
        explicit = {"dit_quantized_ckpt": ckpt or str(model_path / EXPERT_DIRS[name])}
        settings[name] = resolve_settings(cfg | explicit, config_path=config_path, task=args.task,
                                          model_path=model_path, seed=args.seed, device=args.device,
                                          dtype=args.dtype, round_scale_bf16=args.round_scale_bf16,
                                          numerics=args.numerics,
                                          compile_kernels={"auto": None, "on": True, "off": False}[args.compile])
    first = settings["transformer"]
    if first.quantized:
        pipe = moe.load_quantized_moe_pipeline(
            model_path, {n: s.quantized_ckpt for n, s in settings.items()}, first.device, first.dtype,
            quant_methods={n: s.quant_method for n, s in settings.items()}, scheme=first.scheme,
            round_scale_bf16=first.round_scale_bf16, numerics=first.numerics, compile_kernels=first.compile_kernels)
    else:
        pipe = load_pipeline(model_path, None, first.dtype, first.device)
        moe.guard_experts(pipe)
    if info.boundary_ratio is not None and abs(moe_cfg["boundary"] - info.boundary_ratio) > 1e-9:
        warnings.warn(f"{config_path}: boundary {moe_cfg['boundary']} differs from {model_path}'s boundary_ratio "
                      f"{info.boundary_ratio}: the experts will serve other timesteps than they were calibrated on "
                      "(vidquant quantize splits at the model's boundary_ratio)", stacklevel=2)
    pipe.register_to_config(boundary_ratio=moe_cfg["boundary"])  # the JSON's boundary wins, as in lightx2v
    _apply_shift(pipe, first.sample_shift)
    pipe.set_progress_bar_config(desc="denoising")  # the one long step: its bar shows
    print(f"vidquant infer: wan2.2_moe {args.task}, boundary {moe_cfg['boundary']}, guidance {moe_cfg['guidance']}, "
          + ", ".join(f"{n}: {s.quantized_ckpt}" for n, s in settings.items()))
    clip = moe.generate_moe(pipe, first, moe_cfg["guidance"], args.prompt, args.negative_prompt, args.image_path)
    return save_video(clip, args.save_video_path, first.fps)


def run(args: argparse.Namespace) -> Path:
    """Resolve, load, generate and save; returns the video path."""
    _check_inputs(args)
    if args.model_cls == "wan2.2_moe":  # two expert checkpoints, lightx2v's MoE JSON
        return run_moe(args)
    cfg = read_lightx2v_config(args.config_json)
    settings = resolve_settings(cfg, config_path=args.config_json, task=args.task, model_path=args.model_path,
                                seed=args.seed, device=args.device, dtype=args.dtype,
                                round_scale_bf16=args.round_scale_bf16, numerics=args.numerics,
                                compile_kernels={"auto": None, "on": True, "off": False}[args.compile])
    _check_model_class(args.model_cls, settings.model_path)
    print(f"vidquant infer: {args.task} {describe_matmul(settings)}, quant_method={settings.quant_method}, "
          f"{settings.device}, {str(settings.dtype).removeprefix('torch.')}")
    t0 = time.time()
    pipe = load_runtime_pipeline(settings)
    pipe.set_progress_bar_config(desc="denoising")  # the one long step: its bar shows
    t1 = time.time()
    clip = generate(pipe, settings, args.prompt, args.negative_prompt, args.image_path)
    from vidquant.eval.video import save_video
    from vidquant.fsutil import atomic_file

    bad = int(np.size(clip) - np.isfinite(clip).sum())
    if bad:  # a broken checkpoint or config: an all-black mp4 with exit 0 would hide it
        raise InferError(f"the generated video has {bad} NaN/Inf values (of {np.size(clip)}); nothing written to "
                         f"{args.save_video_path}. Check the checkpoint with `vidquant verify` and the config")
    with atomic_file(args.save_video_path) as tmp:
        save_video(clip, tmp, settings.fps)
    path = Path(args.save_video_path)
    print(f"vidquant infer: {clip.shape[0]} frames {clip.shape[1]}x{clip.shape[2]}, {settings.infer_steps} steps; "
          f"load {t1 - t0:.1f} s, generate {time.time() - t1:.1f} s -> {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; 0 on success, 2 on a user error (one line on stderr, no traceback)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(args)
    except _user_errors() as exc:
        print(f"vidquant infer: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
