"""Static activation scales (nvfp4, fp8-pertensor): the fake-quant model vidquant evaluates quantizes each linear's
input on the calibrated static scale the export stores, so it computes what lightx2v's run time (our emulated
runtime of the export) computes; such a scale does not couple a batch's rows; without calibration data it is
refused, naming the layer."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from test_formats_e2e import _inputs

from vidquant.algos.deploy import deploy_fake_quant
from vidquant.export.lightx2v_export import export_lightx2v
from vidquant.models.layout import block_linears
from vidquant.quant import FakeQuantLinear, FloatQuantizer
from vidquant.quant.blockfmt import NVFP4Quantizer, StaticInputQuantizer, static_input_scheme
from vidquant.run import batch_independent
from vidquant.runtime.emulated import EmulatedLinear
from vidquant.runtime.model import load_quantized_transformer

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "assets/models/tiny-wan-t2v"


def _quantizers(scheme: str):
    if scheme == "nvfp4":
        return NVFP4Quantizer(), NVFP4Quantizer()
    return FloatQuantizer("e4m3", "per_tensor"), FloatQuantizer("e4m3", "per_tensor", static=True)


@pytest.fixture(scope="module")
def tiny():
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel.from_pretrained(BASE / "transformer").eval()


def _calibrated_absmax(model, kw) -> dict[str, torch.Tensor]:
    """max |x| of every block linear's input on one forward: what calibration measures (no smoothing here)."""
    absmax, hooks = {}, []
    for i, block in enumerate(model.blocks):
        for name, lin in block_linears(block).items():
            def keep(_m, args, key=f"blocks.{i}.{name}"):
                absmax[key] = torch.maximum(absmax.get(key, torch.zeros(())), args[0].detach().abs().amax())
            hooks.append(lin.register_forward_pre_hook(keep))
    with torch.no_grad():
        model(**kw)
    for h in hooks:
        h.remove()
    return absmax


@pytest.mark.parametrize("scheme", ["nvfp4", "fp8-pertensor"])
def test_fake_quant_model_is_the_exported_runtime_bit_for_bit(tmp_path, tiny, scheme):
    """deploy_fake_quant with the calibrated input_absmax == the emulated runtime of the export made from the same
    absmax, bit for bit, on an input other than the calibration one (some activations beyond the calibrated
    absmax: saturation included). The dynamic-scale fake-quant (the old behaviour) is far from it."""
    wq, aq = _quantizers(scheme)
    kw_calib, kw = _inputs(tiny.config, "t2v", seed=0), _inputs(tiny.config, "t2v", seed=1)
    absmax = _calibrated_absmax(tiny, kw_calib)
    export = export_lightx2v(tiny, wq, tmp_path / "x", scheme=scheme, input_absmax=absmax)
    runtime = load_quantized_transformer(export, BASE, dtype=torch.float32)
    assert isinstance(runtime.blocks[0].ffn.net[2], EmulatedLinear)
    fake = deploy_fake_quant(copy.deepcopy(tiny), wq, aq, input_absmax=absmax)
    assert isinstance(fake.blocks[0].attn1.to_q.aq, StaticInputQuantizer)
    dynamic = deploy_fake_quant(copy.deepcopy(tiny), wq, FloatQuantizer("e4m3", "per_tensor") if scheme !=
                                "nvfp4" else _DynamicNVFP4())
    with torch.no_grad():
        y_runtime, y_fake, y_dynamic = runtime(**kw)[0], fake(**kw)[0], dynamic(**kw)[0]
    assert torch.equal(y_fake, y_runtime)
    rel = float((y_dynamic - y_runtime).norm() / y_runtime.norm())
    assert rel > 1e-3, rel  # the static scale is what makes them equal


class _DynamicNVFP4:
    """NVFP4 activations with a per-call global scale (2688 / max|x| of the call): the previous fake-quant."""

    def fake(self, x):
        return NVFP4Quantizer().fake(x)


@pytest.mark.parametrize("scheme", ["nvfp4", "fp8-pertensor"])
def test_static_scale_does_not_couple_a_batch(scheme):
    """Two inputs concatenated give the same rows as each alone (a dynamic per-tensor scale would not: the second
    input's outliers would coarsen the first's grid)."""
    g = torch.Generator().manual_seed(0)
    small, large = torch.randn(3, 7, 64, generator=g), 50 * torch.randn(2, 7, 64, generator=g)
    aq = StaticInputQuantizer.from_absmax(scheme, torch.tensor(40.0))
    lin = FakeQuantLinear(torch.randn(32, 64, generator=g), torch.randn(32, generator=g), aq)
    both = lin(torch.cat([small, large]))
    assert torch.equal(both[:3], lin(small)) and torch.equal(both[3:], lin(large))
    dyn = FakeQuantLinear(lin.weight, lin.bias, FloatQuantizer("e4m3", "per_tensor"))
    assert not torch.equal(dyn(torch.cat([small, large]))[:3], dyn(small))  # the test can tell


def test_batch_independent_for_static_scales():
    assert static_input_scheme(NVFP4Quantizer()) == "nvfp4" and batch_independent(NVFP4Quantizer())
    fp8_static = FloatQuantizer("e4m3", "per_tensor", static=True)
    assert static_input_scheme(fp8_static) == "fp8-pertensor" and batch_independent(fp8_static)
    assert static_input_scheme(FloatQuantizer("e4m3", "per_tensor")) is None
    assert not batch_independent(FloatQuantizer("e4m3", "per_tensor"))  # dynamic per-tensor: batch 1
    with pytest.raises(ValueError, match="e4m3 per_tensor only"):
        FloatQuantizer("e4m3", "per_token", static=True)


@pytest.mark.parametrize("scheme", ["nvfp4", "fp8-pertensor"])
def test_static_format_without_calibration_is_refused_naming_the_layer(tiny, scheme):
    wq, aq = _quantizers(scheme)
    model = copy.deepcopy(tiny)
    absmax = {f"blocks.{i}.{n}": torch.tensor(1.0) for i, b in enumerate(model.blocks) for n in block_linears(b)}
    del absmax["blocks.1.attn2.to_v"]
    with pytest.raises(ValueError, match=rf"blocks\.1\.attn2\.to_v: {scheme} activations use a static scale"):
        deploy_fake_quant(model, wq, aq, input_absmax=absmax)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn1\.to_q: .*no input_absmax"):
        deploy_fake_quant(model, wq, aq)
    assert all(isinstance(m, torch.nn.Linear) for b in model.blocks for m in block_linears(b).values())  # untouched
