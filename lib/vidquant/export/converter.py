"""A lightx2v-compatible weight converter (``tools/convert/converter.py``'s flags, files and index).

Order of work, as upstream: load -> merge LoRAs -> rename keys -> quantize -> save. Differences
from upstream (all keep the output format; see docs/formats.md):

* ``-c 0`` writes one file instead of crashing; the key order in the files is natural-sorted.
* ``blocks.N.modulation`` is renamed forward (see :mod:`vidquant.export.keymap`).
* With ``--quantized``, tensors that are already int8 / float8_e4m3fn and their ``weight_scale``
  pass through untouched (upstream would re-quantize the codes and even the scales), and only
  floating-point tensors are cast to ``--non_linear_dtype``.
* LoRA keys may use Wan or diffusers names, with or without a ``diffusion_model.`` /
  ``transformer.`` prefix; a stored ``.alpha`` scales by alpha/rank; a key that matches no weight
  is an error instead of being skipped.
* The output directory appears only when everything has been written (:func:`~vidquant.export.io.atomic_dir`).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shutil
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from vidquant.config import ConfigError, check_device
from vidquant.export import keymap
from vidquant.export.io import (
    INDEX_SUFFIX,
    TORCH_SUFFIXES,
    CheckpointError,
    atomic_dir,
    load_state_dict,
    save_file_deterministic,
    write_index,
)
from vidquant.fsutil import contains, is_plain_name

__all__ = ["ConverterError", "UnsupportedModelError", "build_parser", "convert", "main", "merge_lora"]

log = logging.getLogger(__name__)

INDEX_NAME = "diffusion_pytorch_model" + INDEX_SUFFIX
LINEAR_DTYPES = {"torch.int8": torch.int8, "torch.float8_e4m3fn": torch.float8_e4m3fn}
NON_LINEAR_DTYPES = {
    "torch.float32": torch.float32,
    "torch.bfloat16": torch.bfloat16,
    "torch.float16": torch.float16,
}
QUANTIZED_DTYPES = (torch.int8, torch.float8_e4m3fn)
MODEL_TYPES = ("wan_dit", "hunyuan_dit", "wan_t5", "wan_clip")
FILE_METADATA = {"format": "pt"}
WEIGHT_SUFFIXES = (".safetensors", *TORCH_SUFFIXES)

# Wan layout: the converter quantizes 2-D weights of blocks.N.{self_attn,cross_attn,ffn}.* (upstream
# tests the 3rd dot component; matching after `blocks.N.` gives the same set and tolerates a prefix).
_QUANT_TARGET = re.compile(r"(?:^|\.)blocks\.\d+\.(?:self_attn|cross_attn|ffn)\.")


class ConverterError(Exception):
    """A user error: bad options, a LoRA that does not fit, a tensor that cannot be quantized."""


class UnsupportedModelError(ConverterError, NotImplementedError):
    """A ``--model_type`` lightx2v knows but this converter does not implement."""


# ----------------------------------------------------------------------------------------------- LoRA

_LORA_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.")
# suffix -> (role, parameter of the base module it updates)
_LORA_SUFFIXES = {
    ".lora_A.weight": ("down", "weight"),
    ".lora_B.weight": ("up", "weight"),
    ".lora_down.weight": ("down", "weight"),
    ".lora_up.weight": ("up", "weight"),
    ".alpha": ("alpha", "weight"),
    ".diff": ("diff", "weight"),
    ".diff_b": ("diff", "bias"),
    ".diff_m": ("diff", "modulation"),
}


def _parse_lora_key(key: str) -> tuple[str, str, str] | None:
    """``(target parameter name, role, module)`` for a LoRA key, None if the key is not LoRA-shaped."""
    name = key
    for prefix in _LORA_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    for suffix, (role, param) in _LORA_SUFFIXES.items():
        if name.endswith(suffix):
            module = name[: -len(suffix)]
            return f"{module}.{param}", role, module
    return None


def _resolve_target(state_dict: Mapping[str, torch.Tensor], name: str) -> str | None:
    """The checkpoint key a LoRA parameter name refers to, in whichever naming the checkpoint uses."""
    for candidate in (name, keymap.to_wan(name), keymap.to_diffusers(name)):
        if candidate in state_dict:
            return candidate
    return None


def merge_lora(
    state_dict: dict[str, torch.Tensor],
    lora: Mapping[str, torch.Tensor],
    alpha: float,
    *,
    source: str = "LoRA",
) -> int:
    """Merge one LoRA into ``state_dict`` in place: ``W += alpha * scale * (B @ A)``; returns merges done.

    ``scale`` is ``stored_alpha / rank`` when the LoRA stores ``<module>.alpha``, else 1. Full
    diffs (``.diff``, ``.diff_b``, ``.diff_m``) are added as ``alpha * diff``. Arithmetic is fp32, the
    result keeps the weight's dtype. ``source`` names the LoRA in error messages.
    """
    if not math.isfinite(alpha):
        raise ConverterError(f"{source}: LoRA alpha is {alpha}; expected a finite number")
    parts: dict[str, dict[str, tuple[str, torch.Tensor]]] = defaultdict(dict)
    for key, tensor in lora.items():
        if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
            raise ConverterError(f"{source}: LoRA tensor {key!r} is {tensor.dtype} with non-finite or non-float "
                                 "values; expected finite floating-point values")
        parsed = _parse_lora_key(key)
        if parsed is None:
            raise ConverterError(f"{source}: unrecognised LoRA key {key!r}")
        param, role, _ = parsed
        target = _resolve_target(state_dict, param)
        if target is None:
            raise ConverterError(f"{source}: LoRA key {key!r} matches no weight in the checkpoint ({param})")
        if role in parts[target]:
            raise ConverterError(f"{source}: {key!r} and {parts[target][role][0]!r} both update {target!r}")
        parts[target][role] = (key, tensor)
    for target, roles in parts.items():
        _merge_one(state_dict, target, roles, alpha, source)
    return len(parts)


def _merge_one(
    state_dict: dict[str, torch.Tensor], target: str, roles: dict, alpha: float, source: str
) -> None:
    weight = state_dict[target]
    if weight.dtype in QUANTIZED_DTYPES or not weight.is_floating_point():
        raise ConverterError(f"{source}: cannot merge into {target!r}, which is {weight.dtype} (quantized)")
    if "diff" in roles:
        delta = roles["diff"][1].float()
    elif "down" in roles and "up" in roles:
        down, up = roles["down"][1].float(), roles["up"][1].float()
        if down.ndim != 2 or up.ndim != 2 or up.shape[1] != down.shape[0]:
            raise ConverterError(
                f"{source}: LoRA for {target!r} has incompatible shapes "
                f"A {tuple(down.shape)}, B {tuple(up.shape)}"
            )
        delta = up @ down
        if "alpha" in roles:
            stored = roles["alpha"][1]
            if stored.numel() != 1:
                raise ConverterError(f"{source}: {roles['alpha'][0]!r} has shape {tuple(stored.shape)}; "
                                     "expected one number (the LoRA's alpha)")
            delta = delta * (float(stored) / down.shape[0])
    else:
        keys = ", ".join(repr(k) for k, _ in roles.values())
        raise ConverterError(f"{source}: incomplete LoRA for {target!r}: only {keys}")
    if delta.shape != weight.shape:
        raise ConverterError(
            f"{source}: LoRA update for {target!r} has shape {tuple(delta.shape)}, "
            f"weight is {tuple(weight.shape)}"
        )
    merged = (weight.float() + alpha * delta.to(weight.device)).to(weight.dtype)
    if not bool(torch.isfinite(merged).all()):
        raise ConverterError(f"{source}: merging into {target!r} gives NaN/Inf values (alpha {alpha}); "
                             "refusing to write a broken checkpoint")
    state_dict[target] = merged


# ----------------------------------------------------------------------------------------------- quantization


def _make_quantizer(linear_dtype: torch.dtype):
    """The project's per-output-channel symmetric quantizer for ``linear_dtype``."""
    try:
        from vidquant.quant import FloatQuantizer, IntQuantizer
    except ImportError as exc:
        raise ConverterError(f"--quantized needs the quantizers of vidquant.quant: {exc}") from exc
    if linear_dtype == torch.int8:
        return IntQuantizer(8, symmetric=True, granularity="per_channel")
    return FloatQuantizer("e4m3", granularity="per_channel", use_qtorch=True)


