"""LLMC video_gen configs: the seed's blocks verbatim, round trip, overrides, and every validation error."""

from __future__ import annotations

import glob

import pytest
import yaml

from vidquant.config import ConfigError, dump_config, load_config, parse_config

SEED_INT8 = """
quant:
    video_gen:
        method: SmoothQuant
        weight:
            bit: 8
            symmetric: True
            granularity: per_channel
        act:
            bit: 8
            symmetric: True
            granularity: per_token
        special:
            alpha: 0.75
"""
SEED_FP8 = """
quant:
    video_gen:
        method: SmoothQuant
        weight:
            quant_type: float-quant
            bit: e4m3
            symmetric: True
            granularity: per_channel
            use_qtorch: True
        act:
            quant_type: float-quant
            bit: e4m3
            symmetric: True
            granularity: per_token
            use_qtorch: True
        special:
            alpha: 0.75
"""
REST = """
base:
    seed: &seed 42
model:
    type: WanI2V
    path: /path/to/wan
    torch_dtype: auto
calib:
    name: i2v
    download: False
    path: ../assets/wan_i2v/calib/
    sample_steps: 40
    bs: 1
    target_height: 480
    target_width: 832
    num_frames: 81
    guidance_scale: 5.0
    seed: *seed
eval:
    eval_pos: [fake_quant]
    type: video_gen
    name: i2v
    download: False
    path: ../assets/wan_i2v/eval/
    bs: 1
    target_height: 480
    target_width: 832
    num_frames: 81
    guidance_scale: 5.0
    output_video_path: ./output_videos_sq/
save:
    save_lightx2v: True
    save_path: /path/to/save_for_lightx2v/
"""


def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("block", [SEED_INT8, SEED_FP8], ids=["int8", "fp8"])
def test_seed_quant_blocks_parse_verbatim(tmp_path, block):
    cfg = load_config(_write(tmp_path, REST + block))
    vg = cfg.quant.video_gen
    assert vg.method == "SmoothQuant" and vg.special["alpha"] == 0.75
    assert vg.weight.granularity == "per_channel" and vg.act.granularity == "per_token"
    assert vg.weight.label in ("int8", "e4m3")
    assert cfg.calib.sample_steps == 40 and cfg.evals[0].output_video_path == "./output_videos_sq/"


def test_round_trip(tmp_path):
    cfg = load_config(_write(tmp_path, REST + SEED_FP8))
    again = parse_config(yaml.safe_load(dump_config(cfg)))
    assert again.model_dump() == cfg.model_dump()


def test_every_shipped_config_loads():
    files = sorted(glob.glob("configs/quantization/video_gen/*/*.yaml"))
    assert len(files) >= 24
    for f in files:
        load_config(f)


def test_overrides_cli_and_dict_land_on_same_field(tmp_path):
    p = _write(tmp_path, REST + SEED_INT8)
    a = load_config(p, ["quant.video_gen.special.alpha=0.8", "calib.step_selection=first"])
    b = load_config(p, {"quant.video_gen.special.alpha": 0.8, "calib.step_selection": "first"})
    assert a.model_dump() == b.model_dump()
    assert a.quant.video_gen.special["alpha"] == 0.8 and a.calib.step_selection == "first"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("quant.video_gen.special.alpah=0.8", ["quant.video_gen.special.alpah", "did you mean 'alpha'"]),
        ("model.typo=1", ["model.typo", "unknown field", "allowed:"]),
        ("quant.video_gen.weight.bit=9", ["quant.video_gen.weight.bit", "got 9", "2..8"]),
        ("quant.video_gen.weight.bit=e4m4", ["quant.video_gen.weight.bit", "e4m3"]),
        ("quant.video_gen.method=Smoothquant2", ["quant.video_gen.method", "'Smoothquant2'", "SmoothQuant"]),
        ("quant.video_gen.weight.granularity=per_gruop", ["quant.video_gen.weight.granularity", "per_gruop"]),
        ("quant.video_gen.weight.granularity=per_group", ["group_size", "positive"]),
        ("quant.video_gen.act.granularity=per_channel", ["quant.video_gen.act.granularity", "per_token"]),
        ("quant.video_gen.special.alpha=1.5", ["special.alpha", "1.5"]),
        ("calib.name=t2v", ["calib.name", "WanI2V"]),
        ("calib.download=true", ["calib.download", "never downloads"]),
        ("calib.sample_steps=0", ["calib.sample_steps"]),
        ("calib.bs=2", ["calib.bs"]),
        ("model.type=WanX", ["model.type", "WanX"]),
        ("model.torch_dtype=float64", ["model.torch_dtype", "float64"]),
        ("quant.video_gen.act.static=true", ["static", "dynamic"]),
    ],
)
def test_validation_errors_name_field_value_and_allowed(tmp_path, override, expected):
    p = _write(tmp_path, REST + SEED_INT8)
    with pytest.raises(ConfigError) as err:
        load_config(p, [override])
    msg = str(err.value)
    assert str(p) in msg
    for part in expected:
        assert part in msg, (part, msg)


def test_missing_required_and_malformed(tmp_path):
    with pytest.raises(ConfigError, match="model: required field is missing"):
        load_config(_write(tmp_path, SEED_INT8))
    with pytest.raises(ConfigError, match="malformed YAML at line"):
        load_config(_write(tmp_path, "model: [unclosed\n", "bad.yaml"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="calib: missing"):
        raw = yaml.safe_load(REST + SEED_INT8)
        del raw["calib"]
        parse_config(raw)


def test_method_chain_and_special_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, REST + SEED_INT8), {"quant.video_gen.method": ["SmoothQuant", "GPTQ"]})
    vg = cfg.quant.video_gen
    assert vg.methods == ["SmoothQuant", "GPTQ"]
    assert vg.special_for("GPTQ")["percdamp"] == 0.01 and vg.special_for("SmoothQuant")["alpha"] == 0.75
