"""Quantized Wan2.2 A14B: both experts as real W8A8 transformers, and a guard against black clips.

``load_quantized_moe_pipeline`` builds each expert from its own converted (or export) checkpoint with
``runtime.model.load_quantized_transformer`` against the base pipeline's ``transformer`` / ``transformer_2``
config and hands both to the diffusers pipeline, which switches between them at ``boundary_ratio`` exactly as
lightx2v's ``wan2.2_moe`` runner does (``export.experts`` has the facts). ``vidquant infer --model_cls wan2.2_moe``
reads lightx2v's MoE JSON (``high_noise_quantized_ckpt`` / ``low_noise_quantized_ckpt`` / ``boundary`` /
``sample_guide_scale: [high, low]``) through :func:`run_moe`.

The guard (:func:`guard_experts`): users report all-black clips from quantized A14B. A black clip comes from a
denoiser output that is not finite (an overflowing scale, an inf activation) or constant (a dead expert); the
VAE then decodes garbage or a flat frame and nothing says which model failed. Every expert call is checked, and
the first bad one raises :class:`ExpertOutputError` naming the expert, the denoising step, the timestep and
the CFG branch.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from vidquant.models.layout import Expert, pipeline_experts

__all__ = ["ExpertOutputError", "guard_experts", "check_expert_output", "load_quantized_moe_pipeline",
           "run_moe", "generate_moe"]


class ExpertOutputError(RuntimeError):
    """A transformer of the pipeline returned a non-finite or constant prediction (the black-clip failure)."""


def check_expert_output(output: torch.Tensor, expert: Expert, timestep, call: int) -> None:
    """Raise :class:`ExpertOutputError` if any sample of ``output`` is non-finite or constant."""
    out = output.detach().float().flatten(1)
    bad_values = ~torch.isfinite(out)
    what = None
    if bad_values.any():
        what = f"{int(bad_values.sum())} non-finite value(s) of {out.numel()}"
    elif (out.amax(dim=1) == out.amin(dim=1)).any():
        what = f"a constant prediction ({float(out[0, 0]):g} everywhere)"
    if what is not None:
        t = float(timestep.max()) if isinstance(timestep, torch.Tensor) else timestep
        raise ExpertOutputError(f"{expert.label} returned {what} at transformer call {call} (timestep {t:g}); "
                                "the clip would decode black or flat: check this expert's quantized weights and "
                                "scales (vidquant verify) or re-calibrate it")


def guard_experts(pipe) -> list:
    """Check every expert call of ``pipe`` (forward hooks); returns the hook handles (``.remove()`` to undo)."""
    counter = {"call": -1}
    handles = []
    for expert in pipeline_experts(pipe):
        def hook(module, args, kwargs, output, expert=expert):
            counter["call"] += 1
            pred = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
            check_expert_output(pred, expert, kwargs.get("timestep"), counter["call"])
        handles.append(getattr(pipe, expert.name).register_forward_hook(hook, with_kwargs=True))
    return handles


def load_quantized_moe_pipeline(model_path: str | os.PathLike, quantized_ckpts: dict[str, str | os.PathLike],
                                device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16, *,
                                quant_methods: dict[str, str | None] | None = None, guard: bool = True,
                                **kwargs):
    """The Wan2.2 pipeline of ``model_path`` with both experts quantized.

    ``quantized_ckpts`` maps ``transformer`` (high-noise) and ``transformer_2`` (low-noise) to converted or export
    checkpoints; each is checked against its own base config (``<model_path>/transformer[_2]``). ``kwargs`` go to
    ``load_quantized_transformer`` (``scheme``, ``round_scale_bf16``); ``quant_methods`` per expert (default
    "auto": from the checkpoint). With ``guard``, :func:`guard_experts` is installed.
    """
    from vidquant.models.loading import inspect_checkpoint, load_pipeline
    from vidquant.runtime.model import load_quantized_transformer

    info = inspect_checkpoint(model_path)
    if info.experts != ("transformer", "transformer_2") or set(quantized_ckpts) != set(info.experts):
        raise ValueError(f"{model_path}: experts {list(info.experts)}, checkpoints given for "
                         f"{sorted(quantized_ckpts)}; a Wan2.2 mixture needs one checkpoint per expert")
    methods = quant_methods or {}
    experts = {name: load_quantized_transformer(ckpt, info.path / name, "cpu", dtype,
                                                quant_method=methods.get(name, "auto"), **kwargs)
               for name, ckpt in quantized_ckpts.items()}
    pipe = load_pipeline(info.path, None, dtype, device, components=experts)
    if guard:
        guard_experts(pipe)
    return pipe


# ----------------------------------------------------------------------------------------------- CLI


def _read_json(path: Path) -> dict:
    from vidquant.export.lightx2v_config import ConfigError

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    text = "\n".join("" if line.lstrip().startswith("//") else line for line in text.splitlines())
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from exc


def generate_moe(pipe, settings, guidance: tuple[float, float], prompt: str, negative_prompt: str = "",
                 image_path: str | os.PathLike | None = None) -> np.ndarray:
    """One clip with the per-expert guidance pair (diffusers' ``guidance_scale`` / ``guidance_scale_2``)."""
    from vidquant.calib.samples import Sample
    from vidquant.generate import GenParams, pipeline_kwargs

    params = GenParams(settings.target_height, settings.target_width, settings.target_video_length,
                       guidance[0], settings.infer_steps, settings.seed, settings.text_len)
    sample = Sample(prompt=prompt, negative_prompt=negative_prompt,
                    image=None if image_path is None else Path(image_path))
    kwargs = pipeline_kwargs(pipe, sample, params)
    kwargs["guidance_scale_2"] = guidance[1]
    with torch.no_grad():
        frames = pipe(**kwargs, output_type="np").frames[0]
    return np.asarray(frames, dtype=np.float32)


def run_moe(args: argparse.Namespace) -> Path:
    """``vidquant infer --model_cls wan2.2_moe``: lightx2v's MoE JSON on the quantized runtime; returns the video."""
    from vidquant.eval.video import save_video
    from vidquant.export.experts import EXPERT_DIRS, read_moe_config
    from vidquant.models.loading import inspect_checkpoint, load_pipeline
    from vidquant.runtime.infer import InferError, _apply_shift, resolve_settings

    config_path, model_path = Path(args.config_json), Path(args.model_path)
    info = inspect_checkpoint(model_path)
    if info.family != "wan2.2_moe":
        raise InferError(f"--model_cls wan2.2_moe but --model_path {model_path} has one transformer; use "
                         f"--model_cls {info.family}")
    cfg, moe = read_moe_config(_read_json(config_path), source=str(config_path))
    settings = {}
    for name, ckpt in moe["ckpts"].items():  # lightx2v's default: <model_path>/{high,low}_noise_model
        explicit = {"dit_quantized_ckpt": ckpt or str(model_path / EXPERT_DIRS[name])}
        settings[name] = resolve_settings(cfg | explicit, config_path=config_path, task=args.task,
                                          model_path=model_path, seed=args.seed, device=args.device,
                                          dtype=args.dtype, round_scale_bf16=args.round_scale_bf16,
                                          numerics=args.numerics,
                                          compile_kernels={"auto": None, "on": True, "off": False}[args.compile])
    first = settings["transformer"]
    if first.quantized:
        pipe = load_quantized_moe_pipeline(
            model_path, {n: s.quantized_ckpt for n, s in settings.items()}, first.device, first.dtype,
            quant_methods={n: s.quant_method for n, s in settings.items()}, scheme=first.scheme,
            round_scale_bf16=first.round_scale_bf16, numerics=first.numerics, compile_kernels=first.compile_kernels)
    else:
        pipe = load_pipeline(model_path, None, first.dtype, first.device)
        guard_experts(pipe)
    if info.boundary_ratio is not None and abs(moe["boundary"] - info.boundary_ratio) > 1e-9:
        warnings.warn(f"{config_path}: boundary {moe['boundary']} differs from {model_path}'s boundary_ratio "
                      f"{info.boundary_ratio}: the experts will serve other timesteps than they were calibrated on "
                      "(vidquant quantize splits at the model's boundary_ratio)", stacklevel=2)
    pipe.register_to_config(boundary_ratio=moe["boundary"])  # the JSON's boundary wins, as in lightx2v
    _apply_shift(pipe, first.sample_shift)
    print(f"vidquant infer: wan2.2_moe {args.task}, boundary {moe['boundary']}, guidance {moe['guidance']}, "
          + ", ".join(f"{n}: {s.quantized_ckpt}" for n, s in settings.items()))
    clip = generate_moe(pipe, first, moe["guidance"], args.prompt, args.negative_prompt, args.image_path)
    return save_video(clip, args.save_video_path, first.fps)
