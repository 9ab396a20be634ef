"""Hardening round 2, inference: what `verify` rejects does not run, a non-finite video is an error (no mp4,
exit 2), and the inference config and flags are range-checked before any model loads."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
from PIL import Image

from vidquant.export.converter import convert
from vidquant.export.io import load_state_dict, save_sharded
from vidquant.export.lightx2v_config import write_lightx2v_config
from vidquant.export.lightx2v_export import export_lightx2v
from vidquant.export.verify import main as verify_main
from vidquant.export.verify import verify
from vidquant.quant import IntQuantizer
from vidquant.runtime.infer import main as infer_main

PROMPT = "a red square moving left on a dark background"


@pytest.fixture(scope="module")
def ckpt(tiny_dirs, tmp_path_factory):
    """A converted int8 advanced_ptq checkpoint of the tiny T2V model, and its base pipeline."""
    from diffusers import WanTransformer3DModel

    root = tmp_path_factory.mktemp("hardening_runtime")
    tr = WanTransformer3DModel.from_pretrained(tiny_dirs["t2v"] / "transformer").eval()
    export = export_lightx2v(tr, IntQuantizer(8, True, "per_channel"), root / "export")
    converted = convert(export, root / "converted", direction="backward", copy_no_weight_files=True, progress=False)
    return {"base": tiny_dirs["t2v"], "converted": converted}


def _tampered(ckpt, tmp_path, edit) -> object:
    state = load_state_dict(ckpt["converted"])
    edit(state)
    out = tmp_path / "tampered"
    save_sharded(state, out, max_shard_bytes=1 << 30)
    shutil.copy(ckpt["converted"] / "config.json", out / "config.json")
    return out


def _config(tmp_path, ckpt_dir, **fields):
    path = tmp_path / "cfg.json"
    write_lightx2v_config(path, task="t2v", scheme="int8", quantized_ckpt=ckpt_dir, infer_steps=2, target_height=32,
                          target_width=32, target_video_length=5, guidance_scale=5.0, seed=42)
    path.write_text(json.dumps({**json.loads(path.read_text()), "text_len": 16, **fields}))
    return path


def _infer(ckpt, cfg, out, *extra):
    return infer_main(["--model_cls", "wan2.1", "--task", "t2v", "--model_path", str(ckpt["base"]),
                       "--config_json", str(cfg), "--prompt", PROMPT, "--save_video_path", str(out),
                       "--device", "cpu", *extra])


def _error(capsys, *words):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert "Traceback" not in err and len(lines) == 1, err
    for w in words:
        assert w in lines[0], lines[0]


Q = "blocks.1.self_attn.q"


@pytest.mark.parametrize("name, edit, words", [
    ("nan_scale", lambda s: s[f"{Q}.weight_scale"].__setitem__(3, float("nan")), ["weight_scale", "NaN/Inf"]),
    ("zero_scale", lambda s: s[f"{Q}.weight_scale"].__setitem__(0, 0.0), ["weight_scale", "scales <= 0"]),
    ("negative_scale", lambda s: s[f"{Q}.weight_scale"].mul_(-1), ["weight_scale", "scales <= 0"]),
    ("nan_bias", lambda s: s[f"{Q}.bias"].__setitem__(1, float("inf")), [f"{Q}.bias", "NaN/Inf"]),
    ("zero_affine", lambda s: s["blocks.0.affine_norm1.weight"].zero_(), ["affine_norm1.weight", "zero entries"]),
    ("nan_affine_bias", lambda s: s["blocks.0.affine_norm3.bias"].fill_(float("nan")), ["affine_norm3.bias"]),
    ("nan_head", lambda s: s["head.head.weight"].__setitem__(0, float("nan")), ["head.head.weight", "NaN/Inf"]),
])
def test_infer_refuses_what_verify_rejects(ckpt, tmp_path, capsys, name, edit, words):
    bad = _tampered(ckpt, tmp_path, edit)
    assert any(all(w in str(p) for w in words[:1]) for p in verify(bad)), name  # verify rejects it ...
    out = tmp_path / "out.mp4"
    assert _infer(ckpt, _config(tmp_path, bad), out) == 2  # ... and so does inference
    _error(capsys, "refusing to run it", *words)
    assert not out.exists() and list(tmp_path.glob("*.mp4")) == []


def test_verify_cli_rejects_a_zero_smoothing_vector(ckpt, tmp_path, capsys):
    bad = _tampered(ckpt, tmp_path, lambda s: s["blocks.1.affine_norm3.weight"].__setitem__(0, 0.0))
    assert verify_main([str(bad)]) == 1
    assert "blocks.1.affine_norm3.weight: 1 zero entries" in capsys.readouterr().out


def test_verify_reports_two_formats_for_one_layer_kind(ckpt, tmp_path):
    def fp8_block1(s):
        w = s[f"{Q}.weight"].float()
        s[f"{Q}.weight"] = w.to(torch.float8_e4m3fn)
    bad = _tampered(ckpt, tmp_path, fp8_block1)
    problems = [str(p) for p in verify(bad)]
    assert any("one format per layer kind" in p and f"{Q}.weight" in p for p in problems), problems


def test_non_finite_video_is_an_error_not_a_black_mp4(ckpt, tmp_path, capsys):
    """Huge but finite, positive scales pass verify and overflow the activations: no mp4, exit 2."""
    def huge(s):
        for k in s:
            if k.endswith("weight_scale"):
                s[k].fill_(3e38)
    bad = _tampered(ckpt, tmp_path, huge)
    assert verify(bad) == []
    out = tmp_path / "out.mp4"
    assert _infer(ckpt, _config(tmp_path, bad), out) == 2
    _error(capsys, "NaN/Inf values", "nothing written")
    assert list(tmp_path.glob("*.mp4")) == [] and list(tmp_path.glob(".*")) == []


@pytest.mark.parametrize("fields, words", [
    ({"sample_guide_scale": float("nan")}, ["sample_guide_scale", "finite"]),
    ({"sample_guide_scale": -1.0}, ["sample_guide_scale", ">= 0"]),
    ({"sample_shift": -5}, ["sample_shift", "> 0"]),
    ({"sample_shift": 0}, ["sample_shift", "> 0"]),
    ({"sample_shift": float("inf")}, ["sample_shift", "finite"]),
    ({"target_height": 40}, ["target_height", "multiple of 16"]),
    ({"seed": 2**64}, ["seed", "0.."]),
    ({"infer_steps": True}, ["infer_steps"]),
    ({"mm_config": "x"}, ["mm_config", "expected an object"]),
    ({"dit_quant_scheme": ["int8-vllm"]}, ["dit_quant_scheme", "expected a string"]),
    ({"self_attn_1_type": {"a": 1}}, ["self_attn_1_type", "expected a string"]),
    ({"quant_method": 5}, ["quant_method", "expected a string"]),
])
def test_inference_config_ranges_fail_before_loading(ckpt, tmp_path, capsys, fields, words):
    out = tmp_path / "out.mp4"
    t0 = time.time()
    assert _infer(ckpt, _config(tmp_path, ckpt["converted"], **fields), out) == 2
    _error(capsys, "cfg.json", *words)
    assert not out.exists() and time.time() - t0 < 5


@pytest.mark.parametrize("flags, words", [
    (["--save_video_path", "x.txt"], ["--save_video_path", ".mp4"]),
    (["--seed", str(2**64)], ["--seed"]),
    (["--seed", "-1"], ["--seed"]),
    (["--device", "gpu7"], ["--device", "gpu7"]),
])
def test_inference_flags_fail_before_loading(ckpt, tmp_path, capsys, flags, words):
    cfg = _config(tmp_path, ckpt["converted"])
    argv = ["--model_cls", "wan2.1", "--task", "t2v", "--model_path", str(ckpt["base"]), "--config_json", str(cfg),
            "--prompt", PROMPT, "--save_video_path", str(tmp_path / "o.mp4"), "--device", "cpu", *flags]
    assert infer_main(argv) == 2
    _error(capsys, *words)
    assert list(tmp_path.glob("*.mp4")) == [] and not (tmp_path / "x.txt").exists()


def test_save_video_path_that_is_a_directory(ckpt, tmp_path, capsys):
    (tmp_path / "clip.mp4").mkdir()
    assert _infer(ckpt, _config(tmp_path, ckpt["converted"]), tmp_path / "clip.mp4") == 2
    _error(capsys, "is a directory")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_device_without_cuda(ckpt, tmp_path, capsys):
    assert _infer(ckpt, _config(tmp_path, ckpt["converted"]), tmp_path / "o.mp4", "--device", "cuda") == 2
    _error(capsys, "CUDA is not available")


def test_decompression_bomb_image_is_refused(ckpt, tmp_path, capsys, monkeypatch):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (4000, 4000)).save(bomb)  # tiny file, 16 Mpx; the limit is lowered to make it a bomb
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    cfg = _config(tmp_path, ckpt["converted"])
    argv = ["--model_cls", "wan2.1", "--task", "i2v", "--model_path", str(ckpt["base"]), "--config_json", str(cfg),
            "--prompt", PROMPT, "--save_video_path", str(tmp_path / "o.mp4"), "--image_path", str(bomb)]
    assert infer_main(argv) == 2
    _error(capsys, "bomb.png", "too large")


def test_a_good_checkpoint_still_runs_and_writes_atomically(ckpt, tmp_path):
    out = tmp_path / "out.mp4"
    assert _infer(ckpt, _config(tmp_path, ckpt["converted"]), out) == 0
    assert out.stat().st_size > 0 and sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json", "out.mp4"]


def test_non_utf8_checkpoint_config_is_one_line(ckpt, tmp_path, capsys):
    bad = tmp_path / "ckpt"
    shutil.copytree(ckpt["converted"], bad)
    (bad / "config.json").write_bytes(b'{"quant_method": "\xff"}')
    assert verify_main([str(bad)]) == 1
    assert "cannot read config.json" in capsys.readouterr().out
    assert _infer(ckpt, _config(tmp_path, bad), tmp_path / "o.mp4") == 2
    _error(capsys, "config.json", "cannot read")


@pytest.mark.parametrize("text, words", [
    ("[" * 100_000 + "]" * 100_000, ["invalid JSON", "recursion"]),
    ("\xff", ["cannot read as UTF-8"]),
    ("[1, 2]", ["expected a JSON object"]),
])
def test_broken_inference_config_json_is_one_line(ckpt, tmp_path, capsys, text, words):
    cfg = tmp_path / "cfg.json"
    cfg.write_bytes(text.encode("latin-1"))
    assert _infer(ckpt, cfg, tmp_path / "o.mp4") == 2
    _error(capsys, "cfg.json", *words)


def test_null_fields_take_lightx2v_defaults(tmp_path, ckpt):
    from vidquant.export.lightx2v_config import read_lightx2v_config
    from vidquant.runtime.infer import resolve_settings

    cfg = _config(tmp_path, ckpt["converted"], fps=None, seed=None, sample_guide_scale=None, enable_cfg=None)
    s = resolve_settings(read_lightx2v_config(cfg), config_path=cfg, task="t2v", model_path=ckpt["base"],
                         device="cpu")
    assert (s.fps, s.seed, s.guidance_scale) == (16, 42, 5.0)
