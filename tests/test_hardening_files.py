"""Hardening round 2, files: no data loss (--overwrite swaps, never deletes an input), containment (nothing
written outside the output, no index entry or symlink leaving its folder), permissions, stale temporaries,
and user errors of the converter (exit 2, one line, nothing on disk)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from test_keymap import wan_state_dict

from vidquant import fsutil
from vidquant.export.converter import main as convert_main
from vidquant.export.io import CheckpointError, load_state_dict
from vidquant.export.verify import verify

INDEX = "diffusion_pytorch_model.safetensors.index.json"


def _tree(root):
    """{relative path: bytes} of every file under root (symlinks as their target text)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = f"-> {os.readlink(p)}"
        elif p.is_file():
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def _one_line_error(capsys, *words):
    """The captured stderr holds exactly one error line (progress bars aside), with every word in it."""
    text = capsys.readouterr().err
    errors = [line for line in text.splitlines() if "error" in line]
    assert "Traceback" not in text and len(errors) == 1, text
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def wan_ckpt(tmp_path):
    src = tmp_path / "run" / "src"
    src.mkdir(parents=True)
    save_file(wan_state_dict(), src / "model.safetensors")
    (src / "config.json").write_text("{}")
    (tmp_path / "run" / "metrics.json").write_text('{"psnr": 30}')
    return src


# ----------------------------------------------------------------------------------------------- data loss


@pytest.mark.parametrize("target", ["run", "run/src"])
def test_overwrite_of_an_output_containing_the_input_is_refused(wan_ckpt, tmp_path, capsys, target):
    before = _tree(tmp_path / "run")
    rc = convert_main(["-s", str(wan_ckpt), "-o", str(tmp_path / target), "--overwrite"])
    assert rc == 2
    _one_line_error(capsys, "contains the input", str(wan_ckpt))
    assert _tree(tmp_path / "run") == before


