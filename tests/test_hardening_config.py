"""Hardening round 2, configs: every field and `special` option typed and range-checked before any model loads
(strict: a quoted 'false' is an error), one-line errors with exit 2, fast rejection without torch, strict YAML
(duplicate keys, alias bombs, encodings), and the up-front checks of `prepare` (device, LoRA, output folders,
sample sets)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from tests_support import tiny_config, write_config

from vidquant.cli import main as cli_main
from vidquant.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
GPTQ = {"quant.video_gen.method": "GPTQ"}
AWQ = {"quant.video_gen.method": "Awq"}
SQ = {"quant.video_gen.method": "SmoothQuant"}
SPECIAL = "quant.video_gen.special."


def _config(tmp_path, tiny_dirs, task="t2v", sets=None, edit=None) -> Path:
    cfg = tiny_config(tmp_path, tiny_dirs[task], task)
    for key, value in (sets or {}).items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    if edit:
        edit(cfg)
    return Path(write_config(tmp_path, cfg))


def _quantize(capsys, path, *sets) -> tuple[int, str]:
    argv = ["quantize", "--config", str(path), "--quiet"]
    for s in sets:
        argv += ["--set", s]
    rc = cli_main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(lines) == 1, err
    return rc, lines[0]


def _nothing_written(tmp_path):
    assert not (tmp_path / "save").exists() and not (tmp_path / "videos").exists()


# ----------------------------------------------------------------------------------------------- special options


@pytest.mark.parametrize("sets, words", [
    ({**GPTQ, SPECIAL + "blocksize": 0}, ["special.blocksize", "got 0", "integer >= 1"]),
    ({**GPTQ, SPECIAL + "percdamp": -1}, ["special.percdamp", "got -1", "> 0"]),
    ({**GPTQ, SPECIAL + "percdamp": float("nan")}, ["special.percdamp", "nan"]),
    ({**GPTQ, SPECIAL + "actorder": "false"}, ["special.actorder", "got 'false'", "true or false"]),
    ({**GPTQ, SPECIAL + "chunk_num": 1.5}, ["special.chunk_num", "1.5"]),
    ({**GPTQ, SPECIAL + "owq": True}, ["special.owq", "not implemented"]),
    ({**GPTQ, SPECIAL + "blocksize": True}, ["special.blocksize", "got True"]),
    ({**AWQ, SPECIAL + "n_grid": 0}, ["special.n_grid", "got 0"]),
    ({**AWQ, SPECIAL + "ratio_selection": "meen"}, ["special.ratio_selection", "'mean' or 'first_sample'"]),
    ({**AWQ, SPECIAL + "trans_version": "v3"}, ["special.trans_version", "'v1' or 'v2'"]),
    ({**AWQ, SPECIAL + "clip_max_tokens": -4}, ["special.clip_max_tokens", "got -4"]),
    ({**AWQ, SPECIAL + "weight_clip": True, SPECIAL + "clip_version": "v2"}, ["special.clip_version", "v1"]),
    ({**AWQ, SPECIAL + "weight_clip": True, "quant.video_gen.weight.granularity": "per_tensor"},
     ["special.weight_clip", "per_tensor"]),
    ({**GPTQ, "quant.video_gen.weight.granularity": "per_group", "quant.video_gen.weight.group_size": 8},
     ["special.actorder", "static_groups"]),
    ({**SQ, SPECIAL + "alpha": True}, ["special.alpha", "got True", "[0, 1]"]),
    ({**SQ, SPECIAL + "alpha": 1.5}, ["special.alpha", "1.5"]),
    ({**SQ, SPECIAL + "alpha": "0.5"}, ["special.alpha", "got '0.5'"]),
    ({**SQ, SPECIAL + "online_rotate": True}, ["special.online_rotate", "not implemented"]),
])
def test_special_options_are_typed_and_range_checked_up_front(tmp_path, tiny_dirs, capsys, sets, words):
    rc, line = _quantize(capsys, _config(tmp_path, tiny_dirs, sets=sets))
    assert rc == 2
    for w in ["cfg.yaml", *words]:
        assert w in line, line
    _nothing_written(tmp_path)


# ----------------------------------------------------------------------------------------------- fields


@pytest.mark.parametrize("sets, words", [
    ({"quant.video_gen.weight.symmetric": "false"}, ["weight.symmetric", "valid boolean"]),
    ({"calib.sample_steps": "4"}, ["calib.sample_steps", "valid integer"]),
    ({"base.seed": 2**64}, ["base.seed", "less than or equal to 9223372036854775807"]),
    ({"base.seed": -1}, ["base.seed", "greater than or equal to 0"]),
    ({"calib.target_height": 40}, ["calib.target_height", "multiples of 16"]),
    ({"eval.target_width": 100}, ["eval.target_width", "multiples of 16"]),
    ({"eval.num_frames": 6}, ["eval.num_frames", "4k+1"]),
    ({"eval.guidance_scale": float("nan")}, ["eval.guidance_scale", "finite"]),
    ({"model.device": "gpu"}, ["model.device", "'gpu'"]),
    ({"model.lora_alpha": float("inf")}, ["model.lora_alpha", "finite"]),
    ({"quant.video_gen.ignored_layers": {"block_ids": [0]}}, ["ignored_layers", "not implemented"]),
    ({"quant.video_gen.weight.head_num": 4}, ["head_num", "not implemented"]),
    ({"quant.video_gen.weight.round_zp": False}, ["weight.round_zp", "got False", "implemented"]),
    ({"eval.download": True}, ["eval.download", "never downloads"]),
    ({"eval.num_samples": 0}, ["eval.num_samples", "greater than 0"]),
    ({"save.max_shard_size": "10 parsecs"}, ["save.max_shard_size", "'10GB'"]),
    ({"save.max_shard_size": "0MB"}, ["save.max_shard_size", "positive"]),
    ({"eval.output_video_path": "clips/out.mp4"}, ["eval.output_video_path", "not a video file name"]),
    ({"eval.output_video_path": " "}, ["eval.output_video_path", "a folder path"]),
])
def test_fields_are_strict_and_range_checked(tmp_path, tiny_dirs, capsys, sets, words):
    rc, line = _quantize(capsys, _config(tmp_path, tiny_dirs, sets=sets))
    assert rc == 2
    for w in words:
        assert w in line, line
    _nothing_written(tmp_path)


def test_numbers_in_exponent_form_are_numbers(tmp_path, tiny_dirs):
    path = _config(tmp_path, tiny_dirs, sets=GPTQ)
    path.write_text(path.read_text().replace("method: GPTQ", "method: GPTQ\n    special: {percdamp: 1e-3}"))
    assert load_config(path).quant.video_gen.special["percdamp"] == 0.001
    cfg = load_config(path, ["quant.video_gen.special.percdamp=2E-2", "base.seed=1e3"][:1])
    assert cfg.quant.video_gen.special["percdamp"] == 0.02


# ----------------------------------------------------------------------------------------------- YAML and --set


@pytest.mark.parametrize("text, words", [
    ("model: {type: WanT2V}\nmodel: {type: WanI2V}\n", ["duplicate key 'model'", "line 2", "first at line 1"]),
    ("base:\n  seed: 1\n  seed: 2\n", ["duplicate key 'seed'", "line 3"]),
    ("a: &a [*a]\n", ["recursive alias"]),
    ("- just\n- a list\n", ["expected a YAML mapping"]),
    ("model: [unclosed\n", ["malformed YAML", "line 2"]),
    ("a: " + "[" * 3000 + "]" * 3000 + "\n", ["nested too deeply"]),
    ("base: null\nmodel: {type: WanT2V, path: x}\n", ["base: Input should be a valid dictionary"]),
])
def test_malformed_yaml_is_one_line(tmp_path, capsys, text, words):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    rc, line = _quantize(capsys, path)
    assert rc == 2
    for w in ["cfg.yaml", *words]:
        assert w in line, line


def test_yaml_alias_bomb_gives_a_short_error_fast(tmp_path, capsys):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]")
    lines.append("model: {type: WanT2V, path: *i}")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 2000
    rc, line = _quantize(capsys, path)
    assert rc == 2 and "alias bomb" in line and len(line) < 300  # refused before expansion: no 72 MB message


def test_non_utf8_config(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(b"model:\n  path: \xff\xfe caf\xe9\n")
    rc, line = _quantize(capsys, path)
    assert rc == 2 and "cfg.yaml: not UTF-8" in line


@pytest.mark.parametrize("item, words", [
    ("quant.video_gen.method", ["--set quant.video_gen.method", "a.b.c=value"]),
    ("a..b=1", ["not a dotted name"]),
    ("=3", ["not a dotted name"]),
    ("quant.video_gen.special.alpha=[unclosed", ["--set quant.video_gen.special.alpha", "not a YAML value"]),
    ("quant.video_gen.special.alpha={a: b", ["not a YAML value"]),
])
def test_malformed_set_is_one_line(tmp_path, tiny_dirs, capsys, item, words):
    rc, line = _quantize(capsys, _config(tmp_path, tiny_dirs), item)
    assert rc == 2
    for w in words:
        assert w in line, line
    _nothing_written(tmp_path)


def test_bad_config_is_rejected_fast_without_importing_torch(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"model": {"type": "WanT2V", "path": "x"},
                                    "quant": {"video_gen": {"method": "GPTQ", "weight": {"granularity": "per_channel"},
                                                            "special": {"blocksize": 0}}}}))
    code = ("import sys, time; t = time.time(); from vidquant.cli import main; "
            f"rc = main(['quantize', '--config', {str(path)!r}]); "
            "print(rc, 'torch' in sys.modules, 'diffusers' in sys.modules, round(time.time() - t, 2))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO / "lib"), "PATH": "/usr/bin:/bin"})
    rc, torch_loaded, diffusers_loaded, seconds = proc.stdout.split()
    # Fast because nothing heavy is imported before validation (the mechanism is asserted, not a wall time:
    # timings belong to benchmarks; measured ~0.6 s on the 2-core development machine).
    assert (rc, torch_loaded, diffusers_loaded) == ("2", "False", "False"), proc.stdout + proc.stderr
    assert "special.blocksize: got 0" in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("sets, words", [
    ({"model.path": "/nonexistent/wan"}, ["model.path: /nonexistent/wan does not exist"]),
    ({"calib.path": "/nonexistent/calib"}, ["calib.path: /nonexistent/calib does not exist"]),
    ({"eval.path": "."}, ["eval.path:", "samples.json does not exist"]),
    ({"model.lora_path": "/nonexistent/lora"}, ["model.lora_path: /nonexistent/lora does not exist"]),
])
def test_missing_paths_are_rejected_fast_without_importing_torch(tmp_path, tiny_dirs, sets, words):
    path = _config(tmp_path, tiny_dirs, sets=sets)
    code = ("import sys; from vidquant.cli import main; "
            f"rc = main(['quantize', '--config', {str(path)!r}]); print(rc, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={"PYTHONPATH": str(REPO / "lib"), "PATH": "/usr/bin:/bin"})
    assert proc.stdout.split() == ["2", "False"], proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and all(w in proc.stderr for w in words), proc.stderr
    _nothing_written(tmp_path)


# ----------------------------------------------------------------------------------------------- prepare


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_device_without_cuda(tmp_path, tiny_dirs, capsys):
    rc, line = _quantize(capsys, _config(tmp_path, tiny_dirs, sets={"model.device": "cuda"}))
    assert rc == 2 and "model.device: got 'cuda'; CUDA is not available" in line
    _nothing_written(tmp_path)


def test_missing_lora_is_refused_before_loading(tmp_path, tiny_dirs, capsys):
    rc, line = _quantize(capsys, _config(tmp_path, tiny_dirs, sets={"model.lora_path": str(tmp_path / "nope")}))
    assert rc == 2 and "model.lora_path" in line and "nope does not exist" in line
    _nothing_written(tmp_path)


def test_lora_with_foreign_keys_is_refused_before_loading(tmp_path, tiny_dirs, capsys):
    from safetensors.torch import save_file

    save_file({"vae.decoder.weight": torch.zeros(2)}, tmp_path / "l.safetensors")
    path = _config(tmp_path, tiny_dirs, sets={"model.lora_path": str(tmp_path / "l.safetensors")})
    rc, line = _quantize(capsys, path)
    assert rc == 2 and "'vae.decoder.weight' is not a LoRA key" in line
    _nothing_written(tmp_path)


def test_output_video_path_that_is_a_file(tmp_path, tiny_dirs, capsys):
    (tmp_path / "clips").write_bytes(b"x")
    path = _config(tmp_path, tiny_dirs, sets={"eval.output_video_path": str(tmp_path / "clips")})
    rc, line = _quantize(capsys, path)
    assert rc == 2 and "clips: exists and is not a directory (eval.output_video_path" in line
    assert (tmp_path / "clips").read_bytes() == b"x"
    _nothing_written(tmp_path)


def test_output_video_path_under_a_file(tmp_path, tiny_dirs, capsys):
    (tmp_path / "f").write_text("x")
    path = _config(tmp_path, tiny_dirs, sets={"eval.output_video_path": str(tmp_path / "f" / "v")})
    rc, line = _quantize(capsys, path)
    assert rc == 2 and "is a file" in line and "eval.output_video_path" in line


def test_group_size_that_does_not_divide_the_layers_is_refused_up_front(tmp_path, tiny_dirs, capsys):
    sets = {"save.save_lightx2v": False, "quant.video_gen.weight.granularity": "per_group",
            "quant.video_gen.weight.group_size": 48}
    rc, line = _quantize(capsys, _config(tmp_path, tiny_dirs, sets=sets))
    assert rc == 2 and "weight.group_size: got 48" in line and "divisor" in line
    _nothing_written(tmp_path)


def test_videos_inside_the_export_directory_are_refused(tmp_path, tiny_dirs, capsys):
    videos = str(tmp_path / "save" / "lightx2v_quant_model" / "clips")
    rc, line = _quantize(capsys, _config(tmp_path, tiny_dirs, sets={"eval.output_video_path": videos}))
    assert rc == 2 and "eval.output_video_path" in line and "inside the export directory" in line
    _nothing_written(tmp_path)


def test_export_that_would_replace_the_model_is_refused(tmp_path, tiny_dirs, capsys):
    import shutil

    model = tmp_path / "save" / "lightx2v_quant_model" / "model"
    shutil.copytree(tiny_dirs["t2v"], model)
    rc, line = _quantize(capsys, _config(tmp_path, tiny_dirs, sets={"model.path": str(model), "save.overwrite": True}))
    assert rc == 2 and "contains the input" in line
    assert (model / "model_index.json").is_file()


def _samples(tmp_path, entries=None, raw=None) -> Path:
    folder = tmp_path / "samples"
    folder.mkdir()
    (folder / "samples.json").write_bytes(raw if raw is not None else json.dumps(entries).encode())
    return folder


@pytest.mark.parametrize("case, words", [
    ("non_utf8", ["samples.json: not UTF-8"]),
    ("image_int", ["sample 0", "'image' must be a file name", "int 5"]),
    ("bomb", ["sample 0", "too large to decode safely"]),
    ("not_an_image", ["sample 0", "not a readable image"]),
    ("negative_list", ["'negative_prompt' must be a string"]),
    ("deep", ["samples.json: not valid JSON", "recursion"]),
])
def test_bad_sample_sets_are_one_line(tmp_path, tiny_dirs, capsys, monkeypatch, case, words):
    if case == "non_utf8":
        folder = _samples(tmp_path, raw=b'[{"prompt": "caf\xe9"}]')
    elif case == "image_int":
        folder = _samples(tmp_path, [{"prompt": "p", "image": 5}])
    elif case == "deep":
        folder = _samples(tmp_path, raw=b"[" * 100_000 + b"]" * 100_000)
    elif case == "negative_list":
        folder = _samples(tmp_path, [{"prompt": "p", "image": "x.png", "negative_prompt": ["a"]}])
    else:
        folder = _samples(tmp_path, [{"prompt": "p", "image": "x.png"}])
        if case == "bomb":
            Image.new("1", (4000, 4000)).save(folder / "x.png")
            monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
        else:
            (folder / "x.png").write_bytes(b"GIF89a not really")
    rc, line = _quantize(capsys, _config(tmp_path, tiny_dirs, "i2v", sets={"calib.path": str(folder)}))
    assert rc == 2
    for w in words:
        assert w in line, line
    _nothing_written(tmp_path)


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe{}", ["model_index.json: not valid JSON"]),
    (b'["WanPipeline"]', ["model_index.json: _class_name is None"]),
])
def test_broken_model_index_is_one_line(tmp_path, tiny_dirs, capsys, content, words):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_dirs["t2v"], model)
    (model / "model_index.json").write_bytes(content)
    rc, line = _quantize(capsys, _config(tmp_path, tiny_dirs, sets={"model.path": str(model)}))
    assert rc == 2 and all(w in line for w in words), line
    _nothing_written(tmp_path)


def test_fields_with_no_effect_are_warned(tmp_path, tiny_dirs, caplog):
    from vidquant.run import prepare

    path = _config(tmp_path, tiny_dirs, sets={"model.tokenizer_mode": "fast", "save.save_fake": True,
                                              "calib.seq_len": 256})
    with caplog.at_level(logging.WARNING, logger="vidquant"):
        prepare(load_config(path))
    text = caplog.text
    assert "model.tokenizer_mode: 'fast' has no effect" in text
    assert "save.save_fake: True has no effect" in text and "calib.seq_len: 256 has no effect" in text


def test_config_error_is_a_config_error_in_python_too(tmp_path, tiny_dirs):
    with pytest.raises(ConfigError, match=r"special\.n_grid: got 0"):
        load_config(_config(tmp_path, tiny_dirs, sets={**AWQ, SPECIAL + "n_grid": 0}))


def test_every_special_option_has_a_rule_and_its_default_passes():
    """The four LLMC methods have an explicit rule per option; any method's defaults pass their rule (a method
    added later without rules is typed by its defaults)."""
    from vidquant.config import _GENERIC_SPECIAL, METHODS, SPECIAL_RULES, _rule_for

    for method, options in [*METHODS.items(), ("generic", _GENERIC_SPECIAL)]:
        for key, default in options.items():
            if method in ("RTN", "SmoothQuant", "Awq", "GPTQ", "generic"):
                assert key in SPECIAL_RULES, f"{method}: special.{key} has no rule"
            check, _ = _rule_for(key, default)
            assert check(default), f"{method}: the default of special.{key} ({default!r}) fails its own rule"


def test_check_device_knows_how_many_cuda_devices_there_are(monkeypatch):
    from vidquant.config import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_device("cuda:0")
    check_device("cpu")
    with pytest.raises(ConfigError, match=r"model.device: got 'cuda:3'; this machine has 1 CUDA device\(s\)"):
        check_device("cuda:3")
    with pytest.raises(ConfigError, match="allowed: auto, cpu, cuda, cuda:N, mps"):
        check_device("tpu")


def test_marlin_export_of_a_model_it_cannot_tile_is_refused_up_front(tmp_path, tiny_dirs, capsys):
    """int4-g128-marlin tiles out_features by 256: a hidden size of 128 would fail at export, after calibration."""
    from vidquant.models.tiny import build_tiny_pipeline, save_tiny_pipeline
    from vidquant.tables import FORMATS

    narrow = tmp_path / "narrow"
    save_tiny_pipeline(build_tiny_pipeline("t2v", 0, heads=2, head_dim=64, layers=1), narrow)
    sets = {"model.path": str(narrow), "quant.video_gen.weight": FORMATS["W4A16-g128"]["weight"],
            "quant.video_gen.act": FORMATS["W4A16-g128"]["act"]}
    rc, line = _quantize(capsys, _config(tmp_path, tiny_dirs, sets=sets))
    assert rc == 2 and "int4-g128-marlin needs" in line and "out_features 128" in line, line
    assert "in_features" not in line.split("has", 1)[1]  # 128 and 1024 inputs tile by 128
    _nothing_written(tmp_path)
