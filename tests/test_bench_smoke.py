"""Smoke test of `make bench`: every benchmark function runs at toy sizes and writes its csv and md."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import block  # noqa: E402
import calibration  # noqa: E402
import common  # noqa: E402
import cpu_classes  # noqa: E402
import figures  # noqa: E402
import gemm  # noqa: E402
import run_all  # noqa: E402
import size  # noqa: E402
import wan14b  # noqa: E402


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture
def toy(monkeypatch):
    from vidquant.models.tiny import TEST_SIZES

    monkeypatch.setattr(gemm, "SHAPES", {"toy": (("qkvo", 64, 64), ("ffn_up", 64, 128))})
    for name, value in {"DIM": 64, "FFN": 128, "HEADS": 2, "HEAD_DIM": 32, "TEXT_LEN": 8,
                        "TINY_DIR": Path("/nonexistent"), "TINY_SIZES": TEST_SIZES}.items():
        monkeypatch.setattr(block, name, value)
    monkeypatch.setattr(calibration, "WAN13B", {**calibration.WAN13B, **run_all.TOY_WIDTH})


def test_time_interleaved_and_machine_info():
    calls = []
    timings = common.time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                      warmup=1, repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-up, then round-robin
    assert timings["a"].repeats == 3 and timings["a"].min_ms <= timings["a"].median_ms
    info = common.machine_info()
    assert {"cpu", "cores", "torch", "device"} <= set(info)


def test_peak_rss_in_subprocess():
    res = common.run_in_subprocess("common", "machine_info")
    assert res["device"] == "cpu"
    assert res["peak_rss_bytes"] >= res["baseline_rss_bytes"] > 0


def test_gemm_writes_csv(toy, tmp_path):
    rows = gemm.run("cpu", tokens=[32], out_dir=tmp_path, repeats=1)
    assert len(rows) == 2
    written = _rows(tmp_path / "gemm.csv")
    assert written[0]["machine_cpu"] and float(written[0]["w8a8_int8_speedup_vs_bf16"]) > 0
    assert float(written[0]["w8a8_int8_speedup_vs_fp32"]) > 0
    assert written[0]["int8_paths_identical"] == "1.0"  # every exact path gives the same bits
    assert any(k.startswith("int8_gemm_") and k.endswith("_ms") for k in written[0])
    if gemm.bf16_prepack_unsupported():  # skipped with its reason, not failed (CPUs without AVX512-BW)
        assert "bf16_packed_ms" not in written[0]
        assert "`bf16_packed` not run" in (tmp_path / "gemm.md").read_text()
    assert "Speed-up over bf16" in (tmp_path / "gemm.md").read_text()
    assert figures.run(tmp_path) == [tmp_path / "gemm_speedup.png"]
    assert (tmp_path / "gemm_speedup.png").read_bytes()[:4] == b"\x89PNG"


def test_block_writes_csv(toy, tmp_path):
    rows = block.run(block_tokens=[16], step_tokens=16, repeats=1, out_dir=tmp_path, wan13b_layers=2)
    models = {r["model"] for r in rows}
    assert any("block" in m for m in models) and any("tiny" in m for m in models)
    assert any("1.3b-shaped denoiser step" in m for m in models)
    written = _rows(tmp_path / "block.csv")
    assert all(float(r["w8a8_rel_err_vs_bf16"]) < 0.1 for r in written)
    assert all(r["cached_equals_uncached"] == "True" for r in written)  # the K/V cache changes no bit


def test_cpu_classes_writes_every_class(tmp_path):
    """One ISA-limited interpreter per class; on AVX2 the oneDNN paths are measured wrong and refused."""
    clip = {"height": 32, "width": 32, "frames": 5, "guidance": 5.0, "steps": 2}
    rows = cpu_classes.run(["native", "avx2"], out_dir=tmp_path, shapes=[("toy", 64, 32)], tokens=16, repeats=1,
                           clip=clip)
    by = {(r["cpu_class"], r["path"]): r for r in rows}
    assert sum(r["chosen"] for r in rows if r["cpu_class"] == "avx2") == 1
    assert by["avx2", "fp32-codes"]["chosen"] and by["avx2", "fp32-codes"]["rel_err_vs_exact"] == 0
    if "avx512_vnni" in common.machine_info()["cpu_isa"]:  # the oneDNN kernels saturate without VNNI
        assert not by["avx2", "int-mm"]["eligible"] and by["avx2", "int-mm"]["wrong_sums"] > 0
    chosen = [r for r in rows if r["chosen"]]
    assert all(r["rel_err_vs_exact"] == 0 and r["w8a8_speedup_vs_fp32"] > 0 for r in chosen)
    assert "The runtime per class" in (tmp_path / "cpu_classes.md").read_text()
    clips = _rows(tmp_path / "cpu_classes_clip.csv")
    assert [c["cpu_class"] for c in clips] == ["native", "avx2"]
    assert all(float(c["clip_float_s"]) > 0 and float(c["w8a8_speedup_vs_float"]) > 0 for c in clips)


@pytest.mark.cuda
def test_gemm_and_block_on_cuda(toy, tmp_path):
    """`run_all.py --device cuda`: the GPU tables, fp8 included on sm89+."""
    gemm.run("cuda", tokens=[32], out_dir=tmp_path, repeats=1, suffix="_cuda")
    rows = block.run(block_tokens=[16], step_tokens=16, repeats=1, out_dir=tmp_path, suffix="_cuda",
                     wan13b_layers=2, device="cuda")
    assert (tmp_path / "gemm_cuda.csv").is_file() and (tmp_path / "block_cuda.md").is_file()
    assert all(float(r["w8a8_rel_err_vs_bf16"]) < 0.1 for r in rows)
    assert block.fp8_supported("cuda") == any("w8a8_fp8_eager_ms" in r for r in rows)
    assert figures.run(tmp_path) == [tmp_path / "gemm_cuda_speedup.png"]


def test_calibration_writes_csv(toy, tmp_path):
    state: dict = {}
    rows = calibration.run(depths=[1], methods=["RTN"], width=run_all.TOY_WIDTH,
                           shape={"height": 8, "width": 8, "text_len": 8}, out_dir=tmp_path,
                           keep_checkpoint=state)
    try:
        assert {(r["mode"], r["method"]) for r in rows} == {("memory", "RTN"), ("stream", "RTN")}
        assert all(r["peak_rss_bytes"] > r["baseline_rss_bytes"] for r in rows)
        assert _rows(tmp_path / "calibration.csv")[0]["machine_torch"]
        assert figures.run(tmp_path) == [tmp_path / "calibration_memory.png"]
        size_rows = size.run(state["checkpoint"], label="toy", out_dir=tmp_path)
        assert {r["format"] for r in size_rows} == {"int8", "fp8"}
        assert all(0.25 < r["ratio"] < 1.0 for r in size_rows)
        assert (tmp_path / "size.csv").is_file()
    finally:
        state["cleanup"]()
    assert not state["checkpoint"].exists()


def test_wan14b_stream_writes_csv(tmp_path):
    """The 14B-shaped streaming run at toy width: the checkpoint is written block by block and loads."""
    toy = {**run_all.TOY_WIDTH, "num_layers": 2}
    rows = wan14b.run(["RTN"], out_dir=tmp_path, cfg=toy, shape={"height": 8, "width": 8, "text_len": 8},
                      work_root=str(tmp_path))
    assert [r["method"] for r in rows] == ["RTN"] and rows[0]["blocks"] == 2
    assert 0.5 < rows[0]["export_bytes"] / rows[0]["weights_bytes"] < 1.0  # int8 linears, rest bf16 (toy: small)
    assert "peak RSS GiB" in (tmp_path / "calibration_wan14b.md").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # the work folder is gone


def test_gpu_check_skips_cleanly_without_cuda(tmp_path):
    """`make gpu-check` on a machine without CUDA: exit 0, one line saying why, nothing written."""
    import subprocess

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: `make gpu-check` runs for real here (not in the default suite)")
    before = sorted(p.name for p in common.RESULTS.iterdir())
    res = subprocess.run(["bash", str(BENCH.parent / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                         timeout=120, env={**__import__("os").environ, "PY": sys.executable})
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("gpu-check: skipped, no CUDA device visible to torch (torch ")
    assert sorted(p.name for p in common.RESULTS.iterdir()) == before
