"""Helpers the numbered notebooks share: where they run, how their parameters become a config, how they show
clips and tables, and how they record their metrics for the sweep tables.

Everything here is small glue; the algorithms live in `vidquant.algos`, the plots in `vidquant.plots`.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from numbers import Number
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from vidquant.config import Config, ConfigError, apply_overrides, parse_config, read_yaml

__all__ = [
    "repo_root",
    "goto_repo_root",
    "setup",
    "notebook_config",
    "variant",
    "as_rtn",
    "scheme_label",
    "bit_overrides",
    "lightx2v_config_for",
    "metrics_file",
    "flatten_metrics",
    "record_metrics",
    "summary_metrics",
    "read_metrics",
    "clip_html",
    "show_clip",
    "clip_pair",
    "clips_of",
    "generate_eval_clips",
    "fidelity_table",
    "run_summary",
    "smoothing_table",
    "method_layers",
    "method_timesteps",
    "smoothing_summary",
    "algo_log_table",
    "awq_search_curves",
    "calib_shapes",
    "collect_runs",
    "method_table",
    "swept_params",
    "read_tables",
    "sweep_tables",
    "block_input_stats",
    "fp8_tie_points",
    "fp8_rounding_table",
    "fp8_code_mismatch",
    "checkpoint_table",
    "key_renames",
]


# --------------------------------------------------------------------------------------------- where we run
def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The repository root: the first folder at or above `start` (default: the working directory) holding
    `notebooks/` and `lib/vidquant/`; else the checkout the package was installed from (editable install);
    else `start` itself."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "lib" / "vidquant").is_dir():
            return folder
    installed = Path(__file__).resolve().parents[2]
    if (installed / "notebooks").is_dir() and (installed / "lib" / "vidquant").is_dir():
        return installed
    return here


def goto_repo_root() -> Path:
    """`chdir` to the repository root so the notebooks' relative paths (``assets/...``, ``configs/...``,
    ``results/...``) mean the same whether the kernel started in the root (papermill, the sweep) or in
    ``notebooks/`` (JupyterLab). Returns the root."""
    root = repo_root()
    os.chdir(root)
    return root


def setup(*, quiet: bool = True) -> Path:
    """The first cell of every notebook: go to the repository root (:func:`goto_repo_root`), show figures
    inline even when ``MPLBACKEND`` says otherwise (``make`` exports ``Agg``), compact pandas output, and
    (`quiet`) silence the third-party chatter that would clutter a rendered notebook (deprecation notices,
    loading progress bars, info logs); vidquant's own warnings stay visible. Returns the root."""
    import logging
    import warnings

    if quiet:  # before diffusers / tqdm are imported: their import-time warnings are noise in a notebook
        warnings.filterwarnings("ignore", message="IProgress not found")
    root = goto_repo_root()
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        shell = None
    if shell is not None and "IPKernelApp" in shell.config:
        shell.run_line_magic("matplotlib", "inline")
    pd.set_option("display.precision", 4)
    pd.set_option("display.max_rows", 40)
    pd.set_option("display.width", 160)
    if quiet:
        warnings.filterwarnings("ignore", category=FutureWarning)  # deprecations inside diffusers / transformers
        for name in ("diffusers", "transformers", "transformers.image_processing_utils"):
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            from diffusers.utils import logging as dlog
            from transformers.utils import logging as tlog

            dlog.set_verbosity_error()
            dlog.disable_progress_bar()
            tlog.set_verbosity_error()
            tlog.disable_progress_bar()
        except ImportError:  # pragma: no cover
            pass
    return root


