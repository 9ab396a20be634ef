"""Streaming calibration: quantize a Wan DiT without ever loading it whole.

The in-memory flow (``vidquant.run``) loads the transformer, calibrates it block by block
(``vidquant.algos.engine.run_blockwise``) and exports it (``export_lightx2v``): peak memory is the whole model
plus one block's working set. Here each block's weights are read from the safetensors files on their own
(``safe_open``, one key at a time), calibrated by exactly the same code (``engine.calibrate_block``), quantized
to the export tensors, written to ``block_<i>.safetensors`` and dropped. Peak memory is one block (float),
its working set and the captured activations, whatever the depth of the model.

The output is lightx2v's by-block layout (lightx2v_reference §1.5, §2.3, what its ``lazy_load`` reads):
``block_<i>.safetensors`` per block, ``non_block.safetensors`` for everything else,
``diffusion_pytorch_model.safetensors.index.json`` and ``config.json``, inside ``lightx2v_quant_model/``,
written atomically. Keys, dtypes and bytes of every tensor are those of
``vidquant.export.lightx2v_export.lightx2v_state_dict`` on the in-memory model (tests/test_stream.py), and
``config.json`` is byte-identical to ``export_lightx2v``'s.

Dtypes follow ``WanTransformer3DModel.from_pretrained(dtype=...)``: floating tensors in ``dtype``, except those
of the modules diffusers keeps in fp32 (``_keep_in_fp32_modules``: norms, modulation tables, time embedder).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from tqdm.auto import tqdm

from vidquant.algos.base import Algorithm
from vidquant.algos.deploy import quantize_weight
from vidquant.algos.engine import BlockwiseResult, calibrate_block
from vidquant.calib.capture import CalibData, block_call_inputs, dedupe_rotary
from vidquant.export.io import INDEX_SUFFIX, atomic_dir, save_file_deterministic, source_files, write_index
from vidquant.export.lightx2v_export import EXPORT_DIRNAME, _jsonable
from vidquant.models.block import make_smoothable
from vidquant.models.layout import block_linears

__all__ = [
    "CheckpointReader",
    "StreamResult",
    "capture_block0_inputs",
    "load_non_block",
    "stream_export",
    "stream_quantize",
    "streamed_transformer",
    "transformer_config",
    "weights_exceed_memory",
]

log = logging.getLogger("vidquant")

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")
_SHARD_METADATA = {"format": "pt"}
INDEX_NAME = "diffusion_pytorch_model" + INDEX_SUFFIX


# ---------------------------------------------------------------------------------------------- reading


class CheckpointReader:
    """Key-level access to a diffusers transformer checkpoint (one file, a folder, or shards + index).

    Only the safetensors headers are read up front. :meth:`read` opens each file it needs, copies the asked-for
    tensors out and closes (unmaps) it again, so nothing stays resident between calls.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.key_file: dict[str, Path] = {}
        for f in source_files(self.path):
            with safe_open(str(f), framework="pt") as handle:
                for key in handle.keys():
                    self.key_file[key] = f
        self.block_keys: dict[int, list[str]] = defaultdict(list)
        self.other_keys: list[str] = []
        for key in sorted(self.key_file):
            m = _BLOCK_KEY.match(key)
            if m:
                self.block_keys[int(m.group(1))].append(key)
            else:
                self.other_keys.append(key)

    @property
    def num_blocks(self) -> int:
        return len(self.block_keys)

    def read(self, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        """The tensors of ``keys`` (copies, on the CPU), one open per file."""
        by_file: dict[Path, list[str]] = defaultdict(list)
        for key in keys:
            by_file[self.key_file[key]].append(key)
        out: dict[str, torch.Tensor] = {}
        for f, file_keys in by_file.items():
            with safe_open(str(f), framework="pt") as handle:
                for key in file_keys:
                    out[key] = handle.get_tensor(key)
        return out


def transformer_config(path: str | os.PathLike) -> dict:
    """The transformer's config.json (the folder holding the weights, or the file's folder)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    return json.loads((folder / "config.json").read_text())


def _model_class():
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel


def _load_dtype(key: str, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """diffusers' from_pretrained dtype rule: floating tensors to ``dtype``, fp32 for keep-in-fp32 modules."""
    if not tensor.is_floating_point():
        return tensor
    keep = _model_class()._keep_in_fp32_modules or []
    target = torch.float32 if any(m in key.split(".") for m in keep) else dtype
    return tensor.to(target)


def _empty_transformer(config: dict, num_layers: int | None = None) -> nn.Module:
    """A WanTransformer3DModel on the meta device (no memory), optionally with another depth."""
    from accelerate import init_empty_weights

    cfg = dict(config) if num_layers is None else {**config, "num_layers": num_layers}
    with init_empty_weights():
        return _model_class().from_config(cfg)


def load_non_block(reader: CheckpointReader, config: dict, dtype: torch.dtype = torch.bfloat16,
                   device: str | torch.device = "cpu") -> nn.Module:
    """The transformer without its blocks (embeddings, RoPE, head), weights read from the checkpoint.

    Built for real (RoPE tables are computed at construction, not stored), then every stored tensor is loaded.
    """
    model = _model_class().from_config({**config, "num_layers": 0})
    state = {k: _load_dtype(k, t, dtype) for k, t in reader.read(reader.other_keys).items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)


def load_block(reader: CheckpointReader, index: int, skeleton: nn.Module, dtype: torch.dtype,
               device: str | torch.device = "cpu") -> nn.Module:
    """Block ``index`` with its stored weights, made smoothable (fp32 ``affine_norm1/3`` at ones)."""
    block = make_smoothable(_fill_block(reader, index, skeleton.blocks[index], dtype, device))
    return block.eval().requires_grad_(False)


def _fill_block(reader: CheckpointReader, index: int, block: nn.Module, dtype: torch.dtype,
                device: str | torch.device) -> nn.Module:
    """Load block ``index``'s stored weights into ``block`` (a meta-device skeleton block), on ``device``."""
    prefix = f"blocks.{index}."
    raw = reader.read(reader.block_keys[index])
    state = {k[len(prefix):]: _load_dtype(k, t, dtype) for k, t in raw.items()}
    block.load_state_dict(state, strict=True, assign=True)
    return block.to(device).eval().requires_grad_(False)


class _StreamedBlock(nn.Module):
    """Block ``index`` of a checkpoint that holds no weights: each call reads them from disk into a fresh
    diffusers block, runs it and drops it. A transformer made of these runs the real pipeline (so calibration
    sees the real denoising trajectory) with one block in memory at a time."""

    def __init__(self, reader: CheckpointReader, index: int, template: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self._source = (reader, index, template, dtype)  # a tuple: not a submodule, no meta tensors in state_dict

    def forward(self, hidden_states, *args, **kwargs):  # noqa: D102 - a Wan block's signature
        import copy

        reader, index, template, dtype = self._source
        block = _fill_block(reader, index, copy.deepcopy(template), dtype, hidden_states.device)
        return block(hidden_states, *args, **kwargs)


def streamed_transformer(checkpoint: str | os.PathLike, dtype: torch.dtype = torch.bfloat16,
                         device: str | torch.device = "cpu") -> nn.Module:
    """The transformer of ``checkpoint`` with its non-block weights loaded and every block streamed from disk
    per call (:class:`_StreamedBlock`): the same outputs as ``from_pretrained(dtype=...)``'s model, in the
    memory of one block."""
    reader = CheckpointReader(checkpoint)
    config = transformer_config(checkpoint)
    model = load_non_block(reader, config, dtype, device)
    template = _empty_transformer(config, num_layers=1).blocks[0]
    model.blocks = nn.ModuleList(_StreamedBlock(reader, i, template, dtype) for i in range(reader.num_blocks))
    return model


# ------------------------------------------------------------------------------------------- capture


class _StopCapture(Exception):
    pass


class _Recorder(nn.Module):
    """Stands in for block 0: records its inputs (as vidquant.calib.capture does) and stops the forward."""

    def __init__(self, data: CalibData) -> None:
        super().__init__()
        self.data = data

    def forward(self, *args, **kwargs):  # noqa: D102 - a block's signature
        hidden, block_kwargs = block_call_inputs(args, kwargs)
        self.data.hidden_states.append(hidden)
        self.data.block_kwargs.append(block_kwargs)
        raise _StopCapture


@contextmanager
def _blocks_replaced(transformer: nn.Module, stand_in: nn.Module) -> Iterator[None]:
    blocks = transformer.blocks
    transformer.blocks = nn.ModuleList([stand_in])
    try:
        yield
    finally:
        transformer.blocks = blocks


@torch.no_grad()
def capture_block0_inputs(transformer: nn.Module, denoiser_inputs: Sequence[dict]) -> CalibData:
    """Block 0's inputs for each set of transformer inputs (``hidden_states``, ``timestep``,
    ``encoder_hidden_states``, ...), computed by the transformer's own embeddings.

    Works on a whole transformer or on :func:`load_non_block`'s: the blocks are swapped for a recorder for the
    duration. The rotary tables (same for every call of one video size) are stored once.
    """
    data = CalibData()
    device = next(transformer.parameters()).device
    with _blocks_replaced(transformer, _Recorder(data)):
        for inputs in denoiser_inputs:
            kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            try:
                transformer(**kwargs, return_dict=False)
            except _StopCapture:
                pass
            data.denoiser_inputs.append(dict(inputs))
            data.meta.append({"call": len(data.meta)})
    dedupe_rotary(data)
    return data


# ----------------------------------------------------------------------------------------------- export


@torch.no_grad()
def block_export_tensors(block: nn.Module, index: int, wq, weight_qparams: dict,
                         scale_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """One calibrated block's share of ``lightx2v_state_dict``: its state_dict under ``blocks.<i>.``, each block
    linear's weight as codes plus ``weight_scale`` (same maths as the in-memory export)."""
    prefix = f"blocks.{index}."
    state = {prefix + k: v.detach() for k, v in block.state_dict().items()}
    for name, lin in block_linears(block).items():
        key = prefix + name
        q = quantize_weight(lin.weight.detach(), wq, weight_qparams.get(key))
        state[f"{key}.weight"] = q.codes.contiguous().cpu()
        state[f"{key}.weight_scale"] = q.scale.reshape(-1, 1).to(scale_dtype).contiguous().cpu()
    return {k: v.contiguous().cpu() for k, v in state.items()}


class _ShardWriter:
    """Writes ``<name>.safetensors`` files into a folder and keeps the index's weight map."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.weight_map: dict[str, str] = {}
        self.total_size = 0

    def write(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        filename = f"{name}.safetensors"
        save_file_deterministic(tensors, self.folder / filename, _SHARD_METADATA)
        self.weight_map.update({k: filename for k in tensors})
        self.total_size += sum(t.numel() * t.element_size() for t in tensors.values())

    def finish(self) -> None:
        write_index(self.folder, self.weight_map, self.total_size, INDEX_NAME)


# ------------------------------------------------------------------------------------------------ driver


@dataclass
class StreamResult:
    """What streaming calibration produced: the export folder and the calibration record."""

    export_dir: Path
    blockwise: BlockwiseResult = field(default_factory=BlockwiseResult)
    num_blocks: int = 0


def stream_quantize(
    checkpoint: str | os.PathLike,
    calib: CalibData,
    algorithms: list[Algorithm],
    wq,
    aq,
    save_path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    quant_out: bool = False,
    scale_dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
    progress: bool = True,
) -> StreamResult:
    """Calibrate and export a transformer checkpoint one block at a time.

    Args:
        checkpoint: the diffusers transformer folder (``config.json`` + safetensors, sharded or not).
        calib: block-0 inputs (e.g. :func:`capture_block0_inputs` on :func:`load_non_block`'s model, or
            ``vidquant.calib.capture_block_inputs`` on a pipeline).
        algorithms: the chain (``engine.build_algorithms``), applied to each block as ``run_blockwise`` does.
        wq, aq: weight and activation quantizers (``aq=None``: weight-only).
        save_path: the export goes to ``<save_path>/lightx2v_quant_model/`` (like ``export_lightx2v``).
        dtype: working dtype of the weights (bf16, as ``from_pretrained(dtype=...)``).
        device: where each block is calibrated.
        quant_out: feed each block the previous block's fake-quantized outputs (LLMC ``quant_out``).
        scale_dtype: dtype of the exported ``weight_scale`` tensors.
        overwrite: replace an existing export folder.

    Returns:
        :class:`StreamResult`; ``blockwise`` holds the same grids, smoothing and per-layer errors as
        ``run_blockwise`` would return.
    """
    device = torch.device(device)
    result = StreamResult(Path(save_path) / EXPORT_DIRNAME)
    hidden = list(calib.hidden_states)

    def calibrate(block: nn.Module, index: int) -> dict:
        nonlocal hidden
        hidden = calibrate_block(block, index, hidden, calib, algorithms, wq, aq, device, quant_out,
                                 result.blockwise)
        prefix = f"blocks.{index}."
        return {k: v for k, v in result.blockwise.weight_qparams.items() if k.startswith(prefix)}

    result.num_blocks = _stream_blocks(checkpoint, result.export_dir, wq, calibrate, dtype=dtype, device=device,
                                       scale_dtype=scale_dtype, overwrite=overwrite, progress=progress)
    return result


def stream_export(
    checkpoint: str | os.PathLike,
    wq,
    save_path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.bfloat16,
    scale_dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """RTN export without calibration (min-max grids), one block in memory at a time.

    The same tensors as ``export_lightx2v(model, wq, ...)`` with no calibration (affine_norm vectors at ones),
    in the by-block layout. Returns the export folder.
    """
    final = Path(save_path) / EXPORT_DIRNAME
    _stream_blocks(checkpoint, final, wq, lambda block, index: {}, dtype=dtype, device=torch.device("cpu"),
                   scale_dtype=scale_dtype, overwrite=overwrite, progress=progress)
    return final


def _stream_blocks(checkpoint, final: Path, wq, process, *, dtype: torch.dtype, device: torch.device,
                   scale_dtype: torch.dtype, overwrite: bool, progress: bool) -> int:
    """Load, ``process(block, index) -> weight_qparams``, export and drop each block; write the rest. Returns
    the number of blocks."""
    if hasattr(wq, "block_size"):  # MX / NVFP4 (vidquant.quant.blockfmt): their layouts are written in memory only
        raise ValueError(f"streaming export writes W8A8 per-channel layouts; {wq!r} needs `vidquant quantize`")
    reader = CheckpointReader(checkpoint)
    skeleton = _empty_transformer(transformer_config(checkpoint))
    if reader.num_blocks != len(skeleton.blocks):
        raise ValueError(f"{checkpoint}: config.json has num_layers={len(skeleton.blocks)} but the weights hold "
                         f"{reader.num_blocks} blocks")
    with atomic_dir(final, overwrite=overwrite) as tmp:
        writer = _ShardWriter(tmp)
        writer.write("non_block", _non_block_export(reader, dtype))
        for index in tqdm(range(reader.num_blocks), desc="streaming PTQ", disable=not progress):
            block = load_block(reader, index, skeleton, dtype, device)
            qparams = process(block, index)
            writer.write(f"block_{index}", block_export_tensors(block, index, wq, qparams, scale_dtype))
            skeleton.blocks[index] = nn.Identity()  # drop the block: nothing of it stays referenced
            del block
        writer.finish()
        (tmp / "config.json").write_text(json.dumps(_jsonable(_export_config(skeleton)), indent=4,
                                                    sort_keys=True) + "\n")
    return reader.num_blocks


def _non_block_export(reader: CheckpointReader, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Everything outside the blocks, in the dtypes ``from_pretrained`` gives them (as the in-memory export)."""
    return {k: _load_dtype(k, t, dtype).contiguous() for k, t in reader.read(reader.other_keys).items()}


def _export_config(skeleton: nn.Module) -> dict:
    """``export_lightx2v``'s config.json content for this model."""
    config = dict(skeleton.config)
    config.update({"_class_name": type(skeleton).__name__, "quant_method": "advanced_ptq"})
    return config


# ------------------------------------------------------------------------------------- vidquant quantize --stream


def weights_exceed_memory(checkpoint: str | os.PathLike, dtype: torch.dtype) -> bool:
    """True when the transformer's weights, in ``dtype``, would not fit in the memory available now (psutil);
    says so in one log line."""
    import psutil

    reader = CheckpointReader(checkpoint)
    need = 0
    for f in sorted(set(reader.key_file.values())):
        with safe_open(str(f), framework="pt") as handle:
            for key in handle.keys():
                sl = handle.get_slice(key)
                numel = 1
                for n in sl.get_shape():
                    numel *= n
                stored = sl.get_dtype()
                floating = stored.startswith(("F", "BF"))
                need += numel * (torch.finfo(dtype).bits // 8 if floating else 1)
    available = psutil.virtual_memory().available
    if need > available:
        log.info("transformer weights %.1f GiB > %.1f GiB available memory: streaming one block at a time "
                 "(vidquant quantize --stream)", need / 2**30, available / 2**30)
        return True
    return False
