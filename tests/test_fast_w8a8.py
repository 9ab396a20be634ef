"""The fast CPU int8 path (vidquant.quant.fast) computes exactly what eager W8A8Linear computes."""

from __future__ import annotations

import pytest
import torch

from vidquant.quant import W8A8Linear
from vidquant.quant.fast import FastW8A8Linear, enable_fast_w8a8, fast_path_available, quantize_act_u8
from vidquant.quant.linear import quantize_act_per_token

needs_onednn = pytest.mark.skipif(not fast_path_available(), reason="needs an x86 CPU build with oneDNN")


def test_u8_codes_are_the_int8_codes_shifted():
    x = torch.randn(37, 96) * torch.logspace(-3, 2, 96)
    x[3] = 0.0  # an all-zero token
    codes, scale = quantize_act_per_token(x.bfloat16(), "int8")
    u8, scale_u8 = quantize_act_u8(x.bfloat16())
    assert u8.dtype == torch.uint8
    assert torch.equal(u8.to(torch.int16) - 128, codes.to(torch.int16))
    assert torch.equal(scale, scale_u8)


@needs_onednn
@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize(("m", "bias"), [(1, True), (5, False), (64, True), (300, True)])
def test_fast_linear_is_bit_identical_to_eager(compiled, m, bias):
    torch.manual_seed(m)
    lin = torch.nn.Linear(96, 80, bias=bias).bfloat16()
    ref = W8A8Linear.from_linear(lin, "int8")
    fast = FastW8A8Linear.from_w8a8(ref, compiled=compiled)
    x = torch.randn(2, m, 96).bfloat16() * 3
    with torch.no_grad():
        assert torch.equal(fast(x), ref(x))
    assert fast.state_dict().keys() == ref.state_dict().keys()
    assert fast.weight.data_ptr() == ref.weight.data_ptr()  # buffers shared, not copied


@needs_onednn
def test_enable_fast_swaps_int8_only():
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.Linear(48, 32)).bfloat16()
    model[0] = W8A8Linear.from_linear(model[0], "int8")
    model[1] = W8A8Linear.from_linear(model[1], "fp8")
    x = torch.randn(20, 32).bfloat16()
    with torch.no_grad():
        ref = model(x)
        assert enable_fast_w8a8(model, compiled=False) == 1
        assert isinstance(model[0], FastW8A8Linear) and type(model[1]) is W8A8Linear
        assert torch.equal(model(x), ref)


def test_fast_refuses_fp8():
    lin = W8A8Linear.from_linear(torch.nn.Linear(16, 16), "fp8")
    with pytest.raises(ValueError, match="int8"):
        FastW8A8Linear.from_w8a8(lin)
