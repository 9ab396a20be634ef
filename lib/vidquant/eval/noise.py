"""The eval plan (prompts × seeds) and the noise floor of the video metrics.

Generation is chaotic: a one-ulp change anywhere in the denoising loop moves the whole clip, so a video metric
of a quantized model against the float model mixes the quantization error with this chaos. The **noise floor**
measures the chaos alone: the *float* model regenerates every eval clip (same prompt, same seed) with the latent
after the first denoising step nudged by one ulp (``torch.nextafter`` towards +inf, every element), a change far
below any rounding difference between two CPUs. The floor of a metric is then

- for fidelity against the float clip (PSNR, SSIM, flicker error): the metric of the nudged float clip against
  the float clip — a quantized model that scores at or beyond it is indistinguishable from the float model;
- for task errors against the prompt (trajectory, ΔE): ``|error(nudged) - error(float)|`` — how far the error
  moves under the harmless perturbation; a difference between methods smaller than this is not a finding;
- for task drift against the float clip's object (centroid distance, ΔE): the drift of the nudged float clip.

On the tiny models the float model is *not* chaotic at this scale (its nudged clip sits ~130 dB from the
original): the chaos comes from the quantizers, where a one-ulp change flips a rounding decision somewhere and
the flip grows over the denoising steps (this is how another CPU moves a quantized clip by dB). So the plan can
also nudge the *quantized* model: ``jitter_<metric>`` is ``|metric(nudged quantized clip) - metric(quantized
clip)|`` (both against the same float clip / prompt), the spread of that cell's own numbers under a perturbation
that should not matter; a difference between methods below it is not a finding either. Being the size of an
effect rather than a per-clip number, it is estimated on the first seed's first ``JITTER_CLIPS`` clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vidquant.eval.metrics import video_fidelity
from vidquant.eval.task import DRIFT_METRICS, task_drift, task_errors

__all__ = ["EvalPlan", "nudge_first_latent", "floor_metrics", "jitter_metrics", "FIDELITY_FLOOR", "JITTER_CLIPS",
           "TASK_FLOOR"]

FIDELITY_FLOOR = ("psnr", "ssim", "flicker_error")
JITTER_CLIPS = 16  # the jitter is measured on the first seed's first 16 clips: a spread, not a per-clip number
TASK_FLOOR = ("traj_err_px", "colour_de")


@dataclass(frozen=True)
class EvalPlan:
    """How a run evaluates its clips beyond the config: the generation seeds (None: ``base.seed`` alone) and
    whether to measure the noise floor (one more float generation per clip) and the quantized model's jitter
    (one more quantized generation for each of the first seed's first ``JITTER_CLIPS``
    clips). The prompts are the eval set's (``eval.num_samples`` limits them)."""

    seeds: tuple[int, ...] | None = None
    noise_floor: bool = False
    jitter: bool = False

    def __post_init__(self) -> None:
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise ValueError(f"EvalPlan.seeds: got {self.seeds}; expected distinct seeds, at least one")

    @classmethod
    def from_section(cls, ev: Any) -> EvalPlan:
        """The plan an eval config section asks for (its ``seeds``, ``noise_floor`` and ``jitter`` fields)."""
        seeds = getattr(ev, "seeds", None)
        return cls(tuple(seeds) if seeds else None, bool(getattr(ev, "noise_floor", False)),
                   bool(getattr(ev, "jitter", False)))

    def seeds_for(self, base_seed: int) -> tuple[int, ...]:
        return self.seeds if self.seeds is not None else (base_seed,)


def nudge_first_latent(pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
    """``callback_on_step_end`` of a Wan pipeline: after the first step, every latent element one ulp up."""
    if step != 0:
        return {}
    latents = callback_kwargs["latents"]
    return {"latents": torch.nextafter(latents, torch.full_like(latents, float("inf")))}


def floor_metrics(nudged: np.ndarray, reference: np.ndarray, prompt: str) -> dict[str, float]:
    """The noise-floor columns of one clip: ``floor_<metric>`` (see the module docstring)."""
    fidelity = video_fidelity(nudged, reference)
    row = {f"floor_{k}": fidelity[k] for k in FIDELITY_FLOOR}
    nudged_err, float_err = task_errors(nudged, prompt), task_errors(reference, prompt)
    row.update({f"floor_{k}": abs(nudged_err[k] - float_err[k]) for k in nudged_err})
    if nudged_err:  # a procedural prompt: the object is there to track
        row.update({f"floor_{k}": v for k, v in task_drift(nudged, reference).items()})
    return row


def jitter_metrics(nudged_row: dict, row: dict) -> dict[str, float]:
    """``jitter_<metric>``: ``|nudged - original|`` for the fidelity and task metrics of two ``video_metrics``
    rows of the same quantized model (original and nudged latent) against the same float clip and prompt."""
    return {f"jitter_{k}": abs(nudged_row[k] - row[k]) for k in (*FIDELITY_FLOOR, *TASK_FLOOR, *DRIFT_METRICS)
            if k in row}
