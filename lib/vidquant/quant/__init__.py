"""Quantizers (LLMC formulas) and deploy-time linear modules (fake-quant and real W8A8)."""

from .builders import build_quantizer, build_quantizer_from_dict
from .linear import (
    W8A8_FORMATS,
    FakeQuantLinear,
    W8A8Linear,
    quantize_act_per_token,
    quantize_weight_per_channel,
)
from .quantizer import (
    FP8_FORMATS,
    GRANULARITIES,
    FloatQuantizer,
    IntQuantizer,
    QTensor,
    Quantizer,
    decode,
    float_encode,
    int_encode,
    int_qparams,
)

__all__ = [
    "FP8_FORMATS",
    "GRANULARITIES",
    "W8A8_FORMATS",
    "FakeQuantLinear",
    "FloatQuantizer",
    "IntQuantizer",
    "QTensor",
    "Quantizer",
    "W8A8Linear",
    "build_quantizer",
    "build_quantizer_from_dict",
    "decode",
    "float_encode",
    "int_encode",
    "int_qparams",
    "quantize_act_per_token",
    "quantize_weight_per_channel",
]
