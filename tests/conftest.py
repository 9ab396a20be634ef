"""Shared fixtures: small random Wan pipelines saved to disk and loaded back like real checkpoints."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_t2v_dir(tmp_path_factory):
    from vidquant.models.tiny import make_random_tiny_pipeline_dir

    return make_random_tiny_pipeline_dir("t2v", tmp_path_factory.mktemp("models") / "tiny-t2v")


@pytest.fixture(scope="session")
def tiny_i2v_dir(tmp_path_factory):
    from vidquant.models.tiny import make_random_tiny_pipeline_dir

    return make_random_tiny_pipeline_dir("i2v", tmp_path_factory.mktemp("models") / "tiny-i2v")


@pytest.fixture(scope="session")
def tiny_dirs(tiny_t2v_dir, tiny_i2v_dir):
    return {"t2v": tiny_t2v_dir, "i2v": tiny_i2v_dir}


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
