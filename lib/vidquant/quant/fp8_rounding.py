"""FP8 rounding parity: where qtorch's ``float_quantize`` (LLMC, lightx2v's converter) and torch's cast to
float8 (ties to even) round differently, on the grid's tie points and on a model's weights.
"""

from __future__ import annotations

import pandas as pd
import torch

__all__ = ["fp8_tie_points", "fp8_rounding_table", "fp8_code_mismatch"]


def fp8_tie_points(fmt: str = "e4m3") -> torch.Tensor:
    """The exact midpoints between neighbouring finite values of an fp8 format (positive and negative):
    the only inputs on which two round-to-nearest implementations with different tie rules can differ."""
    from vidquant.quant.quantizer import FP8_FORMATS

    dtype = FP8_FORMATS[fmt][0]
    grid = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype).float()
    grid = torch.unique(grid[torch.isfinite(grid)])
    pos = grid[grid >= 0]
    mids = (pos[:-1] + pos[1:]) / 2
    return torch.cat([-mids.flip(0), mids])


def fp8_rounding_table(values: torch.Tensor, fmt: str = "e4m3") -> pd.DataFrame:
    """Each value rounded onto the fp8 grid (scale 1) by torch's cast (ties to even) and by qtorch's
    ``float_quantize`` (as LLMC and lightx2v's converter round), with the difference in grid steps."""
    from vidquant.quant import FloatQuantizer

    x = values.float().flatten()
    one = torch.tensor(1.0)
    native = FloatQuantizer(fmt, granularity="per_tensor").quantize_with(x, one).codes.float()
    qtorch = FloatQuantizer(fmt, granularity="per_tensor", use_qtorch=True).quantize_with(x, one).codes.float()
    grid = torch.unique(torch.cat([native, qtorch]))
    step = {float(v): i for i, v in enumerate(grid.tolist())}
    steps = [step[float(b)] - step[float(a)] for a, b in zip(native.tolist(), qtorch.tolist())]
    return pd.DataFrame({"x": x.numpy(), "native": native.numpy(), "qtorch": qtorch.numpy(), "steps": steps,
                         "differ": (native != qtorch).numpy()})


@torch.no_grad()
def fp8_code_mismatch(transformer, fmt: str = "e4m3") -> pd.DataFrame:
    """For every block linear: how many of its per-channel fp8 weight codes differ between torch's cast and
    qtorch's rounding (one row per layer: block, layer, n, differ, frac)."""
    from vidquant.models.layout import block_linears
    from vidquant.quant import FloatQuantizer

    native, qt = FloatQuantizer(fmt), FloatQuantizer(fmt, use_qtorch=True)
    rows = []
    for i, blk in enumerate(transformer.blocks):
        for name, lin in block_linears(blk).items():
            w = lin.weight.detach().float()
            differ = int((native.quantize(w).codes.float() != qt.quantize(w).codes.float()).sum())
            rows.append({"block": i, "layer": name, "n": w.numel(), "differ": differ, "frac": differ / w.numel()})
    return pd.DataFrame(rows)
