"""A notebook's parameters as a validated config, and the variants a notebook compares (the RTN baseline, other
bit widths): LLMC YAML in, `vidquant.config.Config` out, so `vidquant.run.quantize` runs exactly what
``vidquant quantize --config ... --set ...`` would.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vidquant.config import Config, ConfigError, apply_overrides, parse_config, read_yaml

__all__ = ["notebook_config", "variant", "as_rtn", "scheme_label", "bit_overrides", "lightx2v_config_for"]


def notebook_config(
    config: str | os.PathLike,
    *,
    model_path: str | None = None,
    calib_path: str | None = None,
    eval_path: str | None = None,
    output_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    height: int | None = None,
    width: int | None = None,
    num_frames: int | None = None,
    num_inference_steps: int | None = None,
    sample_steps: int | None = None,
    num_eval_samples: int | None = None,
    eval_seeds: Sequence[int] | None = None,
    noise_floor: bool | None = None,
    save_lightx2v: bool | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load an LLMC YAML config and put a notebook's parameters into it.

    The common parameters map onto the config as follows (None keeps the file's value):
    `model_path` → model.path; `calib_path` / `eval_path` → calib.path / every eval section's path;
    `seed` → base.seed; `height`, `width`, `num_frames`, `num_inference_steps` → the calib and every
    eval section (target_height, target_width, num_frames, num_inference_steps); `sample_steps` →
    calib.sample_steps; `num_eval_samples` → every eval section's num_samples (the first N prompts of the eval
    set); `eval_seeds` → every eval section's seeds (each prompt once per seed: the clips the intervals of
    `vidquant.compare.run_intervals` are taken over); `noise_floor` → every eval section's noise_floor and jitter
    (the float model's and the quantized model's clips with a one-ulp nudge, `vidquant.eval.noise`);
    `output_dir` → save.save_path and every eval section's output_video_path (``<output_dir>/videos``);
    `save_lightx2v` → save.save_lightx2v. `overrides` are dotted fields applied last, exactly as
    ``vidquant quantize --set`` (e.g. ``{"quant.video_gen.special.alpha": 0.8}``).
    """
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (working directory: {os.getcwd()})")
    raw = read_yaml(path) or {}  # strict YAML: duplicate keys, alias bombs, encodings
    sections: dict[str, Any] = {}
    if model_path is not None:
        raw.setdefault("model", {})["path"] = str(model_path)
    if seed is not None:
        raw.setdefault("base", {})["seed"] = int(seed)
    evals = raw.get("eval")
    evals = [] if evals is None else (evals if isinstance(evals, list) else [evals])
    calib = raw.get("calib")
    shared = {"target_height": height, "target_width": width, "num_frames": num_frames,
              "num_inference_steps": num_inference_steps}
    for section in ([calib] if isinstance(calib, dict) else []) + evals:
        section.update({k: v for k, v in shared.items() if v is not None})
    if isinstance(calib, dict):
        if calib_path is not None:
            calib["path"] = str(calib_path)
        if sample_steps is not None:
            calib["sample_steps"] = int(sample_steps)
    for section in evals:
        if eval_path is not None:
            section["path"] = str(eval_path)
        if num_eval_samples is not None:
            section["num_samples"] = int(num_eval_samples)
        if eval_seeds is not None:
            section["seeds"] = [int(s) for s in eval_seeds]
        if noise_floor is not None:
            section["noise_floor"] = section["jitter"] = bool(noise_floor)
        if output_dir is not None:
            section["output_video_path"] = str(Path(output_dir) / "videos")
    if output_dir is not None:
        sections["save.save_path"] = str(output_dir)
    if save_lightx2v is not None:
        sections["save.save_lightx2v"] = bool(save_lightx2v)
    raw = apply_overrides(raw, {**sections, **dict(overrides or {})})
    return parse_config(raw, source=str(path))


def variant(cfg: Config, overrides: Mapping[str, Any], output_dir: str | os.PathLike | None = None) -> Config:
    """A copy of `cfg` with dotted-field overrides, validated again (relative paths keep resolving the same).
    With `output_dir`, the copy writes there: save.save_path and every eval section's videos
    (``<output_dir>/videos``)."""
    raw = cfg.model_dump(mode="json", exclude_none=True)
    over = dict(overrides)
    if output_dir is not None:
        over["save.save_path"] = str(output_dir)
        evals = raw.get("eval")
        for ev in evals if isinstance(evals, list) else ([evals] if evals else []):
            ev["output_video_path"] = str(Path(output_dir) / "videos")
    return parse_config(apply_overrides(raw, over), source=cfg.source)


def as_rtn(cfg: Config, output_dir: str | os.PathLike) -> Config:
    """The same quantizers, calibration and evaluation with plain RTN: the baseline every method is compared
    with. Writes to `output_dir` (videos in ``<output_dir>/videos``); exports nothing."""
    return variant(cfg, {"quant.video_gen.method": "RTN", "quant.video_gen.special": {},
                         "save.save_lightx2v": False}, output_dir)


def scheme_label(cfg: Config) -> str:
    """Weight/activation formats of a config, e.g. "int8/int8", "e4m3/e4m3", "int4/fp" (weight-only)."""
    vg = cfg.quant.video_gen
    return f"{vg.weight.label}/{vg.act.label if vg.act is not None else 'fp'}"


def bit_overrides(w_bit: int | None = None, a_bit: int | None = None) -> dict[str, Any]:
    """Overrides for integer bit widths: None keeps the config's, ``a_bit=0`` means weight-only (no `act`)."""
    over: dict[str, Any] = {}
    if w_bit is not None:
        over["quant.video_gen.weight.bit"] = int(w_bit)
    if a_bit == 0:
        over["quant.video_gen.act"] = None
    elif a_bit is not None:
        over["quant.video_gen.act.bit"] = int(a_bit)
    return over


def lightx2v_config_for(cfg: Config, quantized_ckpt: str | os.PathLike, path: str | os.PathLike) -> dict[str, Any]:
    """Write the lightx2v inference config matching a quantization config (task, int8/fp8 scheme, the first
    eval section's sizes, steps, guidance and seed) for `quantized_ckpt`; returns it."""
    from vidquant.export.lightx2v_config import write_lightx2v_config
    from vidquant.export.lightx2v_export import check_lightx2v_exportable

    ev = cfg.evals[0] if cfg.evals else cfg.calib
    return write_lightx2v_config(
        path, task=cfg.task, scheme=check_lightx2v_exportable(cfg.quant.video_gen), quantized_ckpt=quantized_ckpt,
        infer_steps=ev.num_inference_steps, target_height=ev.target_height, target_width=ev.target_width,
        target_video_length=ev.num_frames, guidance_scale=ev.guidance_scale, seed=cfg.base.seed,
        fps=getattr(ev, "fps", 16))
