"""`vidquant quantize` with `save.save_lightx2v: true` over the whole methods x formats matrix of the tables
(vidquant.tables.METHODS x FORMATS, both tiny tasks): what lightx2v can run is accepted by every up-front check and
gets its lightx2v scheme; the rest is refused by the CLI with exit 2 and a one-line message, before the model is
loaded and before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidquant.cli import main as cli_main
from vidquant.config import dump_config
from vidquant.run import prepare
from vidquant.tables import FORMATS, METHODS, cell_config

ROOT = Path(__file__).resolve().parents[1]
# lightx2v's scheme for each table format it has a kernel for (docs/formats.md §4, §5); the others it cannot run
# (W6A6 would be int32 codes, W4A8 per-channel int4 weights: no such lightx2v matmul).
EXPECTED = {"W8A8-int8": "int8", "FP8-e4m3": "fp8", "MXFP8": "mxfp8", "MXFP6-MXFP8": "mxfp6-mxfp8",
            "MXFP4": "mxfp4", "NVFP4": "nvfp4", "W4A16-g128": "int4-g128-marlin", "FP8-pertensor": "fp8-pertensor"}
REFUSED = {"W6A6": "quant.video_gen.weight.bit: got 6", "W4A8": "quant.video_gen.weight.bit: got 4"}


def test_matrix_is_the_tables():
    assert set(EXPECTED) | set(REFUSED) == set(FORMATS) and not set(EXPECTED) & set(REFUSED)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_quantize_accepts_or_refuses_before_any_work(tmp_path, monkeypatch, capsys, task, method, fmt):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    cfg = cell_config(task, method, fmt, out, extra={"save.save_lightx2v": True})
    if fmt in EXPECTED:
        assert prepare(cfg)["scheme"] == EXPECTED[fmt]
        return
    loads = []
    monkeypatch.setattr("vidquant.run.load_pipeline", lambda *a, **k: loads.append(a))
    path = tmp_path / "cell.yaml"
    path.write_text(dump_config(cfg))
    assert cli_main(["quantize", "--config", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert REFUSED[fmt] in err and "lightx2v" in err and len(err.splitlines()) == 1, err
    assert loads == [] and not out.exists()
