"""Mutation testing of the maths with mutmut (`make mutation`; not part of `make test`).

mutmut 3 derives module names from file paths and only understands `./`, `src/` or `source/` layouts, so each
group is run in a staging folder `.mutation/<group>/` holding a copy of `lib/vidquant` as `src/vidquant`, the
tests, and this repository's pyproject.toml with the group's `[tool.mutmut]` section appended (the settings
common to all groups are in pyproject.toml's `[tool.mutmut]`). mutmut maps every mutated function to the
tests that execute it and runs only those, one mutant at a time (`--max-children`, default 1).

Each group's verdicts go to results/mutation/<group>.json; results/mutation/summary.md is rebuilt from every
group file present, with the mutants listed in EQUIVALENT (results/mutation/equivalent.json: mutant name ->
{"reason": one line, "change": the mutant's -/+ lines}) counted as equivalent rather than surviving. mutmut
names a mutant by its function and position, so an edit to the function can give the name to another mutation:
an entry counts only while its recorded change is still the mutant's, else it is reported as stale.

    python scripts/mutation.py                 # every group
    python scripts/mutation.py quant gptq      # some groups
    python scripts/mutation.py --survivors quant  # re-test only the last run's survivors (after new tests)
    python scripts/mutation.py --unrun awq      # only the mutants an interrupted run did not reach
    python scripts/mutation.py --stale quant    # only the mutants of functions changed since the verdicts
    python scripts/mutation.py --summary-only  # rebuild summary.md from the group files
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE = REPO / ".mutation"
OUT = REPO / "results" / "mutation"
EQUIVALENT = OUT / "equivalent.json"

#: group -> (files under lib/vidquant to mutate, the fast tests that exercise them).
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "quant": (["quant/quantizer.py", "quant/builders.py"], ["tests/test_quantizer.py", "tests/test_quant_linear.py"]),
    "gptq": (["algos/gptq.py"], ["tests/test_gptq.py", "tests/test_method_options.py"]),
    "smoothing": (["algos/smoothquant.py", "algos/fold.py", "algos/base.py", "algos/rtn.py"],
                  ["tests/test_smoothquant.py", "tests/test_layer_metrics.py", "tests/test_block_context.py",
                   "tests/test_method_options.py"]),
    "deploy": (["algos/deploy.py", "algos/engine.py"],
               ["tests/test_deploy.py", "tests/test_layer_metrics.py", "tests/test_engine.py"]),
    "awq": (["algos/awq.py"], ["tests/test_awq.py", "tests/test_layer_metrics.py", "tests/test_method_options.py"]),
    "linear": (["quant/linear.py", "quant/int8_gemm.py"], ["tests/test_quant_linear.py", "tests/test_int8_gemm.py"]),
    "blockfmt": (["quant/blockfmt.py", "quant/__init__.py"],
                 ["tests/test_formats_quant.py", "tests/test_static_act.py"]),
    "export": (["export/keymap.py", "export/converter.py"],
               ["tests/test_keymap.py", "tests/test_converter.py", "tests/test_formats_export.py"]),
}
STATUSES = ("killed", "survived", "no tests", "timeout", "suspicious", "skipped", "not checked", "segfault")


def stage(group: str) -> Path:
    """Fresh copy of the sources and tests in .mutation/<group>, keeping mutmut's cache (mutants/) if any."""
    files, tests = GROUPS[group]
    root = STAGE / group
    for sub in ("src", "tests"):
        shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "lib" / "vidquant", root / "src" / "vidquant", ignore=ignore)
    for f in files:
        _undecorate(root / "src" / "vidquant" / f)
    shutil.copytree(REPO / "tests", root / "tests", ignore=ignore)
    section = (
        "\n[tool.mutmut]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in _common_config().items())
        + 'source_paths = ["src/vidquant"]\n'
        + f"only_mutate = {json.dumps([f'src/vidquant/{f}' for f in files])}\n"
        + f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
    )
    # Tests find the tiny models, the scripts and the configs under the repository root; mutmut runs them from
    # <stage>/mutants.
    (root / "mutants").mkdir(exist_ok=True)
    for shared in ("assets", "scripts", "configs"):
        if not (root / "mutants" / shared).exists():
            (root / "mutants" / shared).symlink_to(REPO / shared)
    # mutmut maps each test to the functions it ran when the test was new; a test whose body changed keeps that
    # old map (it would not be run for the functions it now reaches). When any test file changed, re-collect.
    tests_sha = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((REPO / "tests").rglob("*.py")))).hexdigest()
    marker = root / "tests.sha"
    if not marker.exists() or marker.read_text() != tests_sha:
        (root / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
        marker.write_text(tests_sha)
    text = (REPO / "pyproject.toml").read_text()
    text = re.sub(r"\n\[tool\.mutmut\]\n(?:(?!\n\[).)*", "\n", text, flags=re.S)  # replaced by the section
    (root / "pyproject.toml").write_text(text + section)
    return root


#: decorators mutmut would make it skip a function, and how each is re-applied after the module's end.
REAPPLY = {"torch.no_grad()": "torch.no_grad()({})", "functools.cache": "functools.cache({})",
           "contextlib.contextmanager": "contextlib.contextmanager({})", "contextmanager": "contextmanager({})",
           "property": "property({})"}


def _undecorate(path: Path) -> None:
    """mutmut 3 does not mutate decorated functions, and much of the maths is decorated: @torch.no_grad()
    (GPTQSolver.quantize, fold_smoothing, linear_error_stats, AWQ's search, ...), @functools.cache, context
    managers and properties. In the staged copy only, move each such single decorator to an equivalent
    assignment at the end of the module (`f = torch.no_grad()(f)`, `C.m = property(C.m)`), so that the bodies
    get mutants and behave as before."""
    import ast

    lines = path.read_text().splitlines()
    wrapped, drop = [], set()
    for node in ast.parse("\n".join(lines)).body:
        scopes = [(node, "")] if isinstance(node, ast.FunctionDef) else []
        if isinstance(node, ast.ClassDef):
            scopes = [(n, f"{node.name}.") for n in node.body if isinstance(n, ast.FunctionDef)]
        for fn, prefix in scopes:
            if len(fn.decorator_list) == 1 and ast.unparse(fn.decorator_list[0]) in REAPPLY:
                dec = fn.decorator_list[0]
                drop.add(dec.lineno - 1)
                wrapped.append(f"{prefix}{fn.name} = " + REAPPLY[ast.unparse(dec)].format(prefix + fn.name))
    if wrapped:
        kept = [line for i, line in enumerate(lines) if i not in drop]
        path.write_text("\n".join(kept + ["", *wrapped]) + "\n")


def _common_config() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]


