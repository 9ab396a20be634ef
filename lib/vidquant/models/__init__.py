"""Wan pipelines from local directories, the block layout, and the smoothable block."""

from vidquant.models.layout import SUBSETS, Subset, block_linear_names, block_linears, is_i2v_block
from vidquant.models.loading import (
    CheckpointInfo,
    ModelLoadError,
    inspect_checkpoint,
    load_pipeline,
    resolve_device,
    resolve_dtype,
)

__all__ = [
    "SUBSETS", "Subset", "block_linear_names", "block_linears", "is_i2v_block",
    "CheckpointInfo", "ModelLoadError", "inspect_checkpoint", "load_pipeline", "resolve_device", "resolve_dtype",
]
