"""What a checkpoint holds, key by key (dtype, shape, bytes, from the safetensors headers only), and how the
converter renames keys.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

__all__ = ["checkpoint_table", "key_renames"]


def checkpoint_table(path: str | os.PathLike) -> pd.DataFrame:
    """Every tensor of a safetensors checkpoint (a file or a folder of shards): file, key, dtype, shape and
    bytes, read from the headers only."""
    from safetensors import safe_open

    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    rows = []
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                sl = f.get_slice(key)
                shape = tuple(sl.get_shape())
                dtype = _SAFETENSORS_DTYPES.get(sl.get_dtype(), sl.get_dtype())
                itemsize = torch.empty((), dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 0
                rows.append({"file": file.name, "key": key, "dtype": str(dtype).removeprefix("torch."),
                             "shape": shape, "bytes": int(np.prod(shape, dtype=np.int64)) * itemsize})
    return pd.DataFrame(rows, columns=["file", "key", "dtype", "shape", "bytes"])


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


def key_renames(keys: Sequence[str], direction: str = "backward", changed_only: bool = True) -> pd.DataFrame:
    """How the converter renames keys: one row per key with its name before and after
    (``backward`` = diffusers → Wan, ``forward`` = Wan → diffusers); by default only keys that change."""
    from vidquant.export.keymap import convert_key

    df = pd.DataFrame({"before": list(keys), "after": [convert_key(k, direction) for k in keys]})
    return df[df["before"] != df["after"]].reset_index(drop=True) if changed_only else df