def run_group(group: str, max_children: int, survivors_only: bool = False, collect_only: bool = False,
              only: list[str] | None = None, unrun_only: bool = False, stale_only: bool = False) -> dict:
    """Run mutmut on one group (only the previous run's survivors with survivors_only, only the mutants whose
    names match the globs in `only`) and record verdicts; collect_only records the verdicts an interrupted run
    left in .mutation/<group> (unrun ones: not checked). A partial run's verdicts update the previous record's.
    stale_only runs the mutants of the functions changed since the record's verdicts (`stale_globs`)."""
    previous = OUT / f"{group}.json"
    names = list(only or [])
    if stale_only and previous.exists():
        names += stale_globs(json.loads(previous.read_text()), GROUPS[group][0])
        if not names:  # the verdicts describe the current code: say so
            record = json.loads(previous.read_text())
            record["source_sha"] = {f: source_sha(f) for f in GROUPS[group][0]}
            previous.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
            print(f"{group}: no function changed since its verdicts")
            return record
    wanted = (("survived", "no tests") if survivors_only else ()) + (("not checked",) if unrun_only else ())
    if wanted and previous.exists():
        names += [n for n, s in json.loads(previous.read_text())["verdicts"].items() if s in wanted]
    root = STAGE / group if collect_only else stage(group)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the staged copy, not lib/, is imported
    mutmut = [sys.executable, "-m", "mutmut"]
    started = dt.datetime.now(dt.timezone.utc)
    if wanted and not names:
        print(f"{group}: no {' or '.join(wanted)} mutants to run")
        return json.loads(previous.read_text())
    if not collect_only:
        subprocess.run([*mutmut, "run", "--max-children", str(max_children), *names], cwd=root, env=env,
                       check=True)
    seconds = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    listing = subprocess.run([*mutmut, "results", "--all", "true"], cwd=root, env=env, check=True,
                             capture_output=True, text=True).stdout
    partial = bool(names) or collect_only
    old = json.loads(previous.read_text()) if partial and previous.exists() else {}
    verdicts = dict(old.get("verdicts", {}))
    current = {}
    for line in listing.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if status in STATUSES:
            current[name] = status
    # mutants of functions that no longer exist are dropped; a partial run keeps the earlier verdicts of the rest
    verdicts = {n: s for n, s in verdicts.items() if n in current}
    # (a timeout mutmut has reset to "not checked", after a change of the time limits, is no verdict any more)
    verdicts.update({n: s for n, s in current.items()
                     if not (s == "not checked" and verdicts.get(n, "timeout") != "timeout")})
    # the source each file's verdicts were obtained on: a partial run keeps the earlier run's for a file it had
    had = {module_of(n) for n in old.get("verdicts", {})}
    sha = {f: (old.get("source_sha", {}).get(f) if f in had and not stale_only else source_sha(f))
           for f in GROUPS[group][0]}
    # a mutant's name is its function's n-th mutation: a recorded diff is still its diff only if the module is
    # unchanged since that record
    same = {f for f in GROUPS[group][0] if old.get("source_sha", {}).get(f) == source_sha(f)}
    diffs = {name: (old.get("survivor_diffs", {}).get(name) if module_of(name) in same else None)
             or _diff(mutmut, root, env, name)
             for name, status in verdicts.items() if status in ("survived", "no tests")}
    mode = "--collect " if collect_only else "--survivors " if survivors_only else ""
    mode += "--unrun " if unrun_only else ""
    mode += "--stale " if stale_only else ""
    mode += "".join(f"--only '{g}' " for g in only or [])
    this_run = {"command": f"python scripts/mutation.py {mode}{group} "
                           f"(mutmut run --max-children {max_children} in .mutation/{group})"
                           + (", interrupted: verdicts collected from the stage" if collect_only else ""),
                "mutants_run": _count(listing, names) if names else "all",
                "date": started.strftime("%Y-%m-%d %H:%M UTC"),
                "seconds": round(seconds), "cpu": cpu_name()}
    earlier = old.get("runs", [])
    record = {"group": group, "files": GROUPS[group][0], "tests": GROUPS[group][1], "runs": [*earlier, this_run],
              "source_sha": sha, "no_mutants": [f for f in GROUPS[group][0] if f not in map(module_of, current)],
              "verdicts": verdicts, "survivor_diffs": diffs}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{group}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return record


