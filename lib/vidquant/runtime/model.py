"""Load a quantized Wan2.1 DiT for real W8A8 inference: the lightx2v side of the LLMC -> lightx2v workflow.

Input: a converted checkpoint (Wan key layout, ``converter.py -d backward``; lightx2v_reference §1.5, §2.4) or
an LLMC ``save_lightx2v`` export (diffusers key layout; llmc_reference §8), detected from the keys. Output: a
diffusers ``WanTransformer3DModel`` whose blocks are :class:`~vidquant.models.block.SmoothableWanBlock` (so
``affine_norm1/3`` multiply the adaLN modulation exactly as lightx2v does, §8.3 / §9 item 16) and whose block
linears are :class:`~vidquant.quant.W8A8Linear` holding the stored int8 / float8_e4m3fn codes, so the matmuls
are real ``torch._int_mm`` / ``torch._scaled_mm`` GEMMs with per-token dynamic activations. A checkpoint in one of
the formats beyond W8A8 (mxfp8, mxfp6-mxfp8, mxfp4, nvfp4, int4-g128-marlin, fp8-pertensor; docs/formats.md §5)
gets :class:`~vidquant.runtime.emulated.EmulatedLinear` instead: dequantize-then-GEMM emulation, no fast kernel.

Memory: the model is built on the meta device (accelerate's ``init_empty_weights``) and every tensor is
assigned straight from the checkpoint, so no float copy of a block linear ever exists.

Dtypes follow diffusers' ``from_pretrained(dtype=...)``: everything in ``dtype`` except the modules diffusers
keeps in fp32 (time embedder, modulation tables, norms, RoPE) and the fp32 ``affine_norm`` vectors; linear
codes stay int8/fp8, ``weight_scale`` becomes fp32 (optionally bf16-rounded first, as lightx2v's non-lazy
loader does, §2.2 / §9 item 7).

Strict: every checkpoint tensor must be consumed and every expected one present; errors name the keys and
the file they are in.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vidquant.export import keymap
from vidquant.export.io import (
    TORCH_SUFFIXES,
    QuantizedCheckpointError,
    load_state_dict,
    safetensors_keys,
    source_files,
)
from vidquant.export.verify import check_state_dict
from vidquant.models.block import make_transformer_smoothable
from vidquant.models.layout import block_linear_names
from vidquant.quant import W8A8_FORMATS, W8A8Linear
from vidquant.quant.linear import NUMERICS
from vidquant.runtime import cond_cache, emulated

__all__ = [
    "QuantInfo",
    "QuantizedCheckpointError",
    "checkpoint_scheme",
    "fake_quant_twin",
    "load_quantized_pipeline",
    "load_quantized_transformer",
    "read_quantized_checkpoint",
    "resolve_checkpoint_dir",
]

log = logging.getLogger("vidquant.runtime")

EXPORT_SUBDIR = "lightx2v_quant_model"  # what LLMC (and vidquant quantize) write under save_path
_AFFINE_KEYS = tuple(f"affine_norm{n}.{p}" for n in (1, 3) for p in ("weight", "bias"))
# Architecture fields that must agree between the checkpoint's config.json and the base transformer.
_ARCH_FIELDS = ("num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim", "in_channels",
                "out_channels", "text_dim", "freq_dim", "image_dim", "added_kv_proj_dim", "patch_size")
_MAX_LISTED = 8  # keys named per error message before "... and N more"
_COMPILE_MIN_DIM = 1024  # hidden size from which compiling the W8A8 kernels pays back its first-call cost


@dataclass(frozen=True)
class QuantInfo:
    """What was loaded: attached to the transformer as ``transformer.quant_info``."""

    path: Path
    layout: str  # "wan" (converted) or "diffusers" (LLMC export)
    scheme: str  # "int8" / "fp8" (W8A8Linear) or a block scheme such as "nvfp4" (EmulatedLinear)
    quant_method: str | None
    i2v: bool
    num_linears: int
    smoothing_loaded: bool
    round_scale_bf16: bool
    numerics: str = "vidquant"  # activation-quant numerics of the W8A8 linears (vidquant.quant.linear.NUMERICS)
    cached_conditioning: int = 0  # cross-attention projections memoized across steps (runtime.cond_cache)


@dataclass
class QuantizedCheckpoint:
    """A checkpoint read into memory, keys in diffusers names (what the model expects)."""

    path: Path
    layout: str
    state: dict[str, torch.Tensor]
    config: dict
    files: dict[str, str]  # diffusers key -> file it came from (for error messages)

    def file_of(self, key: str) -> str:
        return self.files.get(key, str(self.path))

    def stored_name(self, key: str) -> str:
        """A diffusers key as the checkpoint spells it (errors should name what the user can find on disk)."""
        return keymap.to_wan(key) if self.layout == "wan" else key


# ----------------------------------------------------------------------------------------------- reading


def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """The directory (or file) holding the weights: ``path`` itself, or ``path/lightx2v_quant_model`` when
    ``path`` is an LLMC ``save_path`` (no weights of its own)."""
    path = Path(path)
    if not path.exists():
        raise QuantizedCheckpointError(f"{path}: quantized checkpoint not found")
    if path.is_dir() and not any(path.glob("*.safetensors")) and (path / EXPORT_SUBDIR).is_dir():
        return path / EXPORT_SUBDIR
    return path


def _key_files(path: Path) -> dict[str, str]:
    """Stored key -> file, read from safetensors headers only (cheap)."""
    out: dict[str, str] = {}
    for f in source_files(path):
        if f.suffix in TORCH_SUFFIXES:
            continue  # no header to read; errors then name the checkpoint path
        out.update(dict.fromkeys(safetensors_keys(f), str(f)))
    return out


def _read_config(path: Path) -> dict:
    config = (path if path.is_dir() else path.parent) / "config.json"
    if not config.is_file():
        return {}
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or not UTF-8
        raise QuantizedCheckpointError(f"{config}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise QuantizedCheckpointError(f"{config}: expected a JSON object")
    return data


def read_quantized_checkpoint(path: str | os.PathLike) -> QuantizedCheckpoint:
    """Load every tensor of a quantized checkpoint and rename Wan keys to diffusers keys if needed."""
    root = resolve_checkpoint_dir(path)
    state = load_state_dict(root)
    if not state:
        raise QuantizedCheckpointError(f"{root}: checkpoint has no tensors")
    layout = keymap.detect_layout(state)
    if layout not in ("wan", "diffusers"):
        raise QuantizedCheckpointError(
            f"{root}: key layout is {layout}; expected Wan names (converter.py -d backward output) or diffusers "
            "names (an LLMC save_lightx2v export)")
    files = _key_files(root)
    if layout == "wan":
        files = {keymap.to_diffusers(k): f for k, f in files.items()}
        try:
            state = keymap.rename_state_dict(state, "forward")
        except ValueError as exc:
            raise QuantizedCheckpointError(f"{root}: {exc}") from exc
    return QuantizedCheckpoint(root, layout, state, _read_config(root), files)


def checkpoint_scheme(ckpt: QuantizedCheckpoint) -> str:
    """'int8' or 'fp8' from the dtype of the block-linear weights; mixed or unquantized is an error."""
    dtypes = {t.dtype for k, t in ckpt.state.items() if k.endswith(".weight") and k + "_scale" in ckpt.state}
    schemes = {fmt for fmt, dt in W8A8_FORMATS.items() if dt in dtypes}
    if len(schemes) != 1 or len(dtypes) != 1:
        found = ", ".join(sorted(str(d) for d in dtypes)) or "no weight/weight_scale pairs"
        raise QuantizedCheckpointError(
            f"{ckpt.path}: block linears must all be int8 or all float8_e4m3fn with a weight_scale; found {found}")
    return schemes.pop()


# ----------------------------------------------------------------------------------------------- base model


def _base_transformer_config(base_model_path: str | os.PathLike) -> dict:
    """The base ``WanTransformer3DModel`` config: ``<pipeline>/transformer/config.json`` or ``<dir>/config.json``."""
    from diffusers import WanTransformer3DModel

    base = Path(base_model_path)
    folder = base / "transformer" if (base / "transformer" / "config.json").is_file() else base
    if not (folder / "config.json").is_file():
        raise QuantizedCheckpointError(
            f"{base}: no transformer/config.json (expected a diffusers Wan pipeline directory)")
    config = WanTransformer3DModel.load_config(folder)
    if config.get("_class_name") not in (None, "WanTransformer3DModel"):
        raise QuantizedCheckpointError(f"{folder / 'config.json'}: _class_name is {config['_class_name']!r}; "
                                       "expected WanTransformer3DModel")
    return config


def _check_architecture(ckpt: QuantizedCheckpoint, base: dict, base_path: str | os.PathLike) -> None:
    """The checkpoint's own config.json (if any) must describe the same network as the base model."""
    diffs = [f"{k}: checkpoint {ckpt.config[k]!r} vs base {base[k]!r}" for k in _ARCH_FIELDS
             if k in ckpt.config and k in base and _norm(ckpt.config[k]) != _norm(base[k])]
    if diffs:
        raise QuantizedCheckpointError(f"{ckpt.path}/config.json does not match the base model {base_path}: "
                                       + "; ".join(diffs))


