"""The anatomy of a Wan transformer block as quantization sees it (llmc_reference §3.3, §3.4).

Every `nn.Linear` inside a block is quantized: 10 per block for T2V, 12 for I2V (the image k/v
projections). Three *subsets* share one input each and get one smoothing vector, folded into the op
before them; the other linears are quantized without smoothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

# Every linear of a block in forward order, grouped so that a stage's inputs depend only on earlier stages (the
# one definition of the layout: GPTQ's true_sequential order, the linears' list and order below).
STAGES: tuple[tuple[str, ...], ...] = (
    ("attn1.to_q", "attn1.to_k", "attn1.to_v"),
    ("attn1.to_out.0",),
    ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.add_k_proj", "attn2.add_v_proj"),
    ("attn2.to_out.0",),
    ("ffn.net.0.proj",),
    ("ffn.net.2",),
)
I2V_EXTRA_LINEARS: tuple[str, ...] = ("attn2.add_k_proj", "attn2.add_v_proj")  # the image-context projections
T2V_LINEARS: tuple[str, ...] = tuple(n for stage in STAGES for n in stage if n not in I2V_EXTRA_LINEARS)


@dataclass(frozen=True)
class Subset:
    """Linears that read the same activation, and the op whose output that activation is.

    `prev_op` absorbs 1/s when the linears' input channels are multiplied by s; `inspect` is the module
    whose output AWQ's loss compares; `kwargs` are the block kwargs `inspect` needs, mapped to its own
    argument names.
    """

    name: str
    layers: tuple[str, ...]
    prev_op: str
    inspect: str
    kwargs: tuple[tuple[str, str], ...] = ()

    @property
    def input(self) -> str:
        """The layer whose captured input stands for the whole subset's input."""
        return self.layers[0]


SUBSETS: tuple[Subset, ...] = (
    Subset("self_attn_qkv", ("attn1.to_q", "attn1.to_k", "attn1.to_v"), "affine_norm1", "attn1",
           (("rotary_emb", "rotary_emb"),)),
    Subset("cross_attn_q", ("attn2.to_q",), "norm2", "attn2",
           (("encoder_hidden_states", "encoder_hidden_states"),)),
    Subset("ffn_up", ("ffn.net.0.proj",), "affine_norm3", "ffn"),
)


def is_i2v_block(block: nn.Module) -> bool:
    """I2V blocks have the image-context projections `attn2.add_k_proj` / `add_v_proj`."""
    return getattr(getattr(block, "attn2", None), "add_k_proj", None) is not None


def block_linear_names(block: nn.Module) -> list[str]:
    """Names (relative to the block) of the block's quantizable linears, in a fixed order."""
    names = list(T2V_LINEARS) + (list(I2V_EXTRA_LINEARS) if is_i2v_block(block) else [])
    missing = [n for n in names if not _is_linear(_get(block, n))]
    if missing:
        raise ValueError(f"block has no linear layer(s) {missing}: not a diffusers WanTransformerBlock?")
    return names


def block_linears(block: nn.Module) -> dict[str, nn.Module]:
    """{name: module} for the block's quantizable linears."""
    return {n: block.get_submodule(n) for n in block_linear_names(block)}


def _get(block: nn.Module, name: str) -> nn.Module | None:
    try:
        return block.get_submodule(name)
    except AttributeError:
        return None


def _is_linear(module: nn.Module | None) -> bool:
    """An `nn.Linear` or a linear replacement (a block may already be deployed: fake-quant, W8A8, emulated);
    every one of them declares its `in_features` / `out_features` as `nn.Linear` does. Duck-typed so that this
    bottom layer does not depend on the runtime modules that replace linears."""
    return isinstance(module, nn.Module) and all(
        isinstance(getattr(module, f, None), int) for f in ("in_features", "out_features"))


# ----------------------------------------------------------------------------------------------- experts

ROLES = {"transformer": "high_noise", "transformer_2": "low_noise"}  # lightx2v's names of the two experts


@dataclass(frozen=True)
class Expert:
    """One transformer of a pipeline and the timesteps it serves.

    Wan2.1 and Wan2.2 TI2V have one (`role` "dense", every timestep). A Wan2.2 A14B mixture has two, split at
    ``boundary = boundary_ratio * num_train_timesteps`` exactly as diffusers' pipelines split them: `transformer`
    (high noise) for timesteps ``>= boundary``, `transformer_2` (low noise) below.
    """

    name: str  # the pipeline attribute: "transformer" | "transformer_2"
    role: str  # "dense" | "high_noise" | "low_noise"
    boundary: float | None = None  # in timestep units (0..num_train_timesteps)

    def serves(self, timestep: float) -> bool:
        if self.role == "dense":
            return True
        return (float(timestep) >= self.boundary) == (self.role == "high_noise")

    @property
    def label(self) -> str:
        """How errors and tables name it, e.g. 'transformer_2 (low-noise expert)'."""
        return self.name if self.role == "dense" else f"{self.name} ({self.role.replace('_', '-')} expert)"


def pipeline_experts(pipe) -> list[Expert]:
    """The pipeline's transformers in call order, with the timesteps each serves (see :class:`Expert`)."""
    ratio = getattr(pipe.config, "boundary_ratio", None)
    second = getattr(pipe, "transformer_2", None)
    if ratio is None or second is None:
        return [Expert("transformer", "dense")]
    boundary = float(ratio) * pipe.scheduler.config.num_train_timesteps
    return [Expert(name, role, boundary) for name, role in ROLES.items()]
