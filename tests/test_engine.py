"""The blockwise engine (the context it hands algorithms, the grids they record), the whole `quantize` run with
RTN, and the CLI on a tiny config."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from _wanblock import Holder, make_block, make_calib
from tests_support import tiny_config, write_config

from vidquant.algos.base import Algorithm, BlockContext
from vidquant.algos.engine import run_blockwise
from vidquant.cli import main as cli_main
from vidquant.config import load_config
from vidquant.quant import IntQuantizer
from vidquant.run import quantize


@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_rtn_w8a8_end_to_end(tmp_path, tiny_dirs, task):
    cfg = load_config(write_config(tmp_path, tiny_config(tmp_path, tiny_dirs[task], task)))
    result = quantize(cfg, progress=False)
    lm = result.layer_metrics
    n_linears = 10 if task == "t2v" else 12
    assert len(lm) == 2 * n_linears  # 2 blocks in the test model
    assert lm["sqnr_db"].map(math.isfinite).all()
    # W8A8 with min-max grids: each linear keeps roughly 30-45 dB on random weights; 20 dB is a loose floor
    assert (lm["sqnr_db"] > 20).all(), lm
    tm = result.timestep_metrics
    assert len(tm) == 4 * 4 and set(tm["branch"]) == {"cond", "uncond"}  # 4 calib prompts x 4 calls
    assert (tm["rel_err"] < 0.1).all()
    vm = result.video_metrics
    assert len(vm) == 8 and vm["psnr"].map(math.isfinite).all()
    summary = json.loads((result.out_dir / "summary.json").read_text())
    assert summary["method"] == "RTN" and summary["weight"] == "int8"
    assert (result.export_dir / "config.json").is_file()
    assert (tmp_path / "videos" / "fake_quant_output_0.mp4").stat().st_size > 0


def test_cli_quantize_and_user_error_exit_codes(tmp_path, tiny_dirs, capsys):
    cfg = tiny_config(tmp_path, tiny_dirs["t2v"])
    cfg["eval"]["path"] = cfg["calib"]["path"]
    rc = cli_main(["quantize", "--config", write_config(tmp_path, cfg), "--quiet",
                   "--set", "quant.video_gen.method=SmoothQuant", "--set", "quant.video_gen.special.alpha=0.5"])
    assert rc == 0
    assert json.loads((tmp_path / "save" / "summary.json").read_text())["method"] == "SmoothQuant"
    # user error: distinct exit code, one line, no traceback
    rc = cli_main(["quantize", "--config", write_config(tmp_path, cfg), "--set", "quant.video_gen.weight.bit=6"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "quant.video_gen.weight.bit: got 6" in err


class _Recorder(Algorithm):
    """Records the context the engine hands each block and fixes a coarse grid for one layer (as GPTQ does)."""

    name = "recorder"
    coarse_layer = "ffn.net.2"

    def __init__(self):
        super().__init__()
        self.seen: list[BlockContext] = []

    def transform_block(self, ctx: BlockContext) -> None:
        self.seen.append(ctx)
        out = ctx.linears[self.coarse_layer].out_features
        ctx.weight_qparams[self.coarse_layer] = (torch.full((out, 1), 0.05), None)


def test_engine_hands_each_block_its_context_and_uses_the_grids_recorded():
    """run_blockwise with its defaults (CPU, float outputs between blocks): each algorithm sees the block's index,
    its float inputs (block 1: block 0's float outputs, computed here), the run's kwargs and quantizers; q/k/v read
    one shared input list; a grid an algorithm records is used for the layer's error and returned under
    ``blocks.<i>.<name>``."""
    calib = make_calib(n=2)
    holder = Holder(make_block(seed=0))
    holder.blocks.append(make_block(seed=1))
    wq, aq = IntQuantizer(8), IntQuantizer(8, granularity="per_token")
    rec = _Recorder()
    result = run_blockwise(holder, calib, [rec], wq, aq, progress=False)

    with torch.no_grad():
        float_out = [holder.blocks[0](h, **kw) for h, kw in zip(calib.hidden_states, calib.block_kwargs)]
    assert [c.index for c in rec.seen] == [0, 1]
    for ctx, hidden in zip(rec.seen, (calib.hidden_states, float_out)):
        assert len(ctx.hidden_states) == len(hidden)
        assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-6) for a, b in zip(ctx.hidden_states, hidden))
        assert ctx.kwargs is calib.block_kwargs and ctx.wq is wq and ctx.aq is aq
        assert ctx.device == torch.device("cpu")
        assert ctx.inputs["attn1.to_q"] is ctx.inputs["attn1.to_k"] is ctx.inputs["attn1.to_v"]
        assert ctx.inputs["attn1.to_q"] is not ctx.inputs["attn1.to_out.0"]

    layer = _Recorder.coarse_layer
    assert set(result.weight_qparams) == {f"blocks.{i}.{layer}" for i in (0, 1)}
    for i, ctx in enumerate(rec.seen):
        lin = holder.blocks[i].get_submodule(layer)
        w_fq = wq.fake_with(lin.weight.detach(), *ctx.weight_qparams[layer]).double()
        signal = noise = 0.0
        for x in ctx.inputs[layer]:
            y = F.linear(x.double(), lin.weight.double(), lin.bias.double())
            yq = F.linear(aq.fake(x).double(), w_fq, lin.bias.double())
            signal, noise = signal + float((y * y).sum()), noise + float(((y - yq) ** 2).sum())
        row = next(r for r in result.layer_rows if (r["block"], r["layer"]) == (i, layer))
        assert row["sqnr_db"] == pytest.approx(10 * math.log10(signal / noise), abs=0.01)
        assert row["sqnr_db"] < 20  # the coarse grid, not the layer's own min-max one (~40 dB)
