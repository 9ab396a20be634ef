"""File-system safety shared by every command that writes: outputs appear whole or not at all, replace what
they overwrite only once the replacement is complete, never contain their own inputs, get normal permissions,
and leave only hidden, self-describing temporaries behind when killed (cleaned at the next run).

Temporaries are hidden siblings named ``.<name>.<tag>-<pid>-<hex>``: ``tmp`` for an output being written,
``old`` for a previous output moved aside during a swap. The pid lets :func:`clean_stale` tell a killed run's
leftovers from a concurrent run's work in progress. No heavy imports here: the CLI uses it before torch loads.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["atomic_dir", "atomic_file", "clean_stale", "contains", "fresh_sibling", "is_plain_name", "repo_root",
           "normal_permissions", "refuse_overlap", "replace_dir", "write_text_atomic"]

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<tag>tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}(?P<suffix>\.[^.]*)?$")


# ----------------------------------------------------------------------------------------------- names


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The repository root: the first folder at or above `start` (default: the working directory) holding
    `notebooks/` and `lib/vidquant/`; else the checkout the package was installed from (editable install);
    else `start` itself."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "lib" / "vidquant").is_dir():
            return folder
    installed = Path(__file__).resolve().parents[2]
    if (installed / "notebooks").is_dir() and (installed / "lib" / "vidquant").is_dir():
        return installed
    return here


def is_plain_name(name: str) -> bool:
    """A single path component: not empty, no separator, not '.' or '..', no NUL (safe to join to a folder)."""
    seps = {"/", "\\", os.sep, os.altsep or "/"}
    return bool(name) and name not in (".", "..") and "\0" not in name and not any(s in name for s in seps)


def contains(parent: str | os.PathLike, child: str | os.PathLike) -> bool:
    """Whether ``child`` is ``parent`` or lies under it, after resolving symlinks and ``..``."""
    parent, child = Path(parent).resolve(), Path(child).resolve()
    return child == parent or parent in child.parents


def refuse_overlap(output: str | os.PathLike, inputs: Iterable[str | os.PathLike], what: str = "output") -> None:
    """Raise FileExistsError if ``output`` is, or contains, one of ``inputs``: replacing it would delete them."""
    for source in inputs:
        if source is not None and contains(output, source):
            raise FileExistsError(f"{output}: the {what} contains the input {source}; writing it would destroy "
                                  "the input (choose another output)")


# ----------------------------------------------------------------------------------------------- permissions


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no way to read it without setting it
    os.umask(mask)
    return mask


def normal_permissions(root: str | os.PathLike) -> None:
    """Give ``root`` (file or tree) the modes a plain ``open``/``mkdir`` would: 0666/0777 less the umask.

    Some writers (safetensors, mkstemp) create files 0600; an export is meant to be shared like any output.
    """
    mask = _umask()
    root = Path(root)
    paths = [root] if not root.is_dir() else [root, *root.rglob("*")]
    for p in paths:
        if p.is_symlink():
            continue
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


# ----------------------------------------------------------------------------------------------- temporaries


def fresh_sibling(parent: Path, name: str, tag: str, suffix: str = "", *, make_dir: bool = True) -> Path:
    """A new hidden ``.<name>.<tag>-<pid>-<hex><suffix>`` in ``parent`` (created when ``make_dir``)."""
    while True:
        candidate = parent / f".{name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"
        if not make_dir:
            if not candidate.exists():
                return candidate
            continue
        try:
            candidate.mkdir()  # plain mkdir (not mkdtemp's 0700) honours the umask
            return candidate
        except FileExistsError:
            continue


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that killed runs left in ``directory``; returns what was removed.

    A ``tmp`` (unfinished output) is deleted. An ``old`` (a previous output moved aside for a swap that was
    interrupted) is put back when its original name is free, else deleted. Temporaries of live processes stay.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for entry in sorted(directory.iterdir()):
        m = _TEMP.match(entry.name)
        if m is None or _alive(int(m["pid"])):
            continue
        original = directory / m["name"]
        moved = entry / m["name"]
        if m["tag"] == "old" and moved.exists() and not original.exists():
            os.rename(moved, original)
        _remove(entry)
        removed.append(entry)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------- atomic outputs


def _check_target(final_dir: Path, overwrite: bool) -> None:
    if final_dir.exists() and not final_dir.is_dir():
        raise FileExistsError(f"{final_dir}: output path exists and is not a directory")
    if final_dir.exists() and not overwrite:
        raise FileExistsError(f"{final_dir}: output directory already exists (pass overwrite to replace it)")


@contextlib.contextmanager
def atomic_dir(final_dir: str | os.PathLike, overwrite: bool = False,
               inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary sibling of ``final_dir``; rename it onto ``final_dir`` only on success.

    On any exception (KeyboardInterrupt included) the temporary directory is removed and ``final_dir`` is
    left as it was. A hard kill can leave a hidden ``.<name>.tmp-*`` sibling behind (removed by the next
    :func:`atomic_dir` on the same target), never a partial ``final_dir``. The parent is created if needed and
    must be writable; an existing ``final_dir`` is refused unless ``overwrite``, and an output that is or
    contains one of ``inputs`` is always refused. Files get normal permissions (:func:`normal_permissions`).
    """
    final_dir = Path(final_dir).absolute()
    _check_target(final_dir, overwrite)
    refuse_overlap(final_dir, inputs)
    parent = final_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{parent}: parent of the output directory is not writable")
    clean_stale(parent)
    tmp = fresh_sibling(parent, final_dir.name, "tmp")
    try:
        yield tmp
        _check_target(final_dir, overwrite)  # someone may have created it meanwhile
        normal_permissions(tmp)
        replace_dir(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` onto ``dst``; an existing ``dst`` is moved aside first and restored on failure, and
    deleted only once ``src`` is in place."""
    if not dst.exists():
        os.rename(src, dst)
        return
    trash = fresh_sibling(dst.parent, dst.name, "old")
    os.rename(dst, trash / dst.name)
    try:
        os.rename(src, dst)
    except BaseException:
        os.rename(trash / dst.name, dst)
        shutil.rmtree(trash, ignore_errors=True)
        raise
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that pick a format by extension work);
    it replaces ``path`` only when the block succeeds, and is removed otherwise. Temporaries that killed writers
    left in the folder are removed first (:func:`clean_stale`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent)
    tmp = fresh_sibling(path.parent, path.name, "tmp", path.suffix, make_dir=False)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{tmp}: the writer produced no file for {path}")
        normal_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file so that readers see the old content or the new, never a truncated one."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
