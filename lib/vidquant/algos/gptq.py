"""GPTQ (Frantar et al. 2023) for Wan blocks, every linear of the block (llmc_reference §6).

For a linear with weight W (out, in) and calibration inputs X (tokens, in), GPTQ quantizes W column by
column and, after each column, moves the rounding error onto the columns not yet quantized so that the
layer output X Wᵀ changes as little as possible:

    H = (2/n) Σ_t x_t x_tᵀ                       (n = number of tokens; fp32, sample by sample)
    H ← H + λ I,  λ = percdamp · mean(diag H)
    U = chol(H⁻¹)ᵀ  (upper)                     (U[i, i:] is row i of the inverse Hessian's factor)
    for each column i (in act-order if set):    q_i = Q(w_i)          (fixed grid, see below)
                                                e_i = (w_i − q_i) / U[i, i]
                                                w_j ← w_j − e_i U[i, j]   for j > i
    loss = Σ_i |w_i − q_i|² / (2 U[i, i]²)

The columns are processed in blocks of `blocksize` with the lazy update W[:, i2:] −= E U[i1:i2, i2:].

The grid is fixed before the updates: (scale, zero) = wq.qparams(W) (per_channel / per_tensor; for
per_group too with static_groups), or, for per_group without static_groups, each group's grid is taken
from its updated columns when the loop reaches it. Differences from LLMC, on purpose:

* every linear of the block is compensated (10 T2V / 12 I2V), not only the three subsets;
* the layer keeps the quantized-dequantized Q (LLMC keeps the compensated float W and re-quantizes it at
  deploy) and its grid is recorded in ctx.weight_qparams, so deployment re-quantizing Q on that grid is
  exact; the grid is public-shaped, in the original column order;
* per_group with actorder needs static_groups (the deploy format has contiguous groups in the original
  column order; LLMC would need a column permutation at deploy, which lightx2v cannot express);
* a per_group grid is computed from the fully updated columns of its group (blocks are aligned to groups),
  where IST-DASLab's reference reads columns of the current block before their in-block updates;
* true_sequential re-runs the block with the already-quantized layers fake-quantized (weights and
  activations) and rebuilds the Hessians of the next stage from it, in forward order (below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from vidquant.algos.base import Algorithm, BlockContext, MethodConfig, register
from vidquant.algos.deploy import fake_quantized
from vidquant.calib.capture import to_device
from vidquant.models.layout import STAGES  # layers in forward order, grouped by dependency


class GPTQSolver:
    """One Hessian (shared by the linears that read the same input) and the GPTQ column loop."""

    def __init__(self, in_features: int, device: torch.device):
        self.H = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.n = 0

    def add_batch(self, x: Tensor, chunks: int = 1) -> None:
        """H ← (n·H + 2 Σ x xᵀ) / (n + t), accumulated over the t tokens of x (fp32, in `chunks` pieces)."""
        x = x.detach().reshape(-1, x.shape[-1])
        t = x.shape[0]
        if t == 0:
            return
        self.H *= self.n / (self.n + t)
        self.n += t
        for xc in x.chunk(chunks):
            xc = math.sqrt(2 / self.n) * xc.to(self.H.device, torch.float32)
            self.H.addmm_(xc.T, xc)  # in place: no second n×n buffer

    @staticmethod
    def inverse_cholesky_(H: Tensor) -> Tensor:
        """U = chol(H⁻¹)ᵀ (upper), computed in H's own storage: at 14B's ffn_down (13824 inputs) each n×n fp32
        copy is 0.76 GB, so the three factorisation steps overwrite one buffer instead of allocating three."""
        try:
            torch.linalg.cholesky(H, out=H)
            torch.cholesky_inverse(H, out=H)
            return torch.linalg.cholesky(H, upper=True, out=H)
        except torch.linalg.LinAlgError as err:
            raise FloatingPointError(f"GPTQ: the damped Hessian is not positive definite ({err}); "
                                     "raise special.percdamp") from None

    @torch.no_grad()
    def quantize(self, weight: Tensor, wq, blocksize: int = 128, percdamp: float = 0.01,
                 actorder: bool = False, static_groups: bool = False,
                 keep_hessian: bool = True) -> tuple[Tensor, Tensor, Tensor | None, dict]:
        """Returns (Q fp32 (out, in), scale, zero, stats); Q lies on the grid (scale, zero) exactly.

        ``keep_hessian=False`` (the last layer that reads this input) works in the solver's own H instead of a
        copy and releases it.
        """
        W = weight.detach().float().clone()
        H = self.H.clone() if keep_hessian else self.H
        if not keep_hessian:
            self.H = None
        cols = W.shape[1]
        dead = torch.diag(H) == 0  # inputs that are always 0: their weights do not matter
        H[dead, dead] = 1
        W[:, dead] = 0

        grouped = wq.granularity == "per_group"
        g = wq.group_size
        dynamic_groups = grouped and not static_groups
        if dynamic_groups and getattr(wq, "fmt", None) == "nvfp4":
            raise ValueError("GPTQ with nvfp4 weights needs static_groups: True (the e4m3 block scales share one "
                             "fp32 global scale taken from the whole weight before the updates)")
        if dynamic_groups and actorder:
            raise ValueError("GPTQ per_group with actorder needs static_groups: True (group grids must be "
                             "contiguous in the original column order for deployment)")
        scale, zero = wq.qparams(W)  # the fixed grid (per_group + dynamic: overwritten group by group)

        perm = torch.argsort(torch.diag(H), descending=True) if actorder else torch.arange(cols, device=W.device)
        if actorder:
            W, H = W[:, perm], H[perm][:, perm]
        damp = percdamp * torch.mean(torch.diag(H))
        H.diagonal().add_(damp)
        U = self.inverse_cholesky_(H)

        def column_grid(j: int) -> tuple[Tensor, Tensor | None]:  # grid of original column j, shape (out, 1)
            if not grouped:
                return scale, zero
            k = j // g
            return scale[:, k:k + 1], None if zero is None else zero[:, k:k + 1]

        Q, losses = torch.zeros_like(W), torch.zeros_like(W)
        bs = math.ceil(blocksize / g) * g if dynamic_groups else blocksize  # a group never spans two blocks
        order = perm.tolist()  # original index of each processed column (one host copy, not one per column)
        for i1 in range(0, cols, bs):
            i2 = min(i1 + bs, cols)
            W1, E1, U1 = W[:, i1:i2].clone(), torch.zeros_like(W[:, i1:i2]), U[i1:i2, i1:i2]
            for i in range(i2 - i1):
                j = order[i1 + i]
                if dynamic_groups and j % g == 0:  # first column of a group: its grid from the updated W
                    s_k, z_k = wq.qparams(W1[:, i:i + g])
                    scale[:, j // g:j // g + 1] = s_k
                    if zero is not None:
                        zero[:, j // g:j // g + 1] = z_k
                w, d = W1[:, i], U1[i, i]
                q = wq.fake_with(w[:, None], *column_grid(j))[:, 0]
                Q[:, i1 + i] = q
                losses[:, i1 + i] = (w - q) ** 2 / (2 * d**2)
                e = (w - q) / d
                W1[:, i:] -= e[:, None] * U1[i, i:][None, :]
                E1[:, i] = e
            W[:, i2:] -= E1 @ U[i1:i2, i2:]

        Q = Q[:, torch.argsort(perm)]
        return Q, scale, zero, {"loss": float(losses.sum()), "dead_columns": int(dead.sum()),
                                "damp": float(damp)}


class _StopForward(Exception):
    """Raised by a hook once every input a stage needs has been seen for the current sample."""


@dataclass(frozen=True)
class GPTQConfig(MethodConfig):
    """GPTQ's options (LLMC `special`). `owq` / `n_outs` (outlier-aware GPTQ) are accepted for LLMC files and
    must stay off."""

    name: ClassVar[str] = "GPTQ"
    true_sequential: bool = True  # Hessians of later stages from the already-quantized earlier ones
    static_groups: bool = False  # per_group grids fixed before the updates (needed with actorder)
    actorder: bool = True  # columns in decreasing diag(H)
    percdamp: float = 0.01  # λ = percdamp · mean(diag H), 0 <= percdamp < 1
    blocksize: int = 128  # columns per lazy update, >= 1
    chunk_num: int = 1  # Hessian accumulation in this many token chunks, >= 1
    owq: bool = False
    n_outs: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.percdamp < 1.0:
            self.fail("percdamp", self.percdamp, "0 <= percdamp < 1")
        for key in ("blocksize", "chunk_num"):
            if getattr(self, key) < 1:
                self.fail(key, getattr(self, key), "an integer >= 1")
        if self.owq:
            self.fail("owq", self.owq, "False (outlier-aware GPTQ is not supported)")


@register
class GPTQ(Algorithm):
    name = "GPTQ"
    config_class = GPTQConfig

    @torch.no_grad()
    def transform_block(self, ctx: BlockContext) -> None:
        sp = self.special
        log = ctx.log.setdefault("gptq", {})
        for k, stage in enumerate(self.stages(ctx)):
            rerun = bool(sp["true_sequential"]) and k > 0  # later stages see the quantized earlier ones
            solvers = self.hessians(ctx, stage, from_forward=rerun)
            last_user = {id(solver): name for name, solver in solvers.items()}
            for name in stage:
                lin = ctx.linears[name]
                try:
                    Q, scale, zero, stats = solvers[name].quantize(
                        lin.weight, ctx.wq, int(sp["blocksize"]), float(sp["percdamp"]), bool(sp["actorder"]),
                        bool(sp["static_groups"]), keep_hessian=last_user[id(solvers[name])] != name)
                except FloatingPointError as err:
                    raise FloatingPointError(f"block {ctx.index} {name}: {err}") from None
                lin.weight.copy_(Q.to(lin.weight.dtype))
                ctx.weight_qparams[name] = (scale.cpu(), None if zero is None else zero.cpu())
                log[name] = {"stage": k, "tokens": solvers[name].n, **stats}
            del solvers

    @staticmethod
    def stages(ctx: BlockContext) -> list[tuple[str, ...]]:
        """STAGES restricted to the block's linears; any other linear goes last, one per stage."""
        stages = [tuple(n for n in st if n in ctx.linears) for st in STAGES]
        known = {n for st in STAGES for n in st}
        return [st for st in stages if st] + [(n,) for n in ctx.linears if n not in known]

    def hessians(self, ctx: BlockContext, stage: tuple[str, ...], from_forward: bool) -> dict[str, GPTQSolver]:
        """One solver per distinct input of the stage (layers sharing a captured input share H).

        from_forward=False: H from the captured (float) inputs in ctx.inputs. True: from a forward pass of
        the block in which every linear is fake-quantized (the done ones on their recorded grid); hooks on
        this stage's layers see the inputs that the already-quantized layers produce.
        """
        chunks = int(self.special.get("chunk_num") or 1)
        owner: dict[int, str] = {}
        for name in stage:
            owner.setdefault(id(ctx.inputs[name]), name)
        reps = {name: GPTQSolver(ctx.linears[name].in_features, ctx.device) for name in owner.values()}
        solvers = {name: reps[owner[id(ctx.inputs[name])]] for name in stage}
        if not from_forward:
            for name, solver in reps.items():
                for x in ctx.inputs[name]:
                    solver.add_batch(x.to(ctx.device), chunks)
            return solvers

        seen: set[str] = set()

        def hook(name: str):
            def fn(module, args):
                reps[name].add_batch(args[0], chunks)
                seen.add(name)
                if len(seen) == len(reps):
                    raise _StopForward
            return fn

        with torch.no_grad(), fake_quantized(ctx.block, ctx.wq, ctx.aq, ctx.weight_qparams) as block:
            handles = [block.get_submodule(n).register_forward_pre_hook(hook(n)) for n in reps]
            try:
                for hs, kw in zip(ctx.hidden_states, ctx.kwargs):
                    seen.clear()
                    try:
                        block(hs.to(ctx.device), **to_device(kw, ctx.device))
                    except _StopForward:
                        pass
            finally:
                for h in handles:
                    h.remove()
        return solvers

