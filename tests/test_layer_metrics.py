"""The per-layer error table and `quant_out`, checked against computations written here from the definitions.

* SQNR of a smoothed layer: y = x·W0ᵀ + b against y_q = Q_a(x/s)·Q_w(W0·diag(s))ᵀ + b, with s recomputed from
  SmoothQuant's formula (or read from AWQ's log) and the sums done in float64.
* `quant_out`: block k+1 must be calibrated on the outputs of block k with its linears fake-quantized, computed
  here with weight replacement and input hooks (not the engine's `fake_quantized`).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from _wanblock import Holder, linear_inputs, make_block, make_calib, run
from torch import nn

from vidquant.algos.awq import Awq
from vidquant.algos.engine import run_blockwise
from vidquant.algos.rtn import RTN
from vidquant.algos.smoothquant import SmoothQuant
from vidquant.calib.capture import CalibData
from vidquant.config import METHODS
from vidquant.models.layout import SUBSETS
from vidquant.quant.quantizer import IntQuantizer

W8, W4 = IntQuantizer(8), IntQuantizer(4)
A8 = IntQuantizer(8, granularity="per_token")


def error_stats(xs: list[torch.Tensor], w0: torch.Tensor, bias: torch.Tensor | None, s: torch.Tensor | None,
                wq, aq) -> dict[str, float]:
    """From the definitions, float64 sums over all samples: SQNR 10·log10(Σ y² / Σ (y − y_q)²), relative L2
    error sqrt(Σ (y − y_q)² / Σ y²) and cosine Σ y·y_q / sqrt(Σ y² · Σ y_q²)."""
    w_fq = wq.fake(w0 if s is None else w0 * s).double()
    b = None if bias is None else bias.double()
    signal = noise = dot = qq = 0.0
    for x in xs:
        y = torch.nn.functional.linear(x.double(), w0.double(), b)
        xs_ = x if s is None else x / s
        yq = torch.nn.functional.linear((xs_ if aq is None else aq.fake(xs_)).double(), w_fq, b)
        signal += float((y * y).sum())
        noise += float(((y - yq) ** 2).sum())
        dot += float((y * yq).sum())
        qq += float((yq * yq).sum())
    return {"sqnr_db": 10 * math.log10(signal / noise), "rel_err": math.sqrt(noise / signal),
            "cosine": dot / math.sqrt(signal * qq)}


def _smoothquant_scales(xs, w0, alpha: float) -> dict[str, torch.Tensor]:
    """s per linear from SmoothQuant's formula on independently captured float inputs."""
    scales = {}
    for subset in SUBSETS:
        x_max = torch.stack([x.abs().reshape(-1, x.shape[-1]).amax(0) for x in xs[subset.input]]).amax(0)
        w_max = torch.stack([w0[n].abs().amax(0) for n in subset.layers]).amax(0).clamp_min(1e-5)
        s = (x_max**alpha / w_max ** (1 - alpha)).clamp_min(1e-5)
        scales.update({n: s for n in subset.layers})
    return scales


