"""PTQ algorithms (RTN, SmoothQuant, AWQ, GPTQ) and the blockwise engine that runs them."""

from vidquant.algos.base import ALGORITHMS, Algorithm, BlockContext, register
from vidquant.algos.deploy import deploy_fake_quant, fake_quant_linear, quantize_weight
from vidquant.algos.engine import BlockwiseResult, build_algorithms, run_blockwise

__all__ = ["ALGORITHMS", "Algorithm", "BlockContext", "register", "deploy_fake_quant", "fake_quant_linear",
           "quantize_weight", "BlockwiseResult", "build_algorithms", "run_blockwise"]