# --------------------------------------------------------------------------------------------- configs
def notebook_config(
    config: str | os.PathLike,
    *,
    model_path: str | None = None,
    calib_path: str | None = None,
    eval_path: str | None = None,
    output_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    height: int | None = None,
    width: int | None = None,
    num_frames: int | None = None,
    num_inference_steps: int | None = None,
    sample_steps: int | None = None,
    num_eval_samples: int | None = None,
    save_lightx2v: bool | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load an LLMC YAML config and put a notebook's parameters into it.

    The common parameters map onto the config as follows (None keeps the file's value):
    `model_path` → model.path; `calib_path` / `eval_path` → calib.path / every eval section's path;
    `seed` → base.seed; `height`, `width`, `num_frames`, `num_inference_steps` → the calib and every
    eval section (target_height, target_width, num_frames, num_inference_steps); `sample_steps` →
    calib.sample_steps; `num_eval_samples` → every eval section's num_samples (the first N prompts of the eval
    set); `output_dir` → save.save_path and every eval section's output_video_path
    (``<output_dir>/videos``); `save_lightx2v` → save.save_lightx2v. `overrides` are dotted fields applied
    last, exactly as ``vidquant quantize --set`` (e.g. ``{"quant.video_gen.special.alpha": 0.8}``).
    """
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (working directory: {os.getcwd()})")
    raw = read_yaml(path) or {}  # strict YAML: duplicate keys, alias bombs, encodings
    sections: dict[str, Any] = {}
    if model_path is not None:
        raw.setdefault("model", {})["path"] = str(model_path)
    if seed is not None:
        raw.setdefault("base", {})["seed"] = int(seed)
    evals = raw.get("eval")
    evals = [] if evals is None else (evals if isinstance(evals, list) else [evals])
    calib = raw.get("calib")
    shared = {"target_height": height, "target_width": width, "num_frames": num_frames,
              "num_inference_steps": num_inference_steps}
    for section in ([calib] if isinstance(calib, dict) else []) + evals:
        section.update({k: v for k, v in shared.items() if v is not None})
    if isinstance(calib, dict):
        if calib_path is not None:
            calib["path"] = str(calib_path)
        if sample_steps is not None:
            calib["sample_steps"] = int(sample_steps)
    for section in evals:
        if eval_path is not None:
            section["path"] = str(eval_path)
        if num_eval_samples is not None:
            section["num_samples"] = int(num_eval_samples)
        if output_dir is not None:
            section["output_video_path"] = str(Path(output_dir) / "videos")
    if output_dir is not None:
        sections["save.save_path"] = str(output_dir)
    if save_lightx2v is not None:
        sections["save.save_lightx2v"] = bool(save_lightx2v)
    raw = apply_overrides(raw, {**sections, **dict(overrides or {})})
    return parse_config(raw, source=str(path))


def variant(cfg: Config, overrides: Mapping[str, Any], output_dir: str | os.PathLike | None = None) -> Config:
    """A copy of `cfg` with dotted-field overrides, validated again (relative paths keep resolving the same).
    With `output_dir`, the copy writes there: save.save_path and every eval section's videos
    (``<output_dir>/videos``)."""
    raw = cfg.model_dump(mode="json", exclude_none=True)
    over = dict(overrides)
    if output_dir is not None:
        over["save.save_path"] = str(output_dir)
        evals = raw.get("eval")
        for ev in evals if isinstance(evals, list) else ([evals] if evals else []):
            ev["output_video_path"] = str(Path(output_dir) / "videos")
    return parse_config(apply_overrides(raw, over), source=cfg.source)


def as_rtn(cfg: Config, output_dir: str | os.PathLike) -> Config:
    """The same quantizers, calibration and evaluation with plain RTN: the baseline every method is compared
    with. Writes to `output_dir` (videos in ``<output_dir>/videos``); exports nothing."""
    return variant(cfg, {"quant.video_gen.method": "RTN", "quant.video_gen.special": {},
                         "save.save_lightx2v": False}, output_dir)


def scheme_label(cfg: Config) -> str:
    """Weight/activation formats of a config, e.g. "int8/int8", "e4m3/e4m3", "int4/fp" (weight-only)."""
    vg = cfg.quant.video_gen
    return f"{vg.weight.label}/{vg.act.label if vg.act is not None else 'fp'}"


def bit_overrides(w_bit: int | None = None, a_bit: int | None = None) -> dict[str, Any]:
    """Overrides for integer bit widths: None keeps the config's, ``a_bit=0`` means weight-only (no `act`)."""
    over: dict[str, Any] = {}
    if w_bit is not None:
        over["quant.video_gen.weight.bit"] = int(w_bit)
    if a_bit == 0:
        over["quant.video_gen.act"] = None
    elif a_bit is not None:
        over["quant.video_gen.act.bit"] = int(a_bit)
    return over


def lightx2v_config_for(cfg: Config, quantized_ckpt: str | os.PathLike, path: str | os.PathLike) -> dict[str, Any]:
    """Write the lightx2v inference config matching a quantization config (task, int8/fp8 scheme, the first
    eval section's sizes, steps, guidance and seed) for `quantized_ckpt`; returns it."""
    from vidquant.export.lightx2v_config import write_lightx2v_config
    from vidquant.export.lightx2v_export import check_lightx2v_exportable

    ev = cfg.evals[0] if cfg.evals else cfg.calib
    return write_lightx2v_config(
        path, task=cfg.task, scheme=check_lightx2v_exportable(cfg.quant.video_gen), quantized_ckpt=quantized_ckpt,
        infer_steps=ev.num_inference_steps, target_height=ev.target_height, target_width=ev.target_width,
        target_video_length=ev.num_frames, guidance_scale=ev.guidance_scale, seed=cfg.base.seed,
        fps=getattr(ev, "fps", 16))


# --------------------------------------------------------------------------------------------- metrics
def metrics_file(output_dir: str | os.PathLike, metrics_path: str | os.PathLike | None = None) -> Path:
    """Where a notebook records its metrics: `metrics_path` if given, else ``<output_dir>/metrics.json``."""
    return Path(metrics_path) if metrics_path else Path(output_dir) / "metrics.json"


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf" / "nan": JSON has no literal for them
    if value is None or isinstance(value, str | bool | Number):
        return value
    raise TypeError(f"metric value {value!r} ({type(value).__name__}) is not a scalar")


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys (``{"rtn": {"psnr": 1}}`` → ``{"rtn.psnr": 1}``); numpy / torch
    scalars become Python numbers; inf and nan become the strings "inf" / "nan"."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, prefix=f"{name}."))
        else:
            flat[name] = _scalar(value)
    return flat


def record_metrics(metrics: Mapping[str, Any], path: str | os.PathLike) -> pd.DataFrame:
    """Write a notebook's metrics as one flat JSON object (the row the sweep tables aggregate) and return
    them as a two-column table for display. The file is written under a temporary name and renamed."""
    flat = flatten_metrics(metrics)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".writing")
    tmp.write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return pd.DataFrame({"metric": list(flat), "value": list(flat.values())})


