"""The numbered notebooks and the papermill sweep.

* Structure (fast): the notebooks are the sources, committed stripped (nbstripout: no outputs, no execution
  counts; `make strip-notebooks`), each with one `parameters` cell that papermill parses completely (with the
  `output_dir` / `metrics_path` the sweep sets), no plotting code of their own (figures come from
  `vidquant.plots`, whose labels are tested), and an executed copy under results/notebooks/.
* Execution: every notebook runs under papermill on a random tiny model with small sizes (2 steps, 32×32,
  5 frames, one eval prompt), records its metrics, and the metrics must show what the notebook is about:
  SmoothQuant and GPTQ at least as good as RTN at the same settings, exports that verify, the real quantized
  runtime closer to fake-quant than to float. All ten run in the default suite: ~25-40 s each on a loaded
  2-core machine (measured), ~5 min together.
* Sweep (fast toy notebook, no model): grid expansion, a failing run reported while the others finish, skip
  of complete runs, redo of an unfinished one, aggregation into csv / md, HTML renders.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from vidquant import sweep
from vidquant.records import read_metrics

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
STEMS = [p.stem for p in NOTEBOOKS]
STRIP = [sys.executable, "-m", "nbstripout", "--keep-id"]  # as `make strip-notebooks` runs it


# ------------------------------------------------------------------------------------------------- structure
def test_all_notebooks_exist():
    assert STEMS == ["00_quickstart", "01_calibration_data", "02_rtn_baseline", "03_smoothquant", "04_awq",
                     "05_gptq", "06_fp8_emulation", "07_lightx2v_export", "08_quantized_inference", "09_results",
                     "10_wan22"]


def test_committed_stripped(tmp_path):
    """nbstripout would change nothing (no outputs, execution counts or run metadata); and it does catch an
    executed cell, so the check can fail."""
    found = subprocess.run([*STRIP, "--verify", *map(str, NOTEBOOKS)], capture_output=True, text=True)
    assert found.returncode == 0, f"notebooks with outputs; run `make strip-notebooks`:\n{found.stdout}"
    executed = nbformat.read(NOTEBOOKS[0], as_version=4)
    cell = next(c for c in executed.cells if c.cell_type == "code")
    cell.execution_count = 1
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    nbformat.write(executed, tmp_path / "executed.ipynb")
    assert subprocess.run([*STRIP, "--verify", str(tmp_path / "executed.ipynb")], capture_output=True).returncode


@pytest.mark.parametrize("path", NOTEBOOKS, ids=STEMS)
def test_no_outputs_and_no_plotting_code(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; run `make strip-notebooks` before committing"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert not re.search(r"\bplt\.|matplotlib|\.subplots\(", code), \
        f"{path.name}: draws its own figure; add it to vidquant.plots (labelled, tested) and call that"
    assert nb.metadata.kernelspec.name == "vidquant", f"{path.name}: runs on the project's kernel"
    for cell in nb.cells[1:]:  # a figure is a cell's value: one that is not the last statement is never shown
        if cell.cell_type == "code" and "parameters" not in cell.metadata.get("tags", []):
            statements = [ast.get_source_segment(cell.source, s) for s in ast.parse(cell.source).body[:-1]
                          if isinstance(s, ast.Expr)]
            lost = [s for s in statements if re.match(r"(plots\.|show_clips\()", s)]
            assert not lost, f"{path.name}: {lost[0][:60]}... is not shown (not the cell's last statement)"


PUBLISHED = ROOT / "results" / "notebooks"
ALLOWED_MIME = {"text/plain", "text/html", "image/png"}


def _code(nb) -> list[str]:
    """The code cells' sources, without the cell papermill injects."""
    return [c.source for c in nb.cells
            if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=STEMS)
