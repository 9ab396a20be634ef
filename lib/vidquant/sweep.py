"""Papermill batches over the notebooks: `vidquant sweep` (a parameter grid) and `vidquant notebooks`
(every notebook with its defaults).

A run executes one notebook with one set of parameters into its own folder
``<out>/<notebook-stem>/<param-slug>/`` (the executed notebook, ``params.json``, ``metrics.json`` and
whatever the notebook writes to its ``output_dir``: clips, tables). The sweep injects two parameters every
notebook has: ``output_dir`` (the run folder) and ``metrics_path`` (a temporary name in it). When the
notebook finishes, the temporary metrics file is renamed to ``metrics.json``: a run is complete exactly when
``metrics.json`` exists, so a killed run is redone and a complete one is skipped (``--force`` redoes it).
A failing run does not stop the others; failures are listed at the end and the exit status is 1.

Afterwards the complete runs of the grid are aggregated into ``<tables>/<stem>.csv`` and ``.md`` (one row per
run: its parameters, then its metrics) and each executed notebook is rendered to
``<rendered>/<stem>/<slug>.html``.
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from vidquant.notebook import read_metrics, repo_root

__all__ = ["Run", "SweepError", "expand_grid", "parse_value", "slug", "notebook_parameters", "run_notebook",
           "render_html", "aggregate", "sweep", "run_notebooks", "main", "notebooks_main"]

log = logging.getLogger("vidquant.sweep")

METRICS_NAME = "metrics.json"
PARTIAL_SUFFIX = ".partial"
PARAMS_NAME = "params.json"
DEFAULT_SLUG = "defaults"
#: The project's Jupyter kernel, installed into the venv by scripts/setup_env.sh (never the user's `python3`).
KERNEL = "vidquant"
#: Parameters the sweep sets itself; every notebook declares them in its `parameters` cell.
RESERVED = ("output_dir", "metrics_path")


class SweepError(ValueError):
    """A sweep that cannot start (unknown notebook, parameter or value); the message says which."""


@dataclass
class Run:
    """One notebook execution: its parameters, its folder and how it went."""

    notebook: Path
    params: dict[str, Any]
    run_dir: Path
    status: str = "pending"  # "done" (ran now) | "skipped" (already complete) | "failed"
    seconds: float = 0.0
    error: str = ""
    html: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.run_dir.name

    @property
    def complete(self) -> bool:
        return self.status in ("done", "skipped")


# ------------------------------------------------------------------------------------------------ grid
def parse_value(text: str) -> Any:
    """A command-line value as papermill and ``--set`` read it: a YAML scalar (``0.75`` → float, ``8`` → int,
    ``true`` → bool, ``e4m3`` → str), plus Python's ``True`` / ``False`` / ``None``."""
    if text in ("None", "none", "null"):
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, dict) or value is None else value


def expand_grid(grid: Sequence[tuple[str, Sequence[Any]]]) -> list[dict[str, Any]]:
    """Every combination of the values, in order (the last parameter varies fastest); duplicates dropped."""
    names = [name for name, _ in grid]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise SweepError(f"parameter(s) {dup} given more than once; give every value after one -p")
    out: list[dict[str, Any]] = []
    for combo in itertools.product(*[list(values) for _, values in grid]):
        params = dict(zip(names, combo))
        if params not in out:
            out.append(params)
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "+".join(_fmt(v) for v in value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(value)).strip("_") or "_"


def slug(params: Mapping[str, Any]) -> str:
    """Folder name of a run: ``alpha-0.75``, ``alpha-0.75__w_bit-4``; ``defaults`` for no parameters."""
    if not params:
        return DEFAULT_SLUG
    return "__".join(f"{name}-{_fmt(value)}" for name, value in params.items())


# ------------------------------------------------------------------------------------------------ one run
def notebook_parameters(notebook: str | os.PathLike) -> dict[str, Any]:
    """The notebook's `parameters` cell as {name: default} (papermill's inspection; defaults evaluated
    where they are literals, else kept as their source text)."""
    import ast

    import papermill

    logging.getLogger("papermill").setLevel(logging.WARNING)  # not its INFO lines; its warnings stay
    try:
        found = papermill.inspect_notebook(str(notebook))
    except Exception as err:  # noqa: BLE001 - papermill raises several types for unreadable notebooks
        raise SweepError(f"{notebook}: cannot read the notebook's parameters ({err})") from err
    out = {}
    for name, info in found.items():
        text = info.get("default")
        try:
            out[name] = ast.literal_eval(text) if text is not None else None
        except (ValueError, SyntaxError):
            out[name] = text
    return out


