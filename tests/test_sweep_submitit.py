"""Sweeps as submitit jobs (vidquant.jobs) on submitit's local executor, no Slurm: a grid of parallel jobs whose
table equals the in-process sweep's, a job killed mid-way and a failing one listed with their logs, a resume
that redoes only those; the same for `vidquant quantize-grid` on the tiny T2V config (slow: numbers equal to the
in-process runs'); options refused early."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from vidquant import sweep
from vidquant.jobs import JobOptions, make_executor

REPO = Path(__file__).resolve().parents[1]
TINY_T2V = REPO / "configs/quantization/video_gen/tiny_t2v/rtn_w_a.yaml"

PARAMS = """\
x = 1
hang_flag = ""  # a file; while it exists, the run with x of 2 records its pids and hangs
fail_flag = ""  # a file; while it exists, the run with x of 3 raises
output_dir = "out"
metrics_path = None
"""
BODY = """\
import json, os, pathlib, time
if x == 2 and hang_flag and os.path.exists(hang_flag):
    pathlib.Path(hang_flag + ".pids").write_text(f"{os.getppid()} {os.getpid()}")  # the job's, the kernel's
    time.sleep(300)
if x == 3 and fail_flag and os.path.exists(fail_flag):
    raise ValueError("boom at x=3")
pathlib.Path(metrics_path).write_text(json.dumps({"square": x * x, "pid": 0}))
"""


@pytest.fixture
def toy(tmp_path) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PARAMS, metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell(BODY)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "toy.ipynb"
    nbformat.write(nb, path)
    return path


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "lib"), "OMP_NUM_THREADS": "1"}


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vidquant.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(), cwd=REPO)


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 240) -> str:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if path.is_file() and path.read_text().strip():
            return path.read_text()
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    raise AssertionError(f"{path} never appeared")


def test_killed_and_failing_jobs_are_listed_then_resumed_and_the_table_matches_in_process(toy, tmp_path):
    hang, fail = tmp_path / "hang", tmp_path / "fail"
    out, tables = tmp_path / "runs", tmp_path / "tables"
    argv = ["sweep", str(toy), "-p", "x", "1", "2", "3", "-p", "hang_flag", str(hang), "-p", "fail_flag", str(fail),
            "--out", str(out), "--tables", str(tables), "--executor", "submitit", "--cluster", "local",
            "--max-parallel", "3"]
    hang.write_text("")
    fail.write_text("")
    proc = _cli(*argv)
    job_pid, kernel_pid = map(int, _wait_for(Path(f"{hang}.pids"), proc).split())
    # while x=2 still runs, the table already holds the finished x=1: rebuilt as each job finishes
    assert "x-1__" in _wait_for(tables / "toy.csv", proc) and proc.poll() is None
    os.kill(job_pid, signal.SIGKILL)  # the job dies mid-run (as on a lost node or an OOM kill)
    os.kill(kernel_pid, signal.SIGKILL)
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, text
    assert "3 run(s): 1 done, 0 skipped (complete), 2 failed" in text, text
    failed = {line.split("[")[1].split("]")[0]: line for line in text.splitlines() if line.startswith("  FAILED")}
    assert sorted(k.split("__")[0] for k in failed) == ["x-2", "x-3"]
    assert "boom at x=3" in next(v for k, v in failed.items() if k.startswith("x-3"))
    assert "ended without a result" in next(v for k, v in failed.items() if k.startswith("x-2"))
    logs = [Path(p) for line in text.splitlines() if "job logs:" in line for p in line.split(":", 1)[1].split()]
    assert len(logs) == 4 and all(p.is_file() and p.parent == out / ".submitit" / "toy" for p in logs)
    assert {p.suffix for p in logs} == {".out", ".err"}
    x1 = next((out / "toy").glob("x-1__*"))
    assert sweep.complete_metrics(x1) == {"square": 1, "pid": 0}
    assert list(pd.read_csv(tables / "toy.csv")["x"]) == [1]  # aggregated as jobs finished: the complete one
    finished = (x1 / "metrics.json").stat().st_mtime_ns

    hang.unlink()
    fail.unlink()
    grid = [("x", [1, 2, 3]), ("hang_flag", [str(hang)]), ("fail_flag", [str(fail)])]
    lines = []
    runs, _ = sweep.sweep(toy, grid, out=out, tables=tables, echo=lambda *a, **k: lines.append(a),
                          jobs=JobOptions("submitit", cluster="local", max_parallel=2))  # the resume, from Python
    assert [r.status for r in runs] == ["skipped", "done", "done"], lines
    assert (x1 / "metrics.json").stat().st_mtime_ns == finished  # the finished run was not redone
    # the in-process sweep (today's path) over the same folder finds every run complete and writes the same table
    runs, _ = sweep.sweep(toy, grid, out=out, tables=tmp_path / "ref", echo=lambda *a, **k: None)
    assert [r.status for r in runs] == ["skipped"] * 3
    assert (tables / "toy.csv").read_text() == (tmp_path / "ref" / "toy.csv").read_text()
    assert list(pd.read_csv(tables / "toy.csv")["square"]) == [1, 4, 9]


@pytest.mark.slow  # three tiny quantization runs (two as jobs): ~30 s alone, minutes on a loaded 2-core machine
def test_quantize_grid_jobs_match_the_in_process_runs(tmp_path):
    small = {"num_inference_steps": 2, "target_height": 32, "target_width": 32, "num_frames": 5}
    sets = [*(f"{s}.{k}={v}" for s in ("calib", "eval") for k, v in small.items()), "calib.sample_steps=2",
            "eval.num_samples=1", "eval.eval_pos=[fake_quant]", "save.save_lightx2v=false"]
    grid = [("quant.video_gen.weight.bit", [8, 4])]
    quiet = {"echo": lambda *a, **k: None}
    runs, table = sweep.quantize_grid([TINY_T2V], grid, overrides=sets, name="g", out=tmp_path / "jobs",
                                      tables=tmp_path / "t1", jobs=JobOptions("submitit", cluster="local"), **quiet)
    assert [r.status for r in runs] == ["done", "done"] and all(len(r.logs) == 2 for r in runs)
    assert list(table["quant.video_gen.weight.bit"]) == [8, 4]
    assert table["mean_sqnr_db"][0] > table["mean_sqnr_db"][1]  # 8-bit weights beat 4-bit
    run_dir = tmp_path / "jobs" / "g" / runs[0].slug
    assert {"params.json", "metrics.json", "summary.json", "videos"} <= {p.name for p in run_dir.iterdir()}

    ref_runs, ref = sweep.quantize_grid([TINY_T2V], [("quant.video_gen.weight.bit", [8])], overrides=sets,
                                        name="g", out=tmp_path / "inproc", tables=tmp_path / "t2", **quiet)
    timing = [c for c in table.columns if "seconds" in c]
    assert timing  # the only columns allowed to differ
    pd.testing.assert_frame_equal(table.drop(columns=timing).iloc[:1], ref.drop(columns=timing))

    again, _ = sweep.quantize_grid([TINY_T2V], grid, overrides=sets, name="g", out=tmp_path / "jobs",
                                   tables=tmp_path / "t1", jobs=JobOptions("submitit", cluster="local"), **quiet)
    assert [r.status for r in again] == ["skipped", "skipped"]


@pytest.mark.parametrize("args, message", [
    (["--max-parallel", "0"], "--max-parallel 0: expected at least 1"),
    (["--slurm-partition", "gpu"], "--slurm-partition: only with --executor submitit"),
    (["-p", "quant.video_gen.weight.bitt", "8"], "bitt"),
    (["--set", "nonsense"], "expected the form a.b.c=value"),
])
def test_bad_grid_options_are_refused_before_any_run(tmp_path, capsys, args, message):
    argv = ["--configs", str(TINY_T2V), "--out", str(tmp_path / "runs"), "--tables", str(tmp_path / "t"), *args]
    assert sweep.quantize_grid_main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "t").exists()


def test_missing_config_and_absent_cluster_are_user_errors(tmp_path, capsys):
    assert sweep.quantize_grid_main(["--configs", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: config not found" in capsys.readouterr().err
    with pytest.raises(sweep.SweepError, match="--cluster slurm"):
        make_executor(JobOptions("submitit", cluster="slurm"), tmp_path / "logs", "toy")


def test_slurm_array_gets_the_job_resources(tmp_path, monkeypatch):
    """With Slurm's tools on PATH (stubs here), the executor asks for the resources of one job per array task."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    opts = JobOptions("submitit", slurm_partition="gpu", gpus_per_job=1, cpus_per_job=8, max_parallel=4,
                      timeout_min=90, mem_gb=64)
    executor = make_executor(opts, tmp_path / "logs", "toy")
    assert executor.cluster == "slurm"  # auto-detected
    script = executor._executor._make_submission_file_text("python -m job", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--time=90", "--mem=64GB",
                 "--job-name=vidquant-toy"):
        assert f"#SBATCH {line}" in script, script
    assert executor._executor.parameters["array_parallelism"] == 4