def stale_globs(record: dict, files: list[str]) -> list[str]:
    """Mutant-name globs for the functions whose code changed since a group record's verdicts were obtained: the
    rest keep their verdicts, as mutmut's own incremental runs keep those of functions whose hash is unchanged.
    The version the verdicts describe is found in git history by the record's source_sha, or (records older than
    source_sha) as the file committed before the record's first full run. A file of `files` whose version is not
    found, or that the record does not cover, is stale as a whole."""
    globs = []
    for file in files:
        sha = record.get("source_sha", {}).get(file)
        if sha == source_sha(file):
            continue
        module = "vidquant." + file[:-3].replace("/", ".")
        if file not in record["files"]:
            old = None
        else:
            old = _source_with_sha(file, sha) if sha else _source_before_first_run(file, record)
        if old is None:
            globs.append(f"{module}.x*")
            continue
        before, now = _functions(old), _functions((REPO / "lib" / "vidquant" / file).read_text())
        for name, code in now.items():
            if before.get(name) != code:
                cls, _, fn = name.rpartition(".")
                globs.append(f"{module}.xǁ{cls}ǁ{fn}__mutmut_*" if cls else f"{module}.x_{fn}__mutmut_*")
    return globs


def _source_before_first_run(file: str, record: dict) -> str | None:
    """lib/vidquant/<file> as committed before the record's first run over all mutants."""
    dates = [r["date"] for r in record.get("runs", []) if r.get("mutants_run") == "all" and "--collect" not in
             r["command"]]
    if not dates:
        return None
    path = f"lib/vidquant/{file}"
    before = dates[0].replace(" UTC", " +0000")
    commit = subprocess.run(["git", "log", "-1", "--format=%H", f"--before={before}", "--", path], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    if not commit:
        return None
    return subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO, capture_output=True, text=True).stdout


def _source_with_sha(file: str, sha: str) -> str | None:
    """The committed version of lib/vidquant/<file> whose source_sha is `sha` (None: not in the history)."""
    import hashlib

    path = f"lib/vidquant/{file}"
    commits = subprocess.run(["git", "log", "--format=%H", "--", path], cwd=REPO, capture_output=True,
                             text=True).stdout.split()
    for commit in commits:
        blob = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO, capture_output=True).stdout
        if hashlib.sha256(blob).hexdigest()[:16] == sha:
            return blob.decode()
    return None


