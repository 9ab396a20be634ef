"""LLMC's `save_lightx2v` export (llmc_reference §8): the calibrated transformer's state dict in diffusers key
names, every block linear as int8 / float8_e4m3fn codes (out, in) plus `weight_scale` (out, 1), biases,
`affine_norm1/3` smoothing vectors, `norm2` with its folded scale, every other tensor as loaded, and
`config.json` with `"quant_method": "advanced_ptq"`.

Differences from LLMC, on purpose: `weight_scale` is fp32 by default (LLMC: bf16; `weight_scale_dtype`
gives LLMC's), codes come from the calibrated float weights rather than re-quantized fake-quant weights,
and configs lightx2v cannot run are refused before any work (LLMC exports int32 W6 checkpoints).

Beyond W8A8 (ours): the block formats lightx2v runs (mxfp8, mxfp6-mxfp8, mxfp4, nvfp4, int4-g128-marlin,
fp8-pertensor) are written in lightx2v's per-linear layout by :func:`block_state_dict` (vidquant.export.formats,
docs/formats.md §5).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from vidquant.algos.deploy import quantize_weight
from vidquant.config import parse_size
from vidquant.export.formats import BLOCK_SCHEMES, pack_linear, scheme_of_config
from vidquant.export.io import atomic_dir, save_sharded
from vidquant.models.block import make_transformer_smoothable
from vidquant.models.layout import block_linears

__all__ = ["ExportError", "check_lightx2v_exportable", "block_scheme", "block_state_dict", "lightx2v_state_dict",
           "export_lightx2v", "write_export", "EXPORT_DIRNAME"]

EXPORT_DIRNAME = "lightx2v_quant_model"


class ExportError(ValueError):
    """A config or model that lightx2v cannot load; names the field."""


def check_lightx2v_exportable(vg) -> str:
    """Refuse what lightx2v cannot run (8-bit symmetric per-channel int weights with per-token int8
    activations, or e4m3 weights with e4m3 per-token activations). Returns the scheme 'int8' or 'fp8'."""
    w, a = vg.weight, vg.act
    where = "quant.video_gen"
    block = block_scheme(vg)
    if block is not None:
        return block
    if w.granularity != "per_channel":
        raise ExportError(f"{where}.weight.granularity: got {w.granularity!r}; lightx2v needs per_channel")
    if w.quant_type == "int-quant":
        if w.bit != 8:
            raise ExportError(f"{where}.weight.bit: got {w.bit}; lightx2v needs 8 (LLMC would write int32)")
        if not w.symmetric:
            raise ExportError(f"{where}.weight.symmetric: got False; lightx2v needs symmetric weights")
        scheme = "int8"
    elif w.bit == "e4m3":
        scheme = "fp8"
    else:
        raise ExportError(f"{where}.weight.bit: got {w.bit!r}; lightx2v's float format is e4m3")
    if a is None:
        raise ExportError(f"{where}.act: missing; lightx2v runs W8A8 (weights and per-token activations)")
    if a.granularity != "per_token":
        raise ExportError(f"{where}.act.granularity: got {a.granularity!r}; lightx2v quantizes per_token")
    if (a.quant_type, a.bit, a.symmetric) != (w.quant_type, w.bit, True):
        raise ExportError(f"{where}.act: got {a.quant_type} {a.bit} symmetric={a.symmetric}; lightx2v needs the "
                          f"same format as the weights ({w.quant_type} {w.bit}, symmetric)")
    return scheme


@torch.no_grad()
def lightx2v_state_dict(transformer: nn.Module, wq, weight_qparams: dict | None = None,
                        scale_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The export tensors, in diffusers key names."""
    weight_qparams = weight_qparams or {}
    make_transformer_smoothable(transformer)  # RTN: all-ones affine_norm vectors, as LLMC exports them
    state = {k: v.detach() for k, v in transformer.state_dict().items()}
    for i, block in enumerate(transformer.blocks):
        for name, lin in block_linears(block).items():
            key = f"blocks.{i}.{name}"
            q = quantize_weight(lin.weight.detach(), wq, weight_qparams.get(key))
            state[f"{key}.weight"] = q.codes.contiguous().cpu()
            state[f"{key}.weight_scale"] = q.scale.reshape(-1, 1).to(scale_dtype).contiguous().cpu()
    return {k: v.contiguous().cpu() for k, v in state.items()}