def test_the_bar_over_runs_advances_per_run_and_shows_in_a_terminal_only(tmp_path, monkeypatch):
    import dataclasses
    import io

    from tqdm import tqdm

    from vidquant.jobs import Run, progress_bar, run_all

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, shown in ((io.StringIO(), False), (Terminal(), True)):  # a log gets the status lines alone
        monkeypatch.setattr(sys, "stderr", stream)
        with progress_bar(2, "grid") as bar:
            assert bar.disable is not shown
    pending = [Run(TINY_T2V, {"x": x}, tmp_path / f"x{x}") for x in (1, 2)]
    lines, finished_before = [], []

    def fn(run: Run) -> Run:
        finished_before.append(bar.n)
        return dataclasses.replace(run, status="done")

    with tqdm(total=2, file=Terminal(), disable=False) as bar:
        runs = run_all(fn, pending, lambda run: ((run,), {}), None, out=tmp_path, name="g", on_finish=None,
                       echo=lambda text, **_: lines.append(text), bar=bar)
        assert finished_before == [0, 1] and bar.n == 2 and [r.status for r in runs] == ["done", "done"]
    assert lines == ["[1/2] g x1 ...", "[1/2] g x1: done in 0s", "[2/2] g x2 ...", "[2/2] g x2: done in 0s"]
