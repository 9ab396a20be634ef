"""Hardening round 2, sweeps: one folder per distinct parameter set, numbers parsed as numbers, corrupt metrics
mean incomplete, --force never loses a complete run, a lock per run folder, tables from every complete run on
disk. Notebook execution is replaced by a stub (`_execute`) so these run in milliseconds; the real papermill
path is covered by tests/test_notebooks.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidquant import sweep
from vidquant.fsutil import is_plain_name

REPO = Path(__file__).resolve().parents[1]


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12),
                    st.lists(st.integers(), max_size=3))


@settings(max_examples=300, deadline=None)
@given(a=_VALUES, b=_VALUES)
def test_slugs_are_plain_names_and_injective(a, b):
    sa, sb = sweep.slug({"p": a}), sweep.slug({"p": b})
    assert is_plain_name(sa) and not sa.startswith(".") and len(sa) <= 140
    if sweep._canonical({"p": a}) != sweep._canonical({"p": b}):
        assert sa != sb, (a, b)


@pytest.mark.parametrize("a, b", [
    ("a b", "a_b"), (0.5, "0.5"), (1, 1.0), (1, True), (True, "True"), (None, "None"), ([1, 2], "1+2"),
    ("x/y", "x_y"), ("e4m3", "e4m3 "), (8, "8"),
])
def test_distinct_values_get_distinct_folders(a, b):
    assert sweep.slug({"p": a}) != sweep.slug({"p": b})
    assert len(sweep.expand_grid([("p", [a, b])])) == 2


def test_plain_values_keep_readable_names_and_long_ones_are_bounded():
    assert sweep.slug({"alpha": 0.75, "w_bit": 4, "fmt": "e4m3", "sel": "first_sample"}) == \
        "alpha-0.75__w_bit-4__fmt-e4m3__sel-first_sample"
    long = sweep.slug({"config": "x" * 400})
    assert len(long) < 140 and "__h" in long
    assert sweep.slug({"config": "x" * 400}) == long  # deterministic


@pytest.mark.parametrize("text, value", [("1e-3", 0.001), ("2E5", 200000.0), ("-1.5e-2", -0.015), ("1", 1),
                                         ("0.5", 0.5), ("'0.5'", "0.5"), ("e4m3", "e4m3")])
def test_command_line_values_are_parsed_as_numbers(text, value):
    parsed = sweep.parse_value(text)
    assert parsed == value and type(parsed) is type(value)
    assert sweep._grid([["x", text]]) == [("x", [value])]


def _stub(monkeypatch, fail=False, calls=None):
    """Replace notebook execution: write params + metrics (or fail), as the real one does."""
    def execute(run, kernel, publish, timeout, echo_output=False):
        if calls is not None:
            calls.append(run.slug)
        run.run_dir.mkdir(parents=True)
        (run.run_dir / sweep.PARAMS_NAME).write_text(json.dumps(run.params))
        (run.run_dir / "toy.ipynb").write_text("executed")
        if fail:
            run.status, run.error = "failed", "boom"
            return
        (run.run_dir / sweep.METRICS_NAME).write_text(json.dumps({"square": run.params["x"] ** 2}))
        run.status, run.metrics = "done", {"square": run.params["x"] ** 2}
    monkeypatch.setattr(sweep, "_execute", execute)


def _complete_run(folder: Path, params: dict, metrics: dict) -> Path:
    run_dir = folder / sweep.slug(params)
    run_dir.mkdir(parents=True)
    (run_dir / sweep.PARAMS_NAME).write_text(json.dumps(params))
    (run_dir / sweep.METRICS_NAME).write_text(json.dumps(metrics))
    return run_dir


@pytest.mark.parametrize("content", ["", "{", "[]", "null", "\x00\x00"])
def test_corrupt_or_empty_metrics_mean_incomplete_and_the_run_is_redone(tmp_path, monkeypatch, content):
    run_dir = _complete_run(tmp_path / "toy", {"x": 3}, {})
    (run_dir / sweep.METRICS_NAME).write_text(content)
    assert sweep.complete_metrics(run_dir) is None
    calls = []
    _stub(monkeypatch, calls=calls)
    run = sweep.run_notebook("toy.ipynb", run_dir, {"x": 3})
    assert run.status == "done" and calls == [run_dir.name]
    assert json.loads((run_dir / sweep.METRICS_NAME).read_text()) == {"square": 9}


def test_failed_force_redo_keeps_the_complete_run(tmp_path, monkeypatch):
    run_dir = _complete_run(tmp_path / "toy", {"x": 3}, {"square": 9, "note": "original"})
    (run_dir / "clip.mp4").write_bytes(b"video")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    _stub(monkeypatch, fail=True)
    run = sweep.run_notebook("toy.ipynb", run_dir, {"x": 3}, force=True)
    assert run.status == "failed"
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    assert (run_dir.with_name(run_dir.name + ".failed") / "toy.ipynb").is_file()  # the failed attempt, to read
    assert not [p for p in run_dir.parent.iterdir() if ".old-" in p.name or ".tmp-" in p.name]


def test_successful_force_redo_replaces_the_run(tmp_path, monkeypatch):
    run_dir = _complete_run(tmp_path / "toy", {"x": 3}, {"square": 0})
    (run_dir / "stale.txt").write_text("old")
    _stub(monkeypatch)
    assert sweep.run_notebook("toy.ipynb", run_dir, {"x": 3}, force=True).status == "done"
    assert sweep.complete_metrics(run_dir) == {"square": 9} and not (run_dir / "stale.txt").exists()


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_force_redo_killed_midway_restores_the_complete_run(tmp_path, monkeypatch):
    folder = tmp_path / "toy"
    aside = folder / f".x-3.old-{_dead_pid()}-0123abcd"
    _complete_run(aside, {"x": 3}, {"square": 9})  # where the killed --force had moved it
    (folder / "x-3").mkdir()  # the killed redo's partial folder
    (folder / "x-3" / "half.txt").write_text("partial")
    calls = []
    _stub(monkeypatch, calls=calls)
    run = sweep.run_notebook("toy.ipynb", folder / "x-3", {"x": 3})
    assert run.status == "skipped" and calls == [] and run.metrics == {"square": 9}
    assert not aside.exists() and not (folder / "x-3" / "half.txt").exists()


def test_table_is_aggregated_from_every_complete_run_on_disk(tmp_path, monkeypatch):
    out, tables = tmp_path / "runs", tmp_path / "tables"
    folder = out / "toy"
    for x in (1, 2):
        _complete_run(folder, {"x": x}, {"square": x * x})
    broken = _complete_run(folder, {"x": 7}, {"square": 49})
    (broken / sweep.METRICS_NAME).write_text("")  # incomplete: not in the table
    alien = folder / "x-8"
    alien.mkdir()
    (alien / sweep.PARAMS_NAME).write_text(json.dumps({"x": 9}))  # params of another folder: not trusted
    (alien / sweep.METRICS_NAME).write_text(json.dumps({"square": 81}))
    nb = tmp_path / "toy.ipynb"
    nb.write_text("{}")
    monkeypatch.setattr(sweep, "_check_params", lambda notebook, names: {})
    _stub(monkeypatch)
    runs, table = sweep.sweep(nb, [("x", [3])], out=out, tables=tables, echo=lambda *a, **k: None)
    assert [r.status for r in runs] == ["done"]
    assert list(table["x"]) == [3, 1, 2] and list(table["square"]) == [9, 1, 4]  # this grid first, then disk
    assert list(pd.read_csv(tables / "toy.csv")["x"]) == [3, 1, 2]
    assert sorted(p.name for p in tables.iterdir()) == ["toy.csv", "toy.md"]  # written atomically, no temps


LOCK_HOLDER = """
import sys, time
from pathlib import Path
from vidquant import sweep
from vidquant.fsutil import is_plain_name
run_dir = Path(sys.argv[1])
with sweep._locked(run_dir):
    print("LOCKED", flush=True)
    time.sleep(1.5)
    run_dir.mkdir(parents=True)
    (run_dir / "params.json").write_text('{"x": 3}')
    (run_dir / "metrics.json").write_text('{"square": 9, "by": "other"}')
"""


def test_two_sweeps_on_one_folder_wait_for_each_other(tmp_path, monkeypatch):
    run_dir = tmp_path / "toy" / "x-3"
    run_dir.parent.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "lib")})
    try:
        assert proc.stdout.readline().strip() == "LOCKED"
        calls = []
        _stub(monkeypatch, calls=calls)
        t0 = time.time()
        run = sweep.run_notebook("toy.ipynb", run_dir, {"x": 3})
        waited = time.time() - t0
    finally:
        proc.wait(timeout=30)
    assert waited > 0.5 and calls == []  # it waited, then found the other sweep's complete run
    assert run.status == "skipped" and run.metrics["by"] == "other"