def _norm(value):
    return list(value) if isinstance(value, list | tuple) else value


def _check_task(ckpt: QuantizedCheckpoint, base: dict, base_path: str | os.PathLike) -> bool:
    i2v_base = base.get("added_kv_proj_dim") is not None
    i2v_ckpt = keymap.is_i2v(ckpt.state)
    if i2v_base != i2v_ckpt:
        kind = {True: "I2V", False: "T2V"}
        raise QuantizedCheckpointError(
            f"{ckpt.path} is a {kind[i2v_ckpt]} checkpoint but the base model {base_path} is {kind[i2v_base]}; "
            "use the base pipeline the checkpoint was quantized from")
    return i2v_base


def _empty_model(config: dict) -> nn.Module:
    """The diffusers transformer with parameters on the meta device (buffers such as RoPE tables are real)."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    with init_empty_weights(include_buffers=False):
        model = WanTransformer3DModel.from_config(config)
    return make_transformer_smoothable(model)


def _listed(keys, ckpt: QuantizedCheckpoint, with_file: bool = False) -> str:
    """Keys in the checkpoint's own spelling, natural order, at most _MAX_LISTED, optionally with their file."""
    keys = sorted(keys, key=_natural_key)
    shown = [ckpt.stored_name(k) + (f" ({ckpt.file_of(k)})" if with_file else "") for k in keys[:_MAX_LISTED]]
    more = f", ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return ", ".join(shown) + more


