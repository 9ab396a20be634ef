"""verify() on LLMC-style exports and converted checkpoints, clean and broken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_keymap import quantize_linears, wan_state_dict

from vidquant.export import keymap
from vidquant.export.converter import convert
from vidquant.export.io import save_sharded
from vidquant.export.verify import main, verify


def llmc_export(path: Path, *, i2v: bool = False, advanced_ptq: bool = True, fp8: bool = False) -> Path:
    """An LLMC ``save_lightx2v``-like directory: diffusers keys, sharded, config.json with quant_method."""
    sd = quantize_linears(keymap.rename_state_dict(wan_state_dict(i2v=i2v), "forward"), affine=advanced_ptq)
    if fp8:
        to_fp8 = {k: v.float().to(torch.float8_e4m3fn) for k, v in sd.items() if v.dtype == torch.int8}
        sd |= to_fp8
    save_sharded(sd, path, max_shard_bytes=30_000)
    config = {"_class_name": "WanTransformer3DModel", "num_layers": 2}
    if advanced_ptq:
        config["quant_method"] = "advanced_ptq"
    (path / "config.json").write_text(json.dumps(config, indent=4))
    return path


def edit(path: Path, key: str, fn, *, update_index: bool = True) -> None:
    """Apply ``fn`` to the file holding ``key`` in a sharded checkpoint (None from fn deletes the key).

    With ``update_index`` the index json is kept consistent, so only the intended problem remains."""
    index_path = next(path.glob("*.index.json"))
    index = json.loads(index_path.read_text())
    shard = path / index["weight_map"][key]
    tensors = load_file(shard)
    new = fn(tensors[key])
    if new is None:
        del tensors[key]
    else:
        tensors[key] = new
    save_file(tensors, shard, metadata={"format": "pt"})
    if update_index:
        if new is None:
            del index["weight_map"][key]
        all_tensors = [t for f in set(index["weight_map"].values()) for t in load_file(path / f).values()]
        index["metadata"]["total_size"] = sum(t.numel() * t.element_size() for t in all_tensors)
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True))


def messages(problems) -> str:
    return "\n".join(map(str, problems))


@pytest.mark.parametrize(("i2v", "fp8"), [(False, False), (True, False), (False, True)])
def test_clean_export_and_converted_pass(tmp_path, i2v, fp8):
    export = llmc_export(tmp_path / "export", i2v=i2v, fp8=fp8)
    assert verify(export) == []
    opts = {"direction": "backward", "copy_no_weight_files": True, "progress": False}
    convert(export, tmp_path / "wan", save_by_block=True, **opts)
    assert verify(tmp_path / "wan") == []  # config.json travelled along: affine norms are checked too
    convert(export, tmp_path / "one", direction="backward", chunk_size=0, progress=False)
    assert verify(tmp_path / "one", advanced_ptq=True) == []


def test_pth_checkpoint(tmp_path):
    export = llmc_export(tmp_path / "export")
    out = convert(export, tmp_path / "pth", direction="backward", output_ext=".pth", progress=False)
    assert verify(out, advanced_ptq=True) == []
    assert verify(out / "converted.pth", advanced_ptq=True) == []


def test_main_exit_codes(tmp_path, capsys):
    export = llmc_export(tmp_path / "export")
    assert main([str(export)]) == 0
    assert "OK" in capsys.readouterr().out
    edit(export, "blocks.1.attn1.to_q.weight_scale", lambda t: None)
    edit(export, "blocks.0.ffn.net.2.bias", lambda t: None)
    assert main([str(export)]) == 1
    out = capsys.readouterr().out
    assert "blocks.1.attn1.to_q.weight_scale" in out and "blocks.0.ffn.net.2.bias" in out


def test_missing_scale(tmp_path):
    export = llmc_export(tmp_path / "e")
    edit(export, "blocks.0.attn2.to_k.weight_scale", lambda t: None)
    problems = verify(export)
    assert len(problems) == 1
    p = problems[0]
    assert p.key == "blocks.0.attn2.to_k.weight_scale" and "missing" in p.message and "(32, 1)" in p.message
    assert p.file.endswith(".safetensors")


def test_wrong_scale_shape_and_nonpositive_scale(tmp_path):
    export = llmc_export(tmp_path / "e")
    edit(export, "blocks.1.ffn.net.0.proj.weight_scale", lambda t: t.reshape(-1))
    edit(export, "blocks.0.attn1.to_v.weight_scale", lambda t: torch.zeros_like(t))
    text = messages(verify(export))
    assert "blocks.1.ffn.net.0.proj.weight_scale" in text and "(64, 1)" in text
    assert "blocks.0.attn1.to_v.weight_scale" in text and "positive" in text


def test_unquantized_weight_and_wrong_bias(tmp_path):
    export = llmc_export(tmp_path / "e")
    edit(export, "blocks.0.attn1.to_q.weight", lambda t: t.float())
    edit(export, "blocks.1.attn1.to_out.0.bias", lambda t: t[:5])
    text = messages(verify(export))
    assert "blocks.0.attn1.to_q.weight" in text and "torch.int8 or torch.float8_e4m3fn" in text
    assert "blocks.1.attn1.to_out.0.bias" in text and "expected (32,)" in text


def test_nan_anywhere(tmp_path):
    export = llmc_export(tmp_path / "e")
    edit(export, "patch_embedding.bias", lambda t: torch.where(torch.arange(t.numel()) == 3, torch.nan, t))
    problems = verify(export)
    assert [(p.key, "NaN" in p.message) for p in problems] == [("patch_embedding.bias", True)]


def test_nan_scale_is_reported_once(tmp_path):
    export = llmc_export(tmp_path / "e")
    edit(export, "blocks.0.attn1.to_k.weight_scale", lambda t: torch.full_like(t, torch.nan))
    assert [p.message for p in verify(export)] == ["32 NaN/Inf values; expected all finite"]


def test_index_naming_a_missing_shard(tmp_path):
    export = llmc_export(tmp_path / "e")
    index = json.loads(next(export.glob("*.index.json")).read_text())
    shard = index["weight_map"]["blocks.1.attn1.to_q.weight"]
    (export / shard).unlink()
    problems = verify(export)
    assert any(p.file.endswith(shard) and "missing" in p.message for p in problems)
    assert any(p.key == "blocks.1.attn1.to_q.weight" for p in problems)  # its keys are reported absent too


def test_index_and_file_disagree(tmp_path):
    export = llmc_export(tmp_path / "e")
    edit(export, "proj_out.bias", lambda t: None, update_index=False)
    text = messages(verify(export))
    assert "metadata.total_size" in text
    assert "proj_out.bias: listed in diffusion_pytorch_model.safetensors.index.json but not in this" in text


def test_missing_affine_norm_when_config_says_advanced_ptq(tmp_path):
    export = llmc_export(tmp_path / "e")
    edit(export, "blocks.1.affine_norm3.bias", lambda t: None)
    problems = verify(export)
    assert [p.key for p in problems] == ["blocks.1.affine_norm3.bias"]
    assert "advanced_ptq" in problems[0].message
    # Without advanced_ptq the smoothing vectors are not required.
    assert verify(export, advanced_ptq=False) == []


def test_no_affine_norms_needed_without_advanced_ptq(tmp_path):
    export = llmc_export(tmp_path / "e", advanced_ptq=False)
    assert verify(export) == []
    expected = {f"blocks.{n}.{norm}.{p}" for n in (0, 1) for norm in ("affine_norm1", "affine_norm3")
                for p in ("weight", "bias")}
    assert {p.key for p in verify(export, advanced_ptq=True)} == expected


def test_missing_block_and_i2v_linear(tmp_path):
    sd = quantize_linears(wan_state_dict(blocks=3, i2v=True))
    dropped = "blocks.2.cross_attn.v_img.weight"
    sd = {k: v for k, v in sd.items() if not k.startswith("blocks.1.") and k != dropped}
    save_file(sd, tmp_path / "ck.safetensors")
    text = messages(verify(tmp_path / "ck.safetensors", advanced_ptq=True))
    assert "blocks.1: block missing" in text
    assert "blocks.2.cross_attn.v_img.weight: missing" in text


def test_truncated_file_and_nonexistent_path(tmp_path):
    export = llmc_export(tmp_path / "e")
    shard = sorted(export.glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    assert any("corrupt or truncated" in p.message and p.file == str(shard) for p in verify(export))
    assert "no such file" in verify(tmp_path / "nope")[0].message