# --linear_type: lightx2v's converter names (tools/convert/converter.py); block types -> vidquant.export.formats schemes
LINEAR_TYPES = {"int8": torch.int8, "fp8": torch.float8_e4m3fn, "nvfp4": "nvfp4", "mxfp4": "mxfp4",
                "mxfp6": "mxfp6-mxfp8", "mxfp8": "mxfp8"}


def quantize_block_weight(key: str, weight: torch.Tensor, linear_type: str) -> dict[str, torch.Tensor]:
    """RTN of one weight to a block ``--linear_type`` under lightx2v's converter names: ``<key>`` (packed codes),
    ``<key>_scale`` (swizzled block scales) and, for nvfp4, ``<key>_global_scale``. As lightx2v's converter, the
    weight is cast to bf16 first (nvfp4's global scale 2688 / absmax is then computed in bf16)."""
    from vidquant.export.formats import BLOCK_SCHEMES, pack_linear
    from vidquant.quant.blockfmt import MXQuantizer, NVFP4Quantizer

    if not torch.isfinite(weight).all():
        raise ConverterError(f"{key}: weight has NaN or Inf values; refusing to quantize it")
    scheme = LINEAR_TYPES[linear_type]
    w = weight.to(torch.bfloat16)
    q = NVFP4Quantizer() if scheme == "nvfp4" else MXQuantizer(BLOCK_SCHEMES[scheme].elem)
    if w.shape[-1] % q.block_size:
        raise ConverterError(f"{key}: in_features {w.shape[-1]} is not a multiple of {linear_type}'s block "
                             f"size {q.block_size}")
    packed = pack_linear(scheme, q.quantize(w), torch.ones(()))
    out = {key: packed["weight"], key + "_scale": packed["weight_scale"]}
    if scheme == "nvfp4":
        out[key + "_global_scale"] = packed["weight_global_scale"]
    return out


