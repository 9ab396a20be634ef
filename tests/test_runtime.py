"""The quantized runtime (vidquant.runtime): loading lightx2v checkpoints, agreement with the fake-quant model of
the same export, and `vidquant infer`.

Fixture: a random tiny T2V / I2V transformer gets random per-channel smoothing (s in [1/e, e]) folded into
affine_norm1 / norm2 / affine_norm3 and the linears, so the smoothing vectors are far from one and loading them
matters; the float function is unchanged (up to fp32 rounding). It is exported as LLMC does (diffusers keys)
in int8 and fp8-e4m3 and converted with `-d backward` (Wan keys).

Tolerances, and why:

* Per layer, int8: `torch._int_mm` accumulates the int8 products exactly in int32; converting to fp32 and
  multiplying by s_a, s_w and adding the bias are 4 roundings, so the runtime is within 4u (u = 2^-24) of the
  exact W8A8 result, relative to |acc*s_a*s_w| + |b|. The fake-quant linear computes the same activation codes
  (same fp32 formula absmax/127, round-half-even) and the same weight values, but sums K fp32 products, so it
  is within (K+4)u * sum|x_q||w_q| of the exact result. Equal up to fp32 rounding, nothing more.
* Per layer, fp8 (CPU): `_scaled_mm` accumulates in fp32, so both sides get the (K+4)u bound.
* Whole denoiser: the per-layer differences (~1e-7 relative) can only grow where they flip an activation code
  downstream (a quantized network is discontinuous at rounding boundaries); on these 2-block models that is
  rare, measured ~1e-7. We require rel. error <= 1e-4 and <= 5% of the quantization error itself (fake-quant
  vs float, ~4e-3 int8, ~1e-2 fp8). On deeper models the flips cascade: on the 6-block demo-size model the
  runtime differs from the fake-quant twin by ~1.7e-3, but so does the fake-quant twin from itself when its
  input is perturbed by 1e-7 (float model: 3e-7); that is the quantized function's own rounding sensitivity,
  not a runtime error (quantization error there: ~9e-3).
* Video: the same seed and sampler on both models; PSNR(runtime, fake-quant) >= 60 dB (measured > 130 dB),
  and PSNR(runtime, float) finite and reported (a random untrained model: ~50-70 dB).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests_support import runtime_psnrs

from vidquant.calib.samples import Sample
from vidquant.cli import main as cli_main
from vidquant.eval.video import load_video
from vidquant.export.converter import convert
from vidquant.export.io import load_state_dict, save_sharded
from vidquant.export.lightx2v_config import read_lightx2v_config, write_lightx2v_config
from vidquant.export.lightx2v_export import export_lightx2v
from vidquant.generate import GenParams, generate_video
from vidquant.models.block import make_transformer_smoothable
from vidquant.models.layout import SUBSETS
from vidquant.quant import FakeQuantLinear, FloatQuantizer, IntQuantizer, W8A8Linear, quantize_act_per_token
from vidquant.runtime import QuantizedCheckpointError, load_quantized_pipeline, load_quantized_transformer
from vidquant.runtime.infer import main as infer_main
from vidquant.runtime.model import fake_quant_twin

U = 2.0**-24  # fp32 unit roundoff
FMTS = ("int8", "fp8")
TASKS = ("t2v", "i2v")
IMAGE = Path("assets/eval/tiny_i2v/frame_00.png")
PROMPT = "a red square moving left on a dark background"
CODE_DTYPES = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------- fixtures


@torch.no_grad()
def _smooth_randomly(transformer, seed: int = 0) -> None:
    """Fold random per-channel smoothing into every subset (what SmoothQuant does, with random factors)."""
    g = torch.Generator().manual_seed(seed)
    make_transformer_smoothable(transformer)
    for block in transformer.blocks:
        for sub in SUBSETS:
            prev = block.get_submodule(sub.prev_op)
            s = torch.exp(torch.empty(block.get_submodule(sub.layers[0]).in_features).uniform_(-1, 1, generator=g))
            prev.weight.div_(s)
            prev.bias.div_(s)
            for name in sub.layers:
                block.get_submodule(name).weight.mul_(s)


def _inputs(config, task: str) -> dict:
    g = torch.Generator().manual_seed(1)
    kw = dict(hidden_states=torch.randn(1, config.in_channels, 2, 4, 4, generator=g),
              timestep=torch.tensor([500]), encoder_hidden_states=torch.randn(1, 16, config.text_dim, generator=g),
              return_dict=False)
    if task == "i2v":
        kw["encoder_hidden_states_image"] = torch.randn(1, 5, config.image_dim, generator=g)
    return kw


@pytest.fixture(scope="module")
def exports(tiny_dirs, tmp_path_factory):
    """{(task, fmt): dict(base, export, converted, float_out, inputs)}; built on first use."""
    from diffusers import WanTransformer3DModel

    root = tmp_path_factory.mktemp("runtime")
    cache: dict = {}

    def get(task: str, fmt: str) -> dict:
        if (task, fmt) not in cache:
            base = tiny_dirs[task]
            tr = WanTransformer3DModel.from_pretrained(base / "transformer").eval()
            _smooth_randomly(tr)
            kw = _inputs(tr.config, task)
            with torch.no_grad():
                float_out = tr(**kw)[0]
            wq = (IntQuantizer(8, True, "per_channel") if fmt == "int8" else FloatQuantizer("e4m3", "per_channel"))
            export = export_lightx2v(tr, wq, root / f"{task}_{fmt}")
            converted = convert(export, root / f"{task}_{fmt}_conv", direction="backward",
                                copy_no_weight_files=True, progress=False)
            cache[task, fmt] = dict(base=base, export=export, converted=converted, float_out=float_out, inputs=kw)
        return cache[task, fmt]

    return get


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _w8a8_linears(model) -> dict[str, W8A8Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, W8A8Linear)}


# ----------------------------------------------------------------------------------------------- loading


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("task", TASKS)
def test_both_layouts_load_the_same_model(exports, task, fmt):
    e = exports(task, fmt)
    conv = load_quantized_transformer(e["converted"], e["base"], "cpu", torch.float32)
    llmc = load_quantized_transformer(e["export"], e["base"], "cpu", torch.float32)
    assert conv.quant_info.layout == "wan" and llmc.quant_info.layout == "diffusers"
    for info in (conv.quant_info, llmc.quant_info):
        assert (info.scheme, info.quant_method, info.i2v, info.smoothing_loaded) == (fmt, "advanced_ptq",
                                                                                    task == "i2v", True)
        assert info.num_linears == 2 * (12 if task == "i2v" else 10)
    a, b = conv.state_dict(), llmc.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k].float(), b[k].float()) for k in a)
    linears = _w8a8_linears(conv)
    assert len(linears) == conv.quant_info.num_linears
    # Codes kept as stored (no float copy of a block linear), scales fp32 (out, 1).
    for lin in linears.values():
        assert lin.weight.dtype == CODE_DTYPES[fmt] and lin.weight_scale.dtype == torch.float32
        assert lin.weight_scale.shape == (lin.out_features, 1)
    assert not any(isinstance(m, torch.nn.Linear) for blk in conv.blocks for m in blk.modules())
    # The smoothing vectors are loaded, not ones.
    assert not torch.equal(conv.blocks[0].affine_norm1.weight, torch.ones_like(conv.blocks[0].affine_norm1.weight))


def test_llmc_save_path_is_accepted(exports):
    e = exports("t2v", "int8")
    model = load_quantized_transformer(e["export"].parent, e["base"], "cpu", torch.float32)
    assert model.quant_info.path == e["export"]


def test_bf16_dtype_policy_and_scale_rounding(exports):
    e = exports("t2v", "int8")
    model = load_quantized_transformer(e["converted"], e["base"], "cpu", torch.bfloat16, round_scale_bf16=True)
    blk = model.blocks[0]
    assert model.patch_embedding.weight.dtype == torch.bfloat16 and blk.attn1.to_q.bias.dtype == torch.bfloat16
    # diffusers' keep-in-fp32 modules and the fake affine vectors stay fp32
    assert blk.scale_shift_table.dtype == blk.norm2.weight.dtype == blk.affine_norm1.weight.dtype == torch.float32
    scale = blk.attn1.to_q.weight_scale
    assert scale.dtype == torch.float32 and torch.equal(scale, scale.to(torch.bfloat16).float())
    kw = {k: v.to(torch.bfloat16) if k != "timestep" and isinstance(v, torch.Tensor) else v
          for k, v in e["inputs"].items()}
    with torch.no_grad():
        out = model(**kw)[0]
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert _rel(out, e["float_out"]) < 0.05  # bf16 activations + W8A8


# ----------------------------------------------------------------------------------------------- agreement


def _capture_inputs(model, kw) -> dict[str, torch.Tensor]:
    """The real input of every W8A8Linear during one denoiser call."""
    seen, hooks = {}, []
    for name, lin in _w8a8_linears(model).items():
        hooks.append(lin.register_forward_pre_hook(lambda m, args, n=name: seen.setdefault(n, args[0].detach())))
    with torch.no_grad():
        model(**kw)
    for h in hooks:
        h.remove()
    return seen


def _exact(lin: W8A8Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp64 from the codes: the W8A8 result, |acc·s_a·s_w|, Σ|q_a||q_w|·s_a·s_w (summation bound) and |b|."""
    q_a, s_a = quantize_act_per_token(x.reshape(-1, lin.in_features).cpu(), lin.fmt)
    qa, qw = q_a.double(), lin.weight.cpu().double()
    scale = s_a.double() * lin.weight_scale.cpu().double().t()
    b = lin.bias.cpu().double().expand(qa.shape[0], -1)
    product = (qa @ qw.t()) * scale
    return product + b, product.abs(), (qa.abs() @ qw.abs().t()) * scale, b.abs()


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("task", TASKS)
def test_per_layer_equals_fake_quant_up_to_fp32_rounding(exports, task, fmt):
    e = exports(task, fmt)
    model = load_quantized_transformer(e["converted"], e["base"], "cpu", torch.float32)
    twin = fake_quant_twin(model)
    fake = {n: m for n, m in twin.named_modules() if isinstance(m, FakeQuantLinear)}
    inputs = _capture_inputs(model, e["inputs"])
    assert inputs.keys() == fake.keys()
    for name, lin in _w8a8_linears(model).items():
        x = inputs[name]
        x = torch.cat([x.reshape(-1, lin.in_features), torch.zeros(1, lin.in_features)])  # + a padding token
        with torch.no_grad():
            y_rt, y_fq = lin(x).double(), fake[name](x).double()
        exact, abs_product, abs_sum, abs_b = _exact(lin, x)
        fq_bound = (lin.in_features + 4) * U * abs_sum + 2 * U * abs_b
        rt_bound = 4 * U * (abs_product + abs_b) if fmt == "int8" else fq_bound
        assert ((y_rt - exact).abs() <= rt_bound + 1e-30).all(), name
        assert ((y_fq - exact).abs() <= fq_bound + 1e-30).all(), name
        assert ((y_rt - y_fq).abs() <= rt_bound + fq_bound + 1e-30).all(), name


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("task", TASKS)
def test_denoiser_matches_fake_quant_of_same_export(exports, task, fmt, record_property):
    e = exports(task, fmt)
    model = load_quantized_transformer(e["converted"], e["base"], "cpu", torch.float32)
    with torch.no_grad():
        y_rt = model(**e["inputs"])[0]
        y_fq = fake_quant_twin(model)(**e["inputs"])[0]
    rt_fq, fq_float = _rel(y_rt, y_fq), _rel(y_fq, e["float_out"])
    record_property("rel_err_runtime_vs_fake", rt_fq)
    record_property("rel_err_fake_vs_float", fq_float)
    assert 0 < fq_float < 0.05  # W8A8 noise on a random model: ~4e-3 int8, ~1e-2 fp8
    assert rt_fq <= min(1e-4, 0.05 * fq_float), (rt_fq, fq_float)


