"""Shared benchmark helpers: machine info, interleaved timing, peak RSS in a fresh process, csv/md output.

Timing (``time_interleaved``): every variant is warmed up first, then the variants are run round-robin and
each one's median is taken. Round-robin matters on a shared machine: a burst of load from another process
slows all variants of a row alike, so the *ratios* stay meaningful even when absolute times drift.

Peak memory (``run_in_subprocess``): the function runs in a fresh interpreter and reports the kernel's
high-water mark of its resident set (``ru_maxrss``) together with the resident set right after the imports
(the interpreter + torch baseline), so a figure is never polluted by what an earlier benchmark allocated.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = REPO / "results" / "benchmarks"
_RESULT_TAG = "@@BENCH_RESULT@@ "
_GIB = 2**30


# ------------------------------------------------------------------------------------------ machine info


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (falls back to platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str = "cpu") -> dict[str, str]:
    """What every result file records: CPU, cores, threads, ISA, torch version, device (and GPU name)."""
    import torch

    from vidquant.quant.int8_gemm import cpu_flags, int8_path

    flags = cpu_flags()
    isa = [f for f in ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16") if f in flags]
    info = {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "cpu_isa": f"{torch.backends.cpu.get_cpu_capability()} ({', '.join(isa) or 'no vnni/amx'})",
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "-"),
        "int8_path": int8_path().name,
        "torch": torch.__version__,
        "device": device,
        "python": platform.python_version(),
        "thp_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0"),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_line(info: Mapping[str, str]) -> str:
    """One markdown line naming the machine, for the top of every .md file."""
    return "; ".join(f"{k}: {v}" for k, v in info.items())


# ------------------------------------------------------------------------------------------------ timing


@dataclass(frozen=True)
class Timing:
    """Median and spread of one variant's repeats, in milliseconds."""

    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    warmup: int = 1,
    repeats: int = 3,
    device: str = "cpu",
    budget_s: float | None = None,
) -> dict[str, Timing]:
    """Time several variants round-robin (see the module docstring); returns each one's :class:`Timing`.

    ``budget_s`` stops adding rounds once the variants have used that much wall time (at least one timed round
    is always run), so a slow row cannot blow the run's time limit.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
        _sync(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for r in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append((time.perf_counter() - t0) * 1e3)
        if budget_s is not None and r >= 0 and time.perf_counter() - start > budget_s:
            break
    return {name: _summary(ts) for name, ts in samples.items()}


def _summary(ts: Sequence[float]) -> Timing:
    return Timing(statistics.median(ts), min(ts), max(ts), len(ts))


def cuda_time_ms(fn: Callable[[], Any], warmup: int = 3, repeats: int = 20) -> float:
    """Median of CUDA-event timings (the method of /work/.library/device/METHOD.md)."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


# ---------------------------------------------------------------------------------------- memory (RSS)


def rss_bytes() -> int:
    """Current resident set size of this process."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident set since start or the last :func:`reset_peak_rss`
    (``VmHWM``; falls back to ``ru_maxrss``, which cannot be reset)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def reset_peak_rss() -> bool:
    """Reset the resident-set high-water mark to the current RSS (Linux ``clear_refs`` 5); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_in_subprocess(
    module: str, func: str, kwargs: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None,
    timeout_s: float = 1800.0,
) -> dict[str, Any]:
    """Run ``benchmarks/<module>.py:<func>(**kwargs)`` in a fresh interpreter; return its dict result.

    The result gains ``peak_rss_bytes`` (the high-water mark since the process started or since the function
    last called :func:`reset_peak_rss`), ``baseline_rss_bytes`` (the resident
    set after importing torch, diffusers and the module, before the call) and ``wall_s``. Raises
    RuntimeError with the child's stderr tail when it fails.
    """
    payload = json.dumps({"module": module, "func": func, "kwargs": dict(kwargs or {})})
    cmd = [sys.executable, str(BENCH_DIR / "common.py"), "--child", payload]
    child_env = {**os.environ, **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env, timeout=timeout_s, cwd=REPO,
                          stdin=subprocess.DEVNULL)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_TAG):
            return json.loads(line[len(_RESULT_TAG):])
    tail = (proc.stderr or proc.stdout)[-3000:]
    raise RuntimeError(f"{module}.{func} failed in its subprocess (exit {proc.returncode}):\n{tail}")


def _child_main(payload: str) -> None:
    """Entry point of :func:`run_in_subprocess`'s child."""
    spec = json.loads(payload)
    sys.path.insert(0, str(BENCH_DIR))
    import diffusers  # noqa: F401 - in the baseline, like torch
    import torch  # noqa: F401

    mod = importlib.import_module(spec["module"])
    fn = getattr(mod, spec["func"])
    baseline = rss_bytes()
    t0 = time.perf_counter()
    result = dict(fn(**spec["kwargs"]))
    result.update(wall_s=time.perf_counter() - t0, peak_rss_bytes=peak_rss_bytes(), baseline_rss_bytes=baseline)
    print(_RESULT_TAG + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------ output


def gib(n: float) -> float:
    """Bytes -> GiB, rounded for tables."""
    return round(n / _GIB, 3)


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path, info: Mapping[str, str]) -> Path:
    """Rows to csv; the machine description is repeated in every row (columns ``machine_*``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    full = [{**row, **{f"machine_{k}": v for k, v in info.items()}} for row in rows]
    keys: list[str] = []
    for row in full:
        keys += [k for k in row if k not in keys]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(full)
    return path


def md_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A markdown table of ``rows`` (floats with 3 significant digits, missing cells as '-')."""
    if not rows:
        return "(no rows)\n"
    cols = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def write_md(path: Path, title: str, info: Mapping[str, str], sections: Sequence[tuple[str, str]]) -> Path:
    """A markdown file: title, machine line, then (heading, body) sections."""
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}\n", f"Machine: {machine_line(info)}\n"]
    parts += [f"## {head}\n\n{body}" for head, body in sections]
    path.write_text("\n".join(parts))
    return path


def log(msg: str) -> None:
    """Progress line with a wall-clock stamp (flushed, so `make bench` shows it live)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--child":
    _child_main(sys.argv[2])