def _functions(text: str) -> dict[str, str]:
    """{'f' or 'Class.method': its AST} for the module-level functions and methods mutmut mutates."""
    import ast

    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = ast.dump(node)
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out[f"{node.name}.{sub.name}"] = ast.dump(sub)
    return out


def source_sha(file: str) -> str:
    """sha256 of lib/vidquant/<file> (to tell whether recorded verdicts still describe the code)."""
    return hashlib.sha256((REPO / "lib" / "vidquant" / file).read_bytes()).hexdigest()[:16]


def _count(listing: str, globs: list[str]) -> int:
    import fnmatch

    names = [line.strip().rpartition(": ")[0] for line in listing.splitlines()]
    return sum(any(fnmatch.fnmatch(n, g) for g in globs) for n in names)


def _diff(mutmut: list[str], root: Path, env: dict, name: str) -> str:
    out = subprocess.run([*mutmut, "show", name], cwd=root, env=env, capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines()
                     if line[:1] in "+-" and not line.startswith(("+++", "---")))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def module_of(mutant: str) -> str:
    """'vidquant.quant.quantizer.xǁIntQuantizerǁ__init____mutmut_7' -> 'quant/quantizer.py'."""
    parts = mutant.split(".")
    i = next(k for k, p in enumerate(parts) if p.startswith(("x_", "xǁ")))
    return "/".join(parts[1:i]) + ".py"


def _percentages(c: dict[str, int]) -> tuple[float, float]:
    """(survived %, survived + equivalent %) of the judged mutants: killed (timeouts count as killed), survived,
    no tests (untested code's mutants survive) and equivalent."""
    k, e = c.get("killed", 0) + c.get("timeout", 0), c.get("equivalent", 0)
    s = c.get("survived", 0) + c.get("no tests", 0)
    judged = max(k + s + e, 1)
    return 100 * s / judged, 100 * (s + e) / judged


def _table_row(label: str, c: dict[str, int]) -> str:
    survived, with_equivalent = _percentages(c)
    return (f"| {label} | {sum(c.values())} | {c.get('killed', 0)} | {c.get('survived', 0)} | "
            f"{c.get('equivalent', 0)} | {c.get('no tests', 0)} | {c.get('timeout', 0)} | {c.get('not checked', 0)} | "
            f"{survived:.1f} | {with_equivalent:.1f} |")


def change_of(diff: str) -> str:
    """The -/+ lines of a mutant's diff (what it changes), without the file headers."""
    return "\n".join(line.rstrip() for line in diff.splitlines()
                     if line.startswith(("-", "+")) and not line.startswith(("---", "+++")))


