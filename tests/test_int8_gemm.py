"""The W8A8 int8 runtime on every CPU class: each GEMM path is exact where it runs, a path that is wrong on
this CPU is refused, and W8A8Linear computes, bit for bit, an independent numpy reference of both numerics.

CPU classes are covered on any x86 machine by re-running the checks in subprocesses with the ISA limited
(``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``), so an AVX-512 / AMX developer machine proves the AVX2
behaviour; the saturation of CPUs without VNNI is also emulated in-process, so the self-check is shown to
catch it on any machine.

References (independent of torch's GEMMs): codes from numpy float32 arithmetic (IEEE, round-half-even), sums
in int64, the epilogue in numpy float32 in the documented order. Tolerance: none (``torch.equal``): every step
is exact or a single IEEE rounding that both sides perform identically.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidquant.quant import W8A8Linear, quantize_act_per_token
from vidquant.quant.int8_gemm import (
    CPU_CLASS_LIMITS,
    FP32_EXACT_CHUNK,
    INT8_PATHS,
    Int8Path,
    _probe,
    cpu_flags,
    eligibility,
    int8_path,
    self_check,
    use_int8_path,
)

REPO = Path(__file__).resolve().parents[1]
HAS_VNNI = bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())
X86 = "avx2" in cpu_flags()


# ----------------------------------------------------------------------------------------------- references


def np_act_codes(x: np.ndarray, numerics: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-token int8 codes and scales in numpy float32 (the documented formulas, lightx2v_reference §3.1)."""
    x = x.astype(np.float32)
    absmax = np.abs(x).max(axis=-1, keepdims=True)
    scale = absmax / np.float32(127)
    if numerics == "vidquant":  # q = round(x / s), s floored at the smallest normal
        scale = np.maximum(scale, np.finfo(np.float32).tiny)
        scaled = x / scale
    else:  # vllm: q = round(x * (127 / absmax)); an all-zero token gives codes 0
        with np.errstate(divide="ignore"):
            inv = np.where(absmax > 0, np.float32(127) / absmax, np.float32(0))
        scaled = x * inv.astype(np.float32)
    return np.clip(np.rint(scaled), -128, 127).astype(np.float32), scale.astype(np.float32)


def np_w8a8(x: np.ndarray, w: np.ndarray, s_w: np.ndarray, bias: np.ndarray, numerics: str) -> np.ndarray:
    """The whole W8A8 int8 forward: exact int64 sums, then the epilogue in float32 in each numerics' order."""
    q, s_a = np_act_codes(x, numerics)
    acc = (q.astype(np.int64) @ w.astype(np.int64).T).astype(np.float32)
    s_w = s_w.reshape(1, -1).astype(np.float32)
    out = (acc * s_w) * s_a if numerics == "lightx2v" else (acc * s_a) * s_w
    return out + bias.astype(np.float32)


def _layer(k: int, n: int, seed: int) -> W8A8Linear:
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.mul_(torch.logspace(-2, 1, k))  # outlier columns: codes use the whole range
    return W8A8Linear.from_linear(lin, "int8")


