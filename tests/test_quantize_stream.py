"""`vidquant quantize --stream` (one block in memory) writes the same export as the in-memory path."""

from __future__ import annotations

import logging
from collections import namedtuple

import torch
from tests_support import tiny_config, write_config

from vidquant.cli import main
from vidquant.export.io import load_state_dict


def _config(tmp_path, model_dir, name, method):
    cfg = tiny_config(tmp_path / name, model_dir, method=method)
    cfg["model"]["torch_dtype"] = "torch.bfloat16"  # the real case: diffusers' keep-in-fp32 rule applies
    cfg["quant"]["video_gen"]["special"] = {"alpha": 0.75, "blocksize": 32} if "GPTQ" in method else {}
    cfg["eval"] = None
    return write_config(tmp_path / name, cfg), tmp_path / name / "save" / "lightx2v_quant_model"


def _same_export(a, b):
    sa, sb = load_state_dict(a), load_state_dict(b)
    assert sorted(sa) == sorted(sb) and len(sa) > 20
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key].view(torch.uint8), sb[key].view(torch.uint8)), key  # bit for bit
    assert (a / "config.json").read_bytes() == (b / "config.json").read_bytes()


def test_stream_flag_gives_the_in_memory_export(tmp_path, tiny_t2v_dir):
    method = ["SmoothQuant", "GPTQ"]
    mem_cfg, mem_export = _config(tmp_path, tiny_t2v_dir, "memory", method)
    stream_cfg, stream_export = _config(tmp_path, tiny_t2v_dir, "stream", method)
    assert main(["quantize", "--config", mem_cfg, "--quiet"]) == 0
    assert main(["quantize", "--config", stream_cfg, "--quiet", "--stream"]) == 0
    assert (stream_export / "block_0.safetensors").is_file()  # lightx2v's by-block layout
    assert not (mem_export / "block_0.safetensors").exists()
    _same_export(mem_export, stream_export)
    assert (tmp_path / "stream/save/layer_metrics.csv").read_text() == \
        (tmp_path / "memory/save/layer_metrics.csv").read_text()


def test_streams_by_itself_when_the_weights_exceed_memory(tmp_path, tiny_t2v_dir, monkeypatch, caplog):
    import psutil

    mem_cfg, mem_export = _config(tmp_path, tiny_t2v_dir, "memory", "RTN")
    auto_cfg, auto_export = _config(tmp_path, tiny_t2v_dir, "auto", "RTN")
    assert main(["quantize", "--config", mem_cfg, "--quiet"]) == 0
    Memory = namedtuple("Memory", "available total")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory(available=1000, total=2000))
    with caplog.at_level(logging.INFO, logger="vidquant"):
        assert main(["quantize", "--config", auto_cfg, "--quiet"]) == 0
    assert "available memory: streaming one block at a time" in caplog.text
    assert (auto_export / "block_0.safetensors").is_file()
    _same_export(mem_export, auto_export)


def test_stream_needs_the_export(tmp_path, tiny_t2v_dir, capsys):
    cfg, _ = _config(tmp_path, tiny_t2v_dir, "noexport", "RTN")
    text = open(cfg).read().replace("save_lightx2v: true", "save_lightx2v: false")
    open(cfg, "w").write(text)
    assert main(["quantize", "--config", cfg, "--stream"]) == 2
    assert "save.save_lightx2v" in capsys.readouterr().err