def _block_companions(state_dict: Mapping[str, torch.Tensor]) -> set[str]:
    """Keys of already-quantized block-format linears (packed uint8 / int32 or fp8-pertensor weights) and of every
    tensor stored next to them (scales, global scales, alpha, input scales, Marlin workspace): pass-through."""
    from vidquant.export.formats import companion_suffixes

    bases = {k.removesuffix(".weight") for k, t in state_dict.items()
             if k.endswith(".weight") and t.dtype in (torch.uint8, torch.int32, torch.float8_e4m3fn)}
    keys = {b + ".weight" for b in bases}
    return keys | {f"{b}.{s}" for b in bases for s in companion_suffixes() if f"{b}.{s}" in state_dict}


def _already_quantized(state_dict: Mapping[str, torch.Tensor]) -> set[str]:
    """Keys of int8/fp8 tensors and of their ``<key>_scale`` companions: these pass through as they are."""
    codes = {k for k, t in state_dict.items() if t.dtype in QUANTIZED_DTYPES}
    return codes | {k + "_scale" for k in codes if k + "_scale" in state_dict}


def _is_quant_target(key: str, tensor: torch.Tensor) -> bool:
    return (
        key.endswith(".weight")
        and tensor.ndim == 2
        and tensor.is_floating_point()
        and _QUANT_TARGET.search(key) is not None
    )


def _quantize_one(quantizer, key: str, weight: torch.Tensor, linear_dtype: torch.dtype):
    if not torch.isfinite(weight).all():
        raise ConverterError(f"{key}: weight has NaN or Inf values; refusing to quantize it")
    q = quantizer.quantize(weight.float())
    codes, scale = q.codes.to(linear_dtype), q.scale.to(torch.float32).reshape(-1, 1)
    if codes.shape != weight.shape or scale.shape[0] != weight.shape[0]:
        shapes = f"codes {tuple(codes.shape)}, scale {tuple(q.scale.shape)}"
        raise ConverterError(f"{key}: quantizer returned {shapes} for weight {tuple(weight.shape)}")
    return codes, scale


