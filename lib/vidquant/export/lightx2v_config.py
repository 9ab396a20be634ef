"""lightx2v inference config JSON for a quantized advanced-PTQ checkpoint: writer and reader.

lightx2v has used two vocabularies for "which quantized matmul": up to mid-2025
``mm_config: {"mm_type": "W-int8-channel-sym-A-int8-channel-sym-dynamic-Vllm"}``; later versions
``"dit_quantized": true, "dit_quant_scheme": "int8-vllm"``. The writer can emit either or both;
the reader accepts either (and the older ``mm_config.quant_method`` / ``attention_type`` fields)
and returns one normalised dict with both filled in where they have an equivalent.
"""

from __future__ import annotations

import copy
import json
import math
import os
from numbers import Real
from pathlib import Path
from typing import Any, Literal

from vidquant.config import ConfigError as BaseConfigError

__all__ = [
    "ATTENTION_TYPES",
    "ConfigError",
    "normalize_lightx2v_config",
    "read_config_json",
    "read_lightx2v_config",
    "write_lightx2v_config",
]

# The per-channel W8A8 vllm classes we target, in each vocabulary.
MM_TYPES = {
    "int8": "W-int8-channel-sym-A-int8-channel-sym-dynamic-Vllm",
    "fp8": "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Vllm",
}
DIT_QUANT_SCHEMES = {"int8": "int8-vllm", "fp8": "fp8-vllm"}

# Registry keys of lightx2v's matmul classes (HEAD, July 2025).
KNOWN_MM_TYPES = frozenset({
    "Default",
    "Default-Force-FP32",
    "Calib",
    *MM_TYPES.values(),
    "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Q8F",
    "W-int8-channel-sym-A-int8-channel-sym-dynamic-Q8F",
    "W-fp8-block128-sym-A-fp8-channel-group128-sym-dynamic-Deepgemm",
    "W-fp8-block128-sym-A-fp8-channel-group128-sym-dynamic-Deepgemm-ActSgl",
    "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Vllm-ActSgl",
    "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Sgl-ActVllm",
    "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Sgl",
    "W-int8-channel-sym-A-int8-channel-sym-dynamic-Sgl-ActVllm",
})
# Short registry aliases of later LightX2V versions (gguf-* are accepted by prefix).
KNOWN_DIT_QUANT_SCHEMES = frozenset({
    "Default", "Default-ForceFp32", "Calib", "CalibMax",
    "int8-vllm", "fp8-vllm", "int8-sgl", "fp8-sgl", "int8-q8f", "fp8-q8f", "int8-triton", "fp8-triton",
    "fp8-b128-deepgemm", "int8-torchao", "fp8-torchao", "mxfp4", "mxfp6-mxfp8", "mxfp8", "nvfp4",
    "int4-g128-marlin", "fp8-pertensor",
})  # fmt: skip
# Formats beyond W8A8 (vidquant.export.formats): registered under these dit_quant_scheme names only (no mm_type).
BLOCK_DIT_QUANT_SCHEMES = ("mxfp8", "mxfp6-mxfp8", "mxfp4", "nvfp4", "int4-g128-marlin", "fp8-pertensor")
# Pairs that name the same kernel in both vocabularies (only these are filled in by the reader).
_EQUIVALENT = {
    "Default": "Default",
    MM_TYPES["int8"]: DIT_QUANT_SCHEMES["int8"],
    MM_TYPES["fp8"]: DIT_QUANT_SCHEMES["fp8"],
    "W-int8-channel-sym-A-int8-channel-sym-dynamic-Q8F": "int8-q8f",
    "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Q8F": "fp8-q8f",
}
_REVERSE_EQUIVALENT = {alias: mm_type for mm_type, alias in _EQUIVALENT.items()}
ATTENTION_TYPES = frozenset({"flash_attn2", "flash_attn3", "sage_attn2", "radial_attn", "torch_sdpa"})
ATTENTION_FIELDS = ("self_attn_1_type", "cross_attn_1_type", "cross_attn_2_type")
TASKS = ("t2v", "i2v")
VOCABULARIES = ("mm_type", "dit_quant_scheme", "both")
# Defaults lightx2v applies when a field is absent (reference §4.3).
DEFAULTS = {"seed": 42, "fps": 16, "target_video_length": 81}
MAX_SEED = 2**63 - 1


class ConfigError(BaseConfigError):
    """An invalid lightx2v config; the message names the field (a user error, like any config error)."""


# ----------------------------------------------------------------------------------------------- checks


