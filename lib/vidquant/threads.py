"""The CPU thread policy, applied when ``vidquant`` is imported: the CLI, notebooks (papermill, JupyterLab) and
scripts run with the settings ``make`` uses, so a command is as fast outside ``make`` as inside it.

Why (measured on 2-core machines shared with other work): OpenMP's default spin-waiting keeps idle worker
threads busy between parallel regions, and with two threads every small op waits for the slower core; on a
busy machine the card's papermill command ran 10-20× slower than under ``make`` (``OMP_NUM_THREADS=1``,
``OMP_WAIT_POLICY=PASSIVE``). The tiny models' matmuls gain nothing from a second thread, and one thread also
makes float reductions independent of the machine's core count (the same bytes everywhere).

The policy, each part only where the user has not decided:

* ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep) unless set;
* intra-op threads: ``VIDQUANT_THREADS`` (a number, or ``all`` for every online CPU) if set; else the user's
  ``OMP_NUM_THREADS`` if set; else 1.

Both must reach OpenMP before torch starts its thread pool: set through the environment when torch is not
imported yet, else through ``torch.set_num_threads`` (the wait policy then stays what the process started
with, and :func:`apply_thread_policy` says so).
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["apply_thread_policy", "policy_threads"]


def policy_threads(environ: dict[str, str] | os._Environ = os.environ) -> int | None:
    """The thread count the policy asks for, or None when the user set ``OMP_NUM_THREADS`` (theirs stands)."""
    value = environ.get("VIDQUANT_THREADS", "").strip().lower()
    if value == "all":
        return os.cpu_count() or 1
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n >= 1:
            return n
        warnings.warn(f"VIDQUANT_THREADS={environ['VIDQUANT_THREADS']!r} ignored: expected a positive integer or "
                      "'all'", stacklevel=2)
    return None if environ.get("OMP_NUM_THREADS") else 1


def apply_thread_policy() -> int | None:
    """Apply the policy (module docstring) to this process; returns the thread count set, or None if left as is."""
    torch_loaded = "torch" in sys.modules
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        if torch_loaded:
            warnings.warn("torch was imported before vidquant: OpenMP threads keep spin-waiting in this process "
                          "(import vidquant first, or set OMP_WAIT_POLICY=PASSIVE)", stacklevel=3)
    n = policy_threads()
    if n is None:
        return None
    os.environ["OMP_NUM_THREADS"] = str(n)
    if torch_loaded:
        import torch

        torch.set_num_threads(n)
    return n
