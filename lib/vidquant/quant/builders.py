"""Quantizer builders: an LLMC-style spec (``quant_type``, ``bit``, ...) or dict -> the quantizer of its format.

The one place that knows every format, so it sits above both :mod:`vidquant.quant.quantizer` (int / fp8) and
:mod:`vidquant.quant.blockfmt` (MX / NVFP4, built on the quantizer base classes).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import torch

from .blockfmt import build_block_quantizer
from .quantizer import FP8_FORMATS, FloatQuantizer, IntQuantizer, Quantizer

__all__ = ["build_quantizer", "build_quantizer_from_dict"]


def build_quantizer(spec: Any, compute_dtype: torch.dtype | None = None) -> Quantizer:
    """Build a quantizer from an object with LLMC-style attributes.

    ``spec`` needs ``quant_type`` (``"int-quant"`` | ``"float-quant"``; ``"mx-quant"`` / ``"nvfp4-quant"`` go to
    :func:`vidquant.quant.blockfmt.build_block_quantizer`), ``bit`` (int, or
    ``"e4m3"``/``"e5m2"`` for float-quant), ``symmetric``, ``granularity``, ``group_size`` and ``use_qtorch``
    (the attribute names of the project's ``QuantSpec`` config model).
    """
    quant_type = spec.quant_type
    if quant_type in ("mx-quant", "nvfp4-quant"):  # block-scaled float formats (vidquant.quant.blockfmt)
        return build_block_quantizer(spec, compute_dtype)
    if not getattr(spec, "round_zp", True):
        # LLMC's round_zp=False keeps a fractional zero point; only the rounded (default) variant is modelled.
        raise NotImplementedError("round_zp=False is not supported; use the default round_zp=True")
    if quant_type == "int-quant":
        return IntQuantizer(
            bit=int(spec.bit),
            symmetric=spec.symmetric,
            granularity=spec.granularity,
            group_size=spec.group_size,
            compute_dtype=compute_dtype,
        )
    if quant_type == "float-quant":
        if spec.bit not in FP8_FORMATS:
            raise ValueError(f"float-quant needs bit in {sorted(FP8_FORMATS)}, got {spec.bit!r}")
        if not spec.symmetric:
            # LLMC forces sym=True for float-quant; follow it, but say so.
            warnings.warn("float-quant is always symmetric; ignoring symmetric=False", stacklevel=2)
        return FloatQuantizer(
            fmt=spec.bit,
            granularity=spec.granularity,
            use_qtorch=spec.use_qtorch,
            group_size=spec.group_size,
            compute_dtype=compute_dtype,
            static=getattr(spec, "static", False),
        )
    raise ValueError(f"quant_type must be 'int-quant' or 'float-quant', got {quant_type!r}")


_DICT_DEFAULTS: dict[str, Any] = {
    "quant_type": "int-quant",
    "symmetric": True,
    "granularity": "per_channel",
    "group_size": -1,
    "use_qtorch": False,
}


def build_quantizer_from_dict(d: Mapping[str, Any], compute_dtype: torch.dtype | None = None) -> Quantizer:
    """:func:`build_quantizer` for a plain dict (e.g. an LLMC ``weight:``/``act:`` YAML section).

    ``bit`` is required; other keys default to int-quant, symmetric, per_channel, group_size -1, no qtorch.
    Keys this module does not model (``calib_algo``, ``ste``, ...) are ignored.
    """
    if "bit" not in d:
        raise ValueError(f"quantizer dict needs a 'bit' key, got keys {sorted(d)}")
    return build_quantizer(SimpleNamespace(**{**_DICT_DEFAULTS, **d}), compute_dtype=compute_dtype)