def summary_metrics(result) -> dict[str, Any]:
    """A run's headline numbers (`RunResult.summary`) without its machine-specific paths."""
    return {k: v for k, v in result.summary.items() if k not in ("model", "export_dir")}


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """Read a metrics json written by :func:`record_metrics` ("inf"/"nan" back to floats)."""
    data = json.loads(Path(path).read_text())
    return {k: (float(v) if v in ("inf", "-inf", "nan") else v) for k, v in data.items()}


# --------------------------------------------------------------------------------------------- clips
_MIME = {".mp4": "video/mp4", ".webm": "video/webm", ".gif": "image/gif"}


def _link_sources(path: Path) -> list[str]:
    """Relative URLs under which a file inside the repository is found from a notebook in ``notebooks/``
    (JupyterLab), from ``results/rendered/<nb>.html`` and from ``results/rendered/<nb>/<run>.html``: one
    ``<source>`` each, the browser plays the first that loads."""
    rel = path.resolve().relative_to(repo_root()).as_posix()
    return [f"{'../' * depth}{rel}" for depth in (1, 2, 3)]


def clip_html(path: str | os.PathLike, *, caption: str = "", embed: bool | None = None,
              width: int | None = None) -> str:
    """HTML showing a saved clip: an autoplaying, looping ``<video>`` (mp4 / webm) or ``<img>`` (gif).

    `embed` None: link to the file when it lies inside the repository (committed renders stay small, as the
    clips sit next to them under ``results/``), embed it as a data URI when it lies elsewhere (e.g. a
    temporary folder) so the output stands alone. True / False force either.
    """
    path = Path(path)
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path}: expected one of {sorted(_MIME)}")
    try:
        links = _link_sources(path)
    except ValueError:  # outside the repository
        links = []
    if embed is None:
        embed = not links
    if embed or not links:
        sources = [f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}" if embed
                   else path.resolve().as_uri()]
    else:
        sources = links
    style = f' width="{width}"' if width else ""
    if mime == "image/gif":
        media = f'<img src="{html.escape(sources[0])}"{style}/>'
    else:
        inner = "".join(f'<source src="{html.escape(src)}" type="{mime}">' for src in sources)
        media = f"<video autoplay loop muted controls playsinline{style}>{inner}</video>"
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure style="display:inline-block;margin:4px">{media}{cap}</figure>'


