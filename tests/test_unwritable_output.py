"""Unwritable output locations are refused before any work, also when the tests run as root (as CI does),
where a read-only directory is simulated (tests_support.deny_write) instead of skipping the check."""

from __future__ import annotations

import pytest
from tests_support import deny_write

from vidquant.export.io import atomic_dir


def test_atomic_dir_refuses_unwritable_parent(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    deny_write(monkeypatch, locked)
    with pytest.raises(PermissionError, match="locked: parent of the output directory is not writable"):
        with atomic_dir(locked / "out"):
            pytest.fail("the body must not run")
    assert list(locked.iterdir()) == []  # nothing created, not even a temporary sibling


def test_deny_write_leaves_other_directories_writable(tmp_path, monkeypatch):
    deny_write(monkeypatch, tmp_path / "locked")
    with atomic_dir(tmp_path / "free" / "out") as work:
        (work / "x").write_text("x")
    assert (tmp_path / "free" / "out" / "x").read_text() == "x"