def _fail(source: str, field: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: field '{field}': {message}")


def _check_int(cfg: dict, field: str, source: str, *, minimum: int = 1) -> None:
    value = cfg.get(field)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(source, field, f"expected an integer >= {minimum}, got {value!r}")


def _check_number(cfg: dict, field: str, source: str, *, minimum: float | None = None,
                  exclusive: bool = False) -> None:
    """A finite number (not a bool), optionally ``>= minimum`` (``> minimum`` when ``exclusive``)."""
    value = cfg.get(field)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise _fail(source, field, f"expected a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        raise _fail(source, field, f"expected a number {'>' if exclusive else '>='} {minimum}, got {value!r}")


def _check_bool(cfg: dict, field: str, source: str) -> None:
    value = cfg.get(field)
    if value is not None and not isinstance(value, bool):
        raise _fail(source, field, f"expected true or false, got {value!r}")


def _check_types(cfg: dict, source: str) -> None:
    """The fields read as names are strings and mm_config is an object, before anything compares them."""
    if not isinstance(cfg.get("mm_config", {}), dict):
        raise _fail(source, "mm_config", f"expected an object, got {cfg['mm_config']!r}")
    named = [("mm_config.mm_type", (cfg.get("mm_config") or {}).get("mm_type")),
             ("mm_config.quant_method", (cfg.get("mm_config") or {}).get("quant_method"))]
    named += [(f, cfg.get(f)) for f in ("dit_quant_scheme", "quant_method", "task", "attention_type",
                                        *ATTENTION_FIELDS)]
    for field, value in named:
        if value is not None and not isinstance(value, str):
            raise _fail(source, field, f"expected a string, got {value!r}")


def _check_attention(cfg: dict, source: str) -> None:
    legacy = cfg.get("attention_type")
    for field in ATTENTION_FIELDS:
        if field not in cfg and legacy is not None:
            cfg[field] = legacy  # before 2025-07-03 one attention_type served all three sites
        value = cfg.get(field)
        if value is None:
            continue
        if value not in ATTENTION_TYPES:
            raise _fail(source, field, f"unknown attention {value!r}; choose from {sorted(ATTENTION_TYPES)}")
        if value == "radial_attn" and field != "self_attn_1_type":
            raise _fail(source, field, "radial_attn is only valid for self-attention (self_attn_1_type)")


def _check_video_length(cfg: dict, source: str) -> None:
    _check_int(cfg, "target_video_length", source)
    length = cfg.get("target_video_length")
    if length is not None and (length - 1) % 4:
        raise _fail(source, "target_video_length", f"must be 4k+1 (Wan's VAE packs 4 frames), got {length}")


# ----------------------------------------------------------------------------------------------- vocabularies


def _scheme_of_mm_type(mm_type: str) -> str | None:
    """``W-int8-...`` -> ``int8``: lightx2v derives the default checkpoint dir from this token."""
    return None if mm_type.startswith(("Default", "Calib")) else mm_type.split("-")[1]


def _scheme_of_alias(alias: str) -> str | None:
    """``int8-vllm`` -> ``int8``; ``mxfp8`` -> ``mxfp8``; ``Default`` -> None."""
    return None if alias.startswith(("Default", "Calib")) else alias.split("-")[0]


def _normalize_quant_method(cfg: dict, source: str) -> None:
    mm_config = cfg.get("mm_config") or {}
    legacy = mm_config.get("quant_method")
    if legacy is not None:
        if legacy not in ("smoothquant", "awq"):
            raise _fail(source, "mm_config.quant_method", f"expected smoothquant or awq, got {legacy!r}")
        # Newer lightx2v silently ignores the old location, which would drop the smoothing vectors.
        cfg.setdefault("quant_method", "advanced_ptq")
    method = cfg.get("quant_method")
    if method not in (None, "advanced_ptq"):
        raise _fail(source, "quant_method", f"expected 'advanced_ptq' or absent, got {method!r}")


def _check_vocabularies(cfg: dict, mm_config: dict, source: str) -> None:
    """Each vocabulary on its own: known names, right types."""
    _check_bool(mm_config, "weight_auto_quant", source + " mm_config")
    mm_type = mm_config.get("mm_type")
    if mm_type is not None and mm_type not in KNOWN_MM_TYPES:
        raise _fail(source, "mm_config.mm_type", f"unknown matmul type {mm_type!r}")
    _check_bool(cfg, "dit_quantized", source)
    alias = cfg.get("dit_quant_scheme")
    if alias is not None and alias not in KNOWN_DIT_QUANT_SCHEMES and not str(alias).startswith("gguf-"):
        raise _fail(source, "dit_quant_scheme", f"unknown quant scheme {alias!r}")
    if cfg.get("dit_quantized") and alias is None:
        raise _fail(source, "dit_quant_scheme", "required when dit_quantized is true")


def _normalize_vocabularies(cfg: dict, source: str) -> None:
    """Make both vocabularies say the same thing, or fail naming the field that disagrees."""
    mm_config = cfg.get("mm_config", {})
    if not isinstance(mm_config, dict):
        raise _fail(source, "mm_config", f"expected an object, got {mm_config!r}")
    mm_config = dict(mm_config)
    _check_vocabularies(cfg, mm_config, source)
    mm_type, alias, flag = mm_config.get("mm_type"), cfg.get("dit_quant_scheme"), cfg.get("dit_quantized")
    from_mm = _scheme_of_mm_type(mm_type) if mm_type else None
    from_alias = _scheme_of_alias(alias) if flag else None  # the alias counts only with dit_quantized
    if mm_type is not None and flag is not None and from_mm != from_alias:
        said = f"dit_quantized={flag}, dit_quant_scheme={alias!r}"
        raise _fail(source, "dit_quantized", f"{said} disagrees with mm_config.mm_type {mm_type!r}")
    if flag and alias in BLOCK_DIT_QUANT_SCHEMES and mm_type is not None:
        # fp8-pertensor / int4-g128-marlin share their first token with a W8A8 mm_type but not the kernel
        raise _fail(source, "mm_config.mm_type", f"{mm_type!r} names a different kernel than dit_quant_scheme "
                    f"{alias!r}, which has no mm_type name; remove mm_config.mm_type")
    scheme = from_mm or from_alias
    if mm_type is None and flag:
        mm_type = _REVERSE_EQUIVALENT.get(alias)
    if alias is None and mm_type in _EQUIVALENT:
        alias = _EQUIVALENT[mm_type]
    if mm_type is not None:
        mm_config["mm_type"] = mm_type
    cfg["mm_config"] = mm_config
    cfg["dit_quantized"] = scheme is not None
    if alias is not None:
        cfg["dit_quant_scheme"] = alias
    cfg["quant_scheme"] = scheme


def normalize_lightx2v_config(config: dict[str, Any], *, source: str = "config") -> dict[str, Any]:
    """Validate a lightx2v config dict and return a normalised copy.

    The copy has top-level ``quant_method`` (migrated from ``mm_config.quant_method``), the three
    per-site attention fields (from ``attention_type`` if needed), ``mm_config.mm_type`` and
    ``dit_quantized`` / ``dit_quant_scheme`` filled in from each other where they have an
    equivalent, ``quant_scheme`` ("int8", "fp8", ... or None) and lightx2v's defaults for
    seed, fps and target_video_length. Raises ConfigError naming the field.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(config).__name__}")
    cfg = copy.deepcopy(config)
    for key, value in DEFAULTS.items():
        if cfg.get(key) is None:  # absent or null: lightx2v's default
            cfg[key] = value
    _check_types(cfg, source)
    _normalize_quant_method(cfg, source)
    _normalize_vocabularies(cfg, source)
    _check_attention(cfg, source)
    for field in ("infer_steps", "target_height", "target_width", "fps"):
        _check_int(cfg, field, source)
    _check_int(cfg, "seed", source, minimum=0)
    if isinstance(cfg.get("seed"), int) and cfg["seed"] > MAX_SEED:
        raise _fail(source, "seed", f"expected an integer in 0..{MAX_SEED} (torch's seed range), got {cfg['seed']}")
    for field in ("target_height", "target_width"):
        if isinstance(cfg.get(field), int) and cfg[field] % 16:
            raise _fail(source, field, f"must be a multiple of 16 (VAE stride 8 x patch 2), got {cfg[field]}")
    _check_video_length(cfg, source)
    guide = cfg.get("sample_guide_scale")
    if isinstance(guide, list):  # lightx2v's wan2.2_moe: [high-noise expert, low-noise expert]
        if len(guide) != 2:
            raise _fail(source, "sample_guide_scale", f"expected a number or a [high, low] pair, got {guide!r}")
        for value in guide:
            _check_number({"sample_guide_scale": value}, "sample_guide_scale", source, minimum=0.0)
    else:
        _check_number(cfg, "sample_guide_scale", source, minimum=0.0)
    _check_number(cfg, "sample_shift", source, minimum=0.0, exclusive=True)
    _check_bool(cfg, "enable_cfg", source)
    if cfg.get("task") is not None and cfg["task"] not in TASKS:
        raise _fail(source, "task", f"expected one of {TASKS}, got {cfg['task']!r}")
    ckpt = cfg.get("dit_quantized_ckpt")
    if ckpt is not None and not isinstance(ckpt, str):
        raise _fail(source, "dit_quantized_ckpt", f"expected a path string, got {ckpt!r}")
    return cfg


# ----------------------------------------------------------------------------------------------- files


def read_config_json(path: str | os.PathLike) -> Any:
    """The JSON of a lightx2v config file, unvalidated. Whole-line ``//`` comments (as in lightx2v's bench
    configs) are tolerated."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read as UTF-8 text: {exc}") from None
    # Blank out comment lines rather than dropping them, so JSON error line numbers stay right.
    text = "\n".join("" if line.lstrip().startswith("//") else line for line in text.splitlines())
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from exc


