"""lightx2v inference config writer and reader (lightx2v_reference §3.3, §4.3, §8.1, §9.17-18)."""

from __future__ import annotations

import json

import pytest

from vidquant.export.lightx2v_config import ConfigError, read_lightx2v_config, write_lightx2v_config

INT8_MM = "W-int8-channel-sym-A-int8-channel-sym-dynamic-Vllm"
FP8_MM = "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Vllm"


def write(tmp_path, **kw):
    args = dict(task="i2v", scheme="int8", quantized_ckpt="/ckpt/int8", infer_steps=40, target_height=480,
                target_width=832, target_video_length=81, guidance_scale=5.0, seed=42, sample_shift=5.0)
    args.update(kw)
    return write_lightx2v_config(tmp_path / "cfg.json", **args)


def test_write_both_vocabularies(tmp_path):
    cfg = write(tmp_path)
    on_disk = json.loads((tmp_path / "cfg.json").read_text())
    assert on_disk == cfg
    assert cfg["quant_method"] == "advanced_ptq"
    assert cfg["dit_quantized_ckpt"] == "/ckpt/int8"
    assert cfg["mm_config"] == {"mm_type": INT8_MM}
    assert cfg["dit_quantized"] is True and cfg["dit_quant_scheme"] == "int8-vllm"
    assert cfg["enable_cfg"] is True and cfg["sample_guide_scale"] == 5.0 and cfg["sample_shift"] == 5.0
    assert {cfg[f] for f in ("self_attn_1_type", "cross_attn_1_type", "cross_attn_2_type")} == {"torch_sdpa"}
    assert (cfg["target_height"], cfg["target_width"], cfg["target_video_length"]) == (480, 832, 81)
    assert (cfg["seed"], cfg["infer_steps"], cfg["fps"]) == (42, 40, 16)


@pytest.mark.parametrize("vocabulary", ["mm_type", "dit_quant_scheme"])
def test_one_vocabulary_is_read_back_as_both(tmp_path, vocabulary):
    cfg = write(tmp_path, scheme="fp8", vocabulary=vocabulary, guidance_scale=1.0, sample_shift=None)
    assert ("mm_config" in cfg) == (vocabulary == "mm_type")
    assert ("dit_quant_scheme" in cfg) == (vocabulary == "dit_quant_scheme")
    assert cfg["enable_cfg"] is False and "sample_shift" not in cfg
    read = read_lightx2v_config(tmp_path / "cfg.json")
    assert read["mm_config"]["mm_type"] == FP8_MM
    assert read["dit_quantized"] is True and read["dit_quant_scheme"] == "fp8-vllm"
    assert read["quant_scheme"] == "fp8"


def test_read_normalises_legacy_fields(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(
        "{\n"
        "    // a comment line, as in lightx2v's bench configs\n"
        '    "infer_steps": 50,\n'
        '    "attention_type": "flash_attn3",\n'
        f'    "mm_config": {{"mm_type": "{INT8_MM}", "quant_method": "smoothquant"}}\n'
        "}\n"
    )
    cfg = read_lightx2v_config(path)
    assert cfg["quant_method"] == "advanced_ptq"  # the old location is ignored by newer lightx2v
    assert cfg["self_attn_1_type"] == cfg["cross_attn_2_type"] == "flash_attn3"
    assert cfg["quant_scheme"] == "int8" and cfg["dit_quant_scheme"] == "int8-vllm"
    assert (cfg["seed"], cfg["fps"], cfg["target_video_length"]) == (42, 16, 81)


def test_unquantized_config(tmp_path):
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"infer_steps": 4, "mm_config": {"mm_type": "Default"}}))
    cfg = read_lightx2v_config(path)
    assert cfg["quant_scheme"] is None and cfg["dit_quantized"] is False


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"mm_config": {"mm_type": "W-int4-whatever"}}, "mm_config.mm_type"),
        ({"dit_quantized": True}, "dit_quant_scheme"),
        (
            {"dit_quantized": True, "dit_quant_scheme": "fp8-vllm", "mm_config": {"mm_type": INT8_MM}},
            "dit_quantized",
        ),
        ({"dit_quant_scheme": "int9-vllm"}, "dit_quant_scheme"),
        ({"quant_method": "smoothquant"}, "quant_method"),
        ({"mm_config": {"quant_method": "gptq"}}, "mm_config.quant_method"),
        ({"cross_attn_1_type": "radial_attn"}, "cross_attn_1_type"),
        ({"self_attn_1_type": "xformers"}, "self_attn_1_type"),
        ({"target_video_length": 80}, "target_video_length"),
        ({"infer_steps": 0}, "infer_steps"),
        ({"enable_cfg": "yes"}, "enable_cfg"),
        ({"task": "v2v"}, "task"),
    ],
)
def test_read_rejects_bad_fields_naming_them(tmp_path, config, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        read_lightx2v_config(path)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"scheme": "int4"}, "scheme"),
        ({"vocabulary": "both_and_more"}, "vocabulary"),
        ({"target_width": 830}, "target_width"),
        ({"target_video_length": 80}, "target_video_length"),
        ({"attention": "radial_attn"}, "cross_attn_1_type"),
        ({"task": "t2i"}, "task"),
    ],
)
def test_write_rejects_bad_arguments(tmp_path, kw, field):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        write(tmp_path, **kw)
    assert not (tmp_path / "cfg.json").exists()


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"infer_steps": 4,}')
    with pytest.raises(ConfigError, match="broken.json: invalid JSON"):
        read_lightx2v_config(path)