def _activations(m: int, k: int, seed: int) -> torch.Tensor:
    """bf16-valued activations (what the kernels see; they expose rounding-order differences ~100x more often
    than fp32 values), with outlier channels and an all-zero (padding) token."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * torch.logspace(-3, 2, k)
    x[1] = 0.0
    return x.bfloat16().float()


# ----------------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize("name", list(INT8_PATHS))
def test_each_eligible_path_is_exact_on_random_and_full_range_codes(name):
    path = INT8_PATHS[name]
    why_not = path.requirement()
    if why_not:
        pytest.skip(f"{name} not used on this CPU: {why_not} (tests/test_int8_gemm.py::test_cpu_class runs it)")
    # declared exact here, so it must pass its own self-check (a refused path would silently fall back to a
    # slower one; on an AVX2 machine the fp32 fallback refused would leave W8A8 without any path)
    assert self_check(path) is None, name
    for m, n, k in ((3, 5, 7), (33, 17, FP32_EXACT_CHUNK), (9, 11, 3 * FP32_EXACT_CHUNK + 5)):
        g = torch.Generator().manual_seed(k)
        a = torch.randint(-128, 128, (m, k), generator=g).float()
        w = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
        ref = torch.from_numpy((a.numpy().astype(np.int64) @ w.numpy().astype(np.int64).T).astype(np.float32))
        assert torch.equal(path.matmul(a, path.prepare(w)), ref), (name, m, n, k)


def _saturating_matmul(codes: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """What a CPU without VNNI does (vpmaddubsw): (codes + 128) as u8 times s8, each adjacent pair of products
    summed and saturated to int16, then the zero-point compensation."""
    u8 = (codes + 128).long()
    k = u8.shape[1] - u8.shape[1] % 2
    pairs = u8[:, None, 0:k:2] * w.long()[None, :, 0:k:2] + u8[:, None, 1:k:2] * w.long()[None, :, 1:k:2]
    acc = pairs.clamp(-(2**15), 2**15 - 1).sum(-1)
    if k < u8.shape[1]:
        acc += u8[:, None, -1] * w.long()[None, :, -1]
    return (acc - 128 * w.long().sum(-1)).float()


def test_self_check_refuses_a_saturating_kernel():
    import re

    from vidquant.quant.int8_gemm import _exact

    saturating = Int8Path("vpmaddubsw", "nowhere", lambda: None, lambda w: w, _saturating_matmul)
    why = self_check(saturating)
    assert why is not None and "disagrees with the exact int32 result" in why
    # the reported error is the relative L2 distance on the probe it names
    m, k, n = map(int, re.search(r"\((\d+), (\d+)\) x \(\d+, (\d+)\)", why).groups())
    a, w = _probe(m, n, k, seed=k)
    got, ref = _saturating_matmul(a, w).double(), _exact(a, w).double()
    assert f"rel. L2 {float((got - ref).norm() / ref.norm()):.3g})" in why
    # ... while the same arithmetic without the saturation passes: the probe, not the emulation, makes it fail
    exact = Int8Path("exact", "everywhere", lambda: None, lambda w: w,
                     lambda a, w: (a.long() @ w.long().T).float())
    assert self_check(exact) is None


def _amx_like_matmul(codes: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """What oneDNN's AMX u8s8 kernel does: exact u8 x s8 sums, rounded to fp32 before the zero-point compensation
    is subtracted (so sums past 2^24 lose their last bits)."""
    u8 = (codes + 128).long()
    return (u8 @ w.long().T).float() - (128 * w.long().sum(-1)).float()


def _wrong_on_small_codes(codes: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Exact, except for a shortcut that is wrong when every activation code is small (the typical case)."""
    out = (codes.long() @ w.long().T).float()
    return out + 1 if codes.abs().max() <= 8 else out


def test_self_check_probes_sums_past_2_24_and_small_codes():
    """The probe's extreme rows (sums past 2^24) catch an AMX-like fp32 compensation; its small-codes probe
    catches a path whose shortcut for small activations is wrong."""
    for name, matmul in (("amx-like", _amx_like_matmul), ("small-codes shortcut", _wrong_on_small_codes)):
        why = self_check(Int8Path(name, "nowhere", lambda: None, lambda w: w, matmul))
        assert why is not None and "disagrees with the exact int32 result" in why, name


