"""How the points of a grid run: the :class:`Run` record of one point, and :func:`run_all`, which runs them in this
process one after another or as submitit jobs (`vidquant sweep ... --executor submitit`, `vidquant quantize-grid`,
`vidquant tables`). The layer under `vidquant.sweep` and `vidquant.tables`.

Each grid point is one job running the same function the in-process path runs (`sweep.run_notebook` or
`sweep.quantize_run`), so the run-folder protocol is unchanged: a lock per run folder, a run complete exactly
when its ``metrics.json`` holds a JSON object, complete runs skipped, unfinished ones redone. That is what makes a
sweep resumable: after any interruption (a killed job, a killed driver, a lost node) the same command submits
the grid again and only the unfinished points do work.

submitit's ``AutoExecutor`` picks the cluster: Slurm when ``sbatch`` is available (the grid goes as one job array,
at most ``--max-parallel`` running at once through ``slurm_array_parallelism``), else local processes on this
machine (submitit starts every job it is given at once, so at most ``--max-parallel`` are submitted at a time).
The driver waits for the jobs, rebuilds the table from the run folders on disk after each one finishes, and
lists the failed ones with their submitit logs (``<logs>/<job id>_0_log.out`` / ``.err``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["JobOptions", "Run", "SweepError", "add_job_arguments", "job_options", "progress_bar", "run_all",
           "run_jobs", "status_line"]

EXECUTORS = ("local", "submitit")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


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
    published: Path | None = None  # the executed copy for readers (publish_notebook)
    metrics: dict[str, Any] = field(default_factory=dict)
    logs: tuple[Path, ...] = ()  # a submitit job's stdout / stderr (run_jobs)

    @property
    def slug(self) -> str:
        return self.run_dir.name

    @property
    def complete(self) -> bool:
        return self.status in ("done", "skipped")


def status_line(run: Run) -> str:
    """How a run went, in a few words (the progress lines of a grid)."""
    if run.status == "skipped":
        return "complete, skipped"
    if run.status == "failed":
        return f"FAILED after {run.seconds:.0f}s: {run.error}"
    return f"done in {run.seconds:.0f}s"


@dataclass
class JobOptions:
    """How a grid runs. ``executor="local"``: in this process, one point after another (no submitit)."""

    executor: str = "local"  # "local" | "submitit"
    cluster: str | None = None  # submitit's: None = Slurm when available, else "local" processes
    max_parallel: int = 2  # jobs running at once (2 suits a 2-core CPU: each job gets cpus_per_job threads)
    cpus_per_job: int = 1
    gpus_per_job: int = 0
    slurm_partition: str | None = None
    timeout_min: int = 720
    mem_gb: float | None = None
    logs: Path | None = None  # submitit's folder; default <out>/.submitit/<name>
    poll_s: float = 1.0  # how often the driver looks at the jobs

    @property
    def in_process(self) -> bool:
        return self.executor == "local"

    def check(self) -> None:
        """Refuse impossible settings before anything is submitted."""
        if self.executor not in EXECUTORS:
            raise SweepError(f"--executor {self.executor}: expected one of {', '.join(EXECUTORS)}")
        for name in ("max_parallel", "cpus_per_job", "timeout_min"):
            if getattr(self, name) < 1:
                raise SweepError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected at least 1")
        if self.gpus_per_job < 0:
            raise SweepError(f"--gpus-per-job {self.gpus_per_job}: expected 0 or more")
        if self.in_process and self.slurm_partition:
            raise SweepError("--slurm-partition: only with --executor submitit")


def add_job_arguments(p: argparse.ArgumentParser) -> None:
    """The executor options shared by `vidquant sweep` and `vidquant quantize-grid`."""
    g = p.add_argument_group("jobs (submitit)")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: one run after another in this process; submitit: one job per grid point, on Slurm "
                        "when available, else parallel local processes (default: %(default)s)")
    g.add_argument("--cluster", choices=["auto", "slurm", "local"], default="auto",
                   help="submitit's cluster (default: Slurm when sbatch is available, else local)")
    g.add_argument("--max-parallel", type=int, default=2, help="jobs running at once (default: %(default)s)")
    g.add_argument("--cpus-per-job", type=int, default=1, help="CPU threads per job (default: %(default)s)")
    g.add_argument("--gpus-per-job", type=int, default=0, help="GPUs per job (default: %(default)s)")
    g.add_argument("--slurm-partition", help="Slurm partition of the job array")
    g.add_argument("--timeout-min", type=int, default=720, help="per-job time limit in minutes (default: %(default)s)")
    g.add_argument("--mem-gb", type=float, help="memory per job (Slurm)")
    g.add_argument("--logs", help="submitit's folder: pickles and job logs (default: OUT/.submitit/<name>)")


def job_options(args: argparse.Namespace) -> JobOptions:
    opts = JobOptions(executor=args.executor, cluster=None if args.cluster == "auto" else args.cluster,
                      max_parallel=args.max_parallel, cpus_per_job=args.cpus_per_job, gpus_per_job=args.gpus_per_job,
                      slurm_partition=args.slurm_partition, timeout_min=args.timeout_min, mem_gb=args.mem_gb,
                      logs=Path(args.logs) if args.logs else None)
    opts.check()
    return opts


def make_executor(opts: JobOptions, folder: Path, name: str):
    """submitit's AutoExecutor with one job's resources; a job array of at most `max_parallel` on Slurm."""
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=opts.cluster)
    except RuntimeError as err:  # a cluster asked for that is not here ("Could not detect srun")
        raise SweepError(f"--cluster {opts.cluster}: {err}") from None
    params: dict[str, Any] = {"name": f"vidquant-{name}", "timeout_min": opts.timeout_min,
                              "cpus_per_task": opts.cpus_per_job, "gpus_per_node": opts.gpus_per_job,
                              "slurm_array_parallelism": opts.max_parallel}
    if opts.slurm_partition:
        params["slurm_partition"] = opts.slurm_partition
    if opts.mem_gb:
        params["mem_gb"] = opts.mem_gb
    executor.update_parameters(**params)
    return executor


def in_job(threads: int, fn: Callable[..., Run], args: Sequence[Any], kwargs: dict[str, Any]) -> Run:
    """What a job runs: `fn(*args, **kwargs)` with its thread count set (inherited by a notebook's kernel)."""
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    return fn(*args, **kwargs)


Call = tuple[Callable[..., Run], Sequence[Any], dict[str, Any]]


def run_all(fn: Callable[..., Run], pending: Sequence[Run], call: Callable[[Run], tuple[tuple, dict]],
            jobs: JobOptions | None, *, out: str | os.PathLike, name: str, on_finish, echo, bar=None) -> list[Run]:
    """`fn(*args, **kwargs)` for each pending run (`call` gives the arguments): in this process, one after
    another, or as submitit jobs (re-aggregating with `on_finish` as each finishes). `bar` (:func:`progress_bar`)
    advances as each run finishes; the status lines print above it."""
    if bar is not None:
        echo = _above(bar, echo)
    if jobs is not None and not jobs.in_process:
        jobs.check()
        folder = jobs.logs or default_folder(Path(out), name)
        calls = [(fn, *call(run)) for run in pending]
        echo(f"{len(calls)} job(s) via submitit, at most {jobs.max_parallel} at once; logs: {folder}")

        def finished(done: list[Run]) -> None:
            if bar is not None:
                bar.update()
            if on_finish is not None:
                on_finish(done)

        return run_jobs(pending, calls, jobs, folder=Path(folder), name=name, on_finish=finished, echo=echo)
    runs = []
    for i, run in enumerate(pending, 1):
        echo(f"[{i}/{len(pending)}] {name} {run.slug} ...", flush=True)  # its cells' progress follows
        args, kwargs = call(run)
        run = fn(*args, **kwargs)
        echo(f"[{i}/{len(pending)}] {name} {run.slug}: {status_line(run)}")
        if bar is not None:
            bar.update()
        runs.append(run)
    return runs


def progress_bar(total: int, desc: str, unit: str = "run"):
    """A tqdm bar over a grid's runs for :func:`run_all`. Shown in a terminal only (tqdm's ``disable=None``): in a
    log, the status lines alone say the same, one line per run."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None)


def _above(bar, echo):
    """`echo` printing above `bar` (tqdm clears the bars, prints, draws them again)."""
    def say(*args, **kwargs):
        with bar.external_write_mode():
            echo(*args, **kwargs)

    return say


def run_jobs(pending: Sequence[Run], calls: Sequence[Call], opts: JobOptions, *, folder: Path, name: str,
             on_finish: Callable[[list[Run]], Any] | None = None, echo=print) -> list[Run]:
    """Run `calls[i]` (which returns the Run of `pending[i]`) as submitit jobs; returns the Runs in order.

    A job that dies without a result (killed, timed out, node lost) gives `pending[i]` marked failed. Every Run
    gets its job's log paths. After each job, `on_finish(runs finished so far, in grid order)`. On an exception
    here (Ctrl-C), the jobs still running are cancelled before it propagates.
    """
    executor = make_executor(opts, folder, name)
    slurm = executor.cluster == "slurm"
    results: list[Run | None] = [None] * len(calls)
    waiting, running = list(range(len(calls))), {}

    def submit(i: int):
        fn, args, kwargs = calls[i]
        return executor.submit(in_job, opts.cpus_per_job, fn, args, kwargs)

    try:
        if slurm:  # one array; Slurm keeps at most max_parallel running
            with executor.batch():
                delayed = {i: submit(i) for i in waiting}
            running, waiting = delayed, []
        while waiting or running:
            while waiting and len(running) < opts.max_parallel:  # the local cluster starts all it is given
                i = waiting.pop(0)
                running[i] = submit(i)
            finished = [i for i, job in running.items() if job.done()]
            for i in finished:
                results[i] = _outcome(pending[i], running.pop(i))
                echo(f"[{sum(r is not None for r in results)}/{len(calls)}] {name} {pending[i].slug}: "
                     f"{status_line(results[i])}", flush=True)
                if on_finish is not None:
                    on_finish([r for r in results if r is not None])
            if not finished:
                time.sleep(opts.poll_s)
    except BaseException:
        for job in running.values():
            job.cancel(check=False)
        raise
    return [r for r in results if r is not None]


def _outcome(pending: Run, job) -> Run:
    logs = (Path(job.paths.stdout), Path(job.paths.stderr))
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        run = job.result()
    except FailedJobError as err:  # raised outside the run's own error handling; the traceback is in the log
        last = [line for line in str(err).splitlines() if line.strip()][-1:] or [type(err).__name__]
        run = dataclasses.replace(pending, status="failed", error=f"job {job.job_id} raised: {last[0].strip()}")
    except UncompletedJobError:
        run = dataclasses.replace(pending, status="failed", error=f"job {job.job_id} ended without a result "
                                  f"(state {job.state}): killed, out of time or memory, or its node lost")
    run.logs = logs
    return run


def default_folder(out: Path, name: str) -> Path:
    """submitit's pickles and logs: hidden beside the runs, so they are never mistaken for a run folder."""
    return Path(out) / ".submitit" / name
