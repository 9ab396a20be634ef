"""Batches of runs: `vidquant sweep` (papermill over a notebook's parameter grid), `vidquant quantize-grid`
(`vidquant.run.quantize` over configs × a grid of config fields) and `vidquant notebooks` (every notebook with its
defaults). A grid runs in this process, or with ``--executor submitit`` as one job per point (vidquant.jobs).

A run executes one notebook with one set of parameters into its own folder
``<out>/<notebook-stem>/<param-slug>/`` (the executed notebook, ``params.json``, ``metrics.json`` and
whatever the notebook writes to its ``output_dir``: clips, tables). The sweep injects two parameters every
notebook has: ``output_dir`` (the run folder) and ``metrics_path`` (a temporary name in it). When the
notebook finishes, the temporary metrics file is renamed to ``metrics.json``: a run is complete exactly when
``metrics.json`` holds a JSON object, so a killed run (or an empty, corrupt metrics file) is redone and a
complete one is skipped. ``--force`` redoes it, keeping the complete run aside until the redo has succeeded
(a failing redo puts it back). A failing run does not stop the others; failures are listed at the end and the
exit status is 1.

Integrity: each distinct parameter set has its own folder (the slug is readable, plus a hash of the exact
values when the readable form would lose something: ``"a b"`` / ``"a_b"``, ``0.5`` / ``'0.5'``); a run holds
a lock on its folder while it runs (two sweeps on one folder wait for each other instead of racing); values on
the command line are YAML scalars with ``1e-3`` a float.

Afterwards every complete run on disk under ``<out>/<stem>/`` (this grid's first, in grid order, then earlier
ones) is aggregated into ``<tables>/<stem>.csv`` and ``.md`` (one row per run: its parameters, then its
metrics; written atomically); with ``--publish DIR`` each executed notebook is also published to
``DIR/<stem>/<slug>.ipynb`` (see `publish_notebook`).
A quantize grid's runs follow the same protocol in ``<out>/<name>/<slug>/`` (each the run's ``save.save_path``,
``metrics.json`` its summary), aggregated into ``<tables>/<name>.csv`` / ``.md``. See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import fcntl
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from vidquant.config import ConfigError, parse_scalar
from vidquant.fsutil import clean_stale, fresh_sibling, repo_root, write_text_atomic
from vidquant.jobs import (
    JobOptions,
    Run,
    SweepError,
    add_job_arguments,
    job_options,
    progress_bar,
    run_all,
    status_line,
)
from vidquant.records import read_metrics

__all__ = ["Run", "SweepError", "expand_grid", "parse_value", "slug", "notebook_parameters", "run_notebook",
           "publish_notebook", "aggregate", "sweep", "run_notebooks", "main", "notebooks_main", "run_in_folder",
           "quantize_run", "quantize_grid", "quantize_grid_main"]

log = logging.getLogger("vidquant.sweep")

METRICS_NAME = "metrics.json"
PARTIAL_SUFFIX = ".partial"
PARAMS_NAME = "params.json"
DEFAULT_SLUG = "defaults"
#: The project's Jupyter kernel, installed into the venv by scripts/setup_env.sh (never the user's `python3`).
KERNEL = "vidquant"
#: Parameters the sweep sets itself; every notebook declares them in its `parameters` cell.
RESERVED = ("output_dir", "metrics_path")


# ------------------------------------------------------------------------------------------------ grid
def parse_value(text: str) -> Any:
    """A command-line value as papermill and ``--set`` read it: a YAML scalar (``0.75`` → float, ``8`` → int,
    ``true`` → bool, ``e4m3`` → str), plus Python's ``True`` / ``False`` / ``None``."""
    if text in ("None", "none", "null"):
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        value = parse_scalar(text)
    except ConfigError:
        return text
    return text if isinstance(value, dict) or value is None else value


def expand_grid(grid: Sequence[tuple[str, Sequence[Any]]]) -> list[dict[str, Any]]:
    """Every combination of the values, in order (the last parameter varies fastest); duplicates dropped."""
    names = [name for name, _ in grid]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise SweepError(f"parameter(s) {dup} given more than once; give every value after one -p")
    out: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*[list(values) for _, values in grid]):
        params = dict(zip(names, combo))
        out.setdefault(_canonical(params), params)  # by exact value: 1, 1.0, True and '1' are all different
    return list(out.values())