def test_smoothing_vectors_are_needed_and_dropping_them_warns(exports, tmp_path):
    e = exports("i2v", "int8")
    good = load_quantized_transformer(e["converted"], e["base"], "cpu", torch.float32)
    with pytest.warns(UserWarning, match="not 'advanced_ptq'.*ignoring the 8 affine_norm"):
        bad = load_quantized_transformer(e["converted"], e["base"], "cpu", torch.float32, quant_method=None)
    assert not bad.quant_info.smoothing_loaded
    assert torch.equal(bad.blocks[1].affine_norm3.bias, torch.ones(bad.blocks[1].affine_norm3.bias.shape))
    with torch.no_grad():
        err_good = _rel(good(**e["inputs"])[0], e["float_out"])
        err_bad = _rel(bad(**e["inputs"])[0], e["float_out"])
    assert err_bad > 5 * err_good
    # "auto" reads quant_method from the checkpoint's config.json; without one it is None (and warns).
    bare = tmp_path / "bare"
    shutil.copytree(e["converted"], bare)
    (bare / "config.json").unlink()
    with pytest.warns(UserWarning, match="quant_method is None"):
        assert load_quantized_transformer(bare, e["base"], "cpu", torch.float32).quant_info.quant_method is None


def _clip(pipe, task: str) -> np.ndarray:
    params = GenParams(32, 32, 5, 5.0, 3, 42, 512 if task == "i2v" else 16)
    return generate_video(pipe, Sample(PROMPT, "", IMAGE if task == "i2v" else None), params)


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("task", TASKS)
def test_video_agrees_with_fake_quant_and_reports_psnr_vs_float(exports, task, fmt, record_property, capsys):
    from vidquant.models.loading import load_pipeline

    e = exports(task, fmt)
    pipe = load_quantized_pipeline(e["base"], e["converted"], "cpu", torch.float32)
    clip_rt = _clip(pipe, task)
    pipe.transformer = fake_quant_twin(pipe.transformer)
    clip_fq = _clip(pipe, task)
    clip_float = _clip(load_pipeline(e["base"], dtype="float32"), task)
    p_fq, p_float = runtime_psnrs(clip_rt, clip_fq, clip_float, f"{task} {fmt}", record_property, capsys)
    assert p_fq >= 60
    assert math.isfinite(p_float) and p_float > 25


