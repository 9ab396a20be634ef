"""Capture what enters transformer block 0 during real denoising (llmc_reference §2.3).

Each transformer call (one per CFG branch per denoising step) that is selected gives one calibration
sample: block 0's hidden states plus its kwargs (`encoder_hidden_states`, `temb`, `rotary_emb`), and the
transformer's own inputs (for teacher-forced whole-denoiser metrics). Calls are counted as LLMC counts
them (`sample_steps` = number of block-0 calls per prompt), with two selection rules:

- `first`: LLMC's rule, the first `sample_steps` calls: with CFG and 50 steps, 40 calls cover only the
  first 20 (high-noise) steps.
- `uniform` (default): `sample_steps / calls_per_step` denoising steps spread over the whole trajectory,
  both CFG branches at each, so late low-noise steps are calibrated too.

Wan2.2 A14B (two experts, `models.pipeline_experts`): `capture_expert_inputs` records each expert's block 0
only at the denoising steps it serves (timestep >= boundary for `transformer`, below for `transformer_2`,
from the pipeline's own scheduler), both CFG branches, `sample_steps` calls per prompt *per expert*, with the
same selection rules applied to that expert's steps. One pipeline run per prompt feeds both experts.

Nothing is swallowed: the pipeline is stopped after the last selected call with a private exception, and
any other error propagates. Captured tensors live on the CPU.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from vidquant.calib.samples import Sample
from vidquant.generate import GenParams, pipeline_kwargs
from vidquant.models.layout import Expert, pipeline_experts

__all__ = ["CalibData", "select_calls", "capture_block_inputs", "capture_expert_inputs", "expert_steps",
           "block_call_inputs", "dedupe_rotary", "to_device"]

log = logging.getLogger("vidquant")


@dataclass
class CalibData:
    """Block-0 inputs per captured call, in capture order (sample, step, branch)."""

    hidden_states: list[torch.Tensor] = field(default_factory=list)
    block_kwargs: list[dict] = field(default_factory=list)
    denoiser_inputs: list[dict] = field(default_factory=list)
    meta: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.hidden_states)

    @property
    def nbytes(self) -> int:
        seen, total = set(), 0
        for item in [*self.hidden_states, *self.block_kwargs, *self.denoiser_inputs]:
            for t in _tensors(item):
                if id(t) not in seen:
                    seen.add(id(t))
                    total += t.numel() * t.element_size()
        return total


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v)


def to_device(obj, device):
    """Captured inputs (tensors, or dicts / lists / tuples of them) on `device`; anything else as it is."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


BLOCK_ARGS = ("hidden_states", "encoder_hidden_states", "temb", "rotary_emb")  # a Wan block's positional args


def block_call_inputs(args: tuple, kwargs: dict) -> tuple[torch.Tensor, dict]:
    """One call of a Wan block as calibration stores it: (hidden_states, {its other inputs}), copied to the CPU."""
    bound = dict(zip(BLOCK_ARGS, args))
    bound.update(kwargs)
    hidden = bound.pop("hidden_states")
    return _to_cpu(hidden), _to_cpu(bound)


