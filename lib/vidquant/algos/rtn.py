"""RTN: round-to-nearest with min-max grids. Nothing to search; every linear is quantized at deploy."""

from __future__ import annotations

from vidquant.algos.base import Algorithm, BlockContext, register


@register
class RTN(Algorithm):
    name = "RTN"

    def transform_block(self, ctx: BlockContext) -> None:
        """Nothing to change: deployment quantizes each weight on its own min-max grid."""