def show_clip(clip: np.ndarray | str | os.PathLike, path: str | os.PathLike | None = None, *, fps: int = 8,
              caption: str = "", embed: bool | None = None, width: int | None = None):
    """Display a clip in the notebook as a playable video (see :func:`clip_html` for linking vs embedding).

    `clip` is a ``(frames, H, W, 3)`` array in [0, 1] (written to `path` first, an .mp4 or .gif; tiny frames
    are upscaled to 128 px) or the path of a saved clip. Returns an ``IPython.display.HTML``.
    """
    from IPython.display import HTML

    from vidquant.eval.video import save_video

    if isinstance(clip, str | os.PathLike):
        file = Path(clip)
    else:
        if path is None:
            raise ValueError("show_clip: pass `path` (where to write the clip) with an array")
        file = save_video(np.asarray(clip), path, fps=fps)
    return HTML(clip_html(file, caption=caption, embed=embed, width=width))


def clip_pair(result, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(float clip, quantized clip) of eval sample `index` of a run (`RunResult.videos`, in eval order)."""
    pairs = list(result.videos.values())
    if not pairs:
        raise ValueError("the run generated no eval clips (its config has no `eval` section)")
    return pairs[index]


def clips_of(results: Mapping[str, Any], index: int = 0, reference: str = "float") -> dict[str, np.ndarray]:
    """{`reference`: float clip, label: quantized clip for each run} for eval sample `index`; all runs share the
    float clip (same model, seed and prompt), so the first run's is used."""
    out: dict[str, np.ndarray] = {}
    for label, result in results.items():
        ref, clip = clip_pair(result, index)
        out.setdefault(reference, ref)
        out[label] = clip
    return out


def generate_eval_clips(pipe, cfg: Config, limit: int | None = None) -> list[np.ndarray]:
    """Generate the first `limit` eval samples of `cfg` with `pipe`, exactly as `vidquant.run.quantize` does
    (same prompts, sizes, steps and seed), so the clips compare frame by frame with a run's clips."""
    from vidquant.generate import GenParams, generate_video
    from vidquant.run import load_eval_samples, seed_all

    clips = []
    for ev, samples in load_eval_samples(cfg):
        params = GenParams.from_section(ev, cfg.base.seed)
        seed_all(cfg.base.seed)
        for sample in samples:
            if limit is not None and len(clips) >= limit:
                return clips
            clips.append(generate_video(pipe, sample, params))
    return clips


def fidelity_table(clips: Mapping[str, Sequence[np.ndarray]], references: Mapping[str, Sequence[np.ndarray]]
                   ) -> pd.DataFrame:
    """PSNR / SSIM / flicker error of every (clip set, reference set) pair, one row per pair and sample."""
    from vidquant.eval.metrics import video_fidelity

    rows = []
    for name, group in clips.items():
        for ref_name, refs in references.items():
            if ref_name == name:
                continue
            for i, (clip, ref) in enumerate(zip(group, refs)):
                row = video_fidelity(clip, ref)
                rows.append({"clips": name, "vs": ref_name, "sample": i, "psnr": row["psnr"], "ssim": row["ssim"],
                             "flicker_error": row["flicker_error"]})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- tables
_SUMMARY_KEYS = ("method", "weight", "act", "mean_sqnr_db", "min_sqnr_db", "mean_timestep_rel_err", "video_psnr",
                 "video_ssim", "video_flicker_error", "video_colour_ok", "video_direction_ok", "seconds")


def run_summary(results: Mapping[str, Any]) -> pd.DataFrame:
    """One row per run (`{label: RunResult}`) with the headline numbers of `RunResult.summary`."""
    rows = []
    for label, result in results.items():
        s = result.summary
        rows.append({"run": label, **{k: s[k] for k in _SUMMARY_KEYS if k in s}})
    return pd.DataFrame(rows).set_index("run")


def smoothing_table(blockwise) -> pd.DataFrame:
    """SmoothQuant's decisions as a long table: one row per (block, subset, input channel) with the
    activation's max |x| before smoothing (`x_max`), the scale `s` and the max after (`x_max / s`)."""
    frames = []
    for block, log in sorted(blockwise.logs.items()):
        for subset, entry in log.get("smoothquant", {}).items():
            x_max, scale = entry["x_max"].float(), entry["scale"].float()
            frames.append(pd.DataFrame({
                "block": block, "subset": subset, "channel": np.arange(x_max.numel()),
                "x_max": x_max.numpy(), "scale": scale.numpy(), "x_max_smoothed": (x_max / scale).numpy(),
            }))
    if not frames:
        return pd.DataFrame(columns=["block", "subset", "channel", "x_max", "scale", "x_max_smoothed"])
    return pd.concat(frames, ignore_index=True)


def method_layers(results: Mapping[str, Any]) -> pd.DataFrame:
    """Per-layer error of several runs in one long table (`method` column = the label)."""
    frames = [r.layer_metrics.assign(method=label) for label, r in results.items() if not r.layer_metrics.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def method_timesteps(results: Mapping[str, Any]) -> pd.DataFrame:
    """Per-timestep denoiser error of several runs in one long table (`method` column = the label)."""
    frames = [r.timestep_metrics.assign(method=label) for label, r in results.items()
              if not r.timestep_metrics.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def smoothing_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (block, subset): how much smoothing tamed the outliers: max/median of the per-channel activation
    max before and after, and the range of the scales."""
    def one(g: pd.DataFrame) -> pd.Series:
        before, after = g["x_max"], g["x_max_smoothed"]
        return pd.Series({
            "outlier_ratio_before": before.max() / max(before.median(), 1e-30),
            "outlier_ratio_after": after.max() / max(after.median(), 1e-30),
            "scale_min": g["scale"].min(), "scale_max": g["scale"].max(),
        })
    if table.empty:
        return pd.DataFrame()
    return table.groupby(["block", "subset"])[["x_max", "x_max_smoothed", "scale"]].apply(one)


def algo_log_table(blockwise, method: str) -> pd.DataFrame:
    """The scalar entries an algorithm logged per block (`BlockwiseResult.logs[block][method][name]`), one row
    per (block, name): e.g. AWQ's chosen ratio and loss per subset, GPTQ's loss and damping per linear."""
    rows = []
    for block, log in sorted(blockwise.logs.items()):
        for name, record in log.get(method, {}).items():
            if not isinstance(record, Mapping):
                continue
            scalars = {k: _scalar(v) for k, v in record.items() if _is_scalar(v)}
            rows.append({"block": block, "name": name, **scalars})
    return pd.DataFrame(rows)


def _is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    return isinstance(value, str | bool | Number | np.generic)


def awq_search_curves(blockwise, block: int = 0) -> pd.DataFrame:
    """AWQ's grid search in one block: mean loss over the calibration samples per candidate ratio and
    subset (columns subset, ratio, loss, chosen)."""
    rows = []
    for subset, rec in blockwise.logs.get(block, {}).get("awq", {}).items():
        if not isinstance(rec, Mapping) or "ratios" not in rec:
            continue
        losses = torch.as_tensor(rec["losses"]).double().mean(dim=1)
        for r, loss in zip(rec["ratios"], losses.tolist()):
            rows.append({"subset": subset, "ratio": float(r), "loss": loss, "chosen": float(r) == rec["ratio"]})
    return pd.DataFrame(rows)


def calib_shapes(calib) -> pd.DataFrame:
    """What one captured call holds: name, shape and dtype of block 0's inputs and the denoiser's inputs."""
    rows = [{"part": "block input", "name": "hidden_states", "shape": tuple(calib.hidden_states[0].shape),
             "dtype": str(calib.hidden_states[0].dtype)}]
    for part, mapping in (("block input", calib.block_kwargs[0]), ("denoiser input", calib.denoiser_inputs[0])):
        for name, value in mapping.items():
            tensors = value if isinstance(value, tuple | list) else [value]
            for j, t in enumerate(tensors):
                if isinstance(t, torch.Tensor):
                    label = name if len(tensors) == 1 else f"{name}[{j}]"
                    rows.append({"part": part, "name": label, "shape": tuple(t.shape), "dtype": str(t.dtype)})
    return pd.DataFrame(rows)


def collect_runs(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """Every complete run under `runs_dir` (``<notebook>/<run>/metrics.json``, as the sweep and
    ``make notebooks`` write them): one row per run with notebook, run, its parameters and its metrics."""
    rows = []
    for metrics in sorted(Path(runs_dir).glob("*/*/metrics.json")):
        run_dir = metrics.parent
        params_file = run_dir / "params.json"
        params = json.loads(params_file.read_text()) if params_file.is_file() else {}
        rows.append({"notebook": run_dir.parent.name, "run": run_dir.name, **params, **read_metrics(metrics)})
    return pd.DataFrame(rows)


METHOD_COLUMNS = ("label", "notebook", "method", "weight", "act", "mean_sqnr_db", "min_sqnr_db",
                   "mean_timestep_rel_err", "video_psnr", "video_ssim", "video_colour_ok", "video_direction_ok",
                   "seconds")


def method_table(runs: pd.DataFrame, notebooks: str = r"0[2-6]_") -> pd.DataFrame:
    """The method notebooks' default runs (`collect_runs` rows with run ``defaults`` whose notebook matches the
    regex), with their headline columns and a `label` ("03_smoothquant: SmoothQuant int8/int8")."""
    if runs.empty or "run" not in runs:
        return pd.DataFrame(columns=list(METHOD_COLUMNS))
    df = runs[(runs["run"] == "defaults") & runs["notebook"].str.match(notebooks)].copy()
    if df.empty:
        return pd.DataFrame(columns=list(METHOD_COLUMNS))
    df["label"] = df["notebook"] + ": " + df["method"].astype(str) + " " + df["weight"].astype(str) + "/" + \
        df["act"].astype(str)
    return df[[c for c in METHOD_COLUMNS if c in df]].reset_index(drop=True)


def swept_params(table: pd.DataFrame) -> list[str]:
    """The parameters of a sweep table, read from its run slugs (``alpha-0.75__w_bit-4`` → alpha, w_bit)."""
    names: list[str] = []
    for run in table.get("run", pd.Series(dtype=str)).astype(str):
        for part in run.split("__"):
            name = part.split("-", 1)[0]
            if "-" in part and name in table and name not in names:
                names.append(name)
    return names


def read_tables(tables_dir: str | os.PathLike, pattern: str = "*.csv") -> dict[str, pd.DataFrame]:
    """The csv tables in `tables_dir` matching `pattern`, by file stem (sorted)."""
    return {p.stem: pd.read_csv(p) for p in sorted(Path(tables_dir).glob(pattern))}


def sweep_tables(tables_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """The sweep tables (``<tables_dir>/<notebook>.csv``, e.g. ``03_smoothquant.csv``) by notebook name."""
    return read_tables(tables_dir, "[0-9][0-9]_*.csv")


@torch.no_grad()
def block_input_stats(transformer, calib, block: int = 0, device: str | torch.device = "cpu"
                      ) -> tuple[dict[str, torch.Tensor], pd.DataFrame]:
    """What one block's linears read during calibration.

    Returns ({subset name: max |x| per input channel over every captured call}, a table with one row per
    (captured call, subset): the call's meta (sample, step, branch, timestep) plus `absmax` (max |x| over
    the call) and `token_absmax_median` (the median over tokens of the per-token max |x|, what a per-token
    activation scale follows)).
    """
    from vidquant.algos.engine import collect_linear_inputs
    from vidquant.algos.smoothquant import act_channel_max
    from vidquant.models.layout import SUBSETS

    blk = transformer.blocks[block]
    inputs, _ = collect_linear_inputs(blk, calib.hidden_states, calib.block_kwargs, device)
    channel_max = {s.name: act_channel_max(inputs[s.input]) for s in SUBSETS}
    rows = []
    for s in SUBSETS:
        for meta, x in zip(calib.meta, inputs[s.input]):
            tok = x.float().abs().reshape(-1, x.shape[-1]).amax(dim=-1)
            rows.append({**meta, "subset": s.name, "absmax": float(tok.max()),
                         "token_absmax_median": float(tok.median())})
    return channel_max, pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- fp8 rounding
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


# --------------------------------------------------------------------------------------------- checkpoints
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
