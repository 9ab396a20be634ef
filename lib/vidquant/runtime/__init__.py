"""Quantized inference: load a lightx2v-format W8A8 checkpoint into a diffusers Wan pipeline and generate
with real int8 / fp8 GEMMs (``vidquant infer``, lightx2v's flags)."""

from vidquant.runtime.model import (
    QuantInfo,
    QuantizedCheckpointError,
    fake_quant_twin,
    load_quantized_pipeline,
    load_quantized_transformer,
    read_quantized_checkpoint,
)

__all__ = [
    "QuantInfo",
    "QuantizedCheckpointError",
    "fake_quant_twin",
    "load_quantized_pipeline",
    "load_quantized_transformer",
    "read_quantized_checkpoint",
]