def test_probe_saturates_int16_and_crosses_2_24():
    a, w = _probe(21, 19, 2 * FP32_EXACT_CHUNK + 64, seed=1)
    assert a.abs().max() == 128 and w.abs().max() == 127 and (a < 0).any() and (w < 0).any()
    k = a.shape[1]
    alternating = torch.tensor([127.0, -127.0]).repeat(k // 2)
    assert (a[0] == 127).all() and (a[1] == -127).all() and torch.equal(a[2], alternating) and (a[3] == -128).all()
    assert (w[0] == 127).all() and (w[1] == -127).all() and torch.equal(w[2].float(), alternating)
    assert w.dtype == torch.int8 and a.dtype == torch.float32 and w.min() == -127  # weight codes never -128
    assert a[4:].min() <= -120 and a[4:].max() >= 120 and w[3:].min() <= -120 and w[3:].max() >= 120  # random rows
    again = _probe(21, 19, k, seed=1)
    assert torch.equal(again[0], a) and torch.equal(again[1], w)  # seeded: the same probe in every process
    assert not torch.equal(_probe(21, 19, k, seed=2)[0], a)
    pair = (a[0, :2] + 128) * w[0, :2].float()
    assert pair.sum() > 2**15 - 1  # the first row pair overflows int16
    assert (a.double() @ w.double().T).abs().max() > 2**24


def test_all_eligible_paths_give_the_same_bits():
    layer, x = _layer(2 * FP32_EXACT_CHUNK + 64, 48, seed=3), _activations(40, 2 * FP32_EXACT_CHUNK + 64, 4)
    outs = {}
    for name, path in INT8_PATHS.items():
        if eligibility(path) is None:
            with use_int8_path(name), torch.no_grad():
                outs[name] = layer(x.bfloat16())
    assert outs, "no eligible int8 path"
    first = next(iter(outs.values()))
    assert all(torch.equal(o, first) for o in outs.values()), list(outs)


def test_forcing_a_refused_path_raises(monkeypatch):
    bad = Int8Path("broken", "nowhere", lambda: "never exact here", lambda w: w, _saturating_matmul)
    monkeypatch.setitem(INT8_PATHS, "broken", bad)
    with pytest.raises(RuntimeError, match="broken.*refused.*never exact here"):
        with use_int8_path("broken"):
            pass
    with pytest.raises(ValueError, match="VIDQUANT_INT8_PATH='nope'"):
        with use_int8_path("nope"):
            pass


# ----------------------------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("numerics", ["vidquant", "lightx2v"])
@pytest.mark.parametrize("k", [96, 2 * FP32_EXACT_CHUNK + 64])
def test_w8a8_linear_matches_the_numpy_reference(numerics, k):
    layer = _layer(k, 40, seed=k)
    layer.numerics = numerics
    x = _activations(301, k, seed=k + 1)
    ref = np_w8a8(x.numpy(), layer.weight.numpy(), layer.weight_scale.numpy(), layer.bias.numpy(), numerics)
    with torch.no_grad():
        got = layer(x)
    assert torch.equal(got, torch.from_numpy(ref)), (numerics, k, int8_path().name)


def test_lightx2v_codes_are_the_reciprocal_formula_and_differ_from_division():
    x = torch.randn(512, 1536, generator=torch.Generator().manual_seed(0))
    x[0] = 0  # a padding token: codes 0, not NaN
    x[1:64] *= 1e-2  # tokens with max |x| below 1
    x = x.bfloat16()  # activations reach the kernels in bf16 (fp32 inputs rarely differ)
    ours, _ = quantize_act_per_token(x, "int8", "vidquant")
    theirs, s = quantize_act_per_token(x, "int8", "lightx2v")
    ref_codes, ref_scale = np_act_codes(x.float().numpy(), "lightx2v")
    assert torch.equal(theirs.float(), torch.from_numpy(ref_codes)) and torch.equal(s, torch.from_numpy(ref_scale))
    moved = (ours != theirs).float().mean().item()
    assert 0 < moved < 2e-3  # about 3e-4 of the codes move by one step
    assert (ours.int() - theirs.int()).abs().max() == 1


def test_lightx2v_fp8_codes_multiply_by_the_reciprocal():
    x = torch.randn(512, 1536).bfloat16()
    theirs, s = quantize_act_per_token(x, "fp8", "lightx2v")
    xf = x.float().numpy()
    scale = np.maximum(np.abs(xf).max(-1, keepdims=True) / np.float32(448), np.float32(1 / (448 * 512)))
    scaled = np.clip(xf * (np.float32(1) / scale), -448, 448)
    assert torch.equal(theirs, torch.from_numpy(scaled).to(torch.float8_e4m3fn))
    assert torch.equal(s, torch.from_numpy(scale))
    ours, _ = quantize_act_per_token(x, "fp8", "vidquant")
    assert 0 < (ours.float() != theirs.float()).float().mean().item() < 2e-3  # about 5e-4


def test_numerics_is_validated():
    with pytest.raises(ValueError, match="numerics"):
        quantize_act_per_token(torch.randn(2, 4), "int8", "vllm")


# ----------------------------------------------------------------------------------------------- CPU classes

CPU_CLASSES = {k: v for k, v in CPU_CLASS_LIMITS.items() if k != "avx512-bf16"}

_CHILD = """
import json, torch
import test_int8_gemm as t
from vidquant.quant.int8_gemm import INT8_PATHS, eligibility, int8_path
report = {"chosen": int8_path().name, "paths": {n: eligibility(p) for n, p in INT8_PATHS.items()}}
exact = {}
for numerics in ("vidquant", "lightx2v"):
    for k in (96, 2112):
        layer, x = t._layer(k, 40, seed=k), t._activations(37, k, seed=k + 1)
        layer.numerics = numerics
        ref = t.np_w8a8(x.numpy(), layer.weight.numpy(), layer.weight_scale.numpy(), layer.bias.numpy(), numerics)
        with torch.no_grad():
            exact[f"{numerics}/{k}"] = bool(torch.equal(layer(x), torch.from_numpy(ref)))
report["exact"] = exact
print(json.dumps(report))
"""


def run_cpu_class(env: dict[str, str]) -> dict:
    """Run the checks above in a fresh interpreter with the ISA limited; returns its report."""
    full = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",
                                                             "VIDQUANT_INT8_PATH")}
    full.update(env, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO / "lib")]))
    res = subprocess.run([sys.executable, "-c", _CHILD], env=full, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not X86, reason="ISA limits are x86 (AVX2 and up); the in-process tests cover this CPU")
