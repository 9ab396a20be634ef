"""The README's Python example runs as written (from a folder laid out like the repository root)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_readme_api_example_runs(tmp_path):
    blocks = readme_python_blocks()
    assert blocks, "README.md has no ```python example"
    for name in ("assets", "configs"):  # what the example reads; it writes under tmp_path, not the checkout
        (tmp_path / name).symlink_to(REPO / name)
    out = subprocess.run([sys.executable, "-c", "\n".join(blocks)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    export = tmp_path / "results/runs/api/lightx2v_quant_model"
    assert str(export.relative_to(tmp_path)) in out.stdout
    assert (export / "config.json").is_file() and list(export.glob("*.safetensors"))
    assert "attn1.to_q" in out.stdout  # the per-layer table was printed