def _natural_key(key: str) -> list:
    """Sort key that puts blocks.2 before blocks.10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


# ----------------------------------------------------------------------------------------------- linears


def _pop_linear(ckpt: QuantizedCheckpoint, key: str, shape: tuple[int, int], scheme: str,
                round_scale_bf16: bool, bias_dtype: torch.dtype, numerics: str) -> W8A8Linear:
    """Take ``key.{weight,weight_scale,bias}`` out of the checkpoint and wrap them without dequantizing."""
    names = {p: f"{key}.{p}" for p in ("weight", "weight_scale", "bias")}
    missing = [n for n in names.values() if n not in ckpt.state]
    if missing:
        raise QuantizedCheckpointError(f"{ckpt.path}: missing {_listed(missing, ckpt)} (every block linear "
                                       "needs an int8/fp8 weight, a (out, 1) weight_scale and a bias)")
    weight, scale, bias = (ckpt.state.pop(n) for n in names.values())
    shown = {p: f"{ckpt.stored_name(n)} in {ckpt.file_of(n)}" for p, n in names.items()}
    where = shown["weight"]
    if weight.dtype != W8A8_FORMATS[scheme]:
        raise QuantizedCheckpointError(f"{where}: dtype {weight.dtype}; expected {W8A8_FORMATS[scheme]} "
                                       f"(the checkpoint's {scheme} scheme)")
    if tuple(weight.shape) != shape:
        raise QuantizedCheckpointError(f"{where}: shape {tuple(weight.shape)}; the base model expects {shape}")
    if scale.numel() != shape[0] or not scale.is_floating_point():
        raise QuantizedCheckpointError(f"{shown['weight_scale']}: {scale.dtype} {tuple(scale.shape)}; "
                                       f"expected float ({shape[0]}, 1)")
    if tuple(bias.shape) != (shape[0],):
        raise QuantizedCheckpointError(f"{shown['bias']}: shape {tuple(bias.shape)}; expected ({shape[0]},)")
    if round_scale_bf16:
        scale = scale.to(torch.bfloat16)  # lightx2v's non-lazy loader: fp32 -> bf16, upcast by the mm class
    return W8A8Linear.from_quantized(weight, scale.float().reshape(-1, 1), bias.to(bias_dtype), fmt=scheme,
                                     numerics=numerics)


def _install_linears(model: nn.Module, ckpt: QuantizedCheckpoint, scheme: str, round_scale_bf16: bool,
                     dtype: torch.dtype, numerics: str) -> int:
    """Replace every block linear of ``model`` by a W8A8Linear built from the checkpoint; returns the count."""
    n = 0
    for i, block in enumerate(model.blocks):
        for name in block_linear_names(block):
            lin = block.get_submodule(name)
            shape = (lin.out_features, lin.in_features)
            block.set_submodule(name, _pop_linear(ckpt, f"blocks.{i}.{name}", shape, scheme,
                                                  round_scale_bf16, dtype, numerics))
            n += 1
    return n


# ----------------------------------------------------------------------------------------------- the rest


def _smoothing(ckpt: QuantizedCheckpoint, quant_method: str | None, num_blocks: int) -> bool:
    """Whether ``affine_norm1/3`` come from the checkpoint. Otherwise they are dropped and stay ones (lightx2v
    registers them only with quant_method == advanced_ptq), with a warning since a smoothed checkpoint then
    computes the wrong function."""
    if quant_method == "advanced_ptq":
        return True
    present = [k for k in list(ckpt.state) if k.split(".", 2)[-1] in _AFFINE_KEYS]
    for k in present:
        ckpt.state.pop(k)
    if present:
        what = (f"ignoring the {len(present)} affine_norm1/3 smoothing tensors in the checkpoint (as lightx2v "
                "does), so a SmoothQuant/AWQ checkpoint gives wrong outputs; set quant_method: advanced_ptq")
    else:
        what = ("the checkpoint has no affine_norm1/3 smoothing tensors either: right for an unsmoothed "
                "checkpoint (RTN, converter --quantized), wrong for a SmoothQuant/AWQ one")
    warnings.warn(f"{ckpt.path}: quant_method is {quant_method!r}, not 'advanced_ptq': affine_norm1/3 are ones "
                  f"in all {num_blocks} blocks; {what}", stacklevel=3)
    return False


def _keeps_fp32(model: nn.Module, key: str) -> bool:
    """diffusers' ``_keep_in_fp32_modules`` rule (a module name as a dotted component), plus the fp32 fake
    affine vectors, which the smoothable block multiplies in fp32 as LLMC does."""
    parts = key.split(".")
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ()) | {"affine_norm1", "affine_norm3"}
    return any(p in keep for p in parts)


def _load_rest(model: nn.Module, ckpt: QuantizedCheckpoint, dtype: torch.dtype, smoothing: bool) -> None:
    """Assign every remaining tensor (embeddings, norms, modulation, head, affine_norm1/3) strictly."""
    expected = {k: t for k, t in model.state_dict().items() if t.is_meta}
    ones = {}
    if not smoothing:  # the FakeAffine vectors stay ones, as LLMC initialises them
        ones = {k: torch.ones(t.shape, dtype=torch.float32) for k, t in expected.items()
                if k.split(".", 2)[-1] in _AFFINE_KEYS}
        expected = {k: t for k, t in expected.items() if k not in ones}
    missing = sorted(set(expected) - set(ckpt.state))
    unexpected = sorted(set(ckpt.state) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s) the base model needs: {_listed(missing, ckpt)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) the base model has no place for: "
                        f"{_listed(unexpected, ckpt, with_file=True)}")
    bad = [f"{ckpt.stored_name(k)} ({ckpt.file_of(k)}): {tuple(ckpt.state[k].shape)} vs expected "
           f"{tuple(expected[k].shape)}" for k in sorted(set(expected) & set(ckpt.state))
           if ckpt.state[k].shape != expected[k].shape]
    if bad:
        problems.append("shape mismatch: " + "; ".join(bad[:_MAX_LISTED]))
    if problems:
        raise QuantizedCheckpointError(f"{ckpt.path}: " + "; ".join(problems))
    state = {k: t.to(torch.float32 if _keeps_fp32(model, k) else dtype) for k, t in ckpt.state.items()}
    ckpt.state.clear()
    model.load_state_dict(state | ones, strict=False, assign=True)
    still_meta = [n for n, t in model.state_dict().items() if t.is_meta]
    if still_meta:  # an internal error: the key bookkeeping above missed something
        raise RuntimeError(f"tensors left on the meta device after loading: {', '.join(still_meta[:_MAX_LISTED])}")


# ----------------------------------------------------------------------------------------------- API


def load_quantized_transformer(
    quantized_ckpt: str | os.PathLike,
    base_model_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    *,
    quant_method: str | None = "auto",
    scheme: str | None = None,
    round_scale_bf16: bool = False,
    numerics: str = "vidquant",
    cache_conditioning: bool = True,
    compile_kernels: bool | None = None,
) -> nn.Module:
    """Build the diffusers Wan transformer of ``base_model_path`` with the quantized weights of ``quantized_ckpt``.

    Args:
        quantized_ckpt: converted (Wan keys) or LLMC-export (diffusers keys) directory or file; an LLMC
            ``save_path`` containing ``lightx2v_quant_model/`` is accepted too.
        base_model_path: the diffusers pipeline directory (its ``transformer/config.json`` gives the network).
        device: where the model ends up.
        dtype: working dtype of the non-quantized tensors and activations (fp32-kept modules excepted).
        quant_method: ``"advanced_ptq"`` loads ``affine_norm1/3``; anything else leaves them at ones (with a
            warning). ``"auto"`` reads it from the checkpoint's ``config.json``.
        scheme: ``"int8"`` / ``"fp8"`` or a block scheme (``"mxfp8"``, ..., ``"fp8-pertensor"``: emulated) to insist
            on a format (e.g. the inference config's); None = as stored.
        round_scale_bf16: round ``weight_scale`` to bf16 before using it in fp32, as lightx2v's non-lazy
            loader does (bit-for-bit parity with lightx2v; slightly less accurate).
        numerics: the W8A8 linears' activation quantization: ``"vidquant"`` (LLMC's division: what fake-quant
            computes) or ``"lightx2v"`` (its kernels' reciprocal multiply; ``vidquant infer``'s default, with
            ``round_scale_bf16``). See :mod:`vidquant.quant.linear`.
        cache_conditioning: reuse the cross-attention K/V projections of the text (and image) across denoising
            steps (:mod:`vidquant.runtime.cond_cache`; same outputs, less work).
        compile_kernels: fuse the W8A8 activation quantization and epilogue with ``torch.compile`` on the CPU
            (same bits, self-checked; the first call compiles for ~10-20 s). None = when the model is wide enough
            to pay that back (hidden size >= 1024: every real Wan, not the tiny models).

    Returns:
        The transformer in eval mode, without gradients, with ``quant_info`` (:class:`QuantInfo`).

    Raises:
        QuantizedCheckpointError: missing/unexpected keys, wrong dtypes or shapes, a T2V/I2V mismatch, or a
            checkpoint config that disagrees with the base model. Messages name the keys and files.
    """
    base = _base_transformer_config(base_model_path)
    ckpt = read_quantized_checkpoint(quantized_ckpt)
    i2v = _check_task(ckpt, base, base_model_path)  # first: the more useful message for a T2V/I2V mix-up
    _check_architecture(ckpt, base, base_model_path)
    model = _empty_model(base)
    block = emulated.checkpoint_block_scheme(ckpt.state, len(model.blocks), block_linear_names(model.blocks[0]))
    found = block or checkpoint_scheme(ckpt)
    if scheme is not None and scheme != found:
        stored = f"{W8A8_FORMATS[found]} ({found})" if found in W8A8_FORMATS else found
        raise QuantizedCheckpointError(f"{ckpt.path}: the inference config asks for {scheme} but the checkpoint's "
                                       f"block linears are {stored}")
    if quant_method == "auto":
        quant_method = ckpt.config.get("quant_method")
    check_state_dict(ckpt.state, ckpt.path, files=ckpt.files, advanced_ptq=quant_method == "advanced_ptq",
                     stored_name=ckpt.stored_name)
    if numerics not in NUMERICS:
        raise ValueError(f"numerics must be one of {NUMERICS}, got {numerics!r}")
    if block:  # mxfp8 / mxfp6-mxfp8 / mxfp4 / nvfp4 / int4-g128-marlin / fp8-pertensor: emulated (runtime/emulated.py)
        n = emulated.install_emulated_linears(model, ckpt.state, block, str(ckpt.path))
    else:
        n = _install_linears(model, ckpt, found, round_scale_bf16, dtype, numerics)
    smoothing = _smoothing(ckpt, quant_method, len(model.blocks))
    _load_rest(model, ckpt, dtype, smoothing)
    if compile_kernels is None:
        compile_kernels = model.config.num_attention_heads * model.config.attention_head_dim >= _COMPILE_MIN_DIM
    for m in model.modules():
        if isinstance(m, W8A8Linear):
            m.compiled = compile_kernels
    cached = cond_cache.cache_conditioning(model) if cache_conditioning else 0
    model.quant_info = QuantInfo(ckpt.path, ckpt.layout, found, quant_method, i2v, n, smoothing, round_scale_bf16,
                                 numerics, cached)
    kind = ("EmulatedLinear (dequantize-then-GEMM emulation, no quantized kernel)" if block
            else f"W8A8Linear (real GEMMs, numerics={numerics})")
    log.info("loaded %s (%s layout): %d %s linears as %s, quant_method=%s", ckpt.path, ckpt.layout, n, found, kind,
             quant_method)
    return model.to(device).eval().requires_grad_(False)


def load_quantized_pipeline(
    model_path: str | os.PathLike,
    quantized_ckpt: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    task: str | None = None,
    **kwargs,
):
    """The base pipeline of ``model_path`` (VAE, text/image encoders, scheduler) with the quantized transformer.

    ``kwargs`` go to :func:`load_quantized_transformer`. The checkpoint is read first, so checkpoint errors
    come before the encoders are loaded. The float transformer of ``model_path`` is never loaded: the quantized
    one is handed to the pipeline in its place. ``task`` as :func:`vidquant.models.loading.load_pipeline`'s
    ("i2v" runs a TI2V-5B directory image-conditioned).
    """
    from vidquant.models.loading import load_pipeline

    transformer = load_quantized_transformer(quantized_ckpt, model_path, "cpu", dtype, **kwargs)
    return load_pipeline(model_path, None, dtype, device, components={"transformer": transformer}, task=task)


def fake_quant_twin(transformer: nn.Module) -> nn.Module:
    """A copy of a runtime transformer in which every :class:`W8A8Linear` is LLMC's fake-quant linear of the same
    export: weight ``codes * weight_scale`` (what ``IntQuantizer(8, per_channel)`` / e4m3 per-channel decode
    to) and per-token dynamic fake quantization of the activations in the same format.

    This is the reference the real-GEMM runtime must agree with. It holds dequantized weights (a float copy), so
    it is for checks on small models, not for deployment.
    """
    import copy

    from vidquant.quant import FakeQuantLinear, FloatQuantizer, IntQuantizer

    twin = copy.deepcopy(transformer)
    for block in twin.blocks:
        for name in block_linear_names(block):
            lin = block.get_submodule(name)
            if not isinstance(lin, W8A8Linear):
                continue
            aq = (IntQuantizer(8, symmetric=True, granularity="per_token") if lin.fmt == "int8"
                  else FloatQuantizer("e4m3", granularity="per_token"))
            weight = lin.dequantized_weight().to(lin.bias.dtype if lin.bias is not None else torch.float32)
            block.set_submodule(name, FakeQuantLinear(weight, lin.bias, aq))
    return twin
