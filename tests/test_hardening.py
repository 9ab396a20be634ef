"""Bad input, faults and determinism: every case names the file, field or tensor and what was expected, and is
raised before expensive work starts where possible."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from tests_support import deny_write, tiny_config, write_config

from vidquant.algos.engine import build_algorithms, run_blockwise
from vidquant.cache import default_cache
from vidquant.calib.capture import CalibData
from vidquant.config import load_config
from vidquant.export.lightx2v_export import ExportError
from vidquant.models import ModelLoadError, load_pipeline
from vidquant.quant import IntQuantizer
from vidquant.run import prepare, quantize


def _prepare_with(tmp_path, tiny_dirs, task="t2v", **overrides):
    cfg = tiny_config(tmp_path, tiny_dirs[task], task)
    return load_config(write_config(tmp_path, cfg), overrides)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"quant.video_gen.weight.bit": 6, "quant.video_gen.act.bit": 6}, "quant.video_gen.weight.bit: got 6"),
        ({"quant.video_gen.weight.granularity": "per_group", "quant.video_gen.weight.group_size": 16},
         "quant.video_gen.weight.granularity: got 'per_group'"),
        ({"quant.video_gen.weight.symmetric": False}, "quant.video_gen.weight.symmetric"),
        ({"quant.video_gen.act": None}, "quant.video_gen.act: missing"),
        ({"quant.video_gen.act.bit": 4}, "quant.video_gen.act"),
    ],
)
def test_export_refuses_what_lightx2v_cannot_run_before_any_work(tmp_path, tiny_dirs, overrides, expected):
    cfg = _prepare_with(tmp_path, tiny_dirs, **overrides)
    with pytest.raises(ExportError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        prepare(cfg)


def test_config_vs_checkpoint_task_mismatch(tmp_path, tiny_dirs):
    cfg = _prepare_with(tmp_path, tiny_dirs, **{"model.path": str(tiny_dirs["i2v"])})
    with pytest.raises(ModelLoadError, match="model.type is WanT2V but .* I2V checkpoint"):
        prepare(cfg)


def test_existing_or_unwritable_output_refused_up_front(tmp_path, tiny_dirs, monkeypatch):
    cfg = _prepare_with(tmp_path, tiny_dirs)
    (tmp_path / "save" / "lightx2v_quant_model").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="lightx2v_quant_model: export directory already exists"):
        prepare(cfg)
    locked = tmp_path / "locked"
    deny_write(monkeypatch, locked)  # read-only; simulated for root, who may write anywhere
    cfg = _prepare_with(tmp_path, tiny_dirs, **{"save.save_path": str(locked / "out")})
    with pytest.raises(PermissionError, match="locked: not writable"):
        prepare(cfg)
    assert list(locked.iterdir()) == []


def test_truncated_checkpoint_is_a_clear_error(tmp_path, tiny_dirs):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dirs["t2v"], broken)
    weights = next((broken / "transformer").glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=str(broken)):
        load_pipeline(broken)


def _calib_from(pipe, n=2, tokens=8):
    tr = pipe.transformer
    dim = tr.config.num_attention_heads * tr.config.attention_head_dim
    g = torch.Generator().manual_seed(0)
    data = CalibData()
    rope = tr.rope(torch.zeros(1, tr.config.in_channels, 2, 4, 4))
    for _ in range(n):
        data.hidden_states.append(torch.randn(1, tokens, dim, generator=g))
        data.block_kwargs.append({"encoder_hidden_states": torch.randn(1, 16, dim, generator=g),
                                  "temb": torch.randn(1, 6, dim, generator=g) * 0.1, "rotary_emb": rope})
    return data


def test_nan_in_calibration_activations_stops_naming_block_and_layer(tiny_dirs):
    pipe = load_pipeline(tiny_dirs["t2v"], dtype="float32")
    data = _calib_from(pipe)
    data.hidden_states[1][0, 3, 5] = float("nan")
    algos = build_algorithms(["SmoothQuant"], lambda m: {"alpha": 0.5})
    with pytest.raises(FloatingPointError, match=r"block 0: non-finite values \(NaN/Inf\) in the input of attn1.to_q"):
        run_blockwise(pipe.transformer, data, algos, IntQuantizer(8), IntQuantizer(8, granularity="per_token"),
                      progress=False)


def test_zero_weight_row_and_zero_token_stay_finite(tiny_dirs):
    pipe = load_pipeline(tiny_dirs["t2v"], dtype="float32")
    tr = pipe.transformer
    with torch.no_grad():
        tr.blocks[0].attn1.to_q.weight[3].zero_()
        tr.blocks[0].ffn.net[0].proj.weight[:, 2].zero_()  # a dead input channel too
    data = _calib_from(pipe)
    data.hidden_states[0][0, 2].zero_()
    algos = build_algorithms(["SmoothQuant"], lambda m: {"alpha": 0.5})
    res = run_blockwise(tr, data, algos, IntQuantizer(8), IntQuantizer(8, granularity="per_token"), progress=False)
    assert res.layer_metrics["sqnr_db"].map(lambda v: v == v).all()
    for p in tr.parameters():
        assert torch.isfinite(p).all()


def _hash_dir(path):
    h = {}
    for f in sorted(path.rglob("*")):
        if f.is_file():
            h[str(f.relative_to(path))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return h


def test_same_config_and_seed_give_byte_identical_exports(tmp_path, tiny_dirs):
    hashes = []
    for run in ("a", "b"):
        cfg = tiny_config(tmp_path / run, tiny_dirs["t2v"], "t2v", method="SmoothQuant")
        cfg["eval"]["path"] = cfg["calib"]["path"]
        default_cache().clear()  # recompute the capture: the property is determinism, not the cache
        result = quantize(load_config(write_config(tmp_path / run, cfg)), progress=False)
        hashes.append(_hash_dir(result.export_dir))
    assert hashes[0] == hashes[1] and len(hashes[0]) >= 2


KILL_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    import vidquant.export.io as io
    from vidquant.export.lightx2v_export import export_lightx2v
    from vidquant.models import load_pipeline
    from vidquant.quant import IntQuantizer
    real = io.save_file_deterministic
    def slow(*a, **k):
        real(*a, **k)
        print("WROTE", flush=True)
        time.sleep(60)
    io.save_file_deterministic = slow
    import vidquant.export.lightx2v_export as ex
    pipe = load_pipeline(sys.argv[1], dtype="float32")
    export_lightx2v(pipe.transformer, IntQuantizer(8), sys.argv[2], max_shard_size="20KB")
""")


def test_killed_export_leaves_no_partial_directory(tmp_path, tiny_dirs):
    script = tmp_path / "kill_me.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(script), str(tiny_dirs["t2v"]), str(out)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # the first shard is on disk: kill mid-write
    assert "WROTE" in line
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "lightx2v_quant_model").exists()
    time.sleep(0.1)
    leftovers = [p.name for p in out.iterdir()] if out.exists() else []
    assert all(name.startswith(".") for name in leftovers)  # only a hidden temp dir, never the export