@pytest.mark.parametrize("label", list(CPU_CLASSES))
def test_cpu_class(label):
    report = run_cpu_class(CPU_CLASSES[label])
    assert all(report["exact"].values()), report
    paths = report["paths"]
    assert paths[report["chosen"]] is None
    if label in ("avx2", "avx512"):  # no int8 dot product: the oneDNN paths saturate, fp32-codes is exact
        assert paths["onednn-u8s8"] and paths["int-mm"] and report["chosen"] == "fp32-codes", report
    if label == "avx512-vnni" and HAS_VNNI:
        assert report["chosen"] == "onednn-u8s8", report


def test_single_gemm_shortcut_only_where_no_partial_sum_can_round():
    """fp32-codes runs one GEMM only when Σ_k |a[m,k]|·max_n|w[n,k]| ≤ 2^23 (a proof that no partial sum reaches
    2^24): checked against the bound in exact integer arithmetic on both sides of the threshold. (A single
    fp32 GEMM often happens to round correctly anyway, since vector lanes split K, so the self-check alone
    would not notice a loose threshold.)"""
    from vidquant.quant.int8_gemm import single_gemm_is_exact

    g = torch.Generator().manual_seed(0)
    w = torch.randint(-127, 128, (8, 4096), generator=g, dtype=torch.int8)
    col_max = w.float().abs().amax(0)
    for amax in (8, 16, 17, 24, 32, 64, 128):
        a = torch.randint(-amax, amax + 1, (6, 4096), generator=g).float()
        exact_bound = int((a.abs().long() @ col_max.long()).max())
        decision = single_gemm_is_exact(a, col_max)
        assert decision == (exact_bound <= 2**23), (amax, exact_bound)
        assert not decision or exact_bound <= 2**24