def test_quantized_pipeline_never_loads_the_float_transformer(exports, monkeypatch):
    """At 14B the float transformer is 28 GB: the pipeline must be assembled around the quantized one."""
    from diffusers import WanTransformer3DModel

    def refuse(*args, **kwargs):
        raise AssertionError("the float transformer was loaded")

    e = exports("t2v", "int8")
    monkeypatch.setattr(WanTransformer3DModel, "from_pretrained", refuse)
    pipe = load_quantized_pipeline(e["base"], e["converted"], "cpu", torch.float32)
    assert any(isinstance(m, W8A8Linear) for m in pipe.transformer.modules())


# ----------------------------------------------------------------------------------------------- errors


def test_missing_and_unexpected_keys_name_the_keys_and_file(exports, tmp_path):
    e = exports("t2v", "int8")
    state = load_state_dict(e["converted"])
    state.pop("blocks.1.ffn.2.weight_scale")
    state.pop("head.head.bias")
    d = tmp_path / "broken"
    save_sharded(state, d, max_shard_bytes=1 << 30)
    with pytest.raises(QuantizedCheckpointError, match=r"missing blocks\.1\.ffn\.2\.weight_scale"):
        load_quantized_transformer(d, e["base"], "cpu", torch.float32, quant_method="advanced_ptq")
    state = load_state_dict(e["converted"])
    state["blocks.0.extra.weight"] = torch.zeros(3)
    state.pop("head.head.bias")
    d = tmp_path / "extra"
    files = save_sharded(state, d, max_shard_bytes=1 << 30)
    with pytest.raises(QuantizedCheckpointError) as info:
        load_quantized_transformer(d, e["base"], "cpu", torch.float32, quant_method="advanced_ptq")
    msg = str(info.value)
    assert "missing 1 tensor(s)" in msg and "head.head.bias" in msg  # named as stored (Wan layout)
    assert f"blocks.0.extra.weight ({files[0]})" in msg  # with the file that holds it


