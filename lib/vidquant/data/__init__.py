"""Data sources: procedural video clips for training and evaluating the tiny Wan models."""

from vidquant.data.procedural import (
    ALL_PROMPTS,
    COLOURS,
    DIRECTIONS,
    SHAPES,
    VOCABULARY,
    ClipSpec,
    ProceduralVideoDataset,
    eval_prompt_set,
    make_prompt,
    render_clip,
    sample_spec,
)

__all__ = [
    "ALL_PROMPTS",
    "COLOURS",
    "DIRECTIONS",
    "SHAPES",
    "VOCABULARY",
    "ClipSpec",
    "ProceduralVideoDataset",
    "eval_prompt_set",
    "make_prompt",
    "render_clip",
    "sample_spec",
]
