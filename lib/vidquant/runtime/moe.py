"""Quantized Wan2.2 A14B: both experts as real W8A8 transformers, and a guard against black clips.

``load_quantized_moe_pipeline`` builds each expert from its own converted (or export) checkpoint with
``runtime.model.load_quantized_transformer`` against the base pipeline's ``transformer`` / ``transformer_2``
config and hands both to the diffusers pipeline, which switches between them at ``boundary_ratio`` exactly as
lightx2v's ``wan2.2_moe`` runner does (``export.experts`` has the facts). ``vidquant infer --model_cls wan2.2_moe``
reads lightx2v's MoE JSON (``high_noise_quantized_ckpt`` / ``low_noise_quantized_ckpt`` / ``boundary`` /
``sample_guide_scale: [high, low]``) through ``vidquant.runtime.infer.run_moe``.

The guard (:func:`guard_experts`): users report all-black clips from quantized A14B. A black clip comes from a
denoiser output that is not finite (an overflowing scale, an inf activation) or constant (a dead expert); the
VAE then decodes garbage or a flat frame and nothing says which model failed. Every expert call is checked, and
the first bad one raises :class:`ExpertOutputError` naming the expert, the denoising step, the timestep and
the CFG branch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vidquant.models.layout import Expert, pipeline_experts

__all__ = ["ExpertOutputError", "guard_experts", "check_expert_output", "load_quantized_moe_pipeline",
           "generate_moe"]


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