def test_task_scheme_and_architecture_mismatches(exports, tiny_dirs, tmp_path):
    e = exports("t2v", "int8")
    with pytest.raises(QuantizedCheckpointError, match="T2V checkpoint but the base model .* is I2V"):
        load_quantized_transformer(e["converted"], tiny_dirs["i2v"], "cpu", torch.float32)
    with pytest.raises(QuantizedCheckpointError, match="asks for fp8"):
        load_quantized_transformer(e["converted"], e["base"], "cpu", torch.float32, scheme="fp8")
    with pytest.raises(QuantizedCheckpointError, match="all be int8 or all float8"):
        load_quantized_transformer(e["base"] / "transformer", e["base"], "cpu", torch.float32)
    with pytest.raises(QuantizedCheckpointError, match="not found"):
        load_quantized_transformer(tmp_path / "nope", e["base"], "cpu", torch.float32)
    odd = tmp_path / "odd"
    shutil.copytree(e["converted"], odd)
    cfg = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**cfg, "num_layers": 7}))
    with pytest.raises(QuantizedCheckpointError, match="num_layers: checkpoint 7 vs base 2"):
        load_quantized_transformer(odd, e["base"], "cpu", torch.float32)


# ----------------------------------------------------------------------------------------------- infer CLI


def _write_json(path: Path, task: str, ckpt, scheme: str = "int8", vocabulary: str = "both", **extra) -> Path:
    write_lightx2v_config(path, task=task, scheme=scheme, quantized_ckpt=ckpt, vocabulary=vocabulary,
                          infer_steps=3, target_height=32, target_width=32, target_video_length=5,
                          guidance_scale=5.0, seed=42, fps=8)
    if extra:
        path.write_text(json.dumps({**json.loads(path.read_text()), **extra}))
    return path