def write_summary() -> Path:
    equivalent = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
    stale_entries = []
    records = [json.loads((OUT / f"{g}.json").read_text()) for g in GROUPS if (OUT / f"{g}.json").exists()]
    lines = ["# Mutation testing summary", "",
             "Generated by `make mutation` (scripts/mutation.py, mutmut; settings in pyproject.toml "
             "`[tool.mutmut]`). Error, warning and log message text is not mutated (`do_not_mutate_patterns`); the "
             "conditions that raise are. *Equivalent*: a surviving mutant listed in results/mutation/"
             "equivalent.json with the reason no test can tell it apart. *No tests*: mutants in code no test of the "
             "group runs; they survive by definition and count as survivors. Survival rate = (survived + no tests) "
             "/ (killed + survived + no tests + equivalent); *not run*: mutants an interrupted run did not reach.",
             "",
             "mutmut skips decorated functions. Runs dated before 2026-11-30 08:40 UTC therefore did not mutate the "
             "`@torch.no_grad()` functions (GPTQSolver.quantize, GPTQ.transform_block, fold_smoothing, "
             "linear_error_stats, collect_linear_inputs, AWQ's search and clip); later runs stage them undecorated "
             "(`_undecorate`), so their bodies are mutated too (and @functools.cache, context managers and properties "
             "since 2026-11-30 10:00).", "",
             "Runs before 2026-11-30 11:00 used mutmut's default wall-clock limit ((estimate + 1 s) x 15): on the "
             "loaded machine slow but passing runs were cut off and counted as *timeout* (killed); pyproject.toml now "
             "sets timeout_constant = 20, and mutmut re-runs the timeouts of a kept stage when it changes.", "",
             "| module | mutants | killed | survived | equivalent | no tests | timeout | not run | survived % | "
             "survived+equivalent % |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    survivors, equivalents = [], []
    per_dir: dict[str, dict[str, int]] = {}
    for rec in records:
        per: dict[str, dict[str, int]] = {}
        for name, status in rec["verdicts"].items():
            entry = equivalent.get(name)
            if entry and status in ("survived", "no tests"):
                if entry["change"] == change_of(rec["survivor_diffs"].get(name, "")):
                    status = "equivalent"
                    equivalents.append((name, entry["reason"]))
                else:
                    stale_entries.append((name, entry["reason"]))
            if status in ("survived", "no tests"):
                survivors.append((name, status, rec["survivor_diffs"].get(name, "")))
            module = module_of(name)
            for counts, key in ((per, module), (per_dir, module.split("/")[0] + "/")):
                counts.setdefault(key, {}).setdefault(status, 0)
                counts[key][status] += 1
        for module, c in sorted(per.items()):
            stale = rec.get("source_sha", {}).get(module) != source_sha(module)
            lines.append(_table_row(f"{module} (stale: source changed since the run)" if stale else module, c))
    lines += [_table_row(f"**{d} (all)**", c) for d, c in sorted(per_dir.items())]
    rates = {d: _percentages(c)[0] for d, c in per_dir.items()}
    lines += ["", "Target (issue 15): at most 10 % surviving in quant/ and algos/, every survivor killed or listed as "
              "equivalent. Now: " + "; ".join(f"{d} {rates[d]:.1f} %" for d in ("quant/", "algos/") if d in rates)
              + f"; unexplained survivors in quant/ and algos/: "
              f"{sum(1 for n, *_ in survivors if module_of(n).startswith(('quant/', 'algos/')))}."]
    seen = {module_of(n) for rec in records for n in rec["verdicts"]}
    empty = {f for rec in records for f in rec.get("no_mutants", [])}
    missing = [f for files, _ in GROUPS.values() for f in files if f not in seen | empty]
    lines += ["", "No mutants (no code mutmut mutates): " + (", ".join(sorted(empty)) or "none") + "."]
    lines += ["", "Not run yet (no verdicts recorded): " + (", ".join(missing) or "none") + "."]
    lines += ["", "## Runs", ""]
    for rec in records:
        lines.append(f"- **{rec['group']}** ({', '.join(rec['files'])}; tests {', '.join(rec['tests'])}):")
        lines += [f"  - `{r['command']}`: {r['mutants_run']} mutants, {r['date']}, {r['seconds']} s on {r['cpu']}"
                  for r in rec["runs"]]
    lines += ["", "## Equivalent mutants", ""]
    lines += [f"- `{n}`: {reason}" for n, reason in sorted(equivalents)] or ["(none)"]
    if stale_entries:
        lines += ["", "## Stale equivalent entries (the name now belongs to another mutation: counted as surviving)",
                  ""]
        lines += [f"- `{n}`: {reason}" for n, reason in sorted(stale_entries)]
    lines += ["", "## Surviving mutants (not yet killed nor explained)", ""]
    for name, status, diff in sorted(survivors):
        lines += [f"- `{name}`" + (" (no test runs it)" if status == "no tests" else ""), "  ```diff",
                  *[f"  {d}" for d in diff.splitlines()], "  ```"]
    if not survivors:
        lines.append("(none)")
    path = OUT / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", help=f"groups to run, of {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--max-children", type=int, default=1, help="mutants run in parallel (default 1)")
    parser.add_argument("--summary-only", action="store_true", help="only rebuild summary.md")
    parser.add_argument("--collect", action="store_true",
                        help="record the verdicts an interrupted run left in .mutation/<group> (no run)")
    parser.add_argument("--only", action="append", metavar="GLOB",
                        help="run only the mutants whose names match (repeatable; e.g. '*fold_smoothing*')")
    parser.add_argument("--survivors", action="store_true",
                        help="re-run only the previous run's surviving and untested mutants (after adding tests)")
    parser.add_argument("--stale", action="store_true",
                        help="run only the mutants of functions changed since the recorded verdicts")
    parser.add_argument("--unrun", action="store_true",
                        help="run only the mutants the previous record has not checked (an interrupted run's rest)")
    args = parser.parse_args()
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {unknown}; choose from {list(GROUPS)}")
    if not args.summary_only:
        for group in args.groups or list(GROUPS):
            run_group(group, args.max_children, args.survivors, args.collect, args.only, args.unrun, args.stale)
    print(f"wrote {write_summary()}")


if __name__ == "__main__":
    main()
