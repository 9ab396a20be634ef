"""One way to call a Wan pipeline on a sample, shared by calibration, evaluation and the runtime.

vidquant.calib depends on this module, never the other way (the sample type is only named in annotations).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from vidquant.calib.samples import Sample

__all__ = ["GenParams", "pipeline_kwargs", "generate_video", "generate_videos", "seed_all", "i2v_size",
           "load_conditioning_image"]


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (LLMC re-seeds before every eval position too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class GenParams:
    """What a generation needs besides the prompt. For I2V, height × width is the target *area*; the
    real size follows the image's aspect ratio (llmc_reference §2.2)."""

    height: int = 480
    width: int = 832
    num_frames: int = 81
    guidance_scale: float = 5.0
    num_inference_steps: int = 50
    seed: int = 42
    max_sequence_length: int = 512

    @classmethod
    def from_section(cls, section, seed: int) -> GenParams:
        """From a config's `calib` or `eval` section."""
        return cls(section.target_height, section.target_width, section.num_frames, section.guidance_scale,
                   section.num_inference_steps, seed, section.max_sequence_length)

    @property
    def calls_per_step(self) -> int:
        """Transformer calls per denoising step: diffusers runs CFG as separate cond and uncond calls."""
        return 2 if self.guidance_scale > 1.0 else 1


def _size_multiple(pipe) -> int:
    return pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size[1]


def pipeline_kwargs(pipe, sample: Sample, params: GenParams, device: torch.device | str = "cpu") -> dict:
    """Keyword arguments for `pipe(...)`; the generator is seeded so the same seed gives the same noise."""
    kwargs = dict(
        prompt=sample.prompt,
        negative_prompt=sample.negative_prompt or None,
        num_frames=params.num_frames,
        guidance_scale=params.guidance_scale,
        num_inference_steps=params.num_inference_steps,
        max_sequence_length=params.max_sequence_length,
        generator=torch.Generator(device="cpu").manual_seed(params.seed),
    )
    if sample.image is not None:
        image = load_conditioning_image(sample, params.height, params.width, _size_multiple(pipe))
        kwargs.update(image=image, height=image.height, width=image.width)
    else:
        kwargs.update(height=params.height, width=params.width)
    return kwargs


@torch.no_grad()
def generate_video(pipe, sample: Sample, params: GenParams) -> np.ndarray:
    """Generate one clip: float32 array (frames, height, width, 3) in [0, 1]."""
    frames = pipe(**pipeline_kwargs(pipe, sample, params), output_type="np").frames[0]
    return np.asarray(frames, dtype=np.float32)


@torch.no_grad()
def generate_videos(pipe, samples: Sequence[Sample], params: GenParams, seeds: Sequence[int], batch_size: int = 1,
                    callback: Callable | None = None, progress: bool = False,
                    desc: str = "clips") -> dict[int, list[np.ndarray]]:
    """Every sample at every seed, ``{seed: [clip per sample]}``, up to ``batch_size`` (sample, seed) pairs per
    pipeline call. Each clip's initial noise comes from its own generator seeded with its seed, as in
    :func:`generate_video`; ``batch_size`` 1 is :func:`generate_video` bit for bit, a larger batch gives the same
    clips up to the last bits of the batched GEMMs (and is ~3x faster on a CPU for the tiny models). Clips
    conditioned on an image batch only the seeds of one sample: diffusers encodes one image per call.
    ``callback``: the pipeline's ``callback_on_step_end`` (on the latents)."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size: got {batch_size}; expected at least 1")
    out: dict[int, list] = {seed: [None] * len(samples) for seed in seeds}
    batches = list(_batches(samples, seeds, batch_size))
    seeded = None
    for batch in tqdm(batches, desc=desc, disable=not progress, unit="batch" if batch_size > 1 else "clip"):
        if batch[0][0] != seeded:  # as one clip at a time: the global RNGs seeded once per seed
            seeded = batch[0][0]
            seed_all(seeded)
        clips = _generate_batch(pipe, [samples[i] for _, i in batch], [replace(params, seed=s) for s, _ in batch],
                                callback)
        for (seed, i), clip in zip(batch, clips):
            out[seed][i] = clip
    return out


def _batches(samples: Sequence[Sample], seeds: Sequence[int], batch_size: int):
    """(seed, sample index) pairs in batches: seed-major, or per sample when the samples carry images."""
    if any(s.image is not None for s in samples):
        groups = [[(seed, i) for seed in seeds] for i in range(len(samples))]
    else:
        groups = [[(seed, i) for seed in seeds for i in range(len(samples))]]
    for group in groups:
        for k in range(0, len(group), batch_size):
            yield group[k:k + batch_size]


def _generate_batch(pipe, samples: list[Sample], params: list[GenParams], callback: Callable | None) -> list:
    kwargs = pipeline_kwargs(pipe, samples[0], params[0])
    if len(samples) > 1:
        kwargs.update(prompt=[s.prompt for s in samples], negative_prompt=[s.negative_prompt or "" for s in samples],
                      generator=[torch.Generator(device="cpu").manual_seed(p.seed) for p in params])
    if callback is not None:
        kwargs.update(callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"])
    frames = pipe(**kwargs, output_type="np").frames
    return [np.asarray(f, dtype=np.float32) for f in frames[: len(samples)]]


def i2v_size(image_hw: tuple[int, int], target_height: int, target_width: int, mod: int = 16) -> tuple[int, int]:
    """LLMC's I2V resolution: the target area at the image's aspect ratio, rounded down to multiples of
    `mod` (vae spatial factor × patch size = 16 for Wan). Returns (height, width)."""
    h, w = image_hw
    max_area = target_height * target_width
    aspect = h / w
    height = (round(math.sqrt(max_area * aspect)) // mod) * mod
    width = (round(math.sqrt(max_area / aspect)) // mod) * mod
    return max(height, mod), max(width, mod)


def load_conditioning_image(sample: Sample, target_height: int, target_width: int, mod: int = 16) -> Image.Image:
    """The I2V conditioning image, RGB, resized as LLMC does."""
    with Image.open(sample.image) as im:
        image = im.convert("RGB")
    height, width = i2v_size((image.height, image.width), target_height, target_width, mod)
    return image.resize((width, height))
