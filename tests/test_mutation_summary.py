"""scripts/mutation.py's summary (`make mutation`): how verdicts and listed equivalents are counted."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _harness():
    spec = importlib.util.spec_from_file_location("mutation_harness", REPO / "scripts" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _diff(old: str, new: str) -> str:
    return f"--- src/vidquant/quant/linear.py\n+++ src/vidquant/quant/linear.py\n@@ -1 +1 @@\n-{old}\n+{new}\n"


def test_an_equivalent_entry_counts_only_while_its_change_is_the_mutants(tmp_path, monkeypatch):
    """A listed mutant whose recorded change still matches is equivalent; one whose name now belongs to another
    change is reported stale and counts as surviving, as does a mutant no test runs."""
    m = _harness()
    monkeypatch.setattr(m, "OUT", tmp_path)
    monkeypatch.setattr(m, "EQUIVALENT", tmp_path / "equivalent.json")
    monkeypatch.setattr(m, "GROUPS", {"g": (["quant/linear.py"], ["tests/test_quant_linear.py"])})
    name = "vidquant.quant.linear.x_f__mutmut_{}".format
    diffs = {name(2): _diff("y = a", "y = b"), name(3): _diff("z = 1", "z = None"), name(4): _diff("w = 1", "w = 2")}
    record = {"group": "g", "files": ["quant/linear.py"], "tests": [], "runs": [], "no_mutants": [],
              "source_sha": {"quant/linear.py": m.source_sha("quant/linear.py")},
              "verdicts": {name(1): "killed", name(2): "survived", name(3): "survived", name(4): "no tests"},
              "survivor_diffs": diffs}
    (tmp_path / "g.json").write_text(json.dumps(record))
    listed = {name(2): {"reason": "same value", "change": "-y = a\n+y = b"},
              name(3): {"reason": "an older mutation of that name", "change": "-z = 1\n+z = 0"}}
    (tmp_path / "equivalent.json").write_text(json.dumps(listed))
    text = m.write_summary().read_text()
    # module | mutants | killed | survived | equivalent | no tests | timeout | not run | survived % | +equivalent %
    assert "| quant/linear.py | 4 | 1 | 1 | 1 | 1 | 0 | 0 | 50.0 | 75.0 |" in text
    assert "| **quant/ (all)** | 4 | 1 | 1 | 1 | 1 | 0 | 0 | 50.0 | 75.0 |" in text
    assert "unexplained survivors in quant/ and algos/: 2." in text
    stale = text.split("## Stale equivalent entries")[1].split("##")[0]
    assert name(3) in stale and name(2) not in stale
    assert f"`{name(2)}`: same value" in text.split("## Equivalent mutants")[1]
    assert f"`{name(4)}` (no test runs it)" in text
