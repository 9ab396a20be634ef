"""The methods x formats table knows the formats beyond W8A8 (vidquant.tables)."""

from pathlib import Path

import pandas as pd
import pytest

from vidquant.export.lightx2v_export import check_lightx2v_exportable
from vidquant.run import prepare
from vidquant.tables import BLOCK_FORMATS, METHODS, cell_config, merge_cells

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {"MXFP8": "mxfp8", "MXFP6-MXFP8": "mxfp6-mxfp8", "MXFP4": "mxfp4", "NVFP4": "nvfp4",
            "W4A16-g128": "int4-g128-marlin", "FP8-pertensor": "fp8-pertensor"}


@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_every_block_cell_is_a_valid_exportable_config(tmp_path, monkeypatch, task):
    monkeypatch.chdir(ROOT)
    assert set(BLOCK_FORMATS) == set(EXPECTED)
    for method in METHODS:
        for fmt in BLOCK_FORMATS:
            cfg = cell_config(task, method, fmt, tmp_path)
            assert cfg.save.save_lightx2v
            assert check_lightx2v_exportable(cfg.quant.video_gen) == EXPECTED[fmt]
    prepare(cell_config(task, "GPTQ", "NVFP4", tmp_path))  # every up-front check passes


def test_merge_cells_replaces_and_orders():
    old = pd.DataFrame({"method": ["RTN", "GPTQ"], "format": ["W8A8-int8", "W8A8-int8"], "mean_sqnr_db": [1.0, 2.0]})
    new = pd.DataFrame({"method": ["GPTQ", "RTN"], "format": ["NVFP4", "W8A8-int8"], "mean_sqnr_db": [3.0, 4.0]})
    df = merge_cells(old, new)
    assert list(zip(df["method"], df["format"], df["mean_sqnr_db"])) == [
        ("RTN", "W8A8-int8", 4.0), ("GPTQ", "W8A8-int8", 2.0), ("GPTQ", "NVFP4", 3.0)]


def test_video_means_are_reported_only_with_their_clips():
    import pandas as pd

    from vidquant.tables import without_unbacked_video

    cells = pd.DataFrame({"method": ["RTN", "GPTQ"], "format": ["W8A8-int8"] * 2, "mean_sqnr_db": [44.0, 45.0],
                          "video_psnr": [40.0, 41.0]})
    clips = pd.DataFrame({"method": ["RTN"], "format": ["W8A8-int8"], "psnr": [40.0]})
    out = without_unbacked_video(cells, clips)
    assert out["video_psnr"].tolist()[0] == 40.0 and pd.isna(out["video_psnr"].tolist()[1])
    assert out["mean_sqnr_db"].tolist() == [44.0, 45.0]  # the deterministic metrics stay
