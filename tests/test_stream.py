"""Streaming calibration (vidquant.stream) equals the in-memory flow: same calibration, same export bytes."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import WanTransformer3DModel

from vidquant.algos.engine import build_algorithms, run_blockwise
from vidquant.config import VideoGenQuant
from vidquant.export.io import load_state_dict
from vidquant.export.lightx2v_export import export_lightx2v
from vidquant.quant import build_quantizer
from vidquant.stream import (
    INDEX_NAME,
    CheckpointReader,
    capture_block0_inputs,
    load_non_block,
    stream_export,
    stream_quantize,
    transformer_config,
)

TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
            text_dim=16, freq_dim=32, ffn_dim=64, num_layers=3, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64)


def _denoiser_inputs(n: int = 2) -> list[dict]:
    gen = torch.Generator().manual_seed(1)
    return [{"hidden_states": torch.randn(1, 4, 2, 8, 8, generator=gen).bfloat16(),
             "timestep": torch.tensor([900.0 - 400.0 * i]),
             "encoder_hidden_states": torch.randn(1, 8, 16, generator=gen).bfloat16()} for i in range(n)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random bf16 transformer saved in shards (so the reader has to follow the index)."""
    torch.manual_seed(0)
    model = WanTransformer3DModel(**TINY).to(torch.bfloat16)
    folder = tmp_path_factory.mktemp("ckpt") / "transformer"
    model.save_pretrained(folder, max_shard_size="40KB")
    return folder


def _vg(method: list[str], fmt: str) -> VideoGenQuant:
    if fmt == "int8":
        w = {"bit": 8, "symmetric": True, "granularity": "per_channel"}
        a = {"bit": 8, "symmetric": True, "granularity": "per_token"}
    else:
        w = {"quant_type": "float-quant", "bit": "e4m3", "granularity": "per_channel"}
        a = {"quant_type": "float-quant", "bit": "e4m3", "granularity": "per_token"}
    special = {"alpha": 0.75} if "SmoothQuant" in method else {}
    if "Awq" in method:
        special["n_grid"] = 4
    return VideoGenQuant(method=method, weight=w, act=a, special=special)


def _in_memory(checkpoint, vg, out, quant_out=False):
    model = WanTransformer3DModel.from_pretrained(checkpoint, torch_dtype=torch.bfloat16)
    calib = capture_block0_inputs(model, _denoiser_inputs())
    wq, aq = build_quantizer(vg.weight), build_quantizer(vg.act)
    result = run_blockwise(model, calib, build_algorithms(vg.methods, vg.special_for), wq, aq, "cpu",
                           quant_out=quant_out, progress=False)
    return export_lightx2v(model, wq, out, weight_qparams=result.weight_qparams), result, calib


def _streamed(checkpoint, vg, out, quant_out=False):
    reader = CheckpointReader(checkpoint)
    calib = capture_block0_inputs(load_non_block(reader, transformer_config(checkpoint)), _denoiser_inputs())
    wq, aq = build_quantizer(vg.weight), build_quantizer(vg.act)
    res = stream_quantize(checkpoint, calib, build_algorithms(vg.methods, vg.special_for), wq, aq, out,
                          quant_out=quant_out, progress=False)
    return res.export_dir, res.blockwise, calib


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert torch.equal(a[key].view(torch.uint8), b[key].view(torch.uint8)), key


@pytest.mark.parametrize(("method", "fmt", "quant_out"), [
    (["RTN"], "int8", False),
    (["SmoothQuant"], "int8", True),
    (["Awq"], "int8", False),
    (["SmoothQuant", "GPTQ"], "int8", False),
    (["SmoothQuant"], "fp8", False),
])
def test_streamed_export_equals_in_memory(checkpoint, tmp_path, method, fmt, quant_out):
    vg = _vg(method, fmt)
    mem_dir, mem_res, mem_calib = _in_memory(checkpoint, vg, tmp_path / "mem", quant_out)
    str_dir, str_res, str_calib = _streamed(checkpoint, vg, tmp_path / "stream", quant_out)
    for x, y in zip(mem_calib.hidden_states, str_calib.hidden_states):
        assert torch.equal(x, y)
    _assert_same_tensors(load_state_dict(mem_dir), load_state_dict(str_dir))
    assert (mem_dir / "config.json").read_bytes() == (str_dir / "config.json").read_bytes()
    assert [r["sqnr_db"] for r in mem_res.layer_rows] == [r["sqnr_db"] for r in str_res.layer_rows]


def test_streamed_layout_is_lightx2v_by_block(checkpoint, tmp_path):
    out, _, _ = _streamed(checkpoint, _vg(["RTN"], "int8"), tmp_path)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["config.json", INDEX_NAME, "non_block.safetensors"]
                           + [f"block_{i}.safetensors" for i in range(TINY["num_layers"])])
    index = json.loads((out / INDEX_NAME).read_text())
    for key, filename in index["weight_map"].items():
        expected = f"block_{key.split('.')[1]}.safetensors" if key.startswith("blocks.") else "non_block.safetensors"
        assert filename == expected
    state = load_state_dict(out)
    assert state["blocks.0.attn1.to_q.weight"].dtype == torch.int8
    assert state["blocks.0.attn1.to_q.weight_scale"].shape == (32, 1)
    assert state["blocks.0.scale_shift_table"].dtype == torch.float32  # diffusers keeps it fp32
    assert state["patch_embedding.weight"].dtype == torch.bfloat16
    assert json.loads((out / "config.json").read_text())["quant_method"] == "advanced_ptq"


def test_stream_refuses_existing_output_and_mismatched_depth(checkpoint, tmp_path):
    _streamed(checkpoint, _vg(["RTN"], "int8"), tmp_path)
    with pytest.raises(FileExistsError):
        _streamed(checkpoint, _vg(["RTN"], "int8"), tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in checkpoint.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "num_layers": 2}))
    with pytest.raises(ValueError, match="num_layers=2"):
        _streamed(bad, _vg(["RTN"], "int8"), tmp_path / "b")


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_stream_export_equals_export_lightx2v_without_calibration(checkpoint, tmp_path, fmt):
    vg = _vg(["RTN"], fmt)
    wq = build_quantizer(vg.weight)
    model = WanTransformer3DModel.from_pretrained(checkpoint, torch_dtype=torch.bfloat16)
    mem = export_lightx2v(model, wq, tmp_path / "mem")
    streamed = stream_export(checkpoint, wq, tmp_path / "stream", progress=False)
    _assert_same_tensors(load_state_dict(mem), load_state_dict(streamed))
    assert (mem / "config.json").read_bytes() == (streamed / "config.json").read_bytes()
