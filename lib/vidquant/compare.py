"""Runs side by side: their clips (float vs quantized, same prompt and seed), fidelity tables, and the per-layer
and per-timestep errors of several runs in one table (the `vidquant.run.RunResult` of each, by label).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from vidquant.config import Config

__all__ = ["clip_pair", "clips_of", "generate_clips", "generate_eval_clips", "fidelity_table", "run_summary",
           "run_intervals", "method_layers", "method_timesteps"]


def clip_pair(result, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(float clip, quantized clip) of eval sample `index` of a run (`RunResult.videos`, in eval order)."""
    pairs = list(result.videos.values())
    if not pairs:
        raise ValueError("the run generated no eval clips (its config has no `eval` section)")
    return pairs[index]


def clips_of(results: Mapping[str, Any], index: int = 0, reference: str = "float") -> dict[str, np.ndarray]:
    """{`reference`: float clip, label: quantized clip for each run} for eval sample `index`; all runs share the
    float clip (same model, seed and prompt), so the first run's is used."""
    out: dict[str, np.ndarray] = {}
    for label, result in results.items():
        ref, clip = clip_pair(result, index)
        out.setdefault(reference, ref)
        out[label] = clip
    return out


def generate_clips(pipe, samples: Sequence, params, seed: int | None = None, *, batch_size: int = 1,
                   progress: bool = True, desc: str = "clips") -> list[np.ndarray]:
    """One clip per sample with `pipe`, generated as `vidquant.run.quantize` generates its eval clips
    (:func:`vidquant.generate.generate_videos`, seed `seed`, default `params.seed`): a float, a fake-quantized and
    a real quantized pipeline given the same samples and settings compare frame by frame."""
    from vidquant.generate import generate_videos

    seed = params.seed if seed is None else seed
    return generate_videos(pipe, samples, params, [seed], batch_size, progress=progress, desc=desc)[seed]


def generate_eval_clips(pipe, cfg: Config, limit: int | None = None, *, progress: bool = True) -> list[np.ndarray]:
    """Generate the first `limit` eval samples of `cfg` with `pipe`, exactly as `vidquant.run.quantize` does
    (same prompts, sizes, steps and seed), so the clips compare frame by frame with a run's clips."""
    from vidquant.generate import GenParams
    from vidquant.run import batch_independent, build_quantizers, load_eval_samples

    batchable = batch_independent(build_quantizers(cfg)[1])  # as quantize: a batch-coupling quantizer runs bs 1
    clips: list[np.ndarray] = []
    for ev, samples in load_eval_samples(cfg):
        todo = samples if limit is None else samples[: max(0, limit - len(clips))]
        if todo:
            clips += generate_clips(pipe, todo, GenParams.from_section(ev, cfg.base.seed), cfg.base.seed,
                                    batch_size=ev.bs if batchable else 1, progress=progress, desc="eval clips")
    return clips


def fidelity_table(clips: Mapping[str, Sequence[np.ndarray]], references: Mapping[str, Sequence[np.ndarray]]
                   ) -> pd.DataFrame:
    """PSNR / SSIM / flicker error of every (clip set, reference set) pair, one row per pair and sample."""
    from vidquant.eval.metrics import video_fidelity

    rows = []
    for name, group in clips.items():
        for ref_name, refs in references.items():
            if ref_name == name:
                continue
            for i, (clip, ref) in enumerate(zip(group, refs)):
                row = video_fidelity(clip, ref)
                rows.append({"clips": name, "vs": ref_name, "sample": i, "psnr": row["psnr"], "ssim": row["ssim"],
                             "flicker_error": row["flicker_error"]})
    return pd.DataFrame(rows)


_SUMMARY_KEYS = ("method", "weight", "act", "mean_sqnr_db", "min_sqnr_db", "mean_timestep_rel_err", "video_psnr",
                 "video_ssim", "video_flicker_error", "video_colour_ok", "video_direction_ok", "seconds")


def run_summary(results: Mapping[str, Any]) -> pd.DataFrame:
    """One row per run (`{label: RunResult}`) with the headline numbers of `RunResult.summary`."""
    rows = []
    for label, result in results.items():
        s = result.summary
        rows.append({"run": label, **{k: s[k] for k in _SUMMARY_KEYS if k in s}})
    return pd.DataFrame(rows).set_index("run")


def run_intervals(results: Mapping[str, Any], baseline: str | None = None) -> pd.DataFrame:
    """The video metrics of several runs (`{label: RunResult}`) with their 95 % bootstrap intervals over the
    clips (prompts × seeds), noise floor and jitter where the runs measured them, and the paired difference
    against the run labelled `baseline` on the same prompts and seeds (`vidquant.eval.intervals.interval_table`;
    `*`: the difference is real, `~`: below the floor or jitter). Empty when no run has per-clip video metrics."""
    from vidquant.eval.intervals import interval_rows, interval_table

    frames = [r.video_metrics.assign(method=label, format="") for label, r in results.items()
              if not r.video_metrics.empty]
    if not frames:
        return pd.DataFrame()
    table = interval_table(pd.concat(frames, ignore_index=True), baseline)
    cells = pd.DataFrame([{**r.summary, "method": label, "format": ""} for label, r in results.items()])
    return interval_rows(table, cells, baseline or "", label="run").set_index("run")


def method_layers(results: Mapping[str, Any]) -> pd.DataFrame:
    """Per-layer error of several runs in one long table (`method` column = the label)."""
    frames = [r.layer_metrics.assign(method=label) for label, r in results.items() if not r.layer_metrics.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def method_timesteps(results: Mapping[str, Any]) -> pd.DataFrame:
    """Per-timestep denoiser error of several runs in one long table (`method` column = the label)."""
    frames = [r.timestep_metrics.assign(method=label) for label, r in results.items()
              if not r.timestep_metrics.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
