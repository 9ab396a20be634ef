"""Turning a calibrated model into a quantized one: fake-quant linears for evaluation, codes + scales for
export, and the per-layer error of each quantized linear against its float original."""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from vidquant.models.layout import block_linears
from vidquant.quant import FakeQuantLinear, QTensor
from vidquant.quant.blockfmt import StaticInputQuantizer, static_input_scheme
from vidquant.quant.quantizer import decode

__all__ = ["quantize_weight", "fake_weight", "fake_quant_linear", "fake_quantized", "deploy_fake_quant",
           "linear_error_stats"]


def quantize_weight(w: torch.Tensor, wq, qparams: tuple | None = None) -> QTensor:
    """Real-quantize a weight on its min-max grid, or on a fixed grid (scale, zero) chosen by calibration."""
    if qparams is None:
        return wq.quantize(w)
    scale, zero = qparams
    return wq.quantize_with(w, scale.to(w.device), None if zero is None else zero.to(w.device))


def fake_weight(w: torch.Tensor, wq, qparams: tuple | None = None) -> torch.Tensor:
    """Quantize-dequantize a weight (dynamic grid, or the fixed one)."""
    if qparams is None:
        return wq.fake(w)
    return wq.fake_with(w, qparams[0].to(w.device), None if qparams[1] is None else qparams[1].to(w.device))


def fake_quant_linear(linear: nn.Linear, wq, aq, qparams: tuple | None = None) -> FakeQuantLinear:
    """A FakeQuantLinear computing aq(x) · fq(W)ᵀ + b."""
    bias = None if linear.bias is None else linear.bias.detach()
    return FakeQuantLinear(fake_weight(linear.weight.detach(), wq, qparams), bias, aq)


@contextmanager
def fake_quantized(block, wq, aq, weight_qparams: dict):
    """Temporarily swap the block's linears for fake-quant versions (for `quant_out` and metrics)."""
    original = block_linears(block)
    try:
        for name, lin in original.items():
            block.set_submodule(name, fake_quant_linear(lin, wq, aq, weight_qparams.get(name)))
        yield block
    finally:
        for name, lin in original.items():
            block.set_submodule(name, lin)


def deploy_fake_quant(transformer: nn.Module, wq, aq, weight_qparams: dict | None = None,
                      input_absmax: dict | None = None) -> nn.Module:
    """Replace every block linear by its fake-quant version, in place (LLMC's `fake_quant` deploy).

    Activations with a static scale in lightx2v (nvfp4, fp8-pertensor: :func:`static_input_scheme`) are quantized
    on the scale the export stores, derived from ``input_absmax[blocks.N.<linear>]`` (the calibrated max |x| of
    the linear's smoothed input, ``BlockwiseResult.input_absmax``), so the model evaluated is the one lightx2v
    runs; a layer without it is refused (ValueError naming it) before any linear is replaced. Other activation
    quantizers stay dynamic (``aq`` per call)."""
    weight_qparams, input_absmax = weight_qparams or {}, input_absmax or {}
    scheme = static_input_scheme(aq)
    linears = {f"blocks.{i}.{name}": (block, name, lin) for i, block in enumerate(transformer.blocks)
               for name, lin in block_linears(block).items() if isinstance(lin, nn.Linear)}
    if scheme is not None:
        missing = [key for key in linears if key not in input_absmax]
        if missing:
            raise ValueError(f"{missing[0]}: {scheme} activations use a static scale calibrated on data, and this "
                             f"layer has no input_absmax ({len(missing)} of {len(linears)} layers lack one); "
                             "calibrate first (a calib section / calibration data)")
    for key, (block, name, lin) in linears.items():
        act = aq if scheme is None else StaticInputQuantizer.from_absmax(scheme, input_absmax[key], lin.weight.device)
        block.set_submodule(name, fake_quant_linear(lin, wq, act, weight_qparams.get(key)))
    return transformer


@torch.no_grad()
def linear_error_stats(w0, linear, inputs, smooth, wq, aq, qparams, device) -> dict:
    """Error of one quantized linear against its float original on the calibration inputs.

    y_float = x·W0ᵀ + b (original weight, original input); y_quant = aq(x/s)·fq(W)ᵀ + b, where W is the
    transformed (smoothed / compensated) weight and s the smoothing its input absorbed. Returns SQNR (dB),
    relative L2 error and cosine similarity, accumulated over all samples.
    """
    w0 = w0.to(device).float()
    bias = None if linear.bias is None else linear.bias.to(device).float()
    wfq = fake_weight(linear.weight.detach().to(device), wq, qparams).float()
    s = None if smooth is None else smooth.to(device).float()
    signal = noise = dot = qq = 0.0
    for x in inputs:
        x = x.to(device).float()
        y = F.linear(x, w0, bias)
        xs = x if s is None else x / s
        xq = xs if aq is None else aq.fake(xs)
        yq = F.linear(xq, wfq, bias)
        signal += float((y * y).sum())
        noise += float(((y - yq) ** 2).sum())
        dot += float((y * yq).sum())
        qq += float((yq * yq).sum())
    eps = 1e-30
    return {
        "sqnr_db": 10.0 * torch.log10(torch.tensor((signal + eps) / (noise + eps))).item(),
        "rel_err": (noise / (signal + eps)) ** 0.5,
        "cosine": dot / ((signal * qq) ** 0.5 + eps),
    }


def dequantize_codes(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None = None) -> torch.Tensor:
    """codes · scale in fp32 (per-channel scale (out, 1))."""
    return decode(codes, scale, zero)