def _argv(task, base, cfg, out, image=IMAGE) -> list[str]:
    argv = ["--model_cls", "wan2.1", "--task", task, "--model_path", str(base), "--config_json", str(cfg),
            "--prompt", PROMPT, "--save_video_path", str(out), "--device", "cpu"]
    return argv + (["--image_path", str(image)] if task == "i2v" else [])


@pytest.mark.parametrize(("task", "vocabulary"), [("i2v", "mm_type"), ("t2v", "dit_quant_scheme")])
def test_infer_cli_writes_the_video(exports, tmp_path, task, vocabulary, capsys):
    e = exports(task, "int8")
    extra = {"text_len": 16} if task == "t2v" else {}
    cfg = _write_json(tmp_path / "cfg.json", task, e["converted"], vocabulary=vocabulary, **extra)
    out = tmp_path / "out.mp4"
    image = tmp_path / "wide.png"
    Image.new("RGB", (96, 48), (200, 30, 30)).save(image)  # 2:1 -> I2V follows the image's aspect ratio
    assert cli_main(["infer", *_argv(task, e["base"], cfg, out, image=image)]) == 0
    printed = capsys.readouterr()
    assert "int8 W8A8" in printed.out and "denoising: 100%" in printed.err  # the long step shows its progress
    video = load_video(out)
    assert video.shape[0] == 5 and np.isfinite(video).all()
    # i2v_size(48x96 image, 32x32 area) = 16x32; T2V is the exact target (saved clips are upscaled >= 128 px)
    assert video.shape[2] / video.shape[1] == (2.0 if task == "i2v" else 1.0)