def _relative(path: Path) -> str:
    """A path as the notebook should see it: relative to the repository root when inside it (the notebooks
    `chdir` there), else absolute. Keeps machine-specific prefixes out of rendered notebooks."""
    path = path.resolve()
    try:
        return str(path.relative_to(repo_root()))
    except ValueError:
        return str(path)


def render_html(notebook: str | os.PathLike, html: str | os.PathLike) -> Path:
    """Render an executed notebook to a standalone HTML file (nbconvert's lab template)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    html = Path(html)
    html.parent.mkdir(parents=True, exist_ok=True)
    tmp = html.with_name(html.name + ".writing")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, html)
    return html


def _error_text(err: BaseException) -> str:
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    return f"{type(err).__name__}: {err}"


def run_notebook(
    notebook: str | os.PathLike,
    run_dir: str | os.PathLike,
    params: Mapping[str, Any] | None = None,
    *,
    kernel: str = KERNEL,
    html: str | os.PathLike | None = None,
    force: bool = False,
    timeout: int | None = None,
    echo_output: bool = False,
) -> Run:
    """Execute `notebook` into `run_dir` with `params` (plus `output_dir` / `metrics_path`). `echo_output`: show
    papermill's cell progress and the cells' stdout / stderr (progress bars) live in this terminal.

    Skips the run when ``run_dir/metrics.json`` exists (unless `force`); otherwise clears what a previous,
    unfinished attempt left. Exceptions from the notebook are caught and reported in the returned Run.
    """
    import papermill

    logging.getLogger("papermill").setLevel(logging.WARNING)
    notebook, run_dir = Path(notebook), Path(run_dir)
    run = Run(notebook, dict(params or {}), run_dir)
    metrics = run_dir / METRICS_NAME
    if metrics.is_file() and not force:
        run.status = "skipped"
        run.metrics = read_metrics(metrics)
        return run
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    partial = run_dir / (METRICS_NAME + PARTIAL_SUFFIX)
    (run_dir / PARAMS_NAME).write_text(json.dumps(run.params, indent=2, sort_keys=True, default=str) + "\n")
    executed = run_dir / notebook.name
    injected = {**run.params, "output_dir": _relative(run_dir), "metrics_path": _relative(partial)}
    t0 = time.time()
    try:
        papermill.execute_notebook(str(notebook), str(executed), parameters=injected, kernel_name=kernel,
                                   progress_bar=echo_output, cwd=str(repo_root()), execution_timeout=timeout,
                                   stdout_file=sys.stdout if echo_output else None,
                                   stderr_file=sys.stderr if echo_output else None)
        if not partial.is_file():
            raise RuntimeError(f"the notebook finished without recording metrics at {partial} "
                               "(its last cell should call vidquant.notebook.record_metrics(..., metrics_path))")
        os.replace(partial, metrics)
        run.status = "done"
        run.metrics = read_metrics(metrics)
    except Exception as err:  # noqa: BLE001 - a failing run is reported, the others go on
        run.status, run.error = "failed", _error_text(err)
    run.seconds = time.time() - t0
    if executed.is_file() and html is not None and run.status == "done":
        try:
            run.html = render_html(executed, html)
        except Exception as err:  # noqa: BLE001 - a render failure should not lose the run
            log.warning("could not render %s: %s", executed, err)
    return run


# ------------------------------------------------------------------------------------------------ tables
#: Metrics listed first in the tables and shown in the markdown version (with their `rtn.` baselines).
HEADLINE = ("video_psnr", "video_ssim", "mean_sqnr_db", "min_sqnr_db", "mean_timestep_rel_err", "video_colour_ok",
            "video_direction_ok")


def aggregate(runs: Sequence[Run], tables_dir: str | os.PathLike, name: str) -> pd.DataFrame:
    """One row per complete run → ``<tables_dir>/<name>.csv`` (run, parameters, headline metrics, every other
    metric) and ``<name>.md`` (run, parameters and the headline metrics with their RTN baselines)."""
    rows = []
    param_names: list[str] = []
    for run in runs:
        if not run.complete:
            continue
        for p in run.params:
            if p not in param_names:
                param_names.append(p)
        rows.append({"run": run.slug, **run.params, **run.metrics})
    df = pd.DataFrame(rows)
    short = df
    if not df.empty:
        rest = [c for c in df.columns if c not in ("run", *param_names)]
        first = [m for h in HEADLINE for m in (h, f"rtn.{h}") if m in rest]
        df = df[["run", *param_names, *first, *sorted(set(rest) - set(first))]]
        short = df[["run", *param_names, *first]]
    tables_dir = Path(tables_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(tables_dir / f"{name}.csv", index=False)
    note = f"Headline metrics; every column in `{name}.csv`." if not df.empty else ""
    (tables_dir / f"{name}.md").write_text(_markdown(short, name, note) + "\n")
    return df


def _markdown(df: pd.DataFrame, name: str, note: str = "") -> str:
    if df.empty:
        return f"# {name}\n\n(no complete runs)"
    head = f"# {name}\n\n" + (f"{note}\n\n" if note else "")
    return head + df.to_markdown(index=False, floatfmt=".4g")


# ------------------------------------------------------------------------------------------------ sweeps
def _check_params(notebook: Path, names: Sequence[str]) -> dict[str, Any]:
    declared = notebook_parameters(notebook)
    missing = [r for r in RESERVED if r not in declared]
    if missing:
        raise SweepError(f"{notebook}: its parameters cell lacks {missing}; the sweep needs them to place outputs")
    for name in names:
        if name in RESERVED:
            raise SweepError(f"-p {name}: set by the sweep itself (use --out)")
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SweepError(f"-p {name}: not a parameter of {notebook.name}{hint}; it has: "
                             f"{', '.join(n for n in declared if n not in RESERVED)}")
    return declared


def sweep(
    notebook: str | os.PathLike,
    grid: Sequence[tuple[str, Sequence[Any]]],
    *,
    out: str | os.PathLike = "results/runs",
    tables: str | os.PathLike = "results/tables",
    rendered: str | os.PathLike | None = "results/rendered",
    kernel: str = KERNEL,
    force: bool = False,
    timeout: int | None = None,
    echo=print,
) -> tuple[list[Run], pd.DataFrame]:
    """Run every combination of `grid` (``[("alpha", [0.5, 0.75]), ...]``) and aggregate the complete runs."""
    notebook = Path(notebook)
    if not notebook.is_file():
        raise SweepError(f"{notebook}: notebook not found")
    _check_params(notebook, [n for n, _ in grid])
    combos = expand_grid(grid)
    stem = notebook.stem
    runs = []
    for i, params in enumerate(combos, 1):
        run_dir = Path(out) / stem / slug(params)
        html = None if rendered is None else Path(rendered) / stem / f"{run_dir.name}.html"
        echo(f"[{i}/{len(combos)}] {stem} {run_dir.name} ...", end=" ", flush=True)
        run = run_notebook(notebook, run_dir, params, kernel=kernel, html=html, force=force, timeout=timeout)
        echo(_status_line(run))
        runs.append(run)
    table = aggregate(runs, tables, stem)
    return runs, table


def _status_line(run: Run) -> str:
    if run.status == "skipped":
        return "complete, skipped"
    if run.status == "failed":
        return f"FAILED after {run.seconds:.0f}s: {run.error}"
    return f"done in {run.seconds:.0f}s"


def _report(runs: Sequence[Run], echo=print) -> int:
    failed = [r for r in runs if r.status == "failed"]
    done = sum(r.status == "done" for r in runs)
    skipped = sum(r.status == "skipped" for r in runs)
    echo(f"{len(runs)} run(s): {done} done, {skipped} skipped (complete), {len(failed)} failed")
    for r in failed:
        echo(f"  FAILED {r.notebook.name} [{r.slug}]: {r.error}\n    executed notebook: {r.run_dir / r.notebook.name}")
    return 1 if failed else 0


def run_notebooks(
    notebooks: Sequence[str | os.PathLike],
    *,
    params: Mapping[str, Any] | None = None,
    out: str | os.PathLike = "results/runs",
    tables: str | os.PathLike = "results/tables",
    rendered: str | os.PathLike = "results/rendered",
    kernel: str = KERNEL,
    timeout: int | None = None,
    echo=print,
) -> list[Run]:
    """Execute each notebook (always afresh) into ``<out>/<stem>/defaults``, render it to
    ``<rendered>/<stem>.html`` and collect every notebook's metrics in ``<tables>/notebooks.csv`` / ``.md``
    (long format: notebook, metric, value). `params` go to each notebook that declares them."""
    params = dict(params or {})
    notebooks = [Path(nb) for nb in notebooks]
    declared = {nb: _check_params(nb, []) for nb in notebooks}
    unused = [k for k in params if not any(k in names for names in declared.values())]
    if unused:
        raise SweepError(f"-p {', '.join(unused)}: not a parameter of any of the notebooks")
    runs = []
    for i, nb in enumerate(notebooks, 1):
        mine = {k: v for k, v in params.items() if k in declared[nb]}
        echo(f"[{i}/{len(notebooks)}] {nb.name} ...", end=" ", flush=True)
        run = run_notebook(nb, Path(out) / nb.stem / DEFAULT_SLUG, mine, kernel=kernel,
                           html=Path(rendered) / f"{nb.stem}.html", force=True, timeout=timeout)
        echo(_status_line(run))
        runs.append(run)
    rows = [{"notebook": r.notebook.stem, "metric": k, "value": v} for r in runs if r.complete
            for k, v in r.metrics.items()]
    df = pd.DataFrame(rows, columns=["notebook", "metric", "value"])
    Path(tables).mkdir(parents=True, exist_ok=True)
    df.to_csv(Path(tables) / "notebooks.csv", index=False)
    (Path(tables) / "notebooks.md").write_text(_markdown(df, "notebooks") + "\n")
    return runs


# ------------------------------------------------------------------------------------------------ CLI
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/runs", help="run folders go to OUT/<notebook>/<params> "
                   "(default: %(default)s)")
    p.add_argument("--tables", default="results/tables", help="aggregated tables (default: %(default)s)")
    p.add_argument("--rendered", default="results/rendered", help="HTML renders (default: %(default)s)")
    p.add_argument("--kernel", default=KERNEL, help="Jupyter kernel name (default: %(default)s)")
    p.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds (default: none)")


def _grid(items: Sequence[Sequence[str]] | None) -> list[tuple[str, list[Any]]]:
    grid = []
    for item in items or []:
        if len(item) < 2:
            raise SweepError(f"-p {' '.join(item)}: expected a name and at least one value")
        grid.append((item[0], [parse_value(v) for v in item[1:]]))
    return grid


def main(argv: Sequence[str] | None = None) -> int:
    """``vidquant sweep NOTEBOOK -p name v1 v2 ... [-p other ...] [--out results/runs] [--kernel vidquant]``."""
    p = argparse.ArgumentParser(prog="vidquant sweep", description=__doc__.splitlines()[0])
    p.add_argument("notebook", help="e.g. notebooks/03_smoothquant.ipynb")
    p.add_argument("-p", "--param", nargs="+", action="append", metavar=("NAME", "VALUE"),
                   help="a parameter and its values (repeatable; the grid is every combination)")
    p.add_argument("--force", action="store_true", help="redo runs that are already complete")
    p.add_argument("--no-render", action="store_true", help="do not render HTML")
    _common(p)
    args = p.parse_args(argv)
    try:
        runs, table = sweep(args.notebook, _grid(args.param), out=args.out, tables=args.tables,
                            rendered=None if args.no_render else args.rendered, kernel=args.kernel,
                            force=args.force, timeout=args.timeout)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stem = Path(args.notebook).stem
    print(f"table: {Path(args.tables) / stem}.csv / .md ({len(table)} complete run(s))")
    return _report(runs)


def notebooks_main(argv: Sequence[str] | None = None) -> int:
    """``vidquant notebooks [NOTEBOOK ...] [-p name value ...]``: execute every notebook with its defaults."""
    p = argparse.ArgumentParser(prog="vidquant notebooks",
                                description="Execute every notebook with its defaults, render HTML, collect metrics.")
    p.add_argument("notebooks", nargs="*", help="default: notebooks/[0-9]*.ipynb")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="set a parameter in every notebook that has it (repeatable)")
    _common(p)
    args = p.parse_args(argv)
    notebooks = args.notebooks or sorted(str(x) for x in (repo_root() / "notebooks").glob("[0-9]*.ipynb"))
    if not notebooks:
        print("error: no notebooks found", file=sys.stderr)
        return 2
    params = {name: parse_value(value) for name, value in (args.param or [])}
    try:
        runs = run_notebooks(notebooks, params=params, out=args.out, tables=args.tables, rendered=args.rendered,
                             kernel=args.kernel, timeout=args.timeout)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"rendered: {args.rendered}/<notebook>.html; metrics: {Path(args.tables) / 'notebooks'}.csv")
    return _report(runs)


if __name__ == "__main__":
    sys.exit(main())