def quantize_state_dict(
    state_dict: dict[str, torch.Tensor],
    linear_dtype: torch.dtype,
    non_linear_dtype: torch.dtype = torch.float32,
    *,
    progress: bool = True,
    linear_type: str | None = None,
) -> dict[str, torch.Tensor]:
    """Quantize the Wan-layout block linears per output channel; cast other float tensors.

    Consumes ``state_dict`` (entries are popped as they are processed, so peak memory stays near
    one copy). Each target ``<key>`` becomes ``linear_dtype`` codes of shape (out, in) plus
    ``<key>_scale`` (out, 1) fp32. Already-quantized tensors and their scales pass through.
    """
    layout = keymap.detect_layout(state_dict)
    if layout in ("diffusers", "mixed"):
        raise ConverterError(
            f"--quantized selects Wan-layout keys (blocks.N.self_attn...), but the keys are in {layout} "
            "layout; add -d backward to rename them first"
        )
    block_type = linear_type if linear_type in LINEAR_TYPES and isinstance(LINEAR_TYPES[linear_type], str) else None
    quantizer = None if block_type else _make_quantizer(linear_dtype)
    passthrough = _already_quantized(state_dict) | _block_companions(state_dict)
    out: dict[str, torch.Tensor] = {}
    n_quantized = 0
    for key in tqdm(list(state_dict), desc="quantize", unit="tensor", disable=not progress):
        tensor = state_dict.pop(key)
        if key in passthrough or not tensor.is_floating_point():
            out[key] = tensor
        elif _is_quant_target(key, tensor):
            if key + "_scale" in state_dict or key + "_scale" in out:
                raise ConverterError(f"{key}: float weight already has a {key}_scale tensor")
            if block_type:
                out.update(quantize_block_weight(key, tensor, block_type))
            else:
                out[key], out[key + "_scale"] = _quantize_one(quantizer, key, tensor, linear_dtype)
            n_quantized += 1
        else:
            out[key] = tensor.to(non_linear_dtype)
    log.info("quantized %d linears to %s; %d passed through", n_quantized, linear_dtype, len(passthrough))
    return out


# ----------------------------------------------------------------------------------------------- saving


def _natural_key(key: str) -> list:
    """Sort key that puts blocks.2 before blocks.10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _file_groups(
    keys: Sequence[str], *, output_name: str, chunk_size: int, save_by_block: bool
) -> dict[str, list[str]]:
    """File name -> keys, upstream's layouts: chunks of ``chunk_size`` tensors, or one file per block."""
    keys = sorted(keys, key=_natural_key)
    if save_by_block:
        groups: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            idx = keymap.block_index(key)
            groups["non_block.safetensors" if idx is None else f"block_{idx}.safetensors"].append(key)
        return dict(sorted(groups.items(), key=lambda kv: _natural_key(kv[0])))
    size = chunk_size if chunk_size > 0 else max(len(keys), 1)  # 0 = no chunking: one file
    return {
        f"{output_name}_part{i}.safetensors": keys[start : start + size]
        for i, start in enumerate(range(0, len(keys), size))
    }


