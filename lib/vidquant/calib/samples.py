"""Sample sets in LLMC's `samples.json` format (llmc_reference §2.1, §2.2).

A folder holds `samples.json`: a JSON list of objects with `prompt`, `negative_prompt` and, for I2V,
`image` (a path relative to the folder). Everything is checked when loaded, before any model work.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vidquant.generate import i2v_size, load_conditioning_image  # re-exported: how a sample's image is prepared

__all__ = ["Sample", "SampleSetError", "check_image", "load_samples", "i2v_size", "load_conditioning_image"]


class SampleSetError(ValueError):
    """A sample set that cannot be used; the message names the file, the entry and the field."""


@dataclass(frozen=True)
class Sample:
    prompt: str
    negative_prompt: str = ""
    image: Path | None = None


def load_samples(folder: str | os.PathLike, task: str) -> list[Sample]:
    """Read and validate `<folder>/samples.json` for task 't2v' or 'i2v'."""
    folder = Path(folder)
    path = folder / "samples.json"
    if not path.is_file():
        raise SampleSetError(f"{path}: not found (calib.path / eval.path must be a folder with samples.json)")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise SampleSetError(f"{path}: not UTF-8 text ({err})") from None
    except (json.JSONDecodeError, RecursionError) as err:
        raise SampleSetError(f"{path}: not valid JSON ({str(err)[:200]})") from None
    if not isinstance(entries, list) or not entries:
        raise SampleSetError(f"{path}: expected a non-empty JSON list of samples")
    return [_parse(entry, i, folder, path, task) for i, entry in enumerate(entries)]


def _parse(entry, i: int, folder: Path, path: Path, task: str) -> Sample:
    where = f"{path}: sample {i}"
    if not isinstance(entry, dict):
        raise SampleSetError(f"{where}: expected an object with 'prompt', got {type(entry).__name__}")
    prompt = entry.get("prompt", "")
    if not isinstance(prompt, str) or not prompt.strip():
        raise SampleSetError(f"{where}: 'prompt' must be a non-empty string")
    negative = entry.get("negative_prompt", "") or ""
    if not isinstance(negative, str):
        raise SampleSetError(f"{where}: 'negative_prompt' must be a string, got {type(negative).__name__}")
    image = entry.get("image")
    if isinstance(image, list):  # LLMC allows a list; Wan I2V uses the first image
        image = image[0] if image else None
    if image is not None and not isinstance(image, str):
        raise SampleSetError(f"{where}: 'image' must be a file name (string) or a list of them, "
                             f"got {type(image).__name__} {image!r}")
    if task == "i2v":
        if not image:
            raise SampleSetError(f"{where}: 'image' is required for i2v")
        image = folder / image
        if not image.is_file():
            raise SampleSetError(f"{where}: image {image} does not exist")
        try:
            check_image(image)
        except SampleSetError as err:
            raise SampleSetError(f"{where}: {err}") from None
    else:
        image = None
    return Sample(prompt=prompt, negative_prompt=str(negative), image=image)


def check_image(path: Path) -> None:
    """Raise SampleSetError naming ``path`` unless it is a readable image of a sane size (Pillow's
    decompression-bomb limit: a small file that decodes to gigapixels is refused, not decoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise SampleSetError(f"{path}: image too large to decode safely ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SampleSetError(f"{path} is not a readable image ({err})") from None

