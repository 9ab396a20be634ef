"""RTN: round-to-nearest with min-max grids. Nothing to search; every linear is quantized at deploy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vidquant.algos.base import Algorithm, BlockContext, MethodConfig, register


@dataclass(frozen=True)
class RTNConfig(MethodConfig):
    """RTN has no options."""

    name: ClassVar[str] = "RTN"


@register
class RTN(Algorithm):
    name = "RTN"
    config_class = RTNConfig

    def transform_block(self, ctx: BlockContext) -> None:
        """Nothing to change: deployment quantizes each weight on its own min-max grid."""