def block_scheme(vg) -> str | None:
    """lightx2v's scheme for the formats beyond W8A8 (mxfp8, mxfp6-mxfp8, mxfp4, nvfp4, int4-g128-marlin,
    fp8-pertensor), None for a W8A8 config; a block format lightx2v has no kernel for is refused here."""
    try:
        scheme = scheme_of_config(vg)
    except ValueError as err:
        raise ExportError(str(err)) from None
    blockish = {vg.weight.quant_type, getattr(vg.act, "quant_type", None)} & {"mx-quant", "nvfp4-quant"}
    if scheme is None and (blockish or (vg.act is not None and vg.act.static)):
        w, a = vg.weight.label, vg.act.label if vg.act else "none"
        raise ExportError(f"quant.video_gen: weight {w} with act {a} has no lightx2v kernel; lightx2v runs "
                          "mx-e4m3/mx-e4m3 (mxfp8), mx-e3m2/mx-e4m3 (mxfp6-mxfp8), mx-e2m1/mx-e2m1 (mxfp4), "
                          "nvfp4/nvfp4, int4 per_group 128 weight-only, e4m3 per_tensor with static e4m3 "
                          "per_tensor act (fp8-pertensor); set save.save_lightx2v: false to simulate it")
    return scheme


@torch.no_grad()
def block_state_dict(transformer: nn.Module, wq, scheme: str, weight_qparams: dict | None = None,
                     input_absmax: dict | None = None) -> dict[str, torch.Tensor]:
    """The export tensors of a block scheme (vidquant.export.formats), in diffusers key names."""
    weight_qparams, input_absmax = weight_qparams or {}, input_absmax or {}
    make_transformer_smoothable(transformer)
    state = {k: v.detach() for k, v in transformer.state_dict().items()}
    for i, block in enumerate(transformer.blocks):
        for name, lin in block_linears(block).items():
            key = f"blocks.{i}.{name}"
            q = quantize_weight(lin.weight.detach(), wq, weight_qparams.get(key))
            del state[f"{key}.weight"]
            for suffix, t in pack_linear(scheme, q, input_absmax.get(key)).items():
                state[f"{key}.{suffix}"] = t
    return {k: v.contiguous().cpu() for k, v in state.items()}


def _parse_size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as err:
        raise ExportError(f"save.max_shard_size: {err}") from None


def export_lightx2v(transformer: nn.Module, wq, save_path: str | os.PathLike, *, weight_qparams: dict | None = None,
                    scale_dtype: torch.dtype = torch.float32, max_shard_size: str = "10GB",
                    overwrite: bool = False, scheme: str | None = None, input_absmax: dict | None = None) -> Path:
    """Write `<save_path>/lightx2v_quant_model/` atomically (a temporary folder renamed at the end).

    ``scheme``: a block scheme from :func:`block_scheme` (else W8A8 int8/fp8); ``input_absmax``: per linear
    (``blocks.N.<linear>``) calibrated input absmax, for the schemes with static activation scales."""
    final = Path(save_path) / EXPORT_DIRNAME
    with atomic_dir(final, overwrite=overwrite) as tmp:
        write_export(tmp, transformer, wq, weight_qparams, scale_dtype, max_shard_size, scheme, input_absmax)
    return final


def write_export(folder: Path, transformer: nn.Module, wq, weight_qparams: dict | None = None,
                 scale_dtype: torch.dtype = torch.float32, max_shard_size: str = "10GB", scheme: str | None = None,
                 input_absmax: dict | None = None) -> None:
    """The export's files (shards, index, config.json) in an existing, empty ``folder``."""
    if scheme in BLOCK_SCHEMES:
        state = block_state_dict(transformer, wq, scheme, weight_qparams, input_absmax)
    else:
        state = lightx2v_state_dict(transformer, wq, weight_qparams, scale_dtype)
    config = dict(transformer.config)
    config.update({"_class_name": type(transformer).__name__, "quant_method": "advanced_ptq"})
    save_sharded(state, folder, max_shard_bytes=_parse_size(max_shard_size))
    (folder / "config.json").write_text(json.dumps(_jsonable(config), indent=4, sort_keys=True) + "\n")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items() if not k.startswith("_") or k == "_class_name"}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj
