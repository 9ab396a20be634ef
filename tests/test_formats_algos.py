"""The calibration algorithms on the block grids (GPTQ column by column on MX / NVFP4 / int4-g128 grids)."""

import pytest
import torch

from vidquant.algos.gptq import GPTQSolver
from vidquant.quant import IntQuantizer
from vidquant.quant.blockfmt import MXQuantizer, NVFP4Quantizer

QUANTIZERS = {
    "mxfp4": lambda: MXQuantizer("e2m1"),
    "mxfp6": lambda: MXQuantizer("e3m2"),
    "nvfp4": NVFP4Quantizer,
    "int4_g128": lambda: IntQuantizer(4, True, "per_group", 128),
}


def _layer(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # strongly correlated inputs (rank ~32 plus noise): where error compensation pays off
    x = torch.randn(2048, 32, generator=g) @ torch.randn(32, 256, generator=g) + 0.1 * torch.randn(2048, 256,
                                                                                                  generator=g)
    w = torch.randn(64, 256, generator=g) * 0.05
    return x, w


@pytest.mark.parametrize("fmt", sorted(QUANTIZERS))
@pytest.mark.parametrize("static_groups,actorder", [(True, True), (False, False)])
def test_gptq_on_block_grid_is_exact_and_beats_rtn(fmt, static_groups, actorder):
    wq = QUANTIZERS[fmt]()
    x, w = _layer()
    solver = GPTQSolver(256, torch.device("cpu"))
    solver.add_batch(x)
    if fmt == "nvfp4" and not static_groups:
        with pytest.raises(ValueError, match="static_groups"):
            solver.quantize(w, wq, blocksize=64, actorder=actorder, static_groups=static_groups)
        return
    q, scale, zero, _ = solver.quantize(w, wq, blocksize=64, actorder=actorder, static_groups=static_groups)
    assert zero is None and scale.shape == (64, 256 // wq.group_size)
    # Q lies exactly on the recorded block grid, so the export re-quantizes it without error
    assert torch.equal(wq.quantize_with(q, scale).dequantize(), q)
    err_gptq = (x @ (q - w).T).pow(2).mean()
    err_rtn = (x @ (wq.fake(w) - w).T).pow(2).mean()
    assert err_gptq < 0.5 * err_rtn, (float(err_gptq), float(err_rtn))


def test_gptq_dynamic_mx_block_scale_comes_from_compensated_columns():
    wq = MXQuantizer("e2m1")
    x, w = _layer(1)
    solver = GPTQSolver(256, torch.device("cpu"))
    solver.add_batch(x)
    _, s_dynamic, _, _ = solver.quantize(w, wq, blocksize=64, actorder=False, static_groups=False)
    _, s_static, _, _ = solver.quantize(w, wq, blocksize=64, actorder=False, static_groups=True)
    assert torch.equal(s_static, wq.qparams(w)[0])
    assert torch.equal(s_dynamic[:, 0], s_static[:, 0])  # the first block sees no updates yet
    assert not torch.equal(s_dynamic, s_static)  # later blocks are fixed from their updated columns
