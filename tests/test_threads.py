"""The thread policy applied by `import vidquant` (vidquant.threads): what `make` sets, everywhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROBE = "import os, vidquant, torch; print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'])"


def _run(env: dict[str, str], code: str = _PROBE) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "VIDQUANT_THREADS")}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "1 PASSIVE"),                                               # nothing set: make's settings
    ({"OMP_NUM_THREADS": "2"}, "2 PASSIVE"),                         # the user's thread count stands
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "1 ACTIVE"),                     # ... and their wait policy
    ({"OMP_NUM_THREADS": "1", "VIDQUANT_THREADS": "2"}, "2 PASSIVE"),  # vidquant's own variable wins
    ({"VIDQUANT_THREADS": "lots"}, "1 PASSIVE"),                     # a bad value: warned, default kept
])
def test_policy(env, expected):
    res = _run(env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == expected.split()
    assert ("VIDQUANT_THREADS='lots' ignored" in res.stderr) == (env.get("VIDQUANT_THREADS") == "lots")


def test_torch_imported_first_still_gets_the_thread_count_and_a_warning():
    res = _run({}, "import torch; import vidquant; print(torch.get_num_threads())")
    assert res.returncode == 0 and res.stdout.split() == ["1"]
    assert "torch was imported before vidquant" in res.stderr


def test_all_means_every_cpu():
    res = _run({"VIDQUANT_THREADS": "all"})
    assert res.stdout.split()[0] == str(os.cpu_count())