def test_overwrite_of_an_output_containing_a_lora_is_refused(wan_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    lora = out / "lora.safetensors"
    save_file({"blocks.0.self_attn.q.lora_A.weight": torch.zeros(2, 32),
               "blocks.0.self_attn.q.lora_B.weight": torch.zeros(32, 2)}, lora)
    before = _tree(out)
    assert convert_main(["-s", str(wan_ckpt), "-o", str(out), "--overwrite", "--lora_path", str(lora)]) == 2
    _one_line_error(capsys, "contains the input", "lora.safetensors")
    assert _tree(out) == before


def test_failed_overwrite_keeps_the_previous_output(wan_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert convert_main(["-s", str(wan_ckpt), "-o", str(out)]) == 0
    before = _tree(out)
    bad = tmp_path / "bad_lora.safetensors"
    save_file({"blocks.0.self_attn.q.lora_A.weight": torch.ones(2, 32),
               "blocks.0.self_attn.q.lora_B.weight": torch.full((32, 2), float("nan"))}, bad)
    assert convert_main(["-s", str(wan_ckpt), "-o", str(out), "--overwrite", "--lora_path", str(bad)]) == 2
    _one_line_error(capsys, "bad_lora.safetensors", "non-finite")
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_successful_overwrite_swaps_in_the_new_output(wan_ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assert convert_main(["-s", str(wan_ckpt), "-o", str(out), "--overwrite", "-c", "0"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([INDEX, "converted_part0.safetensors"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_run_are_cleaned_and_live_ones_kept(wan_ckpt, tmp_path):
    dead, live = _dead_pid(), os.getppid()
    stale = tmp_path / f".out.tmp-{dead}-0123abcd"
    stale.mkdir()
    (stale / "half.safetensors").write_bytes(b"x" * 10)
    busy = tmp_path / f".other.tmp-{live}-0123abcd"
    busy.mkdir()
    assert convert_main(["-s", str(wan_ckpt), "-o", str(tmp_path / "out")]) == 0
    assert not stale.exists() and busy.exists()


def test_interrupted_swap_restores_the_previous_output(tmp_path):
    old = tmp_path / f".out.old-{_dead_pid()}-0123abcd"
    (old / "out").mkdir(parents=True)
    (old / "out" / "metrics.json").write_text("{}")
    assert fsutil.clean_stale(tmp_path) == [old]
    assert (tmp_path / "out" / "metrics.json").read_text() == "{}" and not old.exists()


def test_outputs_get_normal_permissions(wan_ckpt, tmp_path):
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        assert convert_main(["-s", str(wan_ckpt), "-o", str(out), "--copy_no_weight_files"]) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes
    assert out.stat().st_mode & 0o777 == 0o755


def test_atomic_file_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"old")
    (tmp_path / f".clip.mp4.tmp-{_dead_pid()}-0123abcd.mp4").write_bytes(b"half of a killed write")
    with pytest.raises(OSError), fsutil.atomic_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise OSError("disk full")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    with fsutil.atomic_file(target) as tmp:
        assert tmp.suffix == ".mp4" and tmp.parent == tmp_path
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


# ----------------------------------------------------------------------------------------------- containment


@pytest.mark.parametrize("name", ["../escaped", "sub/x", "/tmp/abs_x", "..", ".", "", "a\\b"])
def test_output_name_with_a_path_is_refused(wan_ckpt, tmp_path, capsys, name):
    before = _tree(tmp_path)
    assert convert_main(["-s", str(wan_ckpt), "-o", str(tmp_path / "o" / "out"), "-o_n", name]) == 2
    _one_line_error(capsys, "--output_name")
    assert _tree(tmp_path) == before and not (tmp_path / "o").exists()
    assert not os.path.exists("/tmp/abs_x_part0.safetensors")


@pytest.mark.parametrize("entry", ["../outside.safetensors", "/abs/outside.safetensors", "sub/../x.safetensors",
                                   ".."])
def test_index_entries_leaving_the_folder_are_refused_before_reading(tmp_path, capsys, entry):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file(wan_state_dict(), tmp_path / "outside.safetensors")  # a real file it must not read
    key = next(iter(wan_state_dict()))
    (ckpt / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": {key: entry}}))
    with pytest.raises(CheckpointError, match="expected a file name in the index's own folder"):
        load_state_dict(ckpt)
    assert any("own folder" in str(p) for p in verify(ckpt))
    assert convert_main(["-s", str(ckpt), "-o", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, INDEX, repr(entry))
    assert not (tmp_path / "out").exists()


def test_copy_no_weight_files_does_not_follow_links_out_of_the_source(wan_ckpt, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "id_rsa").write_text("PRIVATE")
    (wan_ckpt / "leak.txt").symlink_to(secret / "id_rsa")
    (wan_ckpt / "leakdir").symlink_to(secret, target_is_directory=True)
    (wan_ckpt / "inside.json").symlink_to(wan_ckpt / "config.json")
    out = tmp_path / "out"
    assert convert_main(["-s", str(wan_ckpt), "-o", str(out), "--copy_no_weight_files"]) == 0
    copied = _tree(out)
    assert "config.json" in copied and copied.get("inside.json") == b"{}"
    assert not any(b"PRIVATE" == v for v in copied.values()) and "leak.txt" not in copied
    assert not any(k.startswith("leakdir") for k in copied)


# ----------------------------------------------------------------------------------------------- user errors


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_pickle_payload_in_pth_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": _Evil()}))
    assert convert_main(["-s", str(evil), "-o", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "evil.pth", "refused")
    assert not (tmp_path / "pwned.txt").exists() and not (tmp_path / "out").exists()


def test_verify_refuses_a_pickle_payload_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": _Evil()}))
    problems = [str(p) for p in verify(evil)]
    assert len(problems) == 1 and "refused" in problems[0] and "evil.pth" in problems[0]
    assert not (tmp_path / "pwned.txt").exists()


def test_one_tensor_under_both_naming_layouts(tmp_path, capsys):
    sd = wan_state_dict()
    sd["blocks.0.attn1.to_q.weight"] = sd["blocks.0.self_attn.q.weight"].clone()
    save_file(sd, tmp_path / "both.safetensors")
    assert convert_main(["-s", str(tmp_path / "both.safetensors"), "-o", str(tmp_path / "out"),
                         "-d", "backward"]) == 2
    _one_line_error(capsys, "both map to", "blocks.0.self_attn.q.weight")
    assert not (tmp_path / "out").exists()


def _lora_file(path, a=None, b=None, **extra):
    t = {"blocks.0.self_attn.q.lora_A.weight": torch.ones(2, 32) if a is None else a,
         "blocks.0.self_attn.q.lora_B.weight": torch.ones(32, 2) if b is None else b, **extra}
    save_file(t, path)
    return path


@pytest.mark.parametrize("alpha", ["nan", "inf", "1e999"])
def test_lora_alpha_must_be_finite(wan_ckpt, tmp_path, capsys, alpha):
    lora = _lora_file(tmp_path / "l.safetensors")
    assert convert_main(["-s", str(wan_ckpt), "-o", str(tmp_path / "out"), "--lora_path", str(lora),
                         "--lora_alpha", alpha]) == 2
    _one_line_error(capsys, "--lora_alpha", "finite")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind, words", [
    ("nan_values", ["non-finite"]),
    ("int_values", ["non-float"]),
    ("vector_alpha", ["alpha", "expected one number"]),
    ("overflow", ["NaN/Inf", "blocks.0.self_attn.q.weight"]),
    ("bad_shapes", ["incompatible shapes"]),
    ("not_lora", ["unrecognised LoRA key"]),
])
def test_malformed_lora_is_a_one_line_error(wan_ckpt, tmp_path, capsys, kind, words):
    path = tmp_path / "l.safetensors"
    if kind == "nan_values":
        _lora_file(path, a=torch.full((2, 32), float("nan")))
    elif kind == "int_values":
        _lora_file(path, a=torch.ones(2, 32, dtype=torch.int32))
    elif kind == "vector_alpha":
        _lora_file(path, **{"blocks.0.self_attn.q.alpha": torch.ones(2)})
    elif kind == "overflow":
        _lora_file(path, a=torch.full((2, 32), 3e38), b=torch.full((32, 2), 3e38))
    elif kind == "bad_shapes":
        _lora_file(path, a=torch.ones(3, 32))
    else:
        save_file({"some.random.tensor": torch.ones(2)}, path)
    assert convert_main(["-s", str(wan_ckpt), "-o", str(tmp_path / "out"), "--lora_path", str(path)]) == 2
    _one_line_error(capsys, "l.safetensors", *words)
    assert not (tmp_path / "out").exists()


def test_missing_lora_is_refused_before_loading(wan_ckpt, tmp_path, capsys):
    assert convert_main(["-s", str(wan_ckpt), "-o", str(tmp_path / "out"), "--lora_path",
                         str(tmp_path / "nope.safetensors")]) == 2
    _one_line_error(capsys, "nope.safetensors", "not found")
    assert not (tmp_path / "out").exists()


# ids avoid the bare word "cuda": conftest skips tests with that keyword on machines without CUDA
@pytest.mark.parametrize("device", ["gpu", "cuda:x"] + ([] if torch.cuda.is_available() else [
    pytest.param("cuda", id="no-cuda-here"), pytest.param("cuda:1", id="no-cuda-1-here")]))
def test_converter_device_is_checked_before_loading(wan_ckpt, tmp_path, capsys, device):
    assert convert_main(["-s", str(wan_ckpt), "-o", str(tmp_path / "out"), "--device", device]) == 2
    _one_line_error(capsys, "--device", repr(device))
    assert not (tmp_path / "out").exists()
