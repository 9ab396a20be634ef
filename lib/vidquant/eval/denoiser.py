"""Whole-denoiser error per timestep, teacher-forced: the float and the quantized transformer get the
very same inputs (latent, timestep, text and image context captured from the float trajectory), so the
error at each step is the quantized model's own, not accumulated drift."""

from __future__ import annotations

import pandas as pd
import torch

from vidquant.calib.capture import CalibData, to_device

__all__ = ["denoiser_outputs", "timestep_errors"]


@torch.no_grad()
def denoiser_outputs(transformer, calib: CalibData, device="cpu") -> list[torch.Tensor]:
    """The transformer's prediction for every captured call (CPU, fp32)."""
    # diffusers' dtype rule skips the keep-in-fp32 modules: the first parameter (scale_shift_table) is fp32 in bf16
    dtype = getattr(transformer, "dtype", None) or next(transformer.parameters()).dtype
    outs = []
    for inputs in calib.denoiser_inputs:
        kw = to_device(inputs, device)
        kw["hidden_states"] = kw["hidden_states"].to(dtype)
        out = transformer(**kw, return_dict=False)[0]
        outs.append(out.float().cpu())
    return outs


def timestep_errors(reference: list[torch.Tensor], quantized: list[torch.Tensor], calib: CalibData) -> pd.DataFrame:
    """Relative L2 error and cosine similarity of the prediction per captured call."""
    rows = []
    for ref, q, meta in zip(reference, quantized, calib.meta):
        diff = (q - ref).norm().item()
        rows.append({
            **meta,
            "rel_err": diff / max(ref.norm().item(), 1e-30),
            "cosine": torch.nn.functional.cosine_similarity(q.flatten(), ref.flatten(), dim=0).item(),
        })
    return pd.DataFrame(rows)