@pytest.mark.parametrize("method", ["SmoothQuant", "Awq"])
def test_sqnr_of_smoothed_layers_matches_definition(method):
    """Every layer's SQNR equals the definition; for the smoothed ones the input is divided by the same s the
    weight columns were multiplied by (dropping the division makes the SQNR of a smoothed layer negative)."""
    calib = make_calib()
    block = make_block()
    xs = linear_inputs(block, calib)
    w0 = {n: m.weight.detach().clone() for n, m in block.named_modules() if isinstance(m, nn.Linear)}
    b0 = {n: m.bias.detach().clone() for n, m in block.named_modules() if isinstance(m, nn.Linear)}
    if method == "SmoothQuant":
        wq, algo = W8, SmoothQuant({"alpha": 0.75})
    else:
        wq, algo = W4, Awq({**METHODS["Awq"], "n_grid": 5})
    _, result = run(block, calib, [algo], wq, A8)
    if method == "SmoothQuant":
        scales = _smoothquant_scales(xs, w0, 0.75)
    else:
        log = result.logs[0]["awq"]
        scales = {n: log[sub.name]["scale"] for sub in SUBSETS for n in sub.layers}
    rows = {r["layer"]: r for r in result.layer_rows}
    assert set(rows) == set(w0)
    smoothed_any = False
    for name, w in w0.items():
        s = scales.get(name)
        want = error_stats(xs[name], w, b0[name], s, wq, A8)
        # fp32 engine vs float64 here: the dB values agree to ~1e-4; 0.01 dB is far below any real change.
        assert rows[name]["sqnr_db"] == pytest.approx(want["sqnr_db"], abs=0.01), name
        assert rows[name]["rel_err"] == pytest.approx(want["rel_err"], rel=1e-3), name
        assert rows[name]["cosine"] == pytest.approx(want["cosine"], abs=1e-6), name
        sub = next((sub.name for sub in SUBSETS if name in sub.layers), "-")
        assert (rows[name]["block"], rows[name]["subset"]) == (0, sub), name
        # the static activation scale must cover max |x / s| over every token of every sample
        absmax = max(float((x if s is None else x / s).abs().max()) for x in xs[name])
        assert float(result.input_absmax[f"blocks.0.{name}"]) == pytest.approx(absmax, rel=1e-6), name
        smoothed_any |= s is not None and not torch.allclose(s, torch.ones_like(s))
    assert smoothed_any  # AWQ may pick r = 0 (s = 1) for a subset, not for all of them on this data


def _fake_quant_outputs(block: nn.Module, calib: CalibData, wq, aq) -> list[torch.Tensor]:
    """The block's outputs with every linear's weight replaced by wq.fake(W) and its input by aq.fake(x)."""
    block = copy.deepcopy(block)
    handles = []
    for m in block.modules():
        if isinstance(m, nn.Linear):
            m.weight.data = wq.fake(m.weight.data)
            handles.append(m.register_forward_pre_hook(lambda _m, args: (aq.fake(args[0]),)))
    with torch.no_grad():
        out = [block(h, **kw) for h, kw in zip(calib.hidden_states, calib.block_kwargs)]
    for h in handles:
        h.remove()
    return out


def _rows(result, index: int) -> dict[str, float]:
    return {r["layer"]: r["sqnr_db"] for r in result.layer_rows if r["block"] == index}


def test_quant_out_feeds_fake_quantized_outputs():
    """Two RTN blocks: block 1 is calibrated on block 0's float outputs by default and on its fake-quantized
    outputs with quant_out; each case equals calibrating block 1 alone on those inputs computed here."""
    calib = make_calib(n=2)
    blocks = [make_block(seed=0), make_block(seed=1)]
    results, holders = {}, {}
    for quant_out in (False, True):
        holders[quant_out] = Holder(copy.deepcopy(blocks[0]))
        holders[quant_out].blocks.append(copy.deepcopy(blocks[1]))
        results[quant_out] = run_blockwise(holders[quant_out], calib, [RTN({})], W8, A8, "cpu",
                                           quant_out=quant_out, progress=False)
    assert _rows(results[False], 0) == _rows(results[True], 0)  # block 0 sees the same inputs either way

    block0 = holders[False].blocks[0]  # smoothable now; RTN leaves its weights as they were
    with torch.no_grad():
        float_out = [block0(h, **kw) for h, kw in zip(calib.hidden_states, calib.block_kwargs)]
    quant_out = _fake_quant_outputs(block0, calib, W8, A8)
    for quant, hidden in ((False, float_out), (True, quant_out)):
        alone = CalibData()
        alone.hidden_states, alone.block_kwargs = hidden, calib.block_kwargs
        _, want = run(copy.deepcopy(blocks[1]), alone, [RTN({})], W8, A8)
        got, ref = _rows(results[quant], 1), _rows(want, 0)
        assert got.keys() == ref.keys()
        for name in got:
            assert got[name] == pytest.approx(ref[name], rel=1e-6), (quant, name)
    # and the option matters on this data: block 1's inputs differ, so do its errors
    assert max(abs(a - b) for a, b in zip(_rows(results[False], 1).values(), _rows(results[True], 1).values())) > 1e-3