def save_converted(
    state_dict: Mapping[str, torch.Tensor],
    out_dir: Path,
    *,
    output_ext: str = ".safetensors",
    output_name: str = "converted",
    chunk_size: int = 100,
    save_by_block: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write the converter's files into ``out_dir``; returns them (index last).

    ``.pth`` is one ``<output_name>.pth`` and no index (as upstream). Safetensors output always gets
    ``diffusion_pytorch_model.safetensors.index.json`` with ``total_size`` = sum of the file sizes.
    """
    if output_ext == ".pth":
        path = out_dir / f"{output_name}.pth"
        cpu = {k: state_dict[k].detach().cpu().contiguous() for k in sorted(state_dict, key=_natural_key)}
        torch.save(cpu, path)
        return [path]
    groups = _file_groups(list(state_dict), output_name=output_name, chunk_size=chunk_size,
                          save_by_block=save_by_block)
    written, weight_map = [], {}
    with tqdm(total=len(state_dict), desc="save", unit="tensor", disable=not progress) as bar:
        for filename, keys in groups.items():
            tensors = {k: state_dict[k] for k in keys}
            written.append(save_file_deterministic(tensors, out_dir / filename, FILE_METADATA))
            weight_map.update(dict.fromkeys(keys, filename))
            bar.update(len(keys))
    total_size = sum(p.stat().st_size for p in written)
    written.append(write_index(out_dir, weight_map, total_size, INDEX_NAME))
    return written


def copy_non_weight_files(source_dir: Path, out_dir: Path, skip: Sequence[Path] = ()) -> list[Path]:
    """Copy every file under ``source_dir`` except weights and index jsons, keeping relative paths.

    Symlinks are copied as their content only when they point inside ``source_dir``; a link out of it is
    skipped with a warning (following it would copy, say, a home directory's files into the output). Files
    under ``out_dir`` or ``skip`` (the output being written inside the source) are not copied.
    """
    copied = []
    for src in sorted(p for p in source_dir.rglob("*") if p.is_file()):
        if src.name.endswith(WEIGHT_SUFFIXES) or src.name.endswith(".index.json"):
            continue
        if any(contains(d, src) for d in (out_dir, *skip)):
            continue
        if not contains(source_dir, src):
            log.warning("--copy_no_weight_files: %s links outside %s; not copied", src, source_dir)
            continue
        dst = out_dir / src.relative_to(source_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        copied.append(dst)
    return copied


# ----------------------------------------------------------------------------------------------- API


def _as_dtype(
    value: torch.dtype | str | None, table: Mapping[str, torch.dtype], flag: str
) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        if value is not None and value not in table.values():
            raise ConverterError(f"{flag}: unsupported dtype {value}; choose one of {', '.join(table)}")
        return value
    name = value if value.startswith("torch.") else f"torch.{value}"
    if name not in table:
        raise ConverterError(f"{flag}: unsupported dtype {value!r}; choose one of {', '.join(table)}")
    return table[name]


def _linear_type_dtype(linear_type: str | None, linear_dtype):
    """--linear_type int8 / fp8 is --linear_dtype torch.int8 / float8_e4m3fn; block types keep None (with a marker
    dtype check done by quantize_state_dict)."""
    if linear_type is None:
        return linear_dtype
    if linear_type not in LINEAR_TYPES:
        raise ConverterError(f"--linear_type: got {linear_type!r}; choose one of {', '.join(LINEAR_TYPES)}")
    mapped = LINEAR_TYPES[linear_type]
    if linear_dtype is not None and linear_dtype != mapped:
        raise ConverterError(f"--linear_type {linear_type} contradicts --linear_dtype {linear_dtype}")
    return mapped if isinstance(mapped, torch.dtype) else torch.uint8  # uint8: packed block codes


def _lora_alphas(lora_paths: Sequence, lora_alphas: Sequence[float]) -> list[float]:
    """One alpha per LoRA; a single alpha is broadcast to all of them (upstream's rule)."""
    alphas = list(lora_alphas) or [1.0]
    bad = [a for a in alphas if not math.isfinite(a)]
    if bad:
        raise ConverterError(f"--lora_alpha: got {bad[0]}; expected finite numbers")
    if len(alphas) == 1:
        return alphas * len(lora_paths)
    if len(alphas) != len(lora_paths):
        raise ConverterError(
            f"--lora_alpha: got {len(alphas)} values for {len(lora_paths)} LoRAs (give one, or one each)"
        )
    return alphas


def _check_options(model_type: str, output_ext: str, chunk_size: int, save_by_block: bool,
                   quantized: bool, bits: int, linear_dtype, output_name: str = "converted") -> None:
    if model_type != "wan_dit":
        if model_type in MODEL_TYPES:
            raise UnsupportedModelError(f"--model_type {model_type}: not implemented here (only wan_dit)")
        raise ConverterError(f"--model_type: unknown model type {model_type!r}")
    if output_ext not in (".safetensors", ".pth"):
        raise ConverterError(f"--output_ext must be .safetensors or .pth, got {output_ext!r}")
    if chunk_size < 0:
        raise ConverterError(f"--chunk-size must be >= 0 (0 = one file), got {chunk_size}")
    if save_by_block and output_ext != ".safetensors":
        raise ConverterError("--save_by_block writes safetensors; it cannot go with --output_ext .pth")
    if quantized and bits != 8:
        raise ConverterError(f"--bits: only 8-bit quantization is supported, got {bits}")
    if quantized and linear_dtype is None:
        raise ConverterError("--quantized needs --linear_type (int8, fp8, nvfp4, mxfp4, mxfp6, mxfp8) or "
                             "--linear_dtype torch.int8 / torch.float8_e4m3fn")
    if not is_plain_name(output_name):
        raise ConverterError(f"--output_name: got {output_name!r}; expected a plain file-name prefix (no path "
                             "separators, no '..'): the files always go into --output")


def convert(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    direction: str | None = None,
    output_ext: str = ".safetensors",
    output_name: str = "converted",
    chunk_size: int = 100,
    model_type: str = "wan_dit",
    save_by_block: bool = False,
    quantized: bool = False,
    bits: int = 8,
    linear_dtype: torch.dtype | str | None = None,
    non_linear_dtype: torch.dtype | str = torch.float32,
    device: str = "cpu",
    linear_type: str | None = None,
    lora_paths: Sequence[str | os.PathLike] = (),
    lora_alphas: Sequence[float] = (1.0,),
    copy_no_weight_files: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert a checkpoint the way lightx2v's converter does and return the output directory.

    Args mirror the CLI flags (see :func:`build_parser`); ``overwrite`` replaces an existing output
    directory and ``progress`` shows tqdm bars. ``--non_linear_dtype`` applies only with
    ``quantized`` (as upstream), and only to floating-point tensors that are not already quantized.

    Raises:
        ConverterError: bad options or inputs (``UnsupportedModelError`` for other model types).
        CheckpointError: a missing, corrupt or inconsistent source or LoRA file.
        FileExistsError: ``output`` exists and ``overwrite`` is false.
    """
    linear_dtype = _as_dtype(linear_dtype, LINEAR_DTYPES, "--linear_dtype")
    linear_dtype = _linear_type_dtype(linear_type, linear_dtype)
    non_linear_dtype = _as_dtype(non_linear_dtype, NON_LINEAR_DTYPES, "--non_linear_dtype")
    _check_options(model_type, output_ext, chunk_size, save_by_block, quantized, bits, linear_dtype, output_name)
    if direction not in (None, "forward", "backward"):
        raise ConverterError(f"--direction must be forward or backward, got {direction!r}")
    if isinstance(lora_paths, (str, os.PathLike)):
        lora_paths = [lora_paths]
    if isinstance(lora_alphas, (int, float)):
        lora_alphas = [lora_alphas]
    alphas = _lora_alphas(lora_paths, lora_alphas)
    source, output = Path(source), Path(output)
    if not source.exists():
        raise CheckpointError(f"{source}: no such file or directory")
    for path in lora_paths:
        if not Path(path).exists():
            raise CheckpointError(f"{path}: LoRA file or directory not found (--lora_path)")
    try:
        check_device(device, "--device")
    except ConfigError as exc:
        raise ConverterError(str(exc)) from None

    with atomic_dir(output, overwrite=overwrite, inputs=[source, *lora_paths]) as tmp:
        state_dict = load_state_dict(source, device=device)
        if not state_dict:
            raise ConverterError(f"{source}: checkpoint has no tensors")
        log.info("loaded %d tensors from %s", len(state_dict), source)
        for path, alpha in zip(lora_paths, alphas):
            n = merge_lora(state_dict, load_state_dict(path, device=device), alpha, source=str(path))
            log.info("merged %d LoRA updates from %s (alpha %g)", n, path, alpha)
        if direction is not None:
            try:
                state_dict = keymap.rename_state_dict(state_dict, direction)
            except ValueError as exc:  # one tensor under both naming layouts
                raise ConverterError(f"{source}: {exc}; the checkpoint holds the same tensor twice") from None
        if quantized:
            state_dict = quantize_state_dict(state_dict, linear_dtype, non_linear_dtype, progress=progress,
                                             linear_type=linear_type)
        save_converted(state_dict, tmp, output_ext=output_ext, output_name=output_name, chunk_size=chunk_size,
                       save_by_block=save_by_block, progress=progress)
        if copy_no_weight_files:
            if source.is_dir():
                copy_non_weight_files(source, tmp, skip=[output])
            else:
                log.warning("--copy_no_weight_files: source %s is a file; nothing to copy", source)
    log.info("wrote %s", output)
    return output


# ----------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """lightx2v's converter flags (same names, defaults and meanings), plus ``--linear_type`` and ``--overwrite``.

    Each help text sits on its own ``help=`` line: `make mutation` leaves help wording alone, as it does messages.
    """
    p = argparse.ArgumentParser(
        prog="converter.py", description="Model weight format converter (lightx2v-compatible)"
    )
    p.add_argument("-s", "--source", required=True,
                   help="input file (.safetensors/.pth/.pt) or directory")
    p.add_argument("-o", "--output", required=True,
                   help="output directory (new, unless --overwrite)")
    p.add_argument("-o_e", "--output_ext", default=".safetensors", choices=[".safetensors", ".pth"])
    p.add_argument("-o_n", "--output_name", default="converted",
                   help="prefix of the chunk files")
    p.add_argument("-d", "--direction", choices=["forward", "backward"], default=None,
                   help="forward = Wan/lightx2v -> diffusers, backward = diffusers -> Wan/lightx2v; "
                   "default: no renaming")
    p.add_argument("-c", "--chunk-size", type=int, default=100,
                   help="tensors per file; 0 = one file")
    p.add_argument("-t", "--model_type", choices=MODEL_TYPES, default="wan_dit")
    p.add_argument("-b", "--save_by_block", action="store_true",
                   help="block_<i>.safetensors per block + non_block.safetensors (needed by lazy_load)")
    p.add_argument("--quantized", action="store_true",
                   help="quantize the block linears per output channel")
    p.add_argument("--bits", type=int, default=8, choices=[8])
    p.add_argument("--linear_dtype", choices=list(LINEAR_DTYPES), default=None)
    p.add_argument("--linear_type", choices=list(LINEAR_TYPES), default=None,
                   help="lightx2v's quant type for the block linears (RTN); nvfp4 / mxfp* are packed block formats")
    p.add_argument("--non_linear_dtype", choices=list(NON_LINEAR_DTYPES), default="torch.float32",
                   help="dtype of the other float tensors when --quantized")
    p.add_argument("--device", default="cpu",
                   help="device tensors are loaded to and quantized on")
    p.add_argument("--lora_path", nargs="+", default=[],
                   help="LoRA file(s) or directories to merge first")
    p.add_argument("--lora_alpha", nargs="+", type=float, default=[1.0],
                   help="one alpha, or one per LoRA")
    p.add_argument("--copy_no_weight_files", action="store_true",
                   help="copy config.json etc.")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output directory")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 2 bad options or inputs, 1 I/O failure)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        convert(
            args.source,
            args.output,
            direction=args.direction,
            output_ext=args.output_ext,
            output_name=args.output_name,
            chunk_size=args.chunk_size,
            model_type=args.model_type,
            save_by_block=args.save_by_block,
            quantized=args.quantized,
            bits=args.bits,
            linear_dtype=args.linear_dtype,
            linear_type=args.linear_type,
            non_linear_dtype=args.non_linear_dtype,
            device=args.device,
            lora_paths=args.lora_path,
            lora_alphas=args.lora_alpha,
            copy_no_weight_files=args.copy_no_weight_files,
            overwrite=args.overwrite,
        )
    except (ConverterError, CheckpointError, FileExistsError, PermissionError) as exc:
        print(f"converter: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. disk full: the output was not created, say why without a traceback
        print(f"converter: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