def test_compiled_kernels_give_the_eager_bits(caplog):
    """The fused (torch.compile) activation quantization and epilogue: the numpy reference, bit for bit, on a
    shape other than the self-check's probe. With a C++ compiler they build; the one allowed refusal is the
    agreement probe's (on AVX2, Inductor's vector code rounds some codes differently: the eager kernels run)."""
    import logging
    import shutil

    from vidquant.quant.linear import _compiled_kernels

    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("torch.compile cannot build CPU kernels here (no C++ compiler): the eager kernels run")
    with caplog.at_level(logging.WARNING, logger="vidquant.quant"):
        kernels = _compiled_kernels.__wrapped__("int8", "lightx2v")
    if kernels is None:
        assert "differ from the eager ones" in caplog.text, caplog.text  # refused for disagreeing, nothing else
        pytest.skip("the compiled kernels disagree with the eager ones on this CPU class: they are not used")
    layer, x = _layer(160, 24, seed=7), _activations(45, 160, seed=8)
    layer.numerics, layer.compiled = "lightx2v", True
    ref = np_w8a8(x.numpy(), layer.weight.numpy(), layer.weight_scale.numpy(), layer.bias.numpy(), "lightx2v")
    with torch.no_grad():
        assert torch.equal(layer(x), torch.from_numpy(ref))


# ----------------------------------------------------------------------------------------------- the requirements


def test_cpu_flags_are_the_flags_line_of_proc_cpuinfo():
    import re

    from vidquant.quant.int8_gemm import cpu_flags as cached

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        assert cached.__wrapped__() == frozenset()
        return
    match = re.search(r"^flags\s*:(.*)$", text, re.M)
    assert cached.__wrapped__() == (frozenset(match.group(1).split()) if match else frozenset())


