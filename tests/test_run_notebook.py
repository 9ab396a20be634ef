"""`vidquant run-notebook NB -p name value`: papermill's command with the output path chosen, from anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from vidquant.cli import main as cli_main
from vidquant.run_notebook import main, resolve_notebook

REPO = Path(__file__).resolve().parents[1]

PARAMS = "x = 2\noutput_dir = 'unset'\nmetrics_path = None\n"
BODY = """\
import json, pathlib, sys
print(f"cell output x={x}", flush=True)
print("progress 3/3", file=sys.stderr, flush=True)
path = pathlib.Path(metrics_path)
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps({"square": x * x}))
"""


@pytest.fixture
def toy(tmp_path) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PARAMS, metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell(BODY)])
    nb.metadata["kernelspec"] = {"name": "vidquant", "display_name": "vidquant", "language": "python"}
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nbformat.write(nb, folder / "toy.ipynb")
    return folder / "toy.ipynb"


def test_runs_as_written_and_says_where_the_result_is(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(toy.parent)  # as in a terminal opened in notebooks/
    out = tmp_path / "runs"
    assert cli_main(["run-notebook", "toy.ipynb", "-p", "x", "3", "--out", str(out)]) == 0
    executed = out / "toy" / "x-3" / "toy.ipynb"
    text = capsys.readouterr()
    assert f"executed notebook: {executed}" in text.out
    assert "cell output x=3" in text.out and "progress 3/3" in text.err  # the cells' output streams live
    assert json.loads((out / "toy" / "x-3" / "metrics.json").read_text()) == {"square": 9}
    assert "cell output x=3" in executed.read_text()  # and the executed notebook keeps it


def test_bad_input_is_a_one_line_error(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(toy.parent)
    assert main(["toy.ipynb", "-p", "y", "1", "--out", str(tmp_path / "runs")]) == 2
    assert "not a parameter of toy.ipynb" in capsys.readouterr().err
    assert main(["nope.ipynb"]) == 2
    assert "nope.ipynb: notebook not found" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_repository_notebooks_resolve_from_root_and_from_notebooks(monkeypatch, tmp_path):
    expected = REPO / "notebooks" / "03_smoothquant.ipynb"
    monkeypatch.chdir(REPO)
    assert resolve_notebook("notebooks/03_smoothquant.ipynb") == expected
    assert resolve_notebook("03_smoothquant.ipynb") == expected
    monkeypatch.chdir(REPO / "notebooks")
    assert resolve_notebook("03_smoothquant.ipynb") == expected
    assert resolve_notebook("03_smoothquant") == expected
