"""Wan2.2 A14B for lightx2v: two quantized checkpoints (high-noise and low-noise expert) and the MoE config.

lightx2v runs the mixture with ``--model_cls wan2.2_moe`` (``Wan22MoeRunner``,
``lightx2v/models/runners/wan/wan_runner.py``): with ``dit_quantized`` true it loads the high-noise expert from
``high_noise_quantized_ckpt`` and the low-noise one from ``low_noise_quantized_ckpt`` (otherwise from
``<model_path>/high_noise_model`` and ``<model_path>/low_noise_model``), each as an ordinary Wan DiT checkpoint
(``WanModel``). ``MultiModelStruct`` switches on ``boundary`` (``configs/wan22/wan_moe_t2v.json``: 0.875,
``wan_moe_i2v.json``: 0.900): the high-noise model while ``timestep >= boundary * 1000``; ``sample_guide_scale`` is
a pair ``[high, low]``. TI2V-5B is the dense ``--model_cls wan2.2`` (``Wan22DenseRunner``, the usual single
``dit_quantized_ckpt``; ``configs/wan22/wan_ti2v_*.json`` add ``num_channels_latents`` 48 and ``vae_stride``
[4, 16, 16] for the 48-channel VAE).

So the export is two ordinary advanced-PTQ exports side by side, named after lightx2v's default folders::

    <save_path>/lightx2v_quant_model/high_noise_model/   (diffusers `transformer`)
    <save_path>/lightx2v_quant_model/low_noise_model/    (diffusers `transformer_2`)

written in one atomic step; each converts and verifies on its own, exactly like a Wan2.1 export.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidquant.export.io import atomic_dir
from vidquant.export.lightx2v_config import (
    ConfigError,
    normalize_lightx2v_config,
    write_lightx2v_config,
)
from vidquant.export.lightx2v_export import EXPORT_DIRNAME, write_export
from vidquant.models.layout import ROLES

__all__ = ["EXPERT_DIRS", "export_lightx2v_experts", "convert_experts", "verify_experts",
           "write_lightx2v_moe_config", "read_moe_config"]

EXPERT_DIRS = {name: f"{role}_model" for name, role in ROLES.items()}  # transformer -> high_noise_model, ...
CKPT_KEYS = {name: f"{role}_quantized_ckpt" for name, role in ROLES.items()}  # lightx2v's config keys


def export_lightx2v_experts(transformers: dict[str, nn.Module], wq, save_path: str | os.PathLike, *,
                            weight_qparams: dict[str, dict] | None = None,
                            scale_dtype: torch.dtype = torch.float32, max_shard_size: str = "10GB",
                            overwrite: bool = False, scheme: str | None = None,
                            input_absmax: dict[str, dict] | None = None) -> Path:
    """Write ``<save_path>/lightx2v_quant_model/{high,low}_noise_model/`` atomically; returns the parent.

    ``transformers`` maps the pipeline attribute (``transformer``, ``transformer_2``) to the calibrated model,
    ``weight_qparams`` maps it to that expert's fixed weight grids (``BlockwiseResult.weight_qparams``);
    ``scheme`` / ``input_absmax`` (per expert) as in :func:`~vidquant.export.lightx2v_export.export_lightx2v`.
    """
    unknown = sorted(set(transformers) - set(EXPERT_DIRS))
    if unknown or len(transformers) != len(EXPERT_DIRS):
        raise ValueError(f"export_lightx2v_experts: expected experts {sorted(EXPERT_DIRS)}, got {sorted(transformers)}")
    weight_qparams = weight_qparams or {}
    final = Path(save_path) / EXPORT_DIRNAME
    with atomic_dir(final, overwrite=overwrite) as tmp:
        for name, model in transformers.items():
            folder = tmp / EXPERT_DIRS[name]
            folder.mkdir(parents=True)
            write_export(folder, model, wq, weight_qparams.get(name), scale_dtype, max_shard_size, scheme,
                         (input_absmax or {}).get(name))
    return final


def convert_experts(export_dir: str | os.PathLike, output: str | os.PathLike, *, overwrite: bool = False,
                    **convert_kwargs: Any) -> Path:
    """Run the lightx2v converter (``vidquant.export.converter.convert``) on each expert folder of an export:
    ``<output>/high_noise_model`` and ``<output>/low_noise_model``. ``convert_kwargs`` are its flags (e.g.
    ``direction="backward"``)."""
    from vidquant.export.converter import convert

    export_dir, output = Path(export_dir), Path(output)
    missing = [d for d in EXPERT_DIRS.values() if not (export_dir / d).is_dir()]
    if missing:
        raise FileNotFoundError(f"{export_dir}: no {', '.join(missing)} folder (not a two-expert export)")
    with atomic_dir(output, overwrite=overwrite) as tmp:
        for folder in EXPERT_DIRS.values():
            convert(export_dir / folder, tmp / folder, **convert_kwargs)
    return output


def verify_experts(path: str | os.PathLike, **verify_kwargs: Any) -> dict[str, list]:
    """``vidquant.export.verify.verify`` on each expert folder; ``{folder name: problems}``."""
    from vidquant.export.verify import verify

    path = Path(path)
    return {folder: verify(path / folder, **verify_kwargs) for folder in EXPERT_DIRS.values()}


def write_lightx2v_moe_config(path: str | os.PathLike, *, task: str, scheme: str,
                              quantized_ckpts: dict[str, str | os.PathLike], boundary: float,
                              guidance_scale: float | tuple[float, float], **kwargs: Any) -> dict[str, Any]:
    """lightx2v's inference JSON for a quantized Wan2.2 mixture (``--model_cls wan2.2_moe``).

    The single-model writer's fields (``write_lightx2v_config``, ``kwargs``: infer_steps, target_height, ...),
    without ``dit_quantized_ckpt``, plus ``high_noise_quantized_ckpt`` / ``low_noise_quantized_ckpt`` (from
    ``quantized_ckpts``, keyed by pipeline attribute or by folder name), ``boundary`` and
    ``sample_guide_scale`` as the ``[high, low]`` pair.
    """
    ckpts = {name: quantized_ckpts.get(name, quantized_ckpts.get(EXPERT_DIRS[name])) for name in EXPERT_DIRS}
    if any(v is None for v in ckpts.values()) or not 0 < float(boundary) < 1:
        raise ConfigError(f"write_lightx2v_moe_config: need both expert checkpoints ({sorted(EXPERT_DIRS)}) and "
                          f"a boundary in (0, 1); got {sorted(quantized_ckpts)}, boundary {boundary!r}")
    pair = tuple(guidance_scale) if isinstance(guidance_scale, list | tuple) else (guidance_scale,) * 2
    path = Path(path)
    config = write_lightx2v_config(path, task=task, scheme=scheme, quantized_ckpt=ckpts["transformer"],
                                   guidance_scale=pair[0], **kwargs)
    del config["dit_quantized_ckpt"]
    config.update({CKPT_KEYS[name]: str(ckpt) for name, ckpt in ckpts.items()})
    config.update(boundary=float(boundary), sample_guide_scale=[float(g) for g in pair],
                  enable_cfg=max(pair) > 1)
    path.write_text(json.dumps(config, indent=4) + "\n")
    return config


def read_moe_config(config: dict[str, Any], *, source: str = "config") -> tuple[dict[str, Any], dict]:
    """Validate the MoE fields of a lightx2v config; returns (the normalised single-model fields, MoE fields).

    MoE fields: ``{"ckpts": {"transformer": path, "transformer_2": path}, "boundary": float,
    "guidance": (high, low)}``; a missing checkpoint key is None (lightx2v then uses
    ``<model_path>/{high,low}_noise_model``). ``sample_guide_scale`` may be one number or a ``[high, low]`` pair.
    """
    cfg = dict(config)
    guide = cfg.pop("sample_guide_scale", 5.0)
    pair = guide if isinstance(guide, list) else [guide, guide]
    if len(pair) != 2 or not all(isinstance(g, int | float) and not isinstance(g, bool) for g in pair):
        raise ConfigError(f"{source}: field 'sample_guide_scale': expected a number or a [high, low] pair, "
                          f"got {guide!r}")
    boundary = cfg.get("boundary")
    if isinstance(boundary, bool) or not isinstance(boundary, int | float) or not 0 < boundary < 1:
        raise ConfigError(f"{source}: field 'boundary': expected a number in (0, 1) (lightx2v's wan2.2_moe switches "
                          f"experts at boundary * 1000), got {boundary!r}")
    ckpts = {}
    for name, key in CKPT_KEYS.items():
        value = cfg.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{source}: field '{key}': expected a path string, got {value!r}")
        ckpts[name] = value
    cfg["sample_guide_scale"] = float(pair[0])
    normalised = normalize_lightx2v_config(cfg, source=source)
    return normalised, {"ckpts": ckpts, "boundary": float(boundary), "guidance": tuple(float(g) for g in pair)}
