"""`vidquant run-notebook NB [-p name value ...]`: papermill with the output path chosen for you, progress shown.

papermill (2.x) requires an output path in a terminal and writes the executed notebook as JSON to stdout when its
output is piped, so `papermill 03_smoothquant.ipynb -p alpha 0.75` fails or floods the pipe. This is that command,
made to work as written, from the repository root or from `notebooks/`:

    vidquant run-notebook 03_smoothquant.ipynb -p alpha 0.75
    → results/runs/03_smoothquant/alpha-0.75/03_smoothquant.ipynb   (+ metrics.json, params.json, the run's files)

The run folder is the one `vidquant sweep` uses for the same parameters (so a sweep counts the run as done). The
cells' output (vidquant's progress bars included) and papermill's cell progress stream to the terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from vidquant.fsutil import repo_root

__all__ = ["resolve_notebook", "main"]


def resolve_notebook(name: str | os.PathLike) -> Path:
    """The notebook as given (relative to the working directory), else under the repository's `notebooks/`."""
    path = Path(name)
    if path.suffix != ".ipynb":
        path = path.with_name(path.name + ".ipynb")
    if path.is_file():
        return path.resolve()
    in_repo = repo_root() / "notebooks" / path.name
    if in_repo.is_file():
        return in_repo
    available = sorted(p.name for p in (repo_root() / "notebooks").glob("[0-9]*.ipynb"))
    raise FileNotFoundError(f"{name}: notebook not found here or in {repo_root() / 'notebooks'} "
                            f"(available: {', '.join(available) or 'none'})")


def main(argv: Sequence[str] | None = None) -> int:
    from vidquant.sweep import KERNEL, SweepError, _check_params, parse_value, run_notebook, slug

    p = argparse.ArgumentParser(prog="vidquant run-notebook", description=__doc__.splitlines()[0])
    p.add_argument("notebook", help="e.g. 03_smoothquant.ipynb (here, or under notebooks/)")
    p.add_argument("-p", "--parameters", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a parameter, as papermill's -p (repeatable)")
    p.add_argument("--out", default="results/runs", help="runs go to OUT/<notebook>/<params>/ under the "
                   "repository root (default: %(default)s)")
    p.add_argument("--kernel", default=KERNEL, help="Jupyter kernel (default: %(default)s)")
    p.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds (default: none)")
    args = p.parse_args(argv)
    try:
        notebook = resolve_notebook(args.notebook)
        params = {name: parse_value(value) for name, value in args.parameters}
        _check_params(notebook, list(params))
    except (FileNotFoundError, SweepError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run_dir = (repo_root() / args.out / notebook.stem / slug(params)).resolve()
    executed = run_dir / notebook.name
    print(f"executing {notebook.name} → {executed}", flush=True)
    run = run_notebook(notebook, run_dir, params, kernel=args.kernel, force=True, timeout=args.timeout,
                       echo_output=True)
    if run.status != "done":
        print(f"FAILED after {run.seconds:.0f}s: {run.error}\nexecuted notebook (read it for the cell that failed): "
              f"{executed}", file=sys.stderr)
        return 1
    print(f"done in {run.seconds:.0f}s; executed notebook: {executed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