def test_onednn_requirement_refuses_amx_unless_the_isa_is_capped_below_it(monkeypatch):
    from vidquant.quant import int8_gemm

    amx = "AMX-INT8: oneDNN's AMX u8s8 kernel rounds sums past 2^24 to fp32 before the zero-point compensation"
    monkeypatch.setattr(int8_gemm, "_int8_dot_product", lambda: None)
    monkeypatch.setattr(int8_gemm, "cpu_flags", lambda: frozenset({"avx512_vnni", "amx_int8"}))
    for isa, want in (("", amx), ("ALL", amx), ("DEFAULT", amx), ("AVX512_CORE_AMX", amx),
                      ("AVX512_CORE_VNNI", None), ("AVX512_CORE_BF16", None)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
        assert int8_gemm._onednn_requirement() == want, isa
    monkeypatch.setattr(int8_gemm, "cpu_flags", lambda: frozenset({"avx512_vnni"}))  # VNNI without AMX
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert int8_gemm._onednn_requirement() is None
    monkeypatch.setattr(int8_gemm, "_int8_dot_product", lambda: "no int8 dot product")
    monkeypatch.setattr(int8_gemm, "cpu_flags", lambda: frozenset({"amx_int8"}))
    assert int8_gemm._onednn_requirement() == "no int8 dot product"


def test_int8_dot_product_needs_a_vnni_flag_and_an_isa_cap_that_allows_it(monkeypatch):
    from vidquant.quant import int8_gemm

    if not X86:
        pytest.skip("oneDNN's int8 kernels are checked on x86 (the CPU wheel there always has them)")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(int8_gemm, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert int8_gemm._int8_dot_product() == ("no int8 dot product on this CPU (avx512_vnni / avx_vnni / amx_int8 "
                                             "not in /proc/cpuinfo flags)")
    for flag in ("avx512_vnni", "avx_vnni", "amx_int8"):
        monkeypatch.setattr(int8_gemm, "cpu_flags", lambda flag=flag: frozenset({"avx2", flag}))
        assert int8_gemm._int8_dot_product() is None, flag
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "avx2")  # oneDNN's older variable, any case
    assert "ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN off" in int8_gemm._int8_dot_product()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")  # the newer one wins
    assert int8_gemm._int8_dot_product() is None


def test_fp32_codes_path_sums_its_chunks_in_int32():
    """Past 2^24 the chunks' sum must be formed in int32: summed in fp32, 16516096 + 16516095 rounds to an even
    33032192 before the last chunk's -1, giving 33032192 where the exact sum is 33032190 (a representable float)."""
    from vidquant.quant.int8_gemm import FP32_EXACT_CHUNK, _exact, _fp32_matmul, _fp32_prepare

    k = 3 * FP32_EXACT_CHUNK
    a = torch.zeros(1, k)
    w = torch.zeros(1, k, dtype=torch.int8)
    a[0, :2 * FP32_EXACT_CHUNK], w[0, :2 * FP32_EXACT_CHUNK] = 127, 127  # two chunks of 1024 · 16129
    a[0, FP32_EXACT_CHUNK], w[0, FP32_EXACT_CHUNK] = -128, -126  # the second chunk one less: 16128
    a[0, 2 * FP32_EXACT_CHUNK], w[0, 2 * FP32_EXACT_CHUNK] = 1, -1  # the third chunk: -1
    assert _exact(a, w).item() == 33032190
    assert torch.equal(_fp32_matmul(a, _fp32_prepare(w)), _exact(a, w))


def test_fp32_codes_path_needs_highest_matmul_precision():
    from vidquant.quant.int8_gemm import _fp32_requirement

    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert _fp32_requirement() is None
        torch.set_float32_matmul_precision("high")
        assert "'high'" in _fp32_requirement()
    finally:
        torch.set_float32_matmul_precision(old)


def test_onednn_kernel_is_exact_on_small_codes_on_any_cpu():
    """The oneDNN u8s8 kernel computes the product wherever oneDNN runs, as long as no intermediate saturates
    (pairs below 2^15) and no sum passes 2^24: small codes, whatever this CPU's class. Its exactness on
    full-range codes is a property of the CPU (test_each_eligible_path, test_cpu_class)."""
    from vidquant.quant.int8_gemm import _exact

    if not X86:
        pytest.skip("oneDNN's int8 kernels are checked on x86 (the CPU wheel there always has them)")
    path = INT8_PATHS["onednn-u8s8"]
    g = torch.Generator().manual_seed(2)
    for n, k in ((5, 40), (40, 5)):  # wide and tall weights (one weight scale per output channel)
        a = torch.randint(-8, 9, (7, k), generator=g).float()
        w = torch.randint(-8, 9, (n, k), generator=g, dtype=torch.int8)
        assert torch.equal(path.matmul(a, path.prepare(w)), _exact(a, w)), (n, k)


def test_use_int8_path_restores_the_environment(monkeypatch):
    monkeypatch.setenv("VIDQUANT_INT8_PATH", "int-mm")  # the user's choice, restored afterwards
    with use_int8_path("fp32-codes") as path:
        assert path.name == "fp32-codes" and os.environ["VIDQUANT_INT8_PATH"] == "fp32-codes"
    assert os.environ["VIDQUANT_INT8_PATH"] == "int-mm"
    monkeypatch.delenv("VIDQUANT_INT8_PATH")
    with use_int8_path("fp32-codes"):
        assert os.environ["VIDQUANT_INT8_PATH"] == "fp32-codes"
    assert "VIDQUANT_INT8_PATH" not in os.environ


def test_int8_dot_product_names_a_torch_without_onednn(monkeypatch):
    from vidquant.quant import int8_gemm

    monkeypatch.setattr(int8_gemm, "cpu_flags", lambda: frozenset({"avx512_vnni"}))
    if X86:  # the x86 CPU wheel ships oneDNN's quantized linear
        assert int8_gemm._int8_dot_product() in (None, "ONEDNN_MAX_CPU_ISA=" + int8_gemm._onednn_isa_limit()
                                                 + " keeps oneDNN off the int8 dot-product instructions")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_acl_supported", lambda: True, raising=False)
    assert int8_gemm._int8_dot_product() == "oneDNN runs on Arm's ACL here"
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert int8_gemm._int8_dot_product() == "this torch build has no oneDNN quantized linear"


def test_choose_takes_the_first_path_declared_exact_that_passes_its_self_check(monkeypatch, caplog):
    import logging

    from vidquant.quant import int8_gemm

    exact = Int8Path("exact", "everywhere", lambda: None, lambda w: w, lambda a, w: (a.long() @ w.long().T).float())
    paths = {"undeclared": Int8Path("undeclared", "nowhere", lambda: "not declared exact here", lambda w: w,
                                    _saturating_matmul),
             "saturating": Int8Path("saturating", "nowhere", lambda: None, lambda w: w, _saturating_matmul),
             "exact": exact}
    monkeypatch.setattr(int8_gemm, "INT8_PATHS", paths)
    with caplog.at_level(logging.INFO, logger="vidquant.quant"):
        assert int8_gemm._choose.__wrapped__(None) is exact
    assert "int8 GEMM path saturating refused: disagrees with the exact int32 result" in caplog.text
    assert ("int8 GEMM: exact (exact on everywhere; self-check passed; skipped undeclared: not declared exact "
            "here; saturating: disagrees with the exact int32 result") in caplog.text
    caplog.clear()
    monkeypatch.setattr(int8_gemm, "INT8_PATHS", {"exact": exact})
    with caplog.at_level(logging.INFO, logger="vidquant.quant"):
        int8_gemm._choose.__wrapped__(None)
    assert "int8 GEMM: exact (exact on everywhere; self-check passed)" in caplog.text
    del paths["exact"]
    monkeypatch.setattr(int8_gemm, "INT8_PATHS", paths)
    with pytest.raises(RuntimeError, match="no exact int8 GEMM on this CPU: undeclared: not declared exact here; "
                                           "saturating: disagrees"):
        int8_gemm._choose.__wrapped__(None)


def test_compiled_kernels_need_a_compiler_and_leave_the_global_rng_alone(monkeypatch):
    """Stay eager without a C++ compiler (either name will do); the agreement probe uses its own generator, so
    checking the kernels does not move the user's random stream. (torch.compile is replaced by the identity
    here: this is about the decision, test_compiled_kernels_give_the_eager_bits about the kernels.)"""
    import shutil

    from vidquant.quant import linear

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    for present, built in (((), False), (("c++",), True), (("g++",), True), (("c++", "g++"), True)):
        monkeypatch.setattr(shutil, "which", lambda name, present=present: f"/usr/bin/{name}" if name in present
                            else None)
        state = torch.random.get_rng_state()
        got = linear._compiled_kernels.__wrapped__("int8", "vidquant")
        assert (got is not None) == built, present
        assert torch.equal(torch.random.get_rng_state(), state)


def test_w8a8_forward_uses_the_chosen_path_prepared_once_and_compiled_kernels_only_when_asked(monkeypatch):
    """On the CPU, W8A8Linear multiplies with the int8 path chosen for this machine, its weight prepared once
    (again after the weight changes); the fused kernels run exactly when `compiled` is set."""
    from vidquant.quant import linear

    calls = {"prepare": 0, "matmul": 0}
    base = INT8_PATHS["fp32-codes"]

    def prepare(w):
        calls["prepare"] += 1
        return base.prepare(w)

    def matmul(a, prepared):
        calls["matmul"] += 1
        return base.matmul(a, prepared)

    monkeypatch.setattr(linear, "int8_path", lambda: Int8Path("spy", "here", lambda: None, prepare, matmul))
    layer, x = _layer(32, 8, seed=1), _activations(5, 32, seed=2)
    with torch.no_grad():
        first, second = layer(x), layer(x)
        assert calls == {"prepare": 1, "matmul": 2} and torch.equal(first, second)
        layer.weight.copy_(-layer.weight)
        layer(x)
    assert calls == {"prepare": 2, "matmul": 3}
    used = []
    eager = (linear._act_codes, linear._int8_epilogue)
    monkeypatch.setattr(linear, "_compiled_kernels", lambda fmt, numerics: used.append((fmt, numerics)) or eager)
    with torch.no_grad():
        layer(x)
        assert used == []
        layer.compiled, layer.numerics = True, "lightx2v"
        layer(x)
        assert used == [("int8", "lightx2v")]
        layer(x.half())  # a dtype the kernels were not checked in: eager
    assert used == [("int8", "lightx2v")]


def test_kernel_probe_has_what_it_promises():
    """The agreement probe: bf16 activations with an all-zero token and channel scales over five decades, tails
    for vector loops, large integer accumulators with per-token / per-channel scales and a bias."""
    from vidquant.quant.linear import _kernel_probe

    x, acc, s_a, s_w, bias = _kernel_probe()
    assert (x.dtype, tuple(x.shape), bias.dtype) == (torch.bfloat16, (33, 96), torch.bfloat16)
    assert bool((x[1] == 0).all()) and bool((x.abs().amax(-1) > 0).sum() == 32)  # one zero token, the rest not
    channel = x.float().abs().amax(0)
    assert float(channel.max() / channel.min()) > 1e4  # outlier channels
    assert (tuple(acc.shape), tuple(s_a.shape), tuple(s_w.shape), tuple(bias.shape)) == ((33, 40), (33, 1), (1, 40),
                                                                                         (40,))
    assert torch.equal(acc, acc.round()) and float(acc.abs().max()) > 2**14  # integer sums, past bf16's 8 bits
    assert bool((s_a > 0).all() and (s_w > 0).all()) and len(set(s_a.flatten().tolist())) == 33
    assert all(torch.equal(a, b) for a, b in zip(_kernel_probe(), (x, acc, s_a, s_w, bias)))  # fixed


def test_compiled_kernels_are_dynamic_and_refused_when_they_disagree(monkeypatch, caplog):
    """Compiled once for every token count (dynamic=True); a compiled activation quantizer or (int8) epilogue
    that changes one bit of the probe's result is refused, naming which, and the eager kernels run. fp8 has no
    int8 epilogue, so only its activation kernel is compared."""
    import logging
    import shutil

    from vidquant.quant import linear

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    compiled = []

    def fake_compile(fn, **kw):
        compiled.append((fn, kw))
        return lambda *a: off_by_one(fn, *a)

    def off_by_one(fn, *args):
        out = fn(*args)
        if fn is wrong and (only_in is None or args[0].dtype == only_in or args[-1] == only_in):
            first = out[0] if isinstance(out, tuple) else out
            first.view(-1)[0] += first.view(-1)[0].abs() + 1  # a change even at bf16's resolution
        return out

    monkeypatch.setattr(torch, "compile", fake_compile)
    only_in = None
    for fmt in ("int8", "fp8"):
        for wrong, refused in ((None, False), (linear._act_codes, True), (linear._int8_epilogue, fmt == "int8")):
            compiled.clear()
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="vidquant.quant"):
                got = linear._compiled_kernels.__wrapped__(fmt, "lightx2v")
            assert compiled == [(linear._act_codes, {"dynamic": True}), (linear._int8_epilogue, {"dynamic": True})]
            assert (got is None) == refused, (fmt, wrong)
            if refused:
                what = "activation codes differ" if wrong is linear._act_codes else "epilogue differs"
                assert f"compiled {what} from the eager one" in caplog.text, caplog.text
    # each activation dtype is its own graph: one that is wrong only for fp32 inputs (or fp32 output) is refused
    for only_in in (torch.float32, torch.bfloat16):
        for wrong in (linear._act_codes, linear._int8_epilogue):
            assert linear._compiled_kernels.__wrapped__("int8", "lightx2v") is None, (only_in, wrong)