def test_infer_matches_the_python_api(exports, tmp_path):
    """The CLI's settings give the same clip as calling the pipeline directly with the JSON's values."""
    from vidquant.runtime.infer import generate, load_runtime_pipeline, resolve_settings

    e = exports("i2v", "fp8")
    cfg_path = _write_json(tmp_path / "cfg.json", "i2v", e["converted"], scheme="fp8")
    settings = resolve_settings(read_lightx2v_config(cfg_path), config_path=cfg_path, task="i2v",
                                model_path=e["base"], device="cpu")
    assert (settings.scheme, settings.quant_method, settings.infer_steps, settings.text_len) == (
        "fp8", "advanced_ptq", 3, 512)
    assert settings.numerics == "lightx2v" and settings.round_scale_bf16  # vidquant infer's default: lightx2v's bits
    clip = generate(load_runtime_pipeline(settings), settings, PROMPT, "", IMAGE)
    direct = _clip_with(load_quantized_pipeline(e["base"], e["converted"], "cpu", torch.float32,
                                                numerics="lightx2v", round_scale_bf16=True), 3)
    assert np.array_equal(clip, direct)


@pytest.mark.parametrize("fmt", FMTS)
def test_conditioning_cache_changes_no_bit_of_the_clip(exports, fmt):
    """The cross-attention K/V cache (on by default) gives the clip computed without it, bit for bit, over
    several denoising steps with CFG (two conditioning inputs per step)."""
    e = exports("i2v", fmt)
    cached = load_quantized_pipeline(e["base"], e["converted"], "cpu", torch.float32)
    assert cached.transformer.quant_info.cached_conditioning == 4 * len(cached.transformer.blocks)  # k, v, img k, v
    plain = load_quantized_pipeline(e["base"], e["converted"], "cpu", torch.float32, cache_conditioning=False)
    assert np.array_equal(_clip_with(cached, 3), _clip_with(plain, 3))


def _clip_with(pipe, steps: int) -> np.ndarray:
    return generate_video(pipe, Sample(PROMPT, "", IMAGE), GenParams(32, 32, 5, 5.0, steps, 42, 512))


def _run_err(argv, capsys) -> tuple[int, str]:
    rc = infer_main(argv)
    return rc, capsys.readouterr().err


def test_infer_user_errors(exports, tiny_dirs, tmp_path, capsys):
    e = exports("i2v", "int8")
    out = tmp_path / "o.mp4"
    cfg = _write_json(tmp_path / "missing.json", "i2v", tmp_path / "nowhere")
    rc, err = _run_err(_argv("i2v", e["base"], cfg, out), capsys)
    assert rc == 2 and "nowhere" in err and "does not exist" in err and "Traceback" not in err
    cfg = _write_json(tmp_path / "ok.json", "i2v", e["converted"])
    rc, err = _run_err(_argv("t2v", e["base"], cfg, out), capsys)
    assert rc == 2 and "field 'task' is 'i2v' but --task is 't2v'" in err
    t2v_cfg = _write_json(tmp_path / "t2v.json", "t2v", e["converted"])
    rc, err = _run_err(_argv("t2v", e["base"], t2v_cfg, out), capsys)
    assert rc == 2 and "--task t2v but --model_path" in err and "WanImageToVideoPipeline (I2V)" in err
    rc, err = _run_err(_argv("i2v", tiny_dirs["i2v"], _write_json(tmp_path / "x.json", "i2v",
                                                                    exports("t2v", "int8")["converted"]), out), capsys)
    assert rc == 2 and "T2V checkpoint but the base model" in err
    bad = _write_json(tmp_path / "bad.json", "i2v", e["converted"], infer_steps="many")
    rc, err = _run_err(_argv("i2v", e["base"], bad, out), capsys)
    assert rc == 2 and "infer_steps" in err
    deepgemm = _write_json(tmp_path / "dg.json", "i2v", e["converted"], vocabulary="mm_type", mm_config={
        "mm_type": "W-fp8-block128-sym-A-fp8-channel-group128-sym-dynamic-Deepgemm"})
    rc, err = _run_err(_argv("i2v", e["base"], deepgemm, out), capsys)
    assert rc == 2 and "not supported" in err
    rc, err = _run_err(_argv("i2v", e["base"], cfg, out, image=tmp_path / "no.png"), capsys)
    assert rc == 2 and "no.png" in err
    assert not out.exists()


