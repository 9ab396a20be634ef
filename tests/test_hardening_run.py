"""Hardening round 2, whole runs: LLMC's `model.lora_path` merged before calibration, and all or nothing after it
(metrics, clips and export complete or absent; leftovers of killed runs cleaned at the next run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tests_support import tiny_config, write_config

import vidquant.run as run_mod
from vidquant.config import load_config
from vidquant.export.io import write_index
from vidquant.lora import LoraError, merge_lora_into
from vidquant.run import quantize

TARGET = "blocks.0.attn1.to_q"


def _rtn_config(tmp_path, tiny_dirs, with_eval=False, **sets):
    cfg = tiny_config(tmp_path, tiny_dirs["t2v"], "t2v")
    del cfg["calib"]
    if not with_eval:
        del cfg["eval"]
    for key, value in sets.items():
        section, field = key.split(".")
        cfg[section][field] = value
    return load_config(write_config(tmp_path, cfg))


def _llmc_lora(folder, dim, rank=2, row_boost=5.0):
    """A LoRA in LLMC's layout: a folder with diffusion_pytorch_model.safetensors.index.json, diffusers names.
    B @ A adds `row_boost` to every weight of output row 0 of TARGET (and nothing elsewhere)."""
    folder.mkdir()
    a = torch.full((rank, dim), 1.0 / rank)
    b = torch.zeros(dim, rank)
    b[0] = row_boost
    tensors = {f"{TARGET}.lora_A.weight": a, f"{TARGET}.lora_B.weight": b}
    save_file(tensors, folder / "lora.safetensors")
    write_index(folder, dict.fromkeys(tensors, "lora.safetensors"), 0, "diffusion_pytorch_model.safetensors.index.json")
    return folder, (b @ a)


def _export_scale(export_dir, key):
    tensors = {}
    for f in export_dir.glob("*.safetensors"):
        tensors |= load_file(f)
    return tensors[key]


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_lora_path_is_merged_before_quantization(tmp_path, tiny_dirs, alpha):
    from diffusers import WanTransformer3DModel

    base = WanTransformer3DModel.from_pretrained(tiny_dirs["t2v"] / "transformer")
    weight = base.get_submodule(TARGET).weight.detach().float()
    lora, delta = _llmc_lora(tmp_path / "lora", weight.shape[1])
    cfg = _rtn_config(tmp_path, tiny_dirs, **{"model.lora_path": str(lora), "model.lora_alpha": alpha})
    result = quantize(cfg, progress=False)
    scale = _export_scale(result.export_dir, f"{TARGET}.weight_scale").float().flatten()
    merged = weight + alpha * delta
    expected = merged.abs().amax(dim=1) / 127  # int8 symmetric per-channel RTN
    assert torch.allclose(scale, expected, rtol=1e-6)
    assert scale[0] > 1.5 * weight[0].abs().max() / 127  # row 0 really moved
    other = _export_scale(result.export_dir, "blocks.1.attn1.to_q.weight_scale").float().flatten()
    w1 = base.get_submodule("blocks.1.attn1.to_q").weight.detach().float()
    assert torch.allclose(other, w1.abs().amax(dim=1) / 127, rtol=1e-6)  # untouched layers unchanged


def test_lora_that_does_not_fit_names_the_key(tmp_path, tiny_dirs):
    from diffusers import WanTransformer3DModel

    tr = WanTransformer3DModel.from_pretrained(tiny_dirs["t2v"] / "transformer")
    before = {k: v.clone() for k, v in tr.state_dict().items()}
    save_file({"blocks.0.attn1.to_q.lora_A.weight": torch.ones(2, 7),
               "blocks.0.attn1.to_q.lora_B.weight": torch.ones(3, 2)}, tmp_path / "l.safetensors")
    with pytest.raises(LoraError, match=r"model.lora_path: .*l.safetensors.*blocks.0.attn1.to_q.weight"):
        merge_lora_into(tr, tmp_path / "l.safetensors")
    save_file({"blocks.9.attn1.to_q.lora_A.weight": torch.ones(2, 7),
               "blocks.9.attn1.to_q.lora_B.weight": torch.ones(3, 2)}, tmp_path / "m.safetensors")
    with pytest.raises(LoraError, match="matches no weight"):
        merge_lora_into(tr, tmp_path / "m.safetensors")
    assert all(torch.equal(before[k], v) for k, v in tr.state_dict().items())


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _disk_full_in_metrics(*a, **k):
    raise OSError("No space left on device")


def _disk_full_mid_video(real_save_video):
    def save_video(clip, path, fps=16):
        """Half an mp4 on disk, then the disk is full (what left truncated clips before)."""
        if "fake_quant" in str(path):
            path.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
            raise OSError("No space left on device")
        return real_save_video(clip, path, fps)
    return save_video


@pytest.mark.parametrize("where", ["video_metrics", "save_video"])
def test_failure_after_calibration_leaves_nothing_and_the_rerun_works(tmp_path, tiny_dirs, monkeypatch, where):
    cfg = _rtn_config(tmp_path, tiny_dirs, with_eval=True)
    real = getattr(run_mod, where)
    broken = _disk_full_in_metrics if where == "video_metrics" else _disk_full_mid_video(real)
    monkeypatch.setattr(run_mod, where, broken)
    with pytest.raises(OSError, match="No space left"):
        quantize(cfg, progress=False)
    assert not (tmp_path / "save").exists() and not (tmp_path / "videos").exists()  # no export, clips, tables
    monkeypatch.setattr(run_mod, where, real)
    result = quantize(cfg, progress=False)  # no "export already exists" from the failed attempt
    assert (result.export_dir / "config.json").is_file() and (tmp_path / "save" / "summary.json").is_file()
    names = _listing(tmp_path / "videos")
    assert "fake_quant_output_0.mp4" in names and not any(n.startswith(".") for n in names)
    assert not any(n.startswith(".") for n in _listing(tmp_path / "save"))


def test_non_finite_video_stops_the_run_and_writes_nothing(tmp_path, tiny_dirs, monkeypatch):
    cfg = _rtn_config(tmp_path, tiny_dirs, with_eval=True)
    import vidquant.cache as cache_mod
    import vidquant.generate as generate_mod

    def nan_clips(pipe, samples, params, callback):
        return [np.full((5, 32, 32, 3), np.nan, np.float32) for _ in samples]

    monkeypatch.setattr(generate_mod, "_generate_batch", nan_clips)  # every eval generation goes through it
    cache_mod.default_cache().clear()
    with pytest.raises(FloatingPointError, match="float reference: .* NaN/Inf values in the generated video"):
        quantize(cfg, progress=False)
    assert not (tmp_path / "save").exists() and not (tmp_path / "videos").exists()
    assert not cache_mod.default_cache()._items  # the refused clips are not served to the next run


def test_cache_keeps_only_what_its_caller_accepts(tmp_path):
    from vidquant.cache import Cache

    disk = Cache(tmp_path)
    assert np.isnan(disk.get("k", lambda: np.nan, keep=np.isfinite))
    assert disk.get("k", lambda: 1.0, keep=np.isfinite) == 1.0 and [p.name for p in tmp_path.iterdir()] == ["k.pt"]
    assert disk.get("k", lambda: 2.0) == 1.0  # now stored


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_run_are_cleaned_at_the_next_run(tmp_path, tiny_dirs):
    dead = _dead_pid()
    save = tmp_path / "save"
    (save / f".run.tmp-{dead}-0123abcd" / "lightx2v_quant_model").mkdir(parents=True)
    old = os.umask(0o022)
    try:
        result = quantize(_rtn_config(tmp_path, tiny_dirs), progress=False)
    finally:
        os.umask(old)
    assert sorted(p.name for p in save.iterdir()) == ["lightx2v_quant_model", "summary.json"]
    assert json.loads((save / "summary.json").read_text())["export_dir"] == str(result.export_dir)
    modes = {f.stat().st_mode & 0o777 for f in [*result.export_dir.iterdir(), save / "summary.json"]}
    assert modes == {0o644} and result.export_dir.stat().st_mode & 0o777 == 0o755


def test_overwrite_swaps_the_export_only_at_the_end(tmp_path, tiny_dirs, monkeypatch):
    cfg = _rtn_config(tmp_path, tiny_dirs, **{"save.overwrite": True})
    first = quantize(cfg, progress=False)
    before = {p.name: p.read_bytes() for p in first.export_dir.iterdir()}
    monkeypatch.setattr(run_mod, "summarize", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        quantize(cfg, progress=False)
    assert {p.name: p.read_bytes() for p in first.export_dir.iterdir()} == before
    assert not any(p.name.startswith(".") for p in (tmp_path / "save").iterdir())