def select_calls(num_steps: int, calls_per_step: int, sample_steps: int, selection: str = "uniform",
                 steps: Sequence[int] | None = None) -> list[int]:
    """Indices of the transformer calls to capture for one prompt (call = step · calls_per_step + branch).

    `steps` are the denoising steps eligible (an expert's; default all `num_steps`).
    """
    eligible = list(range(num_steps)) if steps is None else list(steps)
    if selection == "first":
        return [s * calls_per_step + b for s in eligible for b in range(calls_per_step)][:sample_steps]
    if selection != "uniform":
        raise ValueError(f"calib.step_selection: got {selection!r}; allowed: uniform, first")
    if not eligible:
        return []
    n_steps = max(1, min(len(eligible), sample_steps // calls_per_step))
    picks = np.unique(np.round(np.linspace(0, len(eligible) - 1, n_steps)).astype(int))
    return [eligible[int(i)] * calls_per_step + b for i in picks for b in range(calls_per_step)]


def expert_steps(pipe, num_steps: int, expert: Expert) -> list[int]:
    """The denoising steps at which the pipeline calls `expert`, from (a copy of) its own scheduler."""
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(num_steps, device="cpu")
    return [i for i, t in enumerate(scheduler.timesteps.tolist()) if expert.serves(t)]


class _StopCapture(Exception):
    """Raised by our own hook after the last selected call; the only exception we catch."""


class _Recorder:
    """Counts transformer calls across all experts (one counter: a call index is a step and a branch) and
    records block 0's inputs of each expert at its selected calls."""

    def __init__(self, plans: dict[str, list[int]], calls_per_step: int, data: dict[str, CalibData],
                 sample_index: int, tag_expert: bool):
        self.plans = {name: set(calls) for name, calls in plans.items()}
        self.cps, self.data, self.sample, self.tag_expert = calls_per_step, data, sample_index, tag_expert
        self.last = max(max(c) for c in plans.values() if c)
        self.call = -1
        self.pending_inputs: dict | None = None

    def transformer_hook(self, name: str):
        def hook(module, args, kwargs):
            self.call += 1
            self.pending_inputs = _to_cpu(kwargs) if self.call in self.plans[name] else None
        return hook

    def block_hook(self, name: str):
        def hook(module, args, kwargs):
            if self.call in self.plans[name]:
                self._record(name, args, kwargs)
            if self.call == self.last:
                raise _StopCapture
        return hook

    def _record(self, name: str, args, kwargs) -> None:
        hidden, block_kwargs = block_call_inputs(args, kwargs)
        denoiser = dict(self.pending_inputs)
        denoiser.pop("attention_kwargs", None)
        denoiser.pop("return_dict", None)
        data = self.data[name]
        data.hidden_states.append(hidden)
        data.block_kwargs.append(block_kwargs)
        data.denoiser_inputs.append(denoiser)
        timestep = denoiser.get("timestep")
        data.meta.append({
            **({"expert": name} if self.tag_expert else {}),
            "sample": self.sample,
            "call": self.call,
            "step": self.call // self.cps,
            "branch": "cond" if self.call % self.cps == 0 else "uncond",
            # max: TI2V's per-token timesteps are 0 on a clean first frame
            "timestep": float(timestep.max()) if isinstance(timestep, torch.Tensor) else None,
        })


def _capture(pipe, samples: list[Sample], params: GenParams, plans: dict[str, list[int]], progress: bool,
             tag_expert: bool) -> dict[str, CalibData]:
    data = {name: CalibData() for name in plans}
    for i, sample in enumerate(tqdm(samples, desc="calibration capture", disable=not progress)):
        rec = _Recorder(plans, params.calls_per_step, data, i, tag_expert)
        handles = []
        for name in plans:
            transformer = getattr(pipe, name)
            handles.append(transformer.register_forward_pre_hook(rec.transformer_hook(name), with_kwargs=True))
            handles.append(transformer.blocks[0].register_forward_pre_hook(rec.block_hook(name),
                                                                           with_kwargs=True))
        try:
            pipe(**pipeline_kwargs(pipe, sample, params), output_type="latent")
        except _StopCapture:
            pass
        finally:
            for h in handles:
                h.remove()
        if rec.call < rec.last:
            raise RuntimeError(
                f"calibration sample {i}: the pipeline made {rec.call + 1} transformer calls, fewer than the "
                f"{rec.last + 1} needed for the selected calls"
            )
    for name, d in data.items():
        dedupe_rotary(d)
        log.info("captured %d block-0 inputs of %s from %d samples (%.1f MiB on the CPU)",
                 len(d), name, len(samples), d.nbytes / 2**20)
    return data


@torch.no_grad()
def capture_block_inputs(
    pipe,
    samples: list[Sample],
    params: GenParams,
    sample_steps: int,
    selection: str = "uniform",
    progress: bool = True,
) -> CalibData:
    """Run the pipeline on every sample and record block 0's inputs at the selected calls (one transformer)."""
    selected = select_calls(params.num_inference_steps, params.calls_per_step, sample_steps, selection)
    return _capture(pipe, samples, params, {"transformer": selected}, progress, tag_expert=False)["transformer"]


@torch.no_grad()
def capture_expert_inputs(
    pipe,
    samples: list[Sample],
    params: GenParams,
    sample_steps: int,
    selection: str = "uniform",
    progress: bool = True,
) -> dict[str, CalibData]:
    """Per expert (`models.pipeline_experts`), block 0's inputs at calls selected among the steps it serves.

    Returns ``{expert name: CalibData}``; each record's meta names its expert. A pipeline with one transformer
    gives ``{"transformer": capture_block_inputs(...)}``.
    """
    experts = pipeline_experts(pipe)
    if len(experts) == 1:
        return {"transformer": capture_block_inputs(pipe, samples, params, sample_steps, selection, progress)}
    plans = {}
    for expert in experts:
        steps = expert_steps(pipe, params.num_inference_steps, expert)
        plans[expert.name] = select_calls(params.num_inference_steps, params.calls_per_step, sample_steps,
                                          selection, steps)
        if not plans[expert.name]:
            raise ValueError(f"calibration: {params.num_inference_steps} denoising steps never call "
                             f"{expert.label}; use more calib.num_inference_steps")
    return _capture(pipe, samples, params, plans, progress, tag_expert=True)


def dedupe_rotary(data: CalibData) -> None:
    """The rotary embedding depends only on the video size: keep one copy per size."""
    cache: dict = {}
    for kw in data.block_kwargs:
        rot = kw.get("rotary_emb")
        if rot is None:
            continue
        parts = rot if isinstance(rot, tuple) else (rot,)
        key = tuple(tuple(p.shape) for p in parts)
        if key in cache and all(torch.equal(a, b) for a, b in zip(cache[key], parts)):
            kw["rotary_emb"] = cache[key] if isinstance(rot, tuple) else cache[key][0]
        else:
            cache[key] = parts