def read_lightx2v_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read (:func:`read_config_json`), validate and normalise a lightx2v config JSON (see
    :func:`normalize_lightx2v_config`)."""
    return normalize_lightx2v_config(read_config_json(path), source=str(path))


def write_lightx2v_config(
    path: str | os.PathLike,
    *,
    task: Literal["t2v", "i2v"],
    scheme: str,
    quantized_ckpt: str | os.PathLike,
    vocabulary: Literal["mm_type", "dit_quant_scheme", "both"] = "both",
    infer_steps: int,
    target_height: int,
    target_width: int,
    target_video_length: int,
    guidance_scale: float,
    seed: int,
    sample_shift: float | None = None,
    fps: int = 16,
    attention: str = "torch_sdpa",
) -> dict[str, Any]:
    """Write a lightx2v config for an advanced-PTQ checkpoint and return it.

    ``scheme``: ``int8`` / ``fp8`` (W8A8, either vocabulary) or one of :data:`BLOCK_DIT_QUANT_SCHEMES`, which
    lightx2v knows only as ``dit_quant_scheme`` (``vocabulary="both"`` then writes that one alone).

    ``quantized_ckpt`` becomes ``dit_quantized_ckpt`` (set explicitly so lightx2v merges that
    directory's config.json). ``enable_cfg`` is ``guidance_scale > 1``; ``attention`` is used at all
    three attention sites. Sizes must be multiples of 16 and the frame count 4k+1.
    """
    where = "write_lightx2v_config"
    if task not in TASKS:
        raise _fail(where, "task", f"expected one of {TASKS}, got {task!r}")
    if scheme not in MM_TYPES and scheme not in BLOCK_DIT_QUANT_SCHEMES:
        raise _fail(where, "scheme", f"expected one of {['int8', 'fp8', *BLOCK_DIT_QUANT_SCHEMES]}, got {scheme!r}")
    if vocabulary not in VOCABULARIES:
        raise _fail(where, "vocabulary", f"expected one of {VOCABULARIES}, got {vocabulary!r}")
    if scheme in BLOCK_DIT_QUANT_SCHEMES:
        if vocabulary == "mm_type":
            raise _fail(where, "vocabulary", f"{scheme} has no mm_config.mm_type name; use dit_quant_scheme")
        vocabulary = "dit_quant_scheme"
    for name, value in (("target_height", target_height), ("target_width", target_width)):
        if isinstance(value, int) and value % 16:
            raise _fail(where, name, f"must be a multiple of 16 (VAE stride 8 x patch 2), got {value}")
    config: dict[str, Any] = {
        "task": task,
        "infer_steps": infer_steps,
        "target_video_length": target_video_length,
        "target_height": target_height,
        "target_width": target_width,
        **dict.fromkeys(ATTENTION_FIELDS, attention),
        "seed": seed,
        "sample_guide_scale": guidance_scale,
        "enable_cfg": guidance_scale > 1,
        "fps": fps,
        "quant_method": "advanced_ptq",
        "dit_quantized_ckpt": str(quantized_ckpt),
    }
    if sample_shift is not None:
        config["sample_shift"] = sample_shift
    if vocabulary in ("mm_type", "both"):
        config["mm_config"] = {"mm_type": MM_TYPES[scheme]}
    if vocabulary in ("dit_quant_scheme", "both"):
        config["dit_quantized"] = True
        config["dit_quant_scheme"] = DIT_QUANT_SCHEMES.get(scheme, scheme)
    normalize_lightx2v_config(config, source=where)  # the same rules the reader applies
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=4) + "\n")
    return config
