"""One way to call a Wan pipeline on a sample, shared by calibration, evaluation and the runtime.

vidquant.calib depends on this module, never the other way (the sample type is only named in annotations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from vidquant.calib.samples import Sample

__all__ = ["GenParams", "pipeline_kwargs", "generate_video", "i2v_size", "load_conditioning_image"]


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
