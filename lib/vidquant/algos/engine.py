"""The blockwise PTQ loop (llmc_reference §2.4): one block on the compute device at a time.

For each block: run the captured inputs through it with hooks that collect each linear's input (one
copy for layers sharing an input), hand the block to each algorithm in the chain, measure each linear's
quantization error, and pass the block's float outputs on (or its fake-quantized outputs with
`quant_out`). The model is modified in place and never held twice.
"""

from __future__ import annotations

import logging

import pandas as pd
import torch
from tqdm.auto import tqdm

from vidquant.algos.base import ALGORITHMS, Algorithm, BlockContext
from vidquant.algos.deploy import fake_quantized, linear_error_stats
from vidquant.calib.capture import CalibData, to_device
from vidquant.models.block import make_transformer_smoothable
from vidquant.models.layout import SUBSETS, block_linears

__all__ = ["run_blockwise", "calibrate_block", "build_algorithms", "collect_linear_inputs", "BlockwiseResult"]

log = logging.getLogger("vidquant")


class BlockwiseResult:
    """What calibration decided: fixed weight grids per layer (`blocks.N.<linear>`), smoothing factors, and
    the per-layer error table."""

    def __init__(self):
        self.weight_qparams: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.smooth: dict[str, torch.Tensor] = {}
        # max |x| of each linear's (smoothed) input over the calibration data: static activation scales
        self.input_absmax: dict[str, torch.Tensor] = {}
        self.layer_rows: list[dict] = []
        self.logs: dict[int, dict] = {}

    @property
    def layer_metrics(self) -> pd.DataFrame:
        return pd.DataFrame(self.layer_rows)


def build_algorithms(methods: list, special_for=None) -> list[Algorithm]:
    """Instantiate the chain: method configs (`[SmoothQuantConfig(alpha=0.75), GPTQConfig()]`), or names with
    `special_for(name)` giving each one's LLMC `special` dict (importing the algorithm modules registers them)."""
    from vidquant.algos import awq, gptq, rtn, smoothquant  # noqa: F401 - registration

    return [ALGORITHMS[m](special_for(m)) if isinstance(m, str) else ALGORITHMS[m.name](m) for m in methods]


@torch.no_grad()
def collect_linear_inputs(block, hidden_states, kwargs, device) -> tuple[dict, list[torch.Tensor]]:
    """Run every sample through `block`; return ({linear: [input per sample]}, [output per sample]).

    Layers fed the very same tensor (q, k, v; the two image projections) share one list, so each input
    is stored once. NaN/Inf in an input stops calibration naming the block's layer.
    """
    linears = block_linears(block)
    inputs: dict[str, list] = {n: [] for n in linears}
    # Inputs seen during the current sample, kept alive so that `is` identity is meaningful.
    seen: list[tuple[torch.Tensor, str]] = []
    alias: dict[str, str] = {}

    def hook(name):
        def fn(module, args):
            x = args[0]
            if not torch.isfinite(x).all():
                raise FloatingPointError(f"non-finite values (NaN/Inf) in the input of {name}")
            owner = next((n for t, n in seen if t is x), None)
            if owner is not None:
                alias[name] = owner  # the very same tensor as an earlier layer's input
                inputs[name].append(None)
            else:
                seen.append((x, name))
                inputs[name].append(x.detach().to("cpu", copy=True))
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in linears.items()]
    outputs = []
    try:
        for hs, kw in zip(hidden_states, kwargs):
            seen.clear()
            out = block(hs.to(device), **to_device(kw, device))
            outputs.append(out.detach().to("cpu"))
    finally:
        for h in handles:
            h.remove()
    for name, owner in alias.items():
        inputs[name] = inputs[owner]
    return inputs, outputs


def run_blockwise(
    transformer,
    calib: CalibData,
    algorithms: list[Algorithm],
    wq,
    aq,
    device: torch.device | str = "cpu",
    quant_out: bool = False,
    progress: bool = True,
) -> BlockwiseResult:
    """Calibrate every block of `transformer` in place. Returns fixed grids, smoothing and layer errors."""
    device = torch.device(device)
    make_transformer_smoothable(transformer)
    result = BlockwiseResult()
    hidden = list(calib.hidden_states)
    blocks = transformer.blocks
    for index in tqdm(range(len(blocks)), desc="blockwise PTQ", disable=not progress):
        block = blocks[index]
        home = next(block.parameters()).device
        block.to(device)
        hidden = calibrate_block(block, index, hidden, calib, algorithms, wq, aq, device, quant_out, result)
        block.to(home)
    return result


def calibrate_block(block, index: int, hidden: list[torch.Tensor], calib: CalibData, algorithms: list[Algorithm],
                    wq, aq, device: torch.device, quant_out: bool, result: BlockwiseResult) -> list[torch.Tensor]:
    """Calibrate one block (already on `device`) in place, record its grids, smoothing and layer errors in
    `result`, and return the next block's inputs. The body of `run_blockwise`, shared with the streaming mode
    (vidquant.stream), which loads each block from disk instead of holding the model."""
    try:
        inputs, float_out = collect_linear_inputs(block, hidden, calib.block_kwargs, device)
    except FloatingPointError as err:
        raise FloatingPointError(f"block {index}: {err}; stopping calibration") from None
    linears = block_linears(block)
    original = {n: (lin.weight.detach().clone(), list(inputs[n])) for n, lin in linears.items()}
    ctx = BlockContext(index, block, linears, inputs, hidden, calib.block_kwargs, wq, aq, device)
    for algo in algorithms:
        algo.transform_block(ctx)
    prefix = f"blocks.{index}."
    for name, lin in linears.items():
        w0, x0 = original[name]
        stats = linear_error_stats(w0, lin, x0, ctx.smooth.get(name), wq, aq, ctx.weight_qparams.get(name), device)
        result.layer_rows.append({"block": index, "layer": name, "subset": _subset_of(name), **stats})
        result.input_absmax[prefix + name] = input_absmax(x0, ctx.smooth.get(name))
    result.weight_qparams.update({prefix + k: v for k, v in ctx.weight_qparams.items()})
    result.smooth.update({prefix + k: v for k, v in ctx.smooth.items()})
    result.logs[index] = ctx.log
    if quant_out:
        with fake_quantized(block, wq, aq, ctx.weight_qparams):
            _, float_out = collect_linear_inputs(block, hidden, calib.block_kwargs, device)
    return float_out


def input_absmax(inputs: list[torch.Tensor], smooth: torch.Tensor | None) -> torch.Tensor:
    """max |x / s| over every token of every sample (0-dim fp32): what a static activation scale must cover."""
    amax = torch.zeros(())
    for x in inputs:
        xs = x.float() if smooth is None else x.float() / smooth.cpu().float()
        amax = torch.maximum(amax, xs.abs().amax().cpu())
    return amax


def _subset_of(name: str) -> str:
    for s in SUBSETS:
        if name in s.layers:
            return s.name
    return "-"
