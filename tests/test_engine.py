"""The blockwise engine with RTN, the whole `quantize` run, and the CLI on a tiny config."""

from __future__ import annotations

import json
import math

import pytest
from tests_support import tiny_config, write_config

from vidquant.cli import main as cli_main
from vidquant.config import load_config
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
