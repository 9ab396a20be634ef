"""Wan pipelines from local directories, the block layout, and the smoothable block."""

from vidquant.models.layout import (
    SUBSETS,
    Expert,
    Subset,
    block_linear_names,
    block_linears,
    is_i2v_block,
    pipeline_experts,
)
from vidquant.models.loading import (
    EXPERTS,
    MODEL_TYPES,
    CheckpointInfo,
    ModelLoadError,
    inspect_checkpoint,
    load_pipeline,
    resolve_device,
    resolve_dtype,
)

__all__ = [
    "SUBSETS", "Expert", "Subset", "block_linear_names", "block_linears", "is_i2v_block", "pipeline_experts",
    "EXPERTS", "MODEL_TYPES", "CheckpointInfo", "ModelLoadError", "inspect_checkpoint", "load_pipeline",
    "resolve_device", "resolve_dtype",
]