def _canonical(params: Mapping[str, Any]) -> str:
    """The exact parameter values as text (JSON tells 1, 1.0, true and "1" apart)."""
    return json.dumps(params, sort_keys=True, default=repr)


def _fmt(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "+".join(_fmt(v) for v in value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(value)).strip("_") or "_"


_READABLE = re.compile(r"[A-Za-z0-9.+-]+(?:_[A-Za-z0-9.+-]+)*")
MAX_SLUG = 120


def _readable(value: Any) -> bool:
    """Whether `_fmt(value)` names `value` alone: a number, a bool, None, or a plain word that the command line
    would read back as the same string (so '0.5', 'True', 'a b' and lists are not)."""
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, float):
        return value == value  # NaN: repr is fine, but keep the rule simple
    return isinstance(value, str) and bool(_READABLE.fullmatch(value)) and parse_value(value) == value \
        and isinstance(parse_value(value), str)


def slug(params: Mapping[str, Any]) -> str:
    """Folder name of a run: ``alpha-0.75``, ``alpha-0.75__w_bit-4``; ``defaults`` for no parameters. When the
    readable form could name two parameter sets (or is long), ``__h<hash of the exact values>`` is appended, so
    every distinct parameter set has its own folder."""
    if not params:
        return DEFAULT_SLUG
    text = "__".join(f"{name}-{_fmt(value)}" for name, value in params.items())
    if all(_readable(v) for v in params.values()) and len(text) <= MAX_SLUG:
        return text
    digest = hashlib.sha256(_canonical(params).encode()).hexdigest()[:10]
    return f"{text[:MAX_SLUG]}__h{digest}"


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
    `chdir` there), else absolute. Keeps machine-specific prefixes out of published notebooks."""
    path = path.resolve()
    try:
        return str(path.relative_to(repo_root()))
    except ValueError:
        return str(path)


def _as_terminal_shows(text: str) -> str:
    """Stream text as a terminal leaves it: of each line rewritten with carriage returns (a progress bar's
    updates), only the last state."""
    return "\n".join(([seg for seg in line.split("\r") if seg] or [""])[-1] for line in text.split("\n"))


def _coalesce_streams(outputs: list) -> list:
    """Consecutive stream outputs of one stream (a progress bar's updates arrive one message each) as one."""
    merged: list = []
    for out in outputs:
        if out.output_type == "stream" and merged and merged[-1].output_type == "stream" \
                and merged[-1].name == out.name:
            merged[-1].text += out.text
        else:
            merged.append(out)
    return merged


def publish_notebook(executed: str | os.PathLike, dest: str | os.PathLike, *, sign: bool = True) -> Path:
    """Copy an executed notebook to `dest` for readers (JupyterLab, a code host's notebook view): progress bars
    reduced to their final state, machine-specific path prefixes removed, and (`sign`) the copy marked
    trusted for this user's Jupyter (nbformat's notary). Its outputs need no trust anyway: figures and clips
    are PNG images (clips animated, `vidquant.display`), tables plain HTML, no scripts and no CDN.
    Written atomically."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    prefixes = sorted({str(repo_root()) + os.sep, str(Path(sys.prefix)) + os.sep}, key=len, reverse=True)

    def unplaced(text: str) -> str:
        for prefix in prefixes:
            text = text.replace(prefix, "")
        return text

    run_info = nb.metadata.get("papermill", {})  # where papermill read and wrote it, and the parameters
    for key in ("input_path", "output_path"):
        if isinstance(run_info.get(key), str):
            run_info[key] = unplaced(run_info[key])
    for name, value in run_info.get("parameters", {}).items():
        if isinstance(value, str):
            run_info["parameters"][name] = unplaced(value)
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        cell.outputs = _coalesce_streams(cell.outputs)
        for out in cell.outputs:
            if out.output_type == "stream":
                out.text = unplaced(_as_terminal_shows(out.text))
            elif isinstance(out.get("data", {}).get("text/plain"), str):
                out.data["text/plain"] = unplaced(out.data["text/plain"])
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.writing")
    nbformat.write(nb, str(tmp))
    os.replace(tmp, dest)
    if sign:
        try:
            from nbformat.sign import NotebookNotary

            NotebookNotary().sign(nb)
        except Exception as err:  # noqa: BLE001 - trust is a convenience; the copy is complete without it
            log.warning("could not sign %s: %s", dest, err)
    return dest


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
    publish: str | os.PathLike | None = None,
    force: bool = False,
    timeout: int | None = None,
    echo_output: bool = False,
) -> Run:
    """Execute `notebook` into `run_dir` with `params` (plus `output_dir` / `metrics_path`). `echo_output`: show
    papermill's cell progress and the cells' stdout / stderr (progress bars) live in this terminal.

    Skips the run when it is complete (unless `force`); otherwise clears what a previous, unfinished attempt
    left. With `force`, a complete run is kept aside until the redo succeeds. The folder is locked meanwhile.
    Exceptions from the notebook are caught and reported in the returned Run.
    """
    notebook, run_dir = Path(notebook), Path(run_dir)
    run = Run(notebook, dict(params or {}), run_dir)
    return run_in_folder(run, lambda r: _execute(r, kernel, publish, timeout, echo_output), force=force)


def run_in_folder(run: Run, execute: Callable[[Run], None], *, force: bool = False) -> Run:
    """The run-folder protocol around `execute(run)` (which creates ``run.run_dir``, writes ``params.json``,
    then ``metrics.json`` last, and sets ``run.status`` to "done" or "failed"): skip a complete run unless
    `force`, clear what an unfinished attempt left, keep a complete run aside until its redo succeeds, and hold
    the folder's lock throughout."""
    run_dir = run.run_dir
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with _locked(run_dir):
        _tidy(run_dir)
        done = complete_metrics(run_dir)
        if done is not None and not force:
            run.status, run.metrics = "skipped", done
            return run
        kept = _set_aside(run_dir)
        try:
            execute(run)
        finally:
            _settle(run_dir, kept, run.status == "done")
    return run


def complete_metrics(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The metrics of a complete run, None when ``metrics.json`` is absent, empty or not a JSON object."""
    try:
        metrics = read_metrics(Path(run_dir) / METRICS_NAME)
    except (OSError, ValueError, AttributeError):
        return None
    return metrics if isinstance(metrics, dict) else None


@contextlib.contextmanager
def _locked(run_dir: Path):
    """Hold an exclusive lock on ``.<slug>.lock`` beside the run folder (released when the process dies)."""
    with open(run_dir.parent / f".{run_dir.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tidy(run_dir: Path) -> None:
    """Undo what a killed run left: an unfinished folder goes, a complete run it had set aside comes back."""
    if run_dir.exists() and complete_metrics(run_dir) is None:
        shutil.rmtree(run_dir)
    clean_stale(run_dir.parent)


def _set_aside(run_dir: Path) -> Path | None:
    """Move a complete run out of the way of its redo; returns where it went."""
    if not run_dir.exists():
        return None
    aside = fresh_sibling(run_dir.parent, run_dir.name, "old")
    os.rename(run_dir, aside / run_dir.name)
    return aside


def _settle(run_dir: Path, kept: Path | None, success: bool) -> None:
    """After a redo: drop the old run if the redo succeeded, else put it back in place of the failed attempt."""
    if kept is None:
        return
    if not success:
        failed = run_dir.with_name(run_dir.name + ".failed")
        shutil.rmtree(failed, ignore_errors=True)
        if run_dir.exists():
            os.rename(run_dir, failed)  # kept for reading; never aggregated (no params match, hidden from skip)
        os.rename(kept / run_dir.name, run_dir)
    shutil.rmtree(kept, ignore_errors=True)


def _execute(run: Run, kernel: str, publish: str | os.PathLike | None, timeout: int | None,
             echo_output: bool = False) -> None:
    import papermill

    logging.getLogger("papermill").setLevel(logging.WARNING)
    notebook, run_dir = run.notebook, run.run_dir
    metrics = run_dir / METRICS_NAME
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
                               "(its last cell should call vidquant.records.record_metrics(..., metrics_path))")
        recorded = json.loads(partial.read_text())
        if not isinstance(recorded, dict):
            raise RuntimeError(f"{partial}: the recorded metrics are not a JSON object")
        os.replace(partial, metrics)
        run.status = "done"
        run.metrics = read_metrics(metrics)
    except Exception as err:  # noqa: BLE001 - a failing run is reported, the others go on
        run.status, run.error = "failed", _error_text(err)
    run.seconds = time.time() - t0
    if executed.is_file() and publish is not None and run.status == "done":
        try:
            run.published = publish_notebook(executed, publish)
        except Exception as err:  # noqa: BLE001 - a publishing failure should not lose the run
            log.warning("could not publish %s: %s", executed, err)


# ------------------------------------------------------------------------------------------------ tables
#: Metrics listed first in the tables and shown in the markdown version (with their `rtn.` baselines).
HEADLINE = ("video_psnr", "video_ssim", "mean_sqnr_db", "min_sqnr_db", "mean_timestep_rel_err", "video_colour_ok",
            "video_direction_ok")


def runs_on_disk(folder: str | os.PathLike) -> list[Run]:
    """Every complete run in a notebook's run folder (``<out>/<stem>``), by folder name."""
    folder = Path(folder)
    found = []
    for run_dir in sorted(folder.iterdir()) if folder.is_dir() else []:
        if run_dir.name.startswith(".") or not run_dir.is_dir():
            continue
        metrics = complete_metrics(run_dir)
        try:
            params = json.loads((run_dir / PARAMS_NAME).read_text())
        except (OSError, ValueError):
            continue
        if metrics is not None and isinstance(params, dict) and slug(params) == run_dir.name:
            found.append(Run(Path(folder.name), params, run_dir, "skipped", metrics=metrics))
    return found


def aggregate(runs: Sequence[Run], tables_dir: str | os.PathLike, name: str,
              disk: str | os.PathLike | None = None, baseline: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per complete run → ``<tables_dir>/<name>.csv`` (run, parameters, headline metrics, every other
    metric) and ``<name>.md`` (run, parameters and the headline metrics with their RTN baselines). With `disk`
    (the notebook's run folder), the complete runs found there that `runs` lacks (with the same parameter
    names) are added after them, so a partial sweep never shrinks the table. When the runs have per-clip video
    metrics (``video_metrics.csv``), ``<name>_intervals.csv`` and the markdown add each metric's mean with its
    95 % interval, noise floor and jitter, and with `baseline` (the parameters of one run, e.g.
    ``{"alpha": 0.75}``) every run's paired difference against that run."""
    chosen = [r for r in runs if r.complete]
    if disk is not None:
        seen = {r.slug for r in chosen}
        names = {tuple(sorted(r.params)) for r in chosen}
        chosen += [r for r in runs_on_disk(disk) if r.slug not in seen and (not names or
                                                                            tuple(sorted(r.params)) in names)]
    rows = []
    param_names: list[str] = []
    for run in chosen:
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
    write_text_atomic(tables_dir / f"{name}.csv", df.to_csv(index=False))
    note = f"Headline metrics; every column in `{name}.csv`." if not df.empty else ""
    md = _markdown(short, name, note)
    intervals = _clip_intervals(chosen, baseline)
    if intervals is not None:
        table, base = intervals
        write_text_atomic(tables_dir / f"{name}_intervals.csv", table.to_csv(index=False))
        md += "\n\n" + _interval_section(table, df, base, chosen)
    write_text_atomic(tables_dir / f"{name}.md", md + "\n")
    return df


def _clip_intervals(chosen: Sequence[Run], baseline: Mapping[str, Any] | None):
    """(interval table, baseline run slug) over the runs' per-clip video metrics; None when no run has any."""
    from vidquant.eval.intervals import interval_table  # scipy: only when a run has per-clip metrics

    frames = []
    for run in chosen:
        path = run.run_dir / "video_metrics.csv"
        if path.is_file() and path.stat().st_size > 1:
            frames.append(pd.read_csv(path).assign(method=_label(run, chosen), format=""))
    if not frames:
        return None
    base = next((_label(r, chosen) for r in chosen if baseline and all(str(r.params.get(k)) == str(v)
                                                                      for k, v in baseline.items())), None)
    if baseline and base is None:
        log.warning("--baseline %s: no complete run has these parameters; no paired differences", baseline)
    return interval_table(pd.concat(frames, ignore_index=True), baseline=base), base


def _label(run: Run, runs: Sequence[Run]) -> str:
    """A run's short name in the interval table: the parameters that vary across `runs`, last field names only
    (``alpha=0.75``), else its slug."""
    varying = [k for k in run.params if len({str(r.params.get(k)) for r in runs}) > 1]
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={run.params[k]}" for k in varying) or run.slug


def _interval_section(table: pd.DataFrame, runs: pd.DataFrame, base: str | None, chosen: Sequence[Run]) -> str:
    from vidquant.eval.intervals import interval_markdown

    cells = runs.assign(method=[_label(r, chosen) for r in chosen], format="")
    md = interval_markdown(table, cells, base or "baseline", label="run")
    n = int(table["n_clips"].max())
    return (f"## Video metrics with 95 % intervals ({n} clips per run: prompts × seeds)\n\n"
            "`mean [95 % bootstrap interval]` per run; *floor*: the float model's own clip with its latent nudged "
            "by one ulp (vidquant.eval.noise); *jitter*: how much the run's metric moves under that nudge"
            + (f"; *Δ vs {base}*: paired difference on the same prompts and seeds, `*` real (interval excludes 0 "
               "and beyond the jitter), `~` excludes 0 but below the jitter or floor" if base else "")
            + ".\n\n" + md)


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
    publish: str | os.PathLike | None = None,
    kernel: str = KERNEL,
    force: bool = False,
    timeout: int | None = None,
    jobs: JobOptions | None = None,
    baseline: Mapping[str, Any] | None = None,
    echo=print,
) -> tuple[list[Run], pd.DataFrame]:
    """Run every combination of `grid` (``[("alpha", [0.5, 0.75]), ...]``) and aggregate the complete runs
    (`baseline`: the grid point the others are paired against, see :func:`aggregate`).
    With `jobs` (``executor="submitit"``), each combination is one submitit job (see vidquant.jobs)."""
    notebook = Path(notebook)
    if not notebook.is_file():
        raise SweepError(f"{notebook}: notebook not found")
    _check_params(notebook, [n for n, _ in grid])
    stem = notebook.stem
    pending = [Run(notebook, params, Path(out) / stem / slug(params)) for params in expand_grid(grid)]

    def call(run: Run) -> tuple[tuple, dict]:
        copy = None if publish is None else Path(publish).absolute() / stem / f"{run.slug}.ipynb"
        return ((notebook.absolute(), run.run_dir.absolute(), run.params),
                {"kernel": kernel, "publish": copy, "force": force, "timeout": timeout, "echo_output": True})

    runs = run_all(run_notebook, pending, call, jobs, out=out, name=stem, echo=echo,
                   on_finish=lambda done: aggregate(done, tables, stem, disk=Path(out) / stem, baseline=baseline))
    return runs, aggregate(runs, tables, stem, disk=Path(out) / stem, baseline=baseline)


def _report(runs: Sequence[Run], echo=print) -> int:
    failed = [r for r in runs if r.status == "failed"]
    done = sum(r.status == "done" for r in runs)
    skipped = sum(r.status == "skipped" for r in runs)
    echo(f"{len(runs)} run(s): {done} done, {skipped} skipped (complete), {len(failed)} failed")
    for r in failed:
        echo(f"  FAILED {r.notebook.name} [{r.slug}]: {r.error}")
        if r.notebook.suffix == ".ipynb":
            echo(f"    executed notebook: {r.run_dir / r.notebook.name}")
        if r.logs:
            echo(f"    job logs: {'  '.join(str(p) for p in r.logs)}")
    return 1 if failed else 0


def run_notebooks(
    notebooks: Sequence[str | os.PathLike],
    *,
    params: Mapping[str, Any] | None = None,
    out: str | os.PathLike = "results/runs",
    tables: str | os.PathLike = "results/tables",
    publish: str | os.PathLike = "results/notebooks",
    kernel: str = KERNEL,
    timeout: int | None = None,
    echo=print,
) -> list[Run]:
    """Execute each notebook (always afresh) into ``<out>/<stem>/defaults``, publish the executed copy to
    ``<publish>/<stem>.ipynb`` (`publish_notebook`) and collect every notebook's metrics in
    ``<tables>/notebooks.csv`` / ``.md`` (long format: notebook, metric, value; rows of notebooks not run now
    are kept). `params` go to each notebook that declares them."""
    params = dict(params or {})
    notebooks = [Path(nb) for nb in notebooks]
    declared = {nb: _check_params(nb, []) for nb in notebooks}
    unused = [k for k in params if not any(k in names for names in declared.values())]
    if unused:
        raise SweepError(f"-p {', '.join(unused)}: not a parameter of any of the notebooks")
    runs = []
    for i, nb in enumerate(notebooks, 1):
        mine = {k: v for k, v in params.items() if k in declared[nb]}
        echo(f"[{i}/{len(notebooks)}] {nb.name} ...", flush=True)  # its cells' output and progress follow
        run = run_notebook(nb, Path(out) / nb.stem / DEFAULT_SLUG, mine, kernel=kernel,
                           publish=Path(publish) / f"{nb.stem}.ipynb", force=True, timeout=timeout, echo_output=True)
        echo(f"[{i}/{len(notebooks)}] {nb.name}: {status_line(run)}")
        runs.append(run)
    rows = [{"notebook": r.notebook.stem, "metric": k, "value": v} for r in runs if r.complete
            for k, v in r.metrics.items()]
    csv = Path(tables) / "notebooks.csv"
    kept = pd.read_csv(csv, dtype=str) if csv.is_file() else pd.DataFrame(columns=["notebook", "metric", "value"])
    kept = kept[~kept["notebook"].isin([nb.stem for nb in notebooks])]  # the other notebooks' rows stay
    df = pd.concat([kept, pd.DataFrame(rows, columns=["notebook", "metric", "value"])], ignore_index=True)
    df = df.sort_values("notebook", kind="stable")
    Path(tables).mkdir(parents=True, exist_ok=True)
    write_text_atomic(csv, df.to_csv(index=False))
    write_text_atomic(Path(tables) / "notebooks.md", _markdown(df, "notebooks") + "\n")
    return runs


# ------------------------------------------------------------------------------------------------ quantize grids
def quantize_run(config: str | os.PathLike, run_dir: str | os.PathLike, params: Mapping[str, Any],
                 overrides: Mapping[str, Any] | None = None, *, force: bool = False) -> Run:
    """`vidquant.run.quantize` of `config` with `overrides` and the grid point `params` (dotted config fields;
    a ``config`` entry is only its label), its results in `run_dir` (``save.save_path``, clips in ``videos/``);
    ``metrics.json`` (the run's summary) written last. The run-folder protocol of `run_in_folder` applies."""
    run = Run(Path(config), dict(params), Path(run_dir))
    return run_in_folder(run, lambda r: _quantize(r, dict(overrides or {})), force=force)


def point_config(config: str | os.PathLike, run_dir: Path, params: Mapping[str, Any],
                 overrides: Mapping[str, Any]):
    """The validated Config of one grid point, its outputs redirected into `run_dir`."""
    from vidquant.config import load_config, read_yaml

    raw = read_yaml(config)
    fields = {**overrides, **{k: v for k, v in params.items() if k != "config"}, "save.save_path": str(run_dir)}
    evals = fields["eval"] if "eval" in fields else raw.get("eval") if isinstance(raw, dict) else None
    if isinstance(evals, dict):
        fields["eval.output_video_path"] = str(run_dir / "videos")
    elif isinstance(evals, list):  # one clip folder per eval section
        fields["eval"] = [{**ev, "output_video_path": str(run_dir / "videos" / str(ev.get("name", i)))}
                          for i, ev in enumerate(evals)]
    return load_config(config, fields)


def _quantize(run: Run, overrides: dict[str, Any]) -> None:
    from vidquant.run import quantize

    run.run_dir.mkdir(parents=True)
    (run.run_dir / PARAMS_NAME).write_text(json.dumps(run.params, indent=2, sort_keys=True, default=str) + "\n")
    t0 = time.time()
    try:
        cfg = point_config(run.notebook, run.run_dir.absolute(), run.params, overrides)
        summary = quantize(cfg).summary  # its progress bars show (in a job: in its log)
        write_text_atomic(run.run_dir / METRICS_NAME, json.dumps(summary, indent=2, sort_keys=True, default=str))
        run.status, run.metrics = "done", read_metrics(run.run_dir / METRICS_NAME)
    except Exception as err:  # noqa: BLE001 - a failing run is reported, the others go on
        run.status, run.error = "failed", _error_text(err)
    run.seconds = time.time() - t0


def _config_labels(configs: Sequence[Path]) -> list[str]:
    """Short names telling the configs apart: the path below their common folder, parts joined by '.'."""
    if len(configs) == 1:
        return [configs[0].stem]
    root = Path(os.path.commonpath([c.resolve().parent for c in configs]))
    return [".".join(c.resolve().relative_to(root).with_suffix("").parts) for c in configs]


def quantize_grid(
    configs: Sequence[str | os.PathLike],
    grid: Sequence[tuple[str, Sequence[Any]]] = (),
    *,
    overrides: Sequence[str] = (),
    name: str = "quantize_grid",
    out: str | os.PathLike = "results/runs",
    tables: str | os.PathLike = "results/tables",
    force: bool = False,
    jobs: JobOptions | None = None,
    baseline: Mapping[str, Any] | None = None,
    echo=print,
) -> tuple[list[Run], pd.DataFrame]:
    """Quantize every config × every combination of `grid` (dotted config fields, e.g.
    ``[("quant.video_gen.special.alpha", [0.5, 0.75])]``), `overrides` (``a.b=value``) applied to all; each
    run in ``<out>/<name>/<slug>``, the table in ``<tables>/<name>.csv`` / ``.md``. Every point's config is
    validated (and its input paths checked) before any run starts."""
    from vidquant.config import ConfigError, _split

    paths = [Path(c) for c in configs]
    if not paths:
        raise SweepError("no configs given")
    try:
        fixed = dict(_split(o) for o in overrides)
    except ConfigError as err:
        raise SweepError(str(err)) from None
    folder = Path(out) / name
    pending = [Run(path, {"config": label, **point}, Path(folder) / slug({"config": label, **point}))
               for path, label in zip(paths, _config_labels(paths)) for point in expand_grid(grid)]
    if len({r.slug for r in pending}) != len(pending):
        raise SweepError("two configs have the same label; give configs with distinct paths")
    for run in pending:
        if not run.notebook.is_file():
            raise SweepError(f"{run.notebook}: config not found")
        try:
            point_config(run.notebook, run.run_dir.absolute(), run.params, fixed).check_paths()
        except ConfigError as err:
            raise SweepError(f"[{run.slug}] {err}") from None

    def call(run: Run) -> tuple[tuple, dict]:
        return (run.notebook.absolute(), run.run_dir.absolute(), run.params, fixed), {"force": force}

    with progress_bar(len(pending), name) as bar:
        runs = run_all(quantize_run, pending, call, jobs, out=out, name=name, echo=echo, bar=bar,
                       on_finish=lambda done: aggregate(done, tables, name, disk=folder, baseline=baseline))
    return runs, aggregate(runs, tables, name, disk=folder, baseline=baseline)


def quantize_grid_main(argv: Sequence[str] | None = None) -> int:
    """``vidquant quantize-grid --configs a.yaml b.yaml [-p field v1 v2 ...] [--set a.b=v] [--executor submitit]``."""
    p = argparse.ArgumentParser(prog="vidquant quantize-grid",
                                description="Quantize many configs (and a grid over config fields), one table.")
    p.add_argument("--configs", nargs="+", required=True, help="LLMC-style YAML configs")
    p.add_argument("-p", "--param", nargs="+", action="append", metavar=("FIELD", "VALUE"),
                   help="a dotted config field and its values (repeatable; the grid is every combination)")
    p.add_argument("--set", action="append", default=[], metavar="a.b.c=value", help="override for every run")
    p.add_argument("--name", default="quantize_grid", help="runs in OUT/NAME/, table TABLES/NAME.csv "
                   "(default: %(default)s)")
    p.add_argument("--out", default="results/runs", help="(default: %(default)s)")
    p.add_argument("--tables", default="results/tables", help="(default: %(default)s)")
    p.add_argument("--force", action="store_true", help="redo runs that are already complete")
    _baseline_argument(p)

    add_job_arguments(p)
    args = p.parse_args(argv)
    try:
        runs, table = quantize_grid(args.configs, _grid(args.param), overrides=args.set, name=args.name,
                                    out=args.out, tables=args.tables, force=args.force, jobs=job_options(args),
                                    baseline=_baseline(args.baseline))
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"table: {Path(args.tables) / args.name}.csv / .md ({len(table)} complete run(s))")
    return _report(runs)


# ------------------------------------------------------------------------------------------------ CLI
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/runs", help="run folders go to OUT/<notebook>/<params> "
                   "(default: %(default)s)")
    p.add_argument("--tables", default="results/tables", help="aggregated tables (default: %(default)s)")
    p.add_argument("--kernel", default=KERNEL, help="Jupyter kernel name (default: %(default)s)")
    p.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds (default: none)")


