"""The public API (`import vidquant as vq`): typed method options, recipes <-> LLMC YAML, `quantize_`, caching."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests_support import tiny_config, write_config

import vidquant as vq
from vidquant.config import METHODS, ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]
GEN = dict(height=32, width=32, num_frames=5, num_inference_steps=4, max_sequence_length=16)


def _hash_dir(path: Path) -> dict[str, str]:
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file()}


def test_import_is_light_and_names_resolve_lazily():
    code = "import sys, vidquant as vq; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
    assert vq.Recipe is vq.api.Recipe and "quantize_" in dir(vq)
    with pytest.raises(AttributeError, match="no attribute 'quantise_'"):
        vq.quantise_  # noqa: B018


@pytest.mark.parametrize("name, cls", [("RTN", vq.RTN), ("SmoothQuant", vq.SmoothQuant), ("Awq", vq.Awq),
                                       ("GPTQ", vq.GPTQ)])
def test_method_defaults_are_llmc_special_defaults(name, cls):
    # config.METHODS is the torch-free copy the YAML validator reads; it must not drift from the dataclasses
    assert cls.name == name
    assert dataclasses.asdict(cls()) == METHODS[name]


@pytest.mark.parametrize("make, message", [
    (lambda: vq.SmoothQuant(alpha=1.5), r"SmoothQuant\.alpha: got 1\.5; allowed: 0 <= alpha <= 1"),
    (lambda: vq.SmoothQuant(alpha="0.7"), r"SmoothQuant\.alpha: got '0\.7'; allowed: a number"),
    (lambda: vq.GPTQ(blocksize=0), r"GPTQ\.blocksize: got 0"),
    (lambda: vq.GPTQ(actorder=1), r"GPTQ\.actorder: got 1; allowed: true or false"),
    (lambda: vq.GPTQ(percdamp=1.0), r"GPTQ\.percdamp"),
    (lambda: vq.Awq(trans_version="v3"), r"Awq\.trans_version: got 'v3'; allowed: 'v1', 'v2'"),
    (lambda: vq.Awq(save_scale=True), r"Awq\.save_scale"),
])
def test_method_options_are_checked_when_written(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_yaml_special_goes_through_the_same_checks(tmp_path, tiny_t2v_dir):
    cfg = tiny_config(tmp_path, tiny_t2v_dir, method="GPTQ")
    cfg["quant"]["video_gen"]["special"] = {"blocksize": -4}
    with pytest.raises(ValueError, match=r"blocksize: got -4"):  # the YAML check (config) or the dataclass
        vq.Recipe.from_config(parse_config(cfg))


@pytest.mark.parametrize("bad, message", [
    (dict(weight="int9"), r"Recipe\.weight: got 'int9'"),
    (dict(act="int4g64"), r"act\.granularity"),
    (dict(methods=["GPTQ"]), r"Recipe\.methods\[0\]: got 'GPTQ'"),
    (dict(weight="int4g64", act=None), None),  # valid: weight-only per-group
])
def test_recipe_checks(bad, message):
    if message is None:
        assert vq.Recipe(**bad).weight.group_size == 64
        return
    with pytest.raises(ConfigError, match=message):
        vq.Recipe(**bad)


@pytest.mark.parametrize("path", sorted((REPO / "configs/quantization/video_gen").glob("*/*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_llmc_yaml_round_trip(path):
    recipe = vq.Recipe.from_yaml(path)
    raw = yaml.safe_load(path.read_text())
    raw["quant"] = yaml.safe_load(recipe.to_yaml())["quant"]
    assert vq.Recipe.from_config(parse_config(raw)) == recipe
    assert recipe.to_config().methods == load_config(path).quant.video_gen.methods


def test_python_recipe_equals_shipped_yaml():
    recipe = vq.Recipe(methods=[vq.SmoothQuant(alpha=0.75), vq.GPTQ()], weight="int8", act="int8")
    assert recipe == vq.Recipe.from_yaml(REPO / "configs/quantization/video_gen/tiny_t2v/smoothquant_gptq_w_a.yaml")
    assert vq.Recipe(methods=[vq.SmoothQuant(alpha=0.8)]) != vq.Recipe(methods=[vq.SmoothQuant(alpha=0.75)])
    fp8 = vq.Recipe.from_yaml(REPO / "configs/quantization/video_gen/tiny_t2v/smoothquant_w_a_fp8.yaml")
    as_label = dataclasses.replace(fp8, weight="e4m3", act="e4m3")  # the label: native fp8 rounding
    assert fp8.weight.use_qtorch and as_label.weight.label == "e4m3" and as_label.act.granularity == "per_token"
    assert fp8 == dataclasses.replace(as_label, weight=as_label.weight.model_copy(update={"use_qtorch": True}),
                                      act=as_label.act.model_copy(update={"use_qtorch": True}))


@pytest.fixture
def counted(monkeypatch):
    """Count the expensive computations behind the cache, with a fresh process-wide cache."""
    import vidquant.cache as cache

    calls = {"capture": 0, "generate": 0}

    def counting(name, real, count=lambda out: 1):
        def fn(*a, **k):
            out = real(*a, **k)
            calls[name] += count(out)
            return out
        return fn

    monkeypatch.setattr(cache, "capture_block_inputs", counting("capture", cache.capture_block_inputs))
    monkeypatch.setattr(cache, "generate_videos", counting("generate", cache.generate_videos,
                                                           lambda clips: sum(map(len, clips.values()))))
    monkeypatch.setattr(cache, "_DEFAULT", cache.Cache())
    return calls


def test_yaml_recipe_python_recipe_and_cli_path_export_the_same_bytes(tmp_path, tiny_t2v_dir, counted):
    from vidquant.run import quantize

    raw = tiny_config(tmp_path / "cli", tiny_t2v_dir, method=["SmoothQuant", "GPTQ"])
    raw["quant"]["video_gen"]["special"] = {"alpha": 0.75, "blocksize": 32}
    raw["eval"] = None
    cfg_path = write_config(tmp_path / "cli", raw)
    calib = vq.Calib(REPO / "assets/calib/tiny_t2v", sample_steps=4, **GEN)
    from_yaml = vq.Calib.from_config(load_config(cfg_path))
    assert Path(from_yaml.samples).resolve() == calib.samples
    assert dataclasses.replace(from_yaml, samples=calib.samples) == calib
    recipes = {"yaml": vq.Recipe.from_yaml(cfg_path),
               "python": vq.Recipe(methods=[vq.SmoothQuant(alpha=0.75), vq.GPTQ(blocksize=32)])}
    hashes = {}
    for name, recipe in recipes.items():
        pipe = vq.load_pipeline(tiny_t2v_dir, dtype="float32")
        result = vq.quantize_(pipe, recipe, calib=calib, export_dir=tmp_path / name, progress=False)
        hashes[name] = _hash_dir(result.export_dir)
        assert type(pipe.transformer.blocks[0].attn1.to_q).__name__ == "FakeQuantLinear"
        assert not result.layer_metrics.empty
    cli = quantize(load_config(cfg_path), progress=False)
    hashes["cli"] = _hash_dir(cli.export_dir)
    assert len(hashes["yaml"]) >= 2
    assert hashes["yaml"] == hashes["python"] == hashes["cli"]
    assert counted["capture"] == 1  # three quantizations of the same float model, one capture

    pipe = vq.load_pipeline(tiny_t2v_dir, dtype="float32")
    other = vq.quantize_(pipe, vq.Recipe(methods=[vq.SmoothQuant(alpha=0.5)]), calib=calib,
                         export_dir=tmp_path / "alpha05", progress=False)
    assert _hash_dir(other.export_dir) != hashes["yaml"]  # the recipe reaches the bytes


def test_reference_clips_and_capture_are_computed_once(tmp_path, tiny_t2v_dir, counted):
    samples = vq.load_samples(REPO / "assets/calib/tiny_t2v", "t2v")[:2]
    params = vq.GenParams(seed=42, **{k: v for k, v in GEN.items()})
    pipe = vq.load_pipeline(tiny_t2v_dir, dtype="float32")
    first = vq.reference_clips(pipe, samples, params, seed=42)
    again = vq.reference_clips(vq.load_pipeline(tiny_t2v_dir, dtype="float32"), samples, params, seed=42)
    assert counted["generate"] == 2 and again is first  # a reloaded, identical pipeline hits the cache
    vq.reference_clips(pipe, samples, dataclasses.replace(params, num_frames=9), seed=42)
    assert counted["generate"] == 4  # other settings, another entry

    calib = vq.Calib(samples, sample_steps=2, **GEN)
    vq.quantize_(pipe, vq.Recipe(methods=[vq.SmoothQuant()]), calib=calib, progress=False)
    quantized = vq.reference_clips(pipe, samples, params, seed=42)
    assert counted["generate"] == 6  # the fake-quantized pipeline is another model: never served float clips
    assert not all((a == b).all() for a, b in zip(quantized, first))

    disk = vq.Cache(tmp_path / "cache")
    reloaded = vq.load_pipeline(tiny_t2v_dir, dtype="float32")
    data = vq.capture(reloaded, calib, progress=False, cache=disk)
    assert counted["capture"] == 2 and list((tmp_path / "cache").glob("*.pt"))
    fresh = vq.Cache(tmp_path / "cache")  # a new kernel: the entry comes from disk
    again = vq.capture(reloaded, calib, progress=False, cache=fresh)
    assert counted["capture"] == 2 and fresh.hits == 1
    assert all((a == b).all() for a, b in zip(data.hidden_states, again.hidden_states))


def test_quantize_refuses_before_any_work(tiny_t2v_dir, counted, tmp_path):
    pipe = vq.load_pipeline(tiny_t2v_dir, dtype="float32")
    with pytest.raises(ConfigError, match="GPTQ needs calibration data"):
        vq.quantize_(pipe, vq.Recipe(methods=[vq.GPTQ()]))
    with pytest.raises(ConfigError, match="needs the pipeline"):
        vq.quantize_(pipe.transformer, vq.Recipe(methods=[vq.GPTQ()]), calib=vq.Calib("x", **GEN))
    from vidquant.export.lightx2v_export import ExportError

    with pytest.raises(ConfigError, match="nvfp4 activations use a static scale calibrated on data"):
        nv = {"quant_type": "nvfp4-quant", "bit": "e2m1", "granularity": "per_block"}
        vq.quantize_(pipe, vq.Recipe(weight=nv, act=nv))
    with pytest.raises(ExportError, match="weight.bit"):
        vq.quantize_(pipe, vq.Recipe(weight="int4", act="int4"), export_dir="never-written")
    (tmp_path / "lightx2v_quant_model").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        vq.quantize_(pipe, vq.Recipe(methods=[vq.GPTQ()]), calib=vq.Calib("assets/calib/tiny_t2v", **GEN),
                     export_dir=tmp_path)
    with pytest.raises(ValueError, match="SmoothQuant: unknown option.s. alpah; allowed: alpha"):
        vq.SmoothQuant.from_special({"alpah": 0.7})
    assert vq.SmoothQuant.from_special({"alpha": 0.7, "actorder": True}).alpha == 0.7  # a chain's shared dict
    assert counted == {"capture": 0, "generate": 0}
    assert type(pipe.transformer.blocks[0].attn1.to_q).__name__ == "Linear"
    assert not Path("never-written").exists()