def test_default_checkpoint_dir_and_precedence(exports, tmp_path):
    """Without dit_quantized_ckpt the checkpoint is <model_path>/<scheme> and its config.json is not merged
    (lightx2v); with it, the checkpoint's quant_method wins over the JSON's."""
    from vidquant.runtime.infer import resolve_settings

    e = exports("t2v", "int8")
    model = tmp_path / "model"
    shutil.copytree(e["base"], model)
    shutil.copytree(e["converted"], model / "int8")
    raw = {"infer_steps": 2, "target_height": 32, "target_width": 32, "target_video_length": 5,
           "mm_config": {"mm_type": "W-int8-channel-sym-A-int8-channel-sym-dynamic-Vllm"}}
    cfg_path = tmp_path / "c.json"
    cfg_path.write_text(json.dumps(raw))
    s = resolve_settings(read_lightx2v_config(cfg_path), config_path=cfg_path, task="t2v", model_path=model)
    assert s.quantized_ckpt == model / "int8" and s.quant_method is None and s.seed == 42
    cfg_path.write_text(json.dumps({**raw, "dit_quantized_ckpt": str(model / "int8"), "enable_cfg": False}))
    s = resolve_settings(read_lightx2v_config(cfg_path), config_path=cfg_path, task="t2v", model_path=model, seed=7)
    assert s.quant_method == "advanced_ptq" and s.seed == 7 and s.guidance_scale == 1.0


def test_shipped_lightx2v_configs_parse():
    files = sorted((REPO / "configs" / "lightx2v").glob("*.json"))
    assert files
    for f in files:
        cfg = read_lightx2v_config(f)
        assert cfg["quant_method"] == "advanced_ptq" and cfg["quant_scheme"] in FMTS, f
        if "moe" in f.name:  # Wan2.2 A14B: one checkpoint per expert (lightx2v's wan2.2_moe keys)
            assert cfg.get("high_noise_quantized_ckpt") and cfg.get("low_noise_quantized_ckpt"), f
        else:
            assert cfg.get("dit_quantized_ckpt"), f


# ----------------------------------------------------------------------------------------------- CUDA

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("fmt", FMTS)
def test_cuda_runtime_matches_fake_quant_and_cpu(exports, fmt):
    e = exports("i2v", fmt)
    kw = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in e["inputs"].items()}
    model = load_quantized_transformer(e["converted"], e["base"], "cuda", torch.float32)
    assert all(lin.weight.is_cuda for lin in _w8a8_linears(model).values())
    inputs = _capture_inputs(model, kw)
    for name, lin in _w8a8_linears(model).items():
        x = inputs[name].reshape(-1, lin.in_features)
        with torch.no_grad():
            y = lin(x).double()
        exact, _, abs_sum, abs_b = _exact(lin, x)
        y = y.cpu()
        # int8: exact int32 accumulation as on the CPU. fp8: CUDA's row-wise _scaled_mm writes bf16 (2^-8).
        bound = (4 * U * (abs_sum + abs_b) if fmt == "int8" else 2.0**-8 * (abs_sum + abs_b))
        assert ((y - exact).abs() <= bound + 1e-30).all(), name
    with torch.no_grad():
        y_rt = model(**kw)[0]
        y_fq = fake_quant_twin(model)(**kw)[0]
        y_cpu = load_quantized_transformer(e["converted"], e["base"], "cpu", torch.float32)(**e["inputs"])[0]
    fq_float = _rel(y_fq.cpu(), e["float_out"])
    tol = 1e-4 if fmt == "int8" else 0.2 * fq_float  # fp8 on CUDA: bf16 GEMM output adds ~2^-9 per layer
    assert _rel(y_rt.cpu(), y_fq.cpu()) <= tol
    assert _rel(y_rt.cpu(), y_cpu) <= tol


@pytest.mark.cuda
@cuda
def test_cuda_pipeline_generates(exports, tmp_path):
    e = exports("i2v", "int8")
    pipe = load_quantized_pipeline(e["base"], e["converted"], "cuda", torch.bfloat16)
    clip = _clip_with(pipe, 2)
    assert clip.shape[0] == 5 and np.isfinite(clip).all()


