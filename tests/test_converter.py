"""The lightx2v-compatible converter (lightx2v_reference §1) and the safetensors I/O helpers under it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from safetensors.torch import load_file, save_file
from test_keymap import quantize_linears, same_bytes, wan_layout_state_dicts, wan_state_dict
from tests_support import deny_write

from vidquant.export import converter, io, keymap
from vidquant.export.converter import ConverterError, UnsupportedModelError, convert, main
from vidquant.export.io import CheckpointError, atomic_dir, load_state_dict, save_sharded
from vidquant.export.verify import verify

REPO = Path(__file__).resolve().parents[1]
INDEX = "diffusion_pytorch_model.safetensors.index.json"


def diffusers_state_dict(**kw) -> dict[str, torch.Tensor]:
    return keymap.rename_state_dict(wan_state_dict(**kw), "forward")


@pytest.fixture
def diffusers_ckpt(tmp_path) -> Path:
    """A small diffusers-layout checkpoint directory: 2 blocks, dim 32, one shard + config.json."""
    src = tmp_path / "src"
    src.mkdir()
    save_file(diffusers_state_dict(), src / "diffusion_pytorch_model.safetensors")
    (src / "config.json").write_text(json.dumps({"_class_name": "WanTransformer3DModel", "num_layers": 2}))
    return src


def read_index(out: Path) -> dict:
    return json.loads((out / INDEX).read_text())


def check_index(out: Path) -> dict[str, torch.Tensor]:
    """The index names exactly the files and keys on disk and its total_size is the sum of file sizes."""
    index = read_index(out)
    files = sorted(set(index["weight_map"].values()))
    assert sorted(p.name for p in out.glob("*.safetensors")) == files
    assert index["metadata"]["total_size"] == sum((out / f).stat().st_size for f in files)
    loaded = {}
    for f in files:
        part = load_file(out / f)
        assert sorted(part) == sorted(k for k, v in index["weight_map"].items() if v == f)
        loaded |= part
    return loaded


# ----------------------------------------------------------------------------------------------- CLI layouts


def test_chunked_backward(diffusers_ckpt, tmp_path):
    out = tmp_path / "out"
    assert main(["-s", str(diffusers_ckpt), "-o", str(out), "-d", "backward", "-c", "7"]) == 0
    loaded = check_index(out)
    expected = wan_state_dict()
    assert sorted(loaded) == sorted(expected)
    assert all(same_bytes(loaded[k], expected[k]) for k in expected)
    n_files = -(-len(expected) // 7)
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(
        f"converted_part{i}.safetensors" for i in range(n_files)
    )
    assert not (out / "config.json").exists()  # only with --copy_no_weight_files


def test_chunk_size_zero_writes_one_file(diffusers_ckpt, tmp_path):
    out = tmp_path / "out"
    assert main(["-s", str(diffusers_ckpt), "-o", str(out), "-d", "backward", "-c", "0", "-o_n", "wan"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [INDEX, "wan_part0.safetensors"]
    assert len(check_index(out)) == len(wan_state_dict())


def test_save_by_block(diffusers_ckpt, tmp_path):
    out = tmp_path / "out"
    assert main(["-s", str(diffusers_ckpt), "-o", str(out), "-d", "backward", "-b"]) == 0
    check_index(out)
    names = sorted(p.name for p in out.glob("*.safetensors"))
    assert names == ["block_0.safetensors", "block_1.safetensors", "non_block.safetensors"]
    assert all(k.startswith("blocks.1.") for k in load_file(out / "block_1.safetensors"))
    assert not any(k.startswith("blocks.") for k in load_file(out / "non_block.safetensors"))


def test_pth_output(diffusers_ckpt, tmp_path):
    out = tmp_path / "out"
    assert main(["-s", str(diffusers_ckpt), "-o", str(out), "-d", "backward", "-o_e", ".pth"]) == 0
    assert [p.name for p in out.iterdir()] == ["converted.pth"]  # upstream writes no index for .pth
    loaded = torch.load(out / "converted.pth", weights_only=True)
    expected = wan_state_dict()
    assert all(same_bytes(loaded[k], expected[k]) for k in expected) and len(loaded) == len(expected)


def test_pth_keys_in_natural_order(tmp_path):
    sd = wan_state_dict(blocks=12)
    (path,) = converter.save_converted(sd, tmp_path, output_ext=".pth", progress=False)
    keys = list(torch.load(path, weights_only=True))
    assert keys.index("blocks.2.self_attn.q.weight") < keys.index("blocks.10.self_attn.q.weight")


def test_forward_then_backward_on_disk(tmp_path):
    src = tmp_path / "wan.safetensors"
    save_file(wan_state_dict(i2v=True), src)
    convert(src, tmp_path / "d", direction="forward", progress=False)
    convert(tmp_path / "d", tmp_path / "w", direction="backward", progress=False)
    back, orig = load_state_dict(tmp_path / "w"), wan_state_dict(i2v=True)
    assert sorted(back) == sorted(orig) and all(same_bytes(back[k], orig[k]) for k in orig)


def test_seed_command_from_repo_root(diffusers_ckpt, tmp_path):
    """`python scripts/converter.py -s EXPORT -o OUT -d backward`, as the seed writes it."""
    out = tmp_path / "OUT"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)  # the script must find the package on its own
    proc = subprocess.run(
        [sys.executable, "scripts/converter.py", "-s", str(diffusers_ckpt), "-o", str(out), "-d", "backward"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(check_index(out)) == sorted(wan_state_dict())


def test_copy_no_weight_files(diffusers_ckpt, tmp_path):
    (diffusers_ckpt / "sub").mkdir()
    (diffusers_ckpt / "sub" / "notes.txt").write_text("x")
    out = tmp_path / "out"
    assert main(["-s", str(diffusers_ckpt), "-o", str(out), "-d", "backward", "--copy_no_weight_files"]) == 0
    assert json.loads((out / "config.json").read_text())["num_layers"] == 2
    assert (out / "sub" / "notes.txt").read_text() == "x"
    assert not (out / "diffusion_pytorch_model.safetensors").exists()


def test_output_is_deterministic(diffusers_ckpt, tmp_path):
    for name in ("a", "b"):
        convert(diffusers_ckpt, tmp_path / name, direction="backward", chunk_size=9, progress=False)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sd=wan_layout_state_dicts())
def test_property_convert_forward_backward_restores_every_byte(tmp_path_factory, sd):
    tmp = tmp_path_factory.mktemp("prop")
    save_file(sd, tmp / "src.safetensors")
    convert(tmp / "src.safetensors", tmp / "fwd", direction="forward", chunk_size=4, progress=False)
    convert(tmp / "fwd", tmp / "back", direction="backward", save_by_block=True, progress=False)
    back = load_state_dict(tmp / "back")
    assert sorted(back) == sorted(sd) and all(same_bytes(back[k], sd[k]) for k in sd)


# ----------------------------------------------------------------------------------------------- quantization


@pytest.mark.parametrize(
    ("flag", "dtype", "tol"),
    [("torch.int8", torch.int8, 0.01), ("torch.float8_e4m3fn", torch.float8_e4m3fn, 0.05)],
)
def test_quantized_output(diffusers_ckpt, tmp_path, flag, dtype, tol):
    pytest.importorskip("vidquant.quant")
    out = tmp_path / "out"
    argv = ["-s", str(diffusers_ckpt), "-o", str(out), "-d", "backward", "--quantized"]
    argv += ["--linear_dtype", flag, "--non_linear_dtype", "torch.bfloat16"]
    assert main(argv) == 0
    loaded, ref = check_index(out), wan_state_dict()
    targets = [f"blocks.{n}.{lin}.weight" for n in range(2) for lin in keymap.block_linears("wan", False)]
    assert len(targets) == 20
    assert sorted(loaded) == sorted(list(ref) + [t + "_scale" for t in targets])
    for key in targets:
        w, s = loaded[key], loaded[key + "_scale"]
        assert w.dtype == dtype and w.shape == ref[key].shape
        assert s.dtype == torch.float32 and s.shape == (w.shape[0], 1)
        err = (w.float() * s - ref[key]).norm() / ref[key].norm()
        assert err < tol, (key, err)
    others = [k for k in ref if k not in targets]
    assert all(loaded[k].dtype == torch.bfloat16 for k in others)  # --non_linear_dtype


def test_quantized_i2v_wan_source_passes_verify(tmp_path):
    pytest.importorskip("vidquant.quant")
    save_file(wan_state_dict(i2v=True, dtype=torch.bfloat16), tmp_path / "wan.safetensors")
    out = convert(tmp_path / "wan.safetensors", tmp_path / "o", quantized=True, linear_dtype="torch.int8",
                  save_by_block=True, progress=False)
    loaded = load_state_dict(out)
    assert sum(k.endswith(".weight_scale") for k in loaded) == 2 * 12
    assert loaded["blocks.1.cross_attn.v_img.weight"].dtype == torch.int8
    assert loaded["img_emb.proj.1.weight"].dtype == torch.float32  # non-block linears stay float
    assert verify(out) == []


def test_quantized_passes_through_already_quantized_tensors(tmp_path):
    pytest.importorskip("vidquant.quant")
    export = quantize_linears(diffusers_state_dict(), scale_dtype=torch.bfloat16)
    save_file(export, tmp_path / "export.safetensors")
    convert(tmp_path / "export.safetensors", tmp_path / "out", direction="backward", quantized=True,
            linear_dtype=torch.int8, progress=False)
    loaded = load_state_dict(tmp_path / "out")
    for key, tensor in export.items():
        new = loaded[keymap.to_wan(key)]
        if tensor.dtype == torch.int8 or key.endswith("_scale"):
            assert same_bytes(new, tensor), key  # int8 codes and bf16 scales untouched
        else:
            assert new.dtype == torch.float32
    assert not any(k.endswith("_scale_scale") for k in loaded)


def test_quantized_refuses_diffusers_layout(diffusers_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["-s", str(diffusers_ckpt), "-o", str(out), "--quantized", "--linear_dtype", "torch.int8"]
    assert main(argv) == 2
    assert "-d backward" in capsys.readouterr().err
    assert not out.exists()


# lightx2v's converter flags, defaults and choices (lightx2v_reference §1.1), then ours: (flags, dest, default).
LIGHTX2V_FLAGS = [
    (("-s", "--source"), "source", None),
    (("-o", "--output"), "output", None),
    (("-o_e", "--output_ext"), "output_ext", ".safetensors"),
    (("-o_n", "--output_name"), "output_name", "converted"),
    (("-d", "--direction"), "direction", None),
    (("-c", "--chunk-size"), "chunk_size", 100),
    (("-t", "--model_type"), "model_type", "wan_dit"),
    (("-b", "--save_by_block"), "save_by_block", False),
    (("--quantized",), "quantized", False),
    (("--bits",), "bits", 8),
    (("--linear_dtype",), "linear_dtype", None),
    (("--non_linear_dtype",), "non_linear_dtype", "torch.float32"),
    (("--device",), "device", "cpu"),
    (("--lora_path",), "lora_path", []),
    (("--lora_alpha",), "lora_alpha", [1.0]),
    (("--copy_no_weight_files",), "copy_no_weight_files", False),
    (("--linear_type",), "linear_type", None),
    (("--overwrite",), "overwrite", False),
]
LIGHTX2V_CHOICES = {
    "output_ext": [".safetensors", ".pth"], "direction": ["forward", "backward"],
    "model_type": ["wan_dit", "hunyuan_dit", "wan_t5", "wan_clip"], "bits": [8],
    "linear_dtype": ["torch.int8", "torch.float8_e4m3fn"],
    "non_linear_dtype": ["torch.float32", "torch.bfloat16", "torch.float16"],
    "linear_type": ["int8", "fp8", "nvfp4", "mxfp4", "mxfp6", "mxfp8"],
}


def test_cli_flags_names_defaults_and_choices_are_lightx2v_s():
    actions = {a.dest: a for a in converter.build_parser()._actions if a.dest != "help"}
    assert set(actions) == {dest for _, dest, _ in LIGHTX2V_FLAGS}
    for flags, dest, default in LIGHTX2V_FLAGS:
        action = actions[dest]
        required = dest in ("source", "output")
        assert (tuple(action.option_strings), action.default, action.required) == (flags, default, required), dest
        assert list(action.choices or []) == LIGHTX2V_CHOICES.get(dest, []), dest
    args = converter.build_parser().parse_args(["-s", "in", "-o", "out", "-c", "7", "-b", "--lora_path", "a", "b",
                                                "--lora_alpha", "0.5", "2"])
    assert (args.chunk_size, args.save_by_block, args.lora_path, args.lora_alpha) == (7, True, ["a", "b"], [0.5, 2.0])


def test_main_passes_every_flag_to_convert(monkeypatch, tmp_path):
    seen = {}

    def record(source, output, **kw):
        seen.update(source=source, output=output, **kw)

    monkeypatch.setattr(converter, "convert", record)
    argv = ["-s", "in", "-o", "out", "-o_e", ".pth", "-o_n", "part", "-d", "backward", "-c", "3", "-t", "wan_dit",
            "-b", "--quantized", "--bits", "8", "--linear_dtype", "torch.int8", "--linear_type", "fp8",
            "--non_linear_dtype", "torch.bfloat16", "--device", "meta", "--lora_path", "l1", "--lora_alpha", "0.5",
            "--copy_no_weight_files", "--overwrite"]
    assert main(argv) == 0
    assert seen == {"source": "in", "output": "out", "direction": "backward", "output_ext": ".pth",
                    "output_name": "part", "chunk_size": 3, "model_type": "wan_dit", "save_by_block": True,
                    "quantized": True, "bits": 8, "linear_dtype": "torch.int8", "linear_type": "fp8",
                    "non_linear_dtype": "torch.bfloat16", "device": "meta", "lora_paths": ["l1"],
                    "lora_alphas": [0.5], "copy_no_weight_files": True, "overwrite": True}


def test_main_exit_codes_for_bad_input_and_io_failure(monkeypatch, capsys):
    for exc, code in ((ConverterError("bad option"), 2), (CheckpointError("bad file"), 2),
                      (FileExistsError("exists"), 2), (PermissionError("denied"), 2), (OSError("disk full"), 1)):
        def fail(*_a, exc=exc, **_k):
            raise exc

        monkeypatch.setattr(converter, "convert", fail)
        assert main(["-s", "in", "-o", "out"]) == code, exc
        err = capsys.readouterr().err
        assert err.startswith("converter: error: ") and str(exc) in err and "Traceback" not in err


def test_option_errors(diffusers_ckpt, tmp_path, capsys):
    with pytest.raises(UnsupportedModelError):
        convert(diffusers_ckpt, tmp_path / "o", model_type="wan_t5")
    with pytest.raises(ConverterError, match="linear_dtype"):
        convert(diffusers_ckpt, tmp_path / "o", quantized=True)
    assert main(["-s", str(diffusers_ckpt), "-o", str(tmp_path / "o"), "-t", "hunyuan_dit"]) == 2
    assert "not implemented" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["-s", str(diffusers_ckpt), "-o", str(tmp_path / "o"), "--bits", "4"])
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------- LoRA


def _lora(sd_key_module: str, out: int, inp: int, rank: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        f"{sd_key_module}.lora_A.weight": torch.randn(rank, inp, generator=g),
        f"{sd_key_module}.lora_B.weight": torch.randn(out, rank, generator=g),
    }


def test_lora_merge_numerics(diffusers_ckpt, tmp_path):
    # One LoRA in Wan naming with lightx2v's prefix and a stored alpha, one in diffusers naming.
    wan_lora = _lora("diffusion_model.blocks.0.self_attn.q", 32, 32, rank=4, seed=1)
    wan_lora["diffusion_model.blocks.0.self_attn.q.alpha"] = torch.tensor(2.0)
    dif_lora = _lora("transformer.blocks.1.ffn.net.0.proj", 64, 32, rank=2, seed=2)
    save_file(wan_lora, tmp_path / "a.safetensors")
    save_file(dif_lora, tmp_path / "b.safetensors")
    out = tmp_path / "out"
    argv = ["-s", str(diffusers_ckpt), "-o", str(out), "-d", "backward", "--lora_alpha", "0.5"]
    argv += ["--lora_path", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]
    assert main(argv) == 0
    loaded, ref = load_state_dict(out), wan_state_dict()
    q, ffn = "blocks.0.self_attn.q", "blocks.1.ffn.0"
    a, b = wan_lora[f"diffusion_model.{q}.lora_A.weight"], wan_lora[f"diffusion_model.{q}.lora_B.weight"]
    # W += cli_alpha * (stored_alpha / rank) * B @ A
    torch.testing.assert_close(loaded[q + ".weight"], ref[q + ".weight"] + 0.5 * (2.0 / 4) * b @ a)
    a, b = dif_lora["transformer.blocks.1.ffn.net.0.proj.lora_A.weight"], dif_lora[
        "transformer.blocks.1.ffn.net.0.proj.lora_B.weight"
    ]
    torch.testing.assert_close(loaded[ffn + ".weight"], ref[ffn + ".weight"] + 0.5 * b @ a)
    untouched = [k for k in ref if k not in (q + ".weight", ffn + ".weight")]
    assert all(same_bytes(loaded[k], ref[k]) for k in untouched)


def test_lora_key_matching_nothing_is_an_error(diffusers_ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    save_file(_lora("diffusion_model.blocks.7.self_attn.q", 32, 32, 2, 0), bad)
    out = tmp_path / "out"
    assert main(["-s", str(diffusers_ckpt), "-o", str(out), "--lora_path", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "blocks.7.self_attn.q.lora_A.weight" in err and "matches no weight" in err
    assert not out.exists()


def test_lora_alpha_count_must_match(diffusers_ckpt, tmp_path):
    with pytest.raises(ConverterError, match="lora_alpha"):
        convert(diffusers_ckpt, tmp_path / "o", lora_paths=["a", "b", "c"], lora_alphas=[1.0, 2.0])


# ----------------------------------------------------------------------------------------------- atomicity


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_conversion_leaves_no_output(diffusers_ckpt, tmp_path, monkeypatch, exc):
    real = converter.save_file_deterministic
    calls = []

    def failing(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise exc
        return real(tensors, path, metadata)

    monkeypatch.setattr(converter, "save_file_deterministic", failing)
    out = tmp_path / "parent" / "out"
    with pytest.raises(type(exc)):
        convert(diffusers_ckpt, out, direction="backward", chunk_size=5, progress=False)
    assert len(calls) == 2 and not out.exists()
    assert list(out.parent.iterdir()) == []  # the temporary sibling is gone too


def test_existing_output_refused_unless_overwrite(diffusers_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert main(["-s", str(diffusers_ckpt), "-o", str(out)]) == 2
    assert str(out) in capsys.readouterr().err and (out / "old.txt").exists()
    assert main(["-s", str(diffusers_ckpt), "-o", str(out), "--overwrite"]) == 0
    assert not (out / "old.txt").exists() and (out / INDEX).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_atomic_dir_refuses_file_and_unwritable_parent(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("")
    with pytest.raises(FileExistsError, match="not a directory"), atomic_dir(tmp_path / "f", overwrite=True):
        pass
    locked = tmp_path / "locked"
    deny_write(monkeypatch, locked)  # read-only; simulated for root, who may write anywhere
    with pytest.raises(PermissionError, match="locked: parent of the output directory is not writable"):
        with atomic_dir(locked / "out"):
            pass
    assert list(locked.iterdir()) == []


# ----------------------------------------------------------------------------------------------- io helpers


def test_save_sharded_index_and_determinism(tmp_path):
    sd = wan_state_dict()
    files = save_sharded(sd, tmp_path / "a", max_shard_bytes=20_000)
    save_sharded(sd, tmp_path / "b", max_shard_bytes=20_000)
    index = json.loads((tmp_path / "a" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert files[-1].name.endswith(".index.json") and len(files) > 2
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in sd.values())
    assert list(index["weight_map"]) == sorted(sd)
    assert all(f.name.startswith("diffusion_pytorch_model-0000") for f in files[:-1])
    assert all(f.read_bytes() == (tmp_path / "b" / f.name).read_bytes() for f in files)
    loaded = load_state_dict(tmp_path / "a")
    assert all(same_bytes(loaded[k], sd[k]) for k in sd)
    single = save_sharded(sd, tmp_path / "c", max_shard_bytes=10**9)
    assert [f.name for f in single] == ["diffusion_pytorch_model.safetensors"]
    assert sorted(load_file(single[0])) == sorted(sd)


def test_load_state_dict_errors_name_the_file(tmp_path):
    save_sharded(wan_state_dict(), tmp_path / "ck", max_shard_bytes=20_000)
    shard = sorted((tmp_path / "ck").glob("*-00002-*.safetensors"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=shard.name):
        load_state_dict(tmp_path / "ck")
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"{shard.name}.*missing"):
        load_state_dict(tmp_path / "ck")
    dup = tmp_path / "dup"
    dup.mkdir()
    save_file({"x": torch.zeros(1)}, dup / "a.safetensors")
    save_file({"x": torch.ones(1)}, dup / "b.safetensors")
    with pytest.raises(CheckpointError, match="duplicate key 'x' in .*b.safetensors"):
        load_state_dict(dup)


def test_load_state_dict_reads_only_indexed_files(tmp_path):
    save_sharded(wan_state_dict(), tmp_path, max_shard_bytes=20_000)
    save_file({"stray": torch.zeros(1)}, tmp_path / "stray.safetensors")
    assert "stray" not in load_state_dict(tmp_path)
    assert io.source_files(tmp_path)[0].name.startswith("diffusion_pytorch_model-00001")


# ----------------------------------------------------------------------------------------------- API and safety


def test_python_api_defaults_are_the_cli_s(tmp_path):
    """convert() and save_converted() called with no options do what the CLI does by default (lightx2v's flags):
    safetensors chunks of 100 tensors named converted_part<i>, no renaming, no extra files, no overwriting; every
    file carries the {"format": "pt"} metadata torch-side loaders expect."""
    from safetensors import safe_open

    sd = diffusers_state_dict(blocks=8)
    assert len(sd) > 100
    src = tmp_path / "src"
    src.mkdir()
    save_file(sd, src / "diffusion_pytorch_model.safetensors")
    (src / "config.json").write_text("{}")
    want = [f"converted_part{i}.safetensors" for i in range((len(sd) + 99) // 100)]
    convert(src, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([*want, INDEX])
    assert len(load_file(tmp_path / "out" / want[0])) == 100 and set(load_state_dict(tmp_path / "out")) == set(sd)
    with pytest.raises(FileExistsError):
        convert(src, tmp_path / "out")
    (tmp_path / "saved").mkdir()
    written = converter.save_converted(sd, tmp_path / "saved")
    assert [p.name for p in written] == [*want, INDEX] and len(load_file(written[0])) == 100
    for name in want:
        with safe_open(tmp_path / "saved" / name, "pt") as f:
            assert f.metadata() == {"format": "pt"}


def test_bad_option_values_name_the_option(diffusers_ckpt, tmp_path):
    from vidquant.config import ConfigError

    for kw, flag in (({"quantized": True, "linear_dtype": "torch.int4"}, "--linear_dtype"),
                     ({"quantized": True, "linear_dtype": torch.int8, "non_linear_dtype": "int8"},
                      "--non_linear_dtype"),
                     ({"device": "tpu"}, "--device"),
                     ({"save_by_block": True, "output_ext": ".pth"}, "--save_by_block"),
                     ({"output_name": "../escape"}, "--output_name")):
        with pytest.raises((ConverterError, ConfigError), match="^" + flag):
            convert(diffusers_ckpt, tmp_path / "o", **kw)
    assert not (tmp_path / "o").exists()


def test_an_output_that_is_or_holds_an_input_is_refused(diffusers_ckpt, tmp_path):
    """--overwrite replaces the output directory: never when that would delete the source or a LoRA."""
    before = sorted(p.name for p in diffusers_ckpt.iterdir())
    for output in (diffusers_ckpt, diffusers_ckpt.parent):
        with pytest.raises(FileExistsError):
            convert(diffusers_ckpt, output, overwrite=True)
    lora = tmp_path / "loras" / "a.safetensors"
    lora.parent.mkdir()
    save_file(_lora("blocks.0.attn1.to_q", 32, 32, rank=2, seed=0), lora)
    with pytest.raises(FileExistsError):
        convert(diffusers_ckpt, lora.parent, lora_paths=[lora], overwrite=True)
    assert sorted(p.name for p in diffusers_ckpt.iterdir()) == before and lora.is_file()


def test_copy_no_weight_files_skips_an_old_output_inside_the_source(diffusers_ckpt):
    out = diffusers_ckpt / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    convert(diffusers_ckpt, out, copy_no_weight_files=True, overwrite=True)
    assert (out / "config.json").is_file() and not (out / "out").exists() and not (out / "stale.txt").exists()


def test_chunks_hold_keys_in_natural_order_and_chunk_size_one_gives_a_file_per_tensor(tmp_path):
    """blocks.2 sorts before blocks.10 (as lightx2v's loader expects), whether in chunks or in block files."""
    sd = wan_state_dict(blocks=12)
    groups = converter._file_groups(list(sd), output_name="c", chunk_size=len(sd) // 3, save_by_block=False)
    order = [k for keys in groups.values() for k in keys]
    assert order.index("blocks.2.self_attn.q.weight") < order.index("blocks.10.self_attn.q.weight")
    assert list(groups) == [f"c_part{i}.safetensors" for i in range(len(groups))]
    by_block = converter._file_groups(list(sd), output_name="c", chunk_size=100, save_by_block=True)
    assert list(by_block) == [f"block_{i}.safetensors" for i in range(12)] + ["non_block.safetensors"]
    ones = converter._file_groups(list(sd), output_name="c", chunk_size=1, save_by_block=False)
    assert len(ones) == len(sd) and all(len(v) == 1 for v in ones.values())


def test_lora_full_diffs_and_malformed_loras(diffusers_ckpt):
    """A full diff (``.diff`` / ``.diff_b``) adds alpha · diff; a LoRA with NaN, an up without its down, mismatched
    ranks, or aimed at a quantized weight is refused, naming the LoRA."""
    sd = diffusers_state_dict()
    q = "blocks.0.attn1.to_q"
    diff = torch.full_like(sd[q + ".weight"], 0.25)
    diff_b = torch.full_like(sd[q + ".bias"], -1.0)
    merged = dict(sd)
    assert converter.merge_lora(merged, {q + ".diff": diff, q + ".diff_b": diff_b}, 2.0) == 2
    torch.testing.assert_close(merged[q + ".weight"], sd[q + ".weight"] + 0.5)
    torch.testing.assert_close(merged[q + ".bias"], sd[q + ".bias"] - 2.0)
    lora = _lora(q, 32, 32, rank=2, seed=0)
    nan = dict(lora)
    nan[q + ".lora_A.weight"] = nan[q + ".lora_A.weight"].clone().fill_(float("nan"))
    broken = {  # the LoRA, and what the error must say
        r"LoRA tensor '.*lora_A.weight' is torch.float32 with non-finite": nan,
        r"incomplete LoRA for '.*to_q.weight': only '.*lora_B.weight'": {
            q + ".lora_B.weight": lora[q + ".lora_B.weight"]},
        r"incompatible shapes A \(3, 32\), B \(32, 2\)": {q + ".lora_A.weight": torch.ones(3, 32),
                                                           q + ".lora_B.weight": torch.ones(32, 2)},
    }
    for message, bad in broken.items():
        with pytest.raises(ConverterError, match=r"my\.safetensors: .*" + message):
            converter.merge_lora(dict(sd), bad, 1.0, source="my.safetensors")
    quantized = dict(sd)
    quantized[q + ".weight"] = sd[q + ".weight"].to(torch.int8)
    with pytest.raises(ConverterError, match="my.safetensors: cannot merge into .*quantized"):
        converter.merge_lora(quantized, lora, 1.0, source="my.safetensors")


def test_quantized_fp8_rounds_ties_away_from_zero_as_lightx2v(tmp_path):
    """lightx2v's converter quantizes fp8 through qtorch, which rounds ties away from zero: 1.0625 (halfway
    between e4m3's 1.0 and 1.125) becomes 1.125 with the row's scale 1 (absmax 448)."""
    sd = wan_state_dict()
    key = "blocks.0.self_attn.q.weight"
    w = torch.zeros_like(sd[key])
    w[0, 0], w[0, 1] = 448.0, 1.0625
    sd[key] = w
    out = converter.quantize_state_dict(sd, torch.float8_e4m3fn, torch.float32, progress=False)
    assert out[key].dtype == torch.float8_e4m3fn and out[key][0, 1].float().item() == 1.125
    assert out[key + "_scale"][0].item() == 1.0


def test_linear_type_and_dtype_agree_or_are_refused(diffusers_ckpt, tmp_path):
    """--linear_type int8 / fp8 is --linear_dtype torch.int8 / float8_e4m3fn; block types write packed uint8 codes;
    a --linear_dtype that contradicts --linear_type is refused."""
    assert converter._linear_type_dtype("int8", None) == torch.int8
    assert converter._linear_type_dtype("fp8", torch.float8_e4m3fn) == torch.float8_e4m3fn
    assert converter._linear_type_dtype("mxfp8", None) == torch.uint8
    assert converter._linear_type_dtype(None, torch.int8) == torch.int8
    with pytest.raises(ConverterError, match="--linear_type int8 contradicts --linear_dtype"):
        convert(diffusers_ckpt, tmp_path / "o", direction="backward", quantized=True, linear_type="int8",
                linear_dtype="torch.float8_e4m3fn")


def test_lora_alphas_default_broadcast_and_checks():
    assert converter._lora_alphas(["a", "b"], []) == [1.0, 1.0]  # no alpha given: 1 for each
    assert converter._lora_alphas(["a", "b"], [0.5]) == [0.5, 0.5]
    with pytest.raises(ConverterError, match="--lora_alpha: got nan; expected finite numbers"):
        converter._lora_alphas(["a"], [float("nan")])


def test_quantized_needs_wan_names_and_passes_existing_scales_through_once(tmp_path):
    """--quantized selects Wan-layout keys: a diffusers or mixed checkpoint is refused (not silently left
    unquantized); a float weight that already has a _scale next to it is an error, not a second scale."""
    mixed = wan_state_dict()
    mixed["blocks.1.attn1.to_q.weight"] = mixed.pop("blocks.1.self_attn.q.weight")
    for sd, layout in ((diffusers_state_dict(), "diffusers"), (mixed, "mixed")):
        with pytest.raises(ConverterError, match=f"keys are in {layout} layout"):
            converter.quantize_state_dict(dict(sd), torch.int8, torch.float32, progress=False)
    sd = wan_state_dict()
    sd["blocks.0.self_attn.q.weight_scale"] = torch.ones(sd["blocks.0.self_attn.q.weight"].shape[0], 1)
    with pytest.raises(ConverterError, match="blocks.0.self_attn.q.weight: float weight already has"):
        converter.quantize_state_dict(sd, torch.int8, torch.float32, progress=False)


def test_quantized_reports_how_many_linears(caplog):
    import logging

    sd = wan_state_dict()  # 2 blocks x 10 linears
    with caplog.at_level(logging.INFO, logger="vidquant.export"):
        converter.quantize_state_dict(sd, torch.int8, torch.float32, progress=False)
    assert "quantized 20 linears to torch.int8" in caplog.text


def test_copy_no_weight_files_keeps_nested_files_and_skips_weights_and_indexes(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    (src / "a" / "b").mkdir(parents=True)
    out.mkdir()
    for name in ("config.json", "model.safetensors.index.json", "w.safetensors", "w.pth", "z_readme.md",
                 "a/b/tokenizer.json", "a/c.pt", "a/d.txt"):
        (src / name).write_text(name)
    copied = converter.copy_non_weight_files(src, out)
    assert sorted(p.relative_to(out).as_posix() for p in copied) == ["a/b/tokenizer.json", "a/d.txt", "config.json",
                                                                      "z_readme.md"]
    assert all(p.read_text() == p.relative_to(out).as_posix() for p in copied)