def test_executed_copy_is_committed_and_readable_anywhere(path):
    """results/notebooks/<nb>.ipynb: the current source, every cell run without error, outputs that any viewer
    shows without trust or network (PNG figures and animated-PNG clips, plain tables, text), no machine paths."""
    copy = PUBLISHED / path.name
    assert copy.is_file(), f"{copy} missing: run `make results-notebooks`"
    source, executed = nbformat.read(path, as_version=4), nbformat.read(copy, as_version=4)
    assert _code(executed) == _code(source), \
        f"{copy.name} is out of date: run `make results-notebooks` (or `vidquant notebooks " \
        f"{path.relative_to(ROOT)}`, with the Makefile's METHOD_EVAL parameters for 02-06)"
    outputs = []
    for cell in executed.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None, f"{copy.name}: a cell did not run"
            outputs += cell.outputs
    assert not [o for o in outputs if o.output_type == "error"], f"{copy.name}: a cell failed"
    mimes = {m for o in outputs for m in o.get("data", {})}
    assert mimes <= ALLOWED_MIME, f"{copy.name}: outputs that need trust, scripts or a CDN: {mimes - ALLOWED_MIME}"
    html = " ".join(o.data["text/html"] for o in outputs if "text/html" in o.get("data", {}))
    assert not re.search(r"<script|<video|<iframe|https?://", html), f"{copy.name}: HTML output needs trust/network"
    text = copy.read_text()
    assert str(ROOT) not in text and sys.prefix not in text, f"{copy.name}: machine-specific paths"
    if any("show_clips(" in code for code in _code(source)):
        import base64

        pngs = [base64.b64decode(o.data["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
        assert any(b"acTL" in png[:200] for png in pngs), f"{copy.name}: no animated clip"


def test_executed_copies_stay_small():
    sizes = {p.name: p.stat().st_size for p in PUBLISHED.glob("*.ipynb")}
    assert sum(sizes.values()) < 8 * 2**20, sizes  # results/ as a whole must stay under 20 MB


@pytest.mark.parametrize("path", NOTEBOOKS, ids=STEMS)
def test_parameters_cell_parses(path):
    import papermill

    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected one cell tagged 'parameters', found {len(tagged)}"
    assigned = re.findall(r"^(\w+)\s*=", tagged[0].source, flags=re.M)
    parsed = list(papermill.inspect_notebook(str(path)))
    assert parsed == assigned, f"{path.name}: papermill could not parse every parameter line"
    assert {"output_dir", "metrics_path"} <= set(parsed)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


# ------------------------------------------------------------------------------------------------- execution
SMALL = {"num_inference_steps": 2, "sample_steps": 2, "height": 32, "width": 32, "num_frames": 5}
CASES = {
    # stem: (task, extra parameters)
    "00_quickstart": ("i2v", {"num_eval_samples": 1}),
    "01_calibration_data": ("t2v", {}),
    "02_rtn_baseline": ("t2v", {"num_eval_samples": 1}),
    "03_smoothquant": ("t2v", {"num_eval_samples": 1, "alpha": 0.6}),
    "04_awq": ("t2v", {"num_eval_samples": 1, "n_grid": 4}),
    "05_gptq": ("t2v", {"num_eval_samples": 1, "w_bit": 4, "a_bit": 0}),
    "06_fp8_emulation": ("t2v", {"num_eval_samples": 1}),
    "07_lightx2v_export": ("t2v", {"num_eval_samples": 1}),
    "08_quantized_inference": ("i2v", {"num_eval_samples": 1}),
}
EXPECTED_METRICS = {
    "00_quickstart": {"video_psnr", "verify_problems", "runtime.psnr_vs_float"},
    "01_calibration_data": {"captured_calls", "calib_mib", "outlier_ratio.ffn_up"},
    "02_rtn_baseline": {"mean_sqnr_db", "mean_timestep_rel_err", "video_psnr"},
    "03_smoothquant": {"alpha", "mean_sqnr_db", "rtn.mean_sqnr_db", "outlier_ratio_after"},
    "04_awq": {"mean_sqnr_db", "mean_ratio", "rtn.video_psnr"},
    "05_gptq": {"mean_sqnr_db", "rtn.mean_sqnr_db"},
    "06_fp8_emulation": {"tie_points_differ", "weight_codes_differ_frac", "other_rounding.video_psnr"},
    "07_lightx2v_export": {"compression", "verify_problems.export", "verify_problems.converted"},
    "08_quantized_inference": {"runtime.psnr_vs_float", "runtime.psnr_vs_fake_quant", "scheme"},
}


def _execute(stem: str, params: dict, out: Path, monkeypatch) -> dict:
    import papermill

    # The kernel inherits the environment. Tiny matrices gain nothing from threads, and on a shared machine
    # OpenMP threads waiting on each other make a tiny model several times slower.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(ROOT / "notebooks" / f"{stem}.ipynb"), str(out / f"{stem}.ipynb"),
                               parameters={**params, "output_dir": str(out)}, kernel_name="python3",
                               progress_bar=False, cwd=str(ROOT / "notebooks"))  # as JupyterLab starts it
    return read_metrics(out / "metrics.json")


def _check_behaviour(stem: str, m: dict) -> None:
    """What each notebook demonstrates, asserted on its recorded metrics (the settings are in CASES / SMALL)."""
    if stem == "00_quickstart":
        assert m["verify_problems"] == 0
        assert m["runtime.psnr_vs_float"] > 20, m
    elif stem == "01_calibration_data":
        # sample_steps captured transformer calls per calibration prompt
        assert m["captured_calls"] == m["samples"] * SMALL["sample_steps"] > 0 and m["calib_mib"] > 0, m
    elif stem == "02_rtn_baseline":
        assert m["mean_sqnr_db"] > 20 and 0 < m["mean_timestep_rel_err"] < 0.1, m
    elif stem in ("03_smoothquant", "05_gptq"):
        # the method's point: at the same settings, a better per-layer SQNR than RTN
        assert m["mean_sqnr_db"] >= m["rtn.mean_sqnr_db"], (stem, m["mean_sqnr_db"], m["rtn.mean_sqnr_db"])
    elif stem == "04_awq":
        assert 0 <= m["mean_ratio"] < 1 and m["mean_sqnr_db"] > 20, m
    elif stem == "06_fp8_emulation":
        # qtorch (ties away from zero) and torch's cast (ties to even) differ on the tie points, rarely on weights
        assert m["tie_points_differ"] > 0 and 0 <= m["weight_codes_differ_frac"] < 0.01, m
    elif stem == "07_lightx2v_export":
        assert m["verify_problems.export"] == 0 and m["verify_problems.converted"] == 0, m
        assert m["compression"] > 1
    elif stem == "08_quantized_inference":
        # real int8 GEMMs reproduce fake-quant far more closely than either reproduces float
        assert m["runtime.psnr_vs_fake_quant"] > m["runtime.psnr_vs_float"], m
        assert m["runtime.psnr_vs_fake_quant"] > 30, m


@pytest.mark.parametrize("stem", list(CASES))
def test_notebook_executes(stem, tiny_dirs, tmp_path, monkeypatch):
    task, extra = CASES[stem]
    metrics = _execute(stem, {"model_path": str(tiny_dirs[task]), **SMALL, **extra}, tmp_path / stem, monkeypatch)
    missing = EXPECTED_METRICS[stem] - set(metrics)
    assert not missing, f"{stem}: metrics.json lacks {sorted(missing)}"
    _check_behaviour(stem, metrics)


def test_results_notebook_executes(tmp_path, monkeypatch):
    """09 on a small results tree: two default method runs and a two-point sweep table."""
    runs, tables = tmp_path / "runs", tmp_path / "tables"
    for stem, method, psnr in (("02_rtn_baseline", "RTN", 30.0), ("03_smoothquant", "SmoothQuant", 33.0)):
        run = runs / stem / "defaults"
        run.mkdir(parents=True)
        (run / "params.json").write_text("{}")
        (run / "metrics.json").write_text(json.dumps({"method": method, "weight": "int8", "act": "int8",
                                                      "mean_sqnr_db": psnr + 5, "video_psnr": psnr,
                                                      "mean_timestep_rel_err": 0.01}))
    tables.mkdir()
    pd.DataFrame({"run": ["alpha-0.5", "alpha-0.75"], "alpha": [0.5, 0.75], "video_psnr": [32.0, 33.0],
                  "mean_sqnr_db": [37.0, 38.0], "rtn.video_psnr": [30.0, 30.0]}).to_csv(tables / "03_smoothquant.csv",
                                                                                        index=False)
    metrics = _execute("09_results", {"runs_dir": str(runs), "tables_dir": str(tables),
                                      "plots_dir": str(tmp_path / "plots")}, tmp_path / "09", monkeypatch)
    assert metrics["runs"] == 2 and metrics["sweep_tables"] == 1 and metrics["figures"] == 2
    assert metrics["best_method"].startswith("03_smoothquant")
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"methods.png", "03_smoothquant.png"}


# ------------------------------------------------------------------------------------------------- sweep
TOY_PARAMS = """\
x = 1
label = "a"
fail_flag = ""  # a file; while it exists, the run with x of 2 raises
output_dir = "out"
metrics_path = None
"""
TOY_BODY = """\
import json, os, pathlib
print("step 1/2\\rstep 2/2")  # a progress bar's updates
if x == 2 and fail_flag and os.path.exists(fail_flag):
    raise ValueError("boom at x=2")
path = pathlib.Path(metrics_path or f"{output_dir}/metrics.json")
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps({"square": x * x, "label": label}))
"""


@pytest.fixture
def toy_notebook(tmp_path) -> Path:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# toy"),
        nbformat.v4.new_code_cell(TOY_PARAMS, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(TOY_BODY),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "toy.ipynb"
    nbformat.write(nb, path)
    return path


def test_expand_grid_and_slugs():
    grid = sweep.expand_grid([("alpha", [0.5, 0.75]), ("w_bit", [4, 8])])
    assert grid == [{"alpha": 0.5, "w_bit": 4}, {"alpha": 0.5, "w_bit": 8},
                    {"alpha": 0.75, "w_bit": 4}, {"alpha": 0.75, "w_bit": 8}]
    assert [sweep.slug(p) for p in grid[:2]] == ["alpha-0.5__w_bit-4", "alpha-0.5__w_bit-8"]
    assert sweep.slug({}) == "defaults"
    assert sweep.slug({"config": "configs/a b.yaml"}).startswith("config-configs_a_b.yaml__h")  # lossy: hashed
    assert sweep.expand_grid([("a", [1, 1, 2])]) == [{"a": 1}, {"a": 2}]
    with pytest.raises(sweep.SweepError, match="more than once"):
        sweep.expand_grid([("a", [1]), ("a", [2])])


@pytest.mark.parametrize("text,value", [("0.75", 0.75), ("8", 8), ("true", True), ("True", True), ("None", None),
                                        ("e4m3", "e4m3"), ("configs/x.yaml", "configs/x.yaml")])
def test_parse_value(text, value):
    assert sweep.parse_value(text) == value


def test_unknown_parameter_is_refused(toy_notebook, tmp_path):
    with pytest.raises(sweep.SweepError, match=r"not a parameter of toy.ipynb \(did you mean 'label'\?\)"):
        sweep.sweep(toy_notebook, [("lable", ["b"])], out=tmp_path / "runs", tables=tmp_path / "tables")
    with pytest.raises(sweep.SweepError, match="set by the sweep itself"):
        sweep.sweep(toy_notebook, [("output_dir", ["x"])], out=tmp_path / "runs", tables=tmp_path / "tables")


def test_sweep_failure_skip_redo_aggregate(toy_notebook, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))  # the notary's signatures (trust)
    out, tables, published = tmp_path / "runs", tmp_path / "tables", tmp_path / "published"
    flag = tmp_path / "fail"
    flag.touch()
    argv = [str(toy_notebook), "-p", "x", "1", "2", "3", "-p", "fail_flag", str(flag), "--out", str(out),
            "--tables", str(tables), "--publish", str(published)]

    # 1. x=2 fails; x=1 and x=3 still run; exit status 1 and the failure named at the end
    assert sweep.main(argv) == 1
    text = capsys.readouterr().out
    assert "1 failed" in text and "boom at x=2" in text
    runs = out / "toy"
    slugs = {p.name for p in runs.iterdir() if not p.name.startswith(".")}  # hidden: the per-run locks
    assert slugs == {sweep.slug({"x": x, "fail_flag": str(flag)}) for x in (1, 2, 3)}
    done = sorted(runs.glob("x-[13]*/metrics.json"))
    assert len(done) == 2 and not list(runs.glob("x-2*/metrics.json"))
    assert not list(runs.glob("*/metrics.json.partial"))  # renamed on success, never left behind
    assert (next(runs.glob("x-2*")) / "toy.ipynb").is_file()  # the failed notebook is kept for reading
    table = pd.read_csv(tables / "toy.csv")
    assert list(table["x"]) == [1, 3] and list(table["square"]) == [1, 9]
    assert list(table.columns[:3]) == ["run", "x", "fail_flag"]
    assert "| run" in (tables / "toy.md").read_text()
    copies = sorted((published / "toy").glob("*.ipynb"))
    assert [p.stem for p in copies] == [p.parent.name for p in done]  # the complete runs, published
    _check_published(copies[0])
    first_mtime = {p: p.stat().st_mtime_ns for p in done}

    # 2. rerun: complete runs are skipped, the failed one is redone (now succeeding), the table has all three
    flag.unlink()
    assert sweep.main(argv) == 0
    text = capsys.readouterr().out
    assert "1 done, 2 skipped" in text
    assert all(p.stat().st_mtime_ns == m for p, m in first_mtime.items())
    assert list(pd.read_csv(tables / "toy.csv")["square"]) == [1, 4, 9]

    # 3. a run killed before finishing (folder without metrics.json) is redone from scratch
    victim = next(runs.glob("x-3*"))
    (victim / "metrics.json").unlink()
    (victim / "stale.txt").write_text("left by a killed run")
    runs_list, _ = sweep.sweep(toy_notebook, [("x", [3]), ("fail_flag", [str(flag)])], out=out, tables=tables,
                               echo=lambda *a, **k: None)
    assert [r.status for r in runs_list] == ["done"]
    assert not (victim / "stale.txt").exists() and (victim / "metrics.json").is_file()


def _check_published(path: Path) -> None:
    """An executed copy as published: outputs kept, a progress bar's last state only, trusted here."""
    from nbformat.sign import NotebookNotary

    nb = nbformat.read(path, as_version=4)
    streams = [o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"]
    assert streams == ["step 2/2\n"], streams
    assert NotebookNotary().check_signature(nb)


def test_publish_notebook_shows_what_a_terminal_would(tmp_path, monkeypatch):
    """A progress bar's updates (one stream message each) become its final state; the checkout's path goes."""
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
    cell = nbformat.v4.new_code_cell("run()", execution_count=1, outputs=[
        nbformat.v4.new_output("stream", name="stderr", text="blocks:  50%|# | 1/2\r"),
        nbformat.v4.new_output("stream", name="stderr", text="blocks: 100%|##| 2/2\r"),
        nbformat.v4.new_output("stream", name="stderr", text="\n"),
        nbformat.v4.new_output("stream", name="stdout", text=f"wrote {ROOT}/results/runs/x\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": f"'{ROOT}/a'"}, execution_count=1)])
    executed = nbformat.v4.new_notebook(cells=[cell])
    executed.metadata["papermill"] = {"input_path": f"{ROOT}/notebooks/x.ipynb", "parameters": {"p": f"{ROOT}/y"}}
    nbformat.write(executed, tmp_path / "executed.ipynb")
    out = sweep.publish_notebook(tmp_path / "executed.ipynb", tmp_path / "pub" / "copy.ipynb").read_text()
    outputs = nbformat.reads(out, as_version=4).cells[0].outputs
    assert [o.get("text") for o in outputs[:2]] == ["blocks: 100%|##| 2/2\n", "wrote results/runs/x\n"]
    assert outputs[2].data["text/plain"] == "'a'" and str(ROOT) not in out


def test_notebooks_main_runs_each_with_defaults(toy_notebook, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
    out, tables, published = tmp_path / "runs", tmp_path / "tables", tmp_path / "published"
    common = ["--out", str(out), "--tables", str(tables), "--publish", str(published)]
    assert sweep.notebooks_main([str(toy_notebook), "-p", "not_a_param", "1", *common]) == 2
    assert "not a parameter of any" in capsys.readouterr().err
    tables.mkdir()
    pd.DataFrame({"notebook": ["00_other", "toy"], "metric": ["psnr", "old"], "value": [31.5, 1]}).to_csv(
        tables / "notebooks.csv", index=False)  # a run of another notebook, and an earlier one of this
    assert sweep.notebooks_main([str(toy_notebook), "-p", "x", "5", *common]) == 0
    assert read_metrics(out / "toy" / "defaults" / "metrics.json") == {"square": 25, "label": "a"}
    _check_published(published / "toy.ipynb")
    long = pd.read_csv(tables / "notebooks.csv")
    assert list(long["notebook"]) == ["00_other", "toy", "toy"] and list(long["metric"]) == ["psnr", "square", "label"]