def _grid(items: Sequence[Sequence[str]] | None) -> list[tuple[str, list[Any]]]:
    grid = []
    for item in items or []:
        if len(item) < 2:
            raise SweepError(f"-p {' '.join(item)}: expected a name and at least one value")
        grid.append((item[0], [parse_value(v) for v in item[1:]]))
    return grid


def _baseline_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", nargs="+", metavar="NAME=VALUE",
                   help="the grid point every run is paired against in the interval table, e.g. alpha=0.75")


def _baseline(items: Sequence[str] | None) -> dict[str, Any] | None:
    if not items:
        return None
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SweepError(f"--baseline {item}: expected NAME=VALUE")
        out[name] = parse_value(value)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``vidquant sweep NOTEBOOK -p name v1 v2 ... [-p other ...] [--out results/runs] [--kernel vidquant]``."""
    p = argparse.ArgumentParser(prog="vidquant sweep", description=__doc__.splitlines()[0])
    p.add_argument("notebook", help="e.g. notebooks/03_smoothquant.ipynb")
    p.add_argument("-p", "--param", nargs="+", action="append", metavar=("NAME", "VALUE"),
                   help="a parameter and its values (repeatable; the grid is every combination)")
    p.add_argument("--force", action="store_true", help="redo runs that are already complete")
    p.add_argument("--publish", default=None, metavar="DIR", help="also publish each executed notebook to "
                   "DIR/<notebook>/<params>.ipynb (default: only in its run folder)")
    _baseline_argument(p)
    _common(p)

    add_job_arguments(p)
    args = p.parse_args(argv)
    try:
        runs, table = sweep(args.notebook, _grid(args.param), out=args.out, tables=args.tables,
                            publish=args.publish, kernel=args.kernel, force=args.force, timeout=args.timeout,
                            jobs=job_options(args), baseline=_baseline(args.baseline))
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stem = Path(args.notebook).stem
    print(f"table: {Path(args.tables) / stem}.csv / .md ({len(table)} complete run(s))")
    return _report(runs)


def notebooks_main(argv: Sequence[str] | None = None) -> int:
    """``vidquant notebooks [NOTEBOOK ...] [-p name value ...]``: execute every notebook with its defaults."""
    p = argparse.ArgumentParser(prog="vidquant notebooks",
                                description="Execute every notebook with its defaults, publish the executed "
                                "copies, collect metrics.")
    p.add_argument("notebooks", nargs="*", help="default: notebooks/[0-9]*.ipynb")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="set a parameter in every notebook that has it (repeatable)")
    p.add_argument("--publish", default="results/notebooks", metavar="DIR",
                   help="where the executed copies go, DIR/<notebook>.ipynb (default: %(default)s)")
    _common(p)
    args = p.parse_args(argv)
    notebooks = args.notebooks or sorted(str(x) for x in (repo_root() / "notebooks").glob("[0-9]*.ipynb"))
    if not notebooks:
        print("error: no notebooks found", file=sys.stderr)
        return 2
    params = {name: parse_value(value) for name, value in (args.param or [])}
    try:
        runs = run_notebooks(notebooks, params=params, out=args.out, tables=args.tables, publish=args.publish,
                             kernel=args.kernel, timeout=args.timeout)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"executed copies: {args.publish}/<notebook>.ipynb; metrics: {Path(args.tables) / 'notebooks'}.csv")
    return _report(runs)


if __name__ == "__main__":
    sys.exit(main())
