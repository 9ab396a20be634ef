#!/usr/bin/env python
"""Write notebooks/00_quickstart.ipynb … 10_wan22.ipynb from the cell texts below (no outputs).

    python scripts/build_notebooks.py          # (re)write every notebook
    python scripts/build_notebooks.py --check  # exit 1 if a committed notebook differs from what this writes

One file keeps the ten notebooks consistent: the same setup cell, the same parameter names (model_path,
output_dir, metrics_path, ...), the same closing metrics cell. Edit the cells here, not in JupyterLab, and
re-run the script; the notebooks carry no outputs (tests/test_notebooks.py checks both).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from textwrap import dedent

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# The method notebooks default to the tiny T2V model (16 text tokens: a clip in seconds on a CPU); 00 and 08
# follow the seed's I2V workflow (diffusers' I2V pads text to 512 tokens, so each clip costs ~10× more and
# they evaluate fewer prompts).
T2V = ("configs/quantization/video_gen/tiny_t2v", "assets/models/tiny-wan-t2v")
I2V = ("configs/quantization/video_gen/tiny_i2v", "assets/models/tiny-wan-i2v")

# ------------------------------------------------------------------------------------------------- cells

CONFIG_ARGS = ("model_path=model_path, calib_path=calib_path, eval_path=eval_path, height=height, width=width,\n"
               "    num_frames=num_frames, num_inference_steps=num_inference_steps, sample_steps=sample_steps,\n"
               "    num_eval_samples=num_eval_samples, seed=seed, output_dir=output_dir")
CALIB_ARGS = CONFIG_ARGS.replace("eval_path=eval_path, ", "").replace("num_eval_samples=num_eval_samples, ", "")


def md(text: str) -> dict:
    return {"cell_type": "markdown", "source": dedent(text).strip()}


def code(text: str, tags: tuple[str, ...] = ()) -> dict:
    """A code cell; ``<<CONFIG_ARGS>>`` / ``<<CALIB_ARGS>>`` expand to the common `notebook_config` arguments."""
    source = dedent(text).strip()
    for name, value in (("CONFIG_ARGS", CONFIG_ARGS), ("CALIB_ARGS", CALIB_ARGS)):
        source = source.replace(f"<<{name}>>", value)
    return {"cell_type": "code", "source": source, "tags": list(tags)}


def params(text: str) -> dict:
    """The papermill `parameters` cell."""
    return code(text, tags=("parameters",))


SETUP = code("""
    from vidquant import notebook as nb, plots
    root = nb.setup()  # cd to the repository root: relative paths work from JupyterLab and from papermill
""")


def common_params(stem: str, config: str, extra: str = "", *, task: tuple[str, str] = T2V,
                  evaluate: bool = True, num_eval: int | None = None) -> str:
    """The parameters every quantization notebook has, with `extra` (method settings) after the model."""
    other = I2V if task == T2V else T2V
    lines = [
        f"# The tiny {'T2V' if task == T2V else 'I2V'} model; for {'I2V' if task == T2V else 'T2V'}: "
        f"config {other[0]}/{config}, model_path {other[1]}",
        f'config = "{task[0]}/{config}"  # LLMC-style YAML; the parameters below override it',
        f'model_path = "{task[1]}"  # diffusers-format Wan2.1 folder (a real checkpoint on a GPU box)',
    ]
    if extra:
        lines.append(dedent(extra).strip())
    lines.append("calib_path = None  # None: the config's calib.path (samples.json + images)")
    if evaluate:
        lines.append("eval_path = None  # None: the config's eval.path")
        lines.append(f"num_eval_samples = {num_eval}  # the first N eval prompts; None: all of them")
    lines += [
        "height = None  # None: the config's target_height (64 for the tiny models, 480 for Wan2.1)",
        "width = None  # None: the config's target_width",
        "num_frames = None  # None: the config's num_frames",
        "num_inference_steps = None  # None: the config's (20 tiny, 50 Wan2.1)",
        "sample_steps = None  # None: the config's calib.sample_steps (captured calls per prompt)",
        "seed = 42",
        f'output_dir = "outputs/notebooks/{stem}"  # everything this notebook writes (the sweep sets one per run)',
        "metrics_path = None  # None: <output_dir>/metrics.json",
    ]
    return "\n".join(lines)


RECORD = code("""
    nb.record_metrics(metrics, nb.metrics_file(output_dir, metrics_path))
""")


def quality_cells(runs: str = "runs", what: str = "quantized") -> list[dict]:
    """Per-layer SQNR, per-timestep error, frames side by side, playable clip: the same four views in every
    method notebook."""
    return [
        md("""
            ## Per-layer error
            SQNR of every quantized linear's output against the float linear, on the calibration inputs
            (all captured timesteps and both CFG branches). Low bars are the layers to look at.
        """),
        code(f"""
            layers = nb.method_layers({runs})
            plots.layer_sqnr(layers)
        """),
        code("""
            layers.nsmallest(8, "sqnr_db")[["method", "block", "layer", "subset", "sqnr_db", "rel_err"]]
        """),
        md("""
            ## Per-timestep error
            The whole denoiser, teacher-forced: float and quantized transformer get the very same captured inputs
            at each calibration timestep, so the error is the quantized model's own, not accumulated drift.
        """),
        code(f"""
            plots.timestep_error(nb.method_timesteps({runs}))
        """),
        md(f"""
            ## Float vs {what} video
            Same prompt, same seed; the last rows show the absolute difference, amplified.
        """),
        code(f"""
            clips = nb.clips_of({runs}, index=0)
            plots.frames_side_by_side(clips)
        """),
        code("""
            from vidquant.eval.video import side_by_side

            nb.show_clip(side_by_side(*clips.values()), f"{output_dir}/clips/side_by_side_0.mp4",
                         caption=" | ".join(clips))
        """),
    ]


# ------------------------------------------------------------------------------------------------- notebooks


def nb00() -> list[dict]:
    return [
        md("""
            # 00 · Quickstart: the LLMC → lightx2v workflow in a few calls

            This notebook runs the whole workflow of the seed document once, on the tiny Wan2.1 I2V model that
            runs on a laptop CPU in about a minute:

            1. **Calibration data** (§1.3.1): prompts and conditioning images in `assets/calib/tiny_i2v`; the inputs
               of transformer block 0 are captured during real denoising, for both CFG branches.
            2. **SmoothQuant W8A8** (§1.3.2), the seed's recommendation for W8A8: int8 weights per output channel,
               int8 activations per token (dynamic, symmetric), α = 0.75.
            3. **Evaluation** (§1.3.5): the fake-quantized model generates the eval clips with the float model's
               seed, and we compare them with the float clips.
            4. **Export** `save_lightx2v` (§1.3.3): int8 codes, per-channel `weight_scale`, smoothing vectors.
            5. **Weight-structure conversion** `converter.py -d backward` (§1.4.1), then `verify`.
            6. **Quantized inference** (§1.4.2) with real int8 GEMMs from the converted checkpoint.

            Why: to see every artefact once before the numbered notebooks take each step apart.
            From a shell, steps 1–4 are `vidquant quantize --config <yaml>` (or `scripts/run_llmc.sh`).
        """),
        params(common_params("00_quickstart", "smoothquant_w_a.yaml", task=I2V, num_eval=2,
                             extra="alpha = 0.75  # SmoothQuant migration strength")),
        SETUP,
        code("""
            from vidquant.config import dump_config

            cfg = nb.notebook_config(
                config, <<CONFIG_ARGS>>, save_lightx2v=True,
                overrides={"quant.video_gen.special.alpha": alpha, "save.overwrite": True})
            print(dump_config(cfg))
        """),
        md("""
            ## Steps 1–4: calibrate, quantize, evaluate, export
            `quantize(cfg)` is what `vidquant quantize` runs: float reference clips → calibration capture →
            blockwise SmoothQuant → lightx2v export → fake-quant deploy → metrics.
        """),
        code("""
            from vidquant.run import quantize

            result = quantize(cfg)
            nb.run_summary({"SmoothQuant W8A8": result})
        """),
        code("""
            ref, fake = nb.clip_pair(result, 0)
            plots.frames_side_by_side({"float": ref, "W8A8 fake-quant": fake},
                                      title=f"Float vs W8A8 fake-quant: {result.video_metrics.prompt[0]!r}")
        """),
        md("""
            ## Step 5: convert to lightx2v's layout and verify
            The export keeps diffusers key names; `convert(..., direction="backward")` is the seed's
            `python converter.py -s <export> -o <output> -d backward`.
        """),
        code("""
            from vidquant.export import convert, verify

            converted = convert(result.export_dir, f"{output_dir}/converted", direction="backward",
                                overwrite=True, progress=False)
            problems = verify(converted)
            print(f"export:    {result.export_dir}\\nconverted: {converted}")
            print("verify:", "OK" if not problems else "\\n".join(map(str, problems)))
        """),
        md("""
            ## Step 6: quantized inference
            The converted checkpoint loaded into the diffusers pipeline with `W8A8Linear` layers: real int8 GEMMs
            (int32 accumulation), per-token dynamic activation quantization, scales applied after the GEMM, as
            lightx2v computes. Same prompt and seed as above.
        """),
        code("""
            import time

            from vidquant.models.loading import resolve_dtype
            from vidquant.runtime import load_quantized_pipeline

            # quant_method is what lightx2v's inference config says ("advanced_ptq": apply affine_norm1/3 smoothing)
            pipe = load_quantized_pipeline(cfg.resolve_path(cfg.model.path), converted, quant_method="advanced_ptq",
                                           dtype=resolve_dtype(cfg.model.torch_dtype))
            t0 = time.time()
            (real,) = nb.generate_eval_clips(pipe, cfg, limit=1)
            runtime_seconds = time.time() - t0
            print(pipe.transformer.blocks[0].attn1.to_q)
            print(f"one clip in {runtime_seconds:.1f} s")
        """),
        code("""
            clips = {"float": ref, "W8A8 fake-quant": fake, "W8A8 runtime (int8 GEMM)": real}
            fidelity = nb.fidelity_table({k: [v] for k, v in clips.items() if k != "float"}, {"float": [ref]})
            display(fidelity)
            plots.frames_side_by_side(clips)
        """),
        code("""
            from vidquant.eval.video import side_by_side

            nb.show_clip(side_by_side(*clips.values()), f"{output_dir}/clips/float_fake_runtime.mp4",
                         caption=" | ".join(clips))
        """),
        md("## Metrics"),
        code("""
            metrics = {**nb.summary_metrics(result), "alpha": alpha, "verify_problems": len(problems),
                       "runtime": {"seconds_per_clip": runtime_seconds,
                                   "psnr_vs_float": fidelity.psnr[fidelity.clips.str.contains("runtime")].mean()}}
        """),
        RECORD,
    ]


def nb01() -> list[dict]:
    return [
        md("""
            # 01 · Calibration data: what the quantizer learns from

            LLMC calibrates a video DiT on the inputs that transformer **block 0** receives during real sampling
            (seed §1.3.1): each prompt (and, for I2V, its conditioning image) is run through the pipeline, and the
            block's inputs are recorded at `sample_steps` transformer calls — one call per CFG branch per
            denoising step. The blockwise loop then pushes these through the blocks one by one.

            Why it matters: in a diffusion transformer the activations change with the timestep (pure noise at
            t = 1000, a clean latent near t = 0) and with the CFG branch (with or without the prompt). LLMC's rule
            takes the *first* `sample_steps` calls — with CFG and 50 steps, 40 calls cover only the first 20
            high-noise steps; vidquant's default `uniform` spreads them over the whole trajectory.
            This notebook shows the samples, which calls each rule captures, what is stored, and the per-channel
            activation outliers that SmoothQuant (03) and AWQ (04) exist to handle.
        """),
        params(common_params("01_calibration_data", "smoothquant_w_a.yaml",
                             extra='step_selection = "uniform"  # "uniform" (vidquant) or "first" (LLMC)\n'
                                   "block = 0  # which block's linear inputs to inspect",
                             evaluate=False)),
        SETUP,
        code("""
            cfg = nb.notebook_config(
                config, <<CALIB_ARGS>>,
                overrides={"calib.step_selection": step_selection})
            cfg.calib.model_dump(exclude_none=True)
        """),
        md("## The calibration samples"),
        code("""
            from vidquant.calib import load_samples

            samples = load_samples(cfg.resolve_path(cfg.calib.path), cfg.task)
            plots.sample_images(samples)
        """),
        md("""
            ## Which transformer calls are captured
            Call index = step × calls per step + branch (cond 0, uncond 1). Both rules capture the same number.
        """),
        code("""
            from vidquant.calib import select_calls
            from vidquant.generate import GenParams

            gen = GenParams.from_section(cfg.calib, cfg.base.seed)
            selections = {rule: select_calls(gen.num_inference_steps, gen.calls_per_step, cfg.calib.sample_steps, rule)
                          for rule in ("uniform", "first")}
            plots.captured_calls(selections, gen.calls_per_step, gen.num_inference_steps)
        """),
        md("## Capture"),
        code("""
            import time

            from vidquant.calib import capture_block_inputs
            from vidquant.models.loading import load_pipeline

            pipe = load_pipeline(cfg.resolve_path(cfg.model.path), cfg.model.type, cfg.model.torch_dtype)
            t0 = time.time()
            calib = capture_block_inputs(pipe, samples, gen, cfg.calib.sample_steps, cfg.calib.step_selection)
            capture_seconds = time.time() - t0
            print(f"{len(calib)} captured calls from {len(samples)} samples, "
                  f"{calib.nbytes / 2**20:.2f} MiB on the CPU, {capture_seconds:.1f} s")
        """),
        code("""
            import pandas as pd

            pd.DataFrame(calib.meta).head(12)
        """),
        md("""
            What one captured call holds: block 0's arguments, and the whole transformer's (for the per-timestep
            metrics).
        """),
        code("""
            nb.calib_shapes(calib)
        """),
        md("""
            ## Activation outliers per channel
            The inputs of the three linear groups that share one activation (the smoothing subsets): q/k/v of
            self-attention, q of cross-attention, the FFN's up-projection. A few channels far above the median
            are what makes per-token int8 activations lossy, and what smoothing migrates into the weights.
        """),
        code("""
            channel_max, stats = nb.block_input_stats(pipe.transformer, calib, block=block)
            plots.activation_outliers(channel_max, title=f"Block {block}: max |x| per input channel, all calib tokens")
        """),
        md("""
            ## Activation range across the trajectory
            The largest |x| of each captured call, and the median over tokens of the per-token max (what a
            per-token scale follows), against the timestep. A range that moves with t is why calibration must
            cover the late, low-noise steps too.
        """),
        code("""
            plots.activation_range(stats)
        """),
        md("## Metrics"),
        code("""
            metrics = {
                "step_selection": step_selection, "samples": len(samples), "captured_calls": len(calib),
                "calib_mib": calib.nbytes / 2**20, "capture_seconds": capture_seconds,
                "outlier_ratio": {name: float(m.max() / m.median()) for name, m in channel_max.items()},
                "absmax_range_over_timesteps": {name: float(g.absmax.max() / g.absmax.min())
                                                for name, g in stats.groupby("subset")},
            }
        """),
        RECORD,
    ]


def nb02() -> list[dict]:
    return [
        md("""
            # 02 · RTN baseline: round to nearest, nothing searched

            Round-to-nearest puts every weight row on its own min-max grid (int8, symmetric, per output channel)
            and quantizes activations per token at run time (dynamic, symmetric) — exactly the formats lightx2v
            runs (seed §1.2), with no calibration-time transform at all. Calibration data is still captured, but
            only to *measure*: per-layer SQNR and the per-timestep error of the whole denoiser.

            Why: it is the baseline every method must beat, and it shows where the damage is (which layers,
            which timesteps) before any algorithm tries to repair it. Set `w_bit` / `a_bit` to see how fast
            quality falls below 8 bits (`a_bit = 0`: weight-only; lightx2v only runs W8A8, so nothing is exported).
        """),
        params(common_params("02_rtn_baseline", "rtn_w_a.yaml",
                             extra="w_bit = 8  # weight bits (2..8)\n"
                                   "a_bit = 8  # activation bits (2..8), or 0 for weight-only")),
        SETUP,
        code("""
            from vidquant.run import quantize

            cfg = nb.notebook_config(
                config, <<CONFIG_ARGS>>, save_lightx2v=False,
                overrides=nb.bit_overrides(w_bit, a_bit))
            label = f"RTN {nb.scheme_label(cfg)}"
            runs = {label: quantize(cfg)}
            nb.run_summary(runs)
        """),
        *quality_cells(what="RTN"),
        md("""
            Per-clip numbers against the float clips: PSNR (dB), SSIM, flicker error, and for the procedural prompts
            whether the detected colour and direction match the prompt.
        """),
        code("""
            runs[label].video_metrics
        """),
        md("## Metrics"),
        code("""
            metrics = {**nb.summary_metrics(runs[label]), "w_bit": w_bit, "a_bit": a_bit}
        """),
        RECORD,
    ]


def nb03() -> list[dict]:
    return [
        md("""
            # 03 · SmoothQuant: migrate activation outliers into the weights

            The seed recommends SmoothQuant for W8A8 (int8 and FP8, §1.3.2). Per-token activation quantization
            suffers from a few input channels with huge values; SmoothQuant divides each input channel j by

            $$s_j = \\frac{\\max|X_j|^{\\alpha}}{\\max|W_j|^{1-\\alpha}}$$

            and multiplies the weight's column j by the same $s_j$, so $W x = (W\\,\\mathrm{diag}(s))(x / s)$ exactly.
            The division is folded into the op before the linears (the adaLN "affine" norms `affine_norm1/3`, and
            `norm2` for cross-attention), which is why the lightx2v export carries those vectors.
            α sets how much of the difficulty moves to the weights (0: none, 1: all); LLMC's Wan configs use 0.75.

            This notebook shows the outliers before and after, the scales, and what smoothing buys over RTN per
            layer, per timestep and in the video. `make sweep` runs it over α and tabulates the result.
        """),
        params(common_params("03_smoothquant", "smoothquant_w_a.yaml",
                             extra="alpha = 0.75  # migration strength, 0..1\n"
                                   "compare_rtn = True  # also run RTN with the same settings, as the baseline\n"
                                   "show_block = 0  # block whose smoothing is plotted")),
        SETUP,
        code("""
            from vidquant.run import quantize

            cfg = nb.notebook_config(
                config, <<CONFIG_ARGS>>, save_lightx2v=False,
                overrides={"quant.video_gen.special.alpha": alpha})
            label = f"SmoothQuant α={alpha}"
            runs = {label: quantize(cfg)}
            if compare_rtn:
                runs["RTN"] = quantize(nb.as_rtn(cfg, f"{output_dir}/rtn"))
            nb.run_summary(runs)
        """),
        md("""
            ## What smoothing did
            Top: each subset's per-channel activation max before smoothing (red) and after dividing by s (blue).
            Bottom: the scales. Outlier channels get large s; the weights absorb them.
        """),
        code("""
            smoothing = nb.smoothing_table(runs[label].blockwise)
            plots.smoothing(smoothing, block=show_block, alpha=alpha)
        """),
        code("""
            nb.smoothing_summary(smoothing)
        """),
        *quality_cells(what="SmoothQuant"),
        md("## Metrics"),
        code("""
            metrics = {**nb.summary_metrics(runs[label]), "alpha": alpha,
                       "outlier_ratio_before": nb.smoothing_summary(smoothing).outlier_ratio_before.mean(),
                       "outlier_ratio_after": nb.smoothing_summary(smoothing).outlier_ratio_after.mean()}
            if compare_rtn:
                metrics["rtn"] = nb.summary_metrics(runs["RTN"])
        """),
        RECORD,
    ]


def nb04() -> list[dict]:
    return [
        md("""
            # 04 · AWQ: search the smoothing scale that minimizes the output error

            The seed's fallback when SmoothQuant is not accurate enough (§1.3.2). AWQ folds a per-channel scale
            into the same places SmoothQuant does, but chooses it by search: for each subset it tries
            $s = \\overline{|x|}^{\\,r}$ for a grid of ratios $r \\in [0, 1)$, quantizes the scaled weights (and the
            scaled activations), runs the subset's module (self-attention, cross-attention, FFN) on the
            calibration inputs and keeps the ratio with the smallest output MSE. Optional weight clipping then
            shrinks each weight row's range where that lowers the output error.

            Why: SmoothQuant's α is one global guess; AWQ measures, per block and subset. The cost is the search
            (n_grid forward passes per subset and sample). Compared below with RTN at the same bit widths.
        """),
        params(common_params("04_awq", "awq_w_a.yaml",
                             extra="n_grid = 20  # number of candidate ratios: 0, 1/n_grid, 2/n_grid, ...\n"
                                   "weight_clip = False  # search a clipping range per weight row as well\n"
                                   "w_bit = None  # None: the config's (8); AWQ's classic setting is 4, weight-only\n"
                                   "a_bit = None  # None: the config's (8); 0 for weight-only\n"
                                   "compare_rtn = True\n"
                                   "show_block = 0")),
        SETUP,
        code("""
            from vidquant.run import quantize

            cfg = nb.notebook_config(
                config, <<CONFIG_ARGS>>, save_lightx2v=False,
                overrides={"quant.video_gen.special.n_grid": n_grid,
                           "quant.video_gen.special.weight_clip": weight_clip, **nb.bit_overrides(w_bit, a_bit)})
            label = f"AWQ {nb.scheme_label(cfg)}"
            runs = {label: quantize(cfg)}
            if compare_rtn:
                runs["RTN"] = quantize(nb.as_rtn(cfg, f"{output_dir}/rtn"))
            nb.run_summary(runs)
        """),
        md("""
            ## The search
            Loss against the candidate ratio in one block (r = 0 is no scaling, i.e. RTN on this subset), and the
            chosen ratio of every block and subset.
        """),
        code("""
            plots.awq_search(nb.awq_search_curves(runs[label].blockwise, show_block), block=show_block)
        """),
        code("""
            search = nb.algo_log_table(runs[label].blockwise, "awq")
            search
        """),
        *quality_cells(what="AWQ"),
        md("## Metrics"),
        code("""
            metrics = {**nb.summary_metrics(runs[label]), "n_grid": n_grid, "weight_clip": weight_clip,
                       "mean_ratio": search.ratio.mean() if "ratio" in search else None}
            if compare_rtn:
                metrics["rtn"] = nb.summary_metrics(runs["RTN"])
        """),
        RECORD,
    ]


def nb05() -> list[dict]:
    return [
        md("""
            # 05 · GPTQ: quantize columns one by one and compensate the error

            GPTQ (Frantar et al.) quantizes a weight matrix column by column and, after each column, updates the
            not-yet-quantized columns to cancel the error it just made, weighted by the inverse Hessian
            $H^{-1}$ with $H = 2 X X^\\top$ from the calibration inputs of that linear. `actorder` quantizes the
            columns with the largest $H_{jj}$ first; `percdamp` adds $\\lambda\\,\\mathrm{mean}(\\mathrm{diag}\\,H)$ to
            the diagonal for stability. The result is still a per-channel int8 weight with a fixed grid, so it
            exports to lightx2v unchanged; `smoothquant_gptq_w_a.yaml` chains SmoothQuant before it.

            Why: RTN rounds each weight independently; GPTQ makes the rounding errors cancel in the layer's
            output. The gain grows as bits shrink — try `w_bit = 4, a_bit = 0`.
        """),
        params(common_params("05_gptq", "gptq_w_a.yaml",
                             extra="w_bit = None  # None: the config's (8)\n"
                                   "a_bit = None  # None: the config's (8); 0 for weight-only\n"
                                   "actorder = True  # quantize columns in decreasing diag(H) order\n"
                                   "percdamp = 0.01  # Hessian dampening, fraction of mean(diag H)\n"
                                   "blocksize = 128  # columns updated together (lazy batch updates)\n"
                                   "compare_rtn = True")),
        SETUP,
        code("""
            from vidquant.run import quantize

            cfg = nb.notebook_config(
                config, <<CONFIG_ARGS>>, save_lightx2v=False,
                overrides={"quant.video_gen.special.actorder": actorder, "quant.video_gen.special.percdamp": percdamp,
                           "quant.video_gen.special.blocksize": blocksize, **nb.bit_overrides(w_bit, a_bit)})
            label = f"{'+'.join(cfg.quant.video_gen.methods)} {nb.scheme_label(cfg)}"
            runs = {label: quantize(cfg)}
            if compare_rtn:
                runs["RTN"] = quantize(nb.as_rtn(cfg, f"{output_dir}/rtn"))
            nb.run_summary(runs)
        """),
        md("""
            ## What GPTQ logged per linear
            `loss` is GPTQ's own objective (the Hessian-weighted squared rounding error, summed), `damp` the
            dampening added to diag(H), `stage` the order in which the block's linears were processed.
        """),
        code("""
            gptq_log = nb.algo_log_table(runs[label].blockwise, "gptq")
            gptq_log
        """),
        *quality_cells(what="GPTQ"),
        md("## Metrics"),
        code("""
            metrics = {**nb.summary_metrics(runs[label]), "w_bit": w_bit, "a_bit": a_bit, "actorder": actorder,
                       "percdamp": percdamp, "blocksize": blocksize}
            if compare_rtn:
                metrics["rtn"] = nb.summary_metrics(runs["RTN"])
        """),
        RECORD,
    ]


def nb06() -> list[dict]:
    return [
        md("""
            # 06 · FP8 (E4M3) emulation: qtorch vs native rounding

            lightx2v's second format is FP8-E4M3 with per-channel weights and per-token dynamic activations
            (seed §1.2). The seed's LLMC config sets `use_qtorch: True`: LLMC fake-quantizes with QPyTorch's
            `float_quantize`, and lightx2v's converter rounds the weights the same way. PyTorch's own cast to
            `float8_e4m3fn` (what a `_scaled_mm` runtime uses for activations) rounds ties to even. The two agree
            everywhere except on exact ties between two fp8 values.

            Why look: parity. If the calibration-time emulation and the deployed kernels round differently, the
            evaluated model is not quite the deployed one. This notebook measures the difference on the tie
            points, on the model's weights, and end to end (SmoothQuant FP8 with each rounding).
        """),
        params(common_params("06_fp8_emulation", "smoothquant_w_a_fp8.yaml",
                             extra="alpha = 0.75  # SmoothQuant before FP8, as the seed's config\n"
                                   "use_qtorch = True  # the main run's rounding (the seed's setting)\n"
                                   "compare_rounding = True  # also run with the other rounding")),
        SETUP,
        code("""
            cfg = nb.notebook_config(
                config, <<CONFIG_ARGS>>, save_lightx2v=False,
                overrides={"quant.video_gen.special.alpha": alpha, "quant.video_gen.weight.use_qtorch": use_qtorch,
                           "quant.video_gen.act.use_qtorch": use_qtorch})
            print(f"{cfg.quant.video_gen.weight.label} weights per {cfg.quant.video_gen.weight.granularity}, "
                  f"{cfg.quant.video_gen.act.label} activations per {cfg.quant.video_gen.act.granularity}, "
                  f"use_qtorch={use_qtorch}")
        """),
        md("""
            ## Rounding at the tie points
            Every midpoint between two neighbouring finite E4M3 values (scale 1), plus random values.
        """),
        code("""
            import torch

            noise = torch.randn(2000, generator=torch.Generator().manual_seed(seed)) * 50
            values = torch.cat([nb.fp8_tie_points("e4m3"), noise])
            rounding = nb.fp8_rounding_table(values)
            plots.fp8_rounding(rounding)
        """),
        code("""
            rounding[rounding.differ].head(10)
        """),
        md("""
            ## On the model's weights
            Per-channel E4M3 codes of every block linear of the float model, rounded both ways.
        """),
        code("""
            from vidquant.models.loading import load_pipeline

            pipe = load_pipeline(cfg.resolve_path(cfg.model.path), cfg.model.type, cfg.model.torch_dtype)
            mismatch = nb.fp8_code_mismatch(pipe.transformer)
            del pipe
            plots.fp8_code_mismatch(mismatch)
        """),
        md("## End to end: SmoothQuant FP8 with each rounding"),
        code("""
            from vidquant.run import quantize

            name = {True: "FP8 qtorch", False: "FP8 native"}
            runs = {name[use_qtorch]: quantize(cfg)}
            if compare_rounding:
                flip = {f"quant.video_gen.{t}.use_qtorch": not use_qtorch for t in ("weight", "act")}
                other = nb.variant(cfg, flip, output_dir=f"{output_dir}/other_rounding")
                runs[name[not use_qtorch]] = quantize(other)
            nb.run_summary(runs)
        """),
        *quality_cells(what="FP8"),
        md("## Metrics"),
        code("""
            metrics = {**nb.summary_metrics(runs[name[use_qtorch]]), "alpha": alpha, "use_qtorch": use_qtorch,
                       "tie_points_differ": int(rounding.differ.sum()),
                       "weight_codes_differ_frac": mismatch.differ.sum() / mismatch.n.sum()}
            if compare_rounding:
                metrics["other_rounding"] = nb.summary_metrics(runs[name[not use_qtorch]])
        """),
        RECORD,
    ]


def nb07() -> list[dict]:
    return [
        md("""
            # 07 · lightx2v export: what is written, key by key

            With `save.save_lightx2v: True` (seed §1.3.3) LLMC writes the calibrated transformer for lightx2v:
            every block linear as `torch.int8` (or `torch.float8_e4m3fn`) codes of shape (out, in) with a
            `weight_scale` of shape (out, 1), its bias, the smoothing vectors `affine_norm1/3` (and the
            cross-attention smoothing folded into `norm2`), everything else as loaded, diffusers key names, and a
            `config.json` with `"quant_method": "advanced_ptq"`. lightx2v's converter (§1.4.1,
            `-d backward`) renames the keys to the original Wan layout and writes its own file names and index.

            This notebook exports, lists the keys with dtypes, shapes and sizes, converts, verifies both, and
            writes the matching lightx2v inference config.
        """),
        params(common_params("07_lightx2v_export", "smoothquant_w_a.yaml",
                             extra="alpha = 0.75\n"
                                   'weight_scale_dtype = "float32"  # LLMC writes bfloat16; lightx2v upcasts to fp32')),
        SETUP,
        code("""
            from vidquant.run import quantize

            cfg = nb.notebook_config(
                config, <<CONFIG_ARGS>>, save_lightx2v=True,
                overrides={"quant.video_gen.special.alpha": alpha, "save.weight_scale_dtype": weight_scale_dtype,
                           "save.overwrite": True})
            result = quantize(cfg)
            nb.run_summary({"export": result})
        """),
        md("## The export (`save_lightx2v`)"),
        code("""
            export = nb.checkpoint_table(result.export_dir)
            print(sorted(p.name for p in result.export_dir.iterdir()))
            export[export.key.str.startswith("blocks.0.")]
        """),
        code("""
            export[~export.key.str.startswith("blocks.")]
        """),
        code("""
            import json

            exported_config = json.loads((result.export_dir / "config.json").read_text())
            {k: exported_config[k] for k in ("_class_name", "quant_method", "num_layers", "num_attention_heads",
                                             "attention_head_dim", "ffn_dim") if k in exported_config}
        """),
        md("## Convert (`-d backward`) and the key renames"),
        code("""
            from vidquant.export import convert

            converted = convert(result.export_dir, f"{output_dir}/converted", direction="backward",
                                overwrite=True, progress=False)
            converted_table = nb.checkpoint_table(converted)
            print(sorted(p.name for p in converted.iterdir()))
            nb.key_renames(list(export.key[export.key.str.startswith("blocks.0.")]))
        """),
        md("## Sizes"),
        code("""
            from pathlib import Path

            tables = {"float transformer": nb.checkpoint_table(Path(cfg.resolve_path(cfg.model.path)) / "transformer"),
                      "lightx2v export": export, "converted": converted_table}
            sizes = {name: t.bytes.sum() / 2**20 for name, t in tables.items()}
            plots.checkpoint_sizes(tables)
        """),
        code("""
            import pandas as pd

            pd.DataFrame({name: t.groupby("dtype").bytes.sum() / 2**20 for name, t in tables.items()}).fillna(0)
        """),
        md("## Verify both and write the lightx2v config"),
        code("""
            from vidquant.export import verify

            problems = {"export": verify(result.export_dir), "converted": verify(converted)}
            for name, found in problems.items():
                print(f"{name}: {'OK' if not found else chr(10).join(map(str, found))}")
            nb.lightx2v_config_for(cfg, converted, f"{output_dir}/lightx2v_config.json")
        """),
        md("## Metrics"),
        code("""
            metrics = {**nb.summary_metrics(result), "alpha": alpha, "weight_scale_dtype": weight_scale_dtype,
                       "mib": sizes, "keys": {"export": len(export), "converted": len(converted_table)},
                       "compression": sizes["float transformer"] / sizes["lightx2v export"],
                       "verify_problems": {name: len(found) for name, found in problems.items()}}
        """),
        RECORD,
    ]


def nb08() -> list[dict]:
    return [
        md("""
            # 08 · Quantized inference: real int8 / fp8 GEMMs from the converted checkpoint

            The last step of the seed (§1.4.2): run the converted checkpoint. vidquant's runtime loads it into the
            diffusers pipeline with `W8A8Linear` layers that compute what lightx2v computes: per-token dynamic
            symmetric activation quantization, the stored per-channel weight codes, an int8 GEMM with int32
            accumulation (`torch._int_mm`) or an fp8 GEMM with fp32 accumulation (`torch._scaled_mm`), and both
            scales applied after the GEMM; the `affine_norm` smoothing vectors multiply the adaLN modulation.

            Why: the fake-quant evaluation (02–06) simulates the quantized model in floating point. This checks
            that the deployed model — different kernels, different rounding of the activation codes — produces the
            same video, and reports how far it is from the float and the fake-quant clips.
        """),
        params(common_params("08_quantized_inference", "smoothquant_w_a.yaml", task=I2V, num_eval=2,
                             extra="alpha = 0.75")),
        SETUP,
        md("Quantize, export and convert (as in 00 and 07):"),
        code("""
            from vidquant.export import convert, verify
            from vidquant.run import quantize

            cfg = nb.notebook_config(
                config, <<CONFIG_ARGS>>, save_lightx2v=True,
                overrides={"quant.video_gen.special.alpha": alpha, "save.overwrite": True})
            result = quantize(cfg)
            converted = convert(result.export_dir, f"{output_dir}/converted", direction="backward",
                                overwrite=True, progress=False)
            problems = verify(converted)
            assert not problems, problems
            nb.run_summary({"fake-quant": result})
        """),
        md("## Load the runtime"),
        code("""
            from vidquant.models.loading import resolve_dtype
            from vidquant.runtime import load_quantized_pipeline

            # quant_method is what lightx2v's inference config says ("advanced_ptq": apply affine_norm1/3 smoothing)
            pipe = load_quantized_pipeline(cfg.resolve_path(cfg.model.path), converted, quant_method="advanced_ptq",
                                           dtype=resolve_dtype(cfg.model.torch_dtype))
            print(pipe.transformer.quant_info)
            pipe.transformer.blocks[0].ffn
        """),
        md("## Generate with real quantized GEMMs"),
        code("""
            import time

            t0 = time.time()
            runtime_clips = nb.generate_eval_clips(pipe, cfg)  # the same eval prompts as the fake-quant run
            seconds_per_clip = (time.time() - t0) / len(runtime_clips)
            float_clips, fake_clips = zip(*(nb.clip_pair(result, i) for i in range(len(runtime_clips))))
            fidelity = nb.fidelity_table({"runtime": runtime_clips, "fake-quant": fake_clips},
                                         {"float": float_clips, "fake-quant": fake_clips})
            print(f"{seconds_per_clip:.2f} s per clip on {pipe.device}")
            fidelity
        """),
        code("""
            clips = {"float": float_clips[0], "fake-quant": fake_clips[0], "runtime": runtime_clips[0]}
            plots.frames_side_by_side(clips, title="Float vs fake-quant vs real quantized GEMMs (same seed)")
        """),
        code("""
            from vidquant.eval.video import side_by_side

            nb.show_clip(side_by_side(*clips.values()), f"{output_dir}/clips/float_fake_runtime.mp4",
                         caption=" | ".join(clips))
        """),
        md("## Metrics"),
        code("""
            means = fidelity.groupby(["clips", "vs"]).psnr.mean()
            metrics = {**nb.summary_metrics(result), "alpha": alpha, "scheme": pipe.transformer.quant_info.scheme,
                       "runtime": {"seconds_per_clip": seconds_per_clip,
                                   "psnr_vs_float": means["runtime", "float"],
                                   "psnr_vs_fake_quant": means["runtime", "fake-quant"]}}
        """),
        RECORD,
    ]


def nb09() -> list[dict]:
    return [
        md("""
            # 09 · Results: methods and sweeps side by side

            Reads what the other notebooks recorded — `make notebooks` runs each with its defaults into
            `results/runs/<notebook>/defaults/`, `make sweep` (and `vidquant sweep`) runs grids into
            `results/runs/<notebook>/<params>/` and tabulates them in `results/tables/` — and puts the numbers
            side by side: RTN, SmoothQuant, AWQ, GPTQ and FP8 on the same model, prompts and seed, and the
            SmoothQuant α sweep, and the methods × formats table of `make tables`. Figures are saved to
            `results/plots/`.

            Why: one place to read the trade-offs (SQNR per layer, denoiser error per timestep, video PSNR /
            SSIM against the float model, task accuracy) without re-running anything.
        """),
        params("""
            runs_dir = "results/runs"  # where run folders live (<notebook>/<run>/metrics.json)
            tables_dir = "results/tables"  # sweep tables (<notebook>.csv)
            plots_dir = "results/plots"  # where the figures are saved
            output_dir = "outputs/notebooks/09_results"
            metrics_path = None  # None: <output_dir>/metrics.json
        """),
        SETUP,
        code("""
            from pathlib import Path

            Path(plots_dir).mkdir(parents=True, exist_ok=True)
            runs = nb.collect_runs(runs_dir)
            print(f"{len(runs)} complete run(s) under {runs_dir}")
        """),
        md("## Methods compared (each method notebook with its defaults)"),
        code("""
            methods = nb.method_table(runs)
            methods
        """),
        code("""
            if len(methods):
                fig = plots.metric_bars(methods, list(plots.SWEEP_METRICS), label="label", units=plots.SWEEP_METRICS,
                                        title="Methods compared (each notebook's defaults)")
                fig.savefig(f"{plots_dir}/methods.png", bbox_inches="tight")
                display(fig)
        """),
        md("""
            ## Methods × formats: who wins where, and how sure we are
            `make tables` quantizes the tiny models with every method in every format through the same `quantize`
            call. Read it in two layers:

            - **The ranking is the deterministic one**: mean per-layer output SQNR on the calibration data (and the
              teacher-forced denoiser error). It reproduces across CPU classes (`python -m vidquant.eval.ranking`
              checks the order of RTN, SmoothQuant and GPTQ in W8A8 and W4A8 on a native and an AVX2-limited run).
            - **The video numbers are draws**: each is a mean over prompts × seeds with a 95 % bootstrap interval.
              Generation of a *quantized* model is chaotic — nudging its latent by one ulp moves its PSNR against
              the float clip by dB (the *jitter* column), while the float model itself barely moves (the *floor*,
              ~130 dB). A difference against RTN counts only when its paired interval excludes 0 *and* it exceeds
              the jitter. The task errors (object motion in px/frame, colour ΔE against the prompt) are the
              numbers that matter for the clip's content.

            The sentences below are computed from the committed tables (their settings are in each table's
            header: the committed ones are a reduced run, see the README).
        """),
        code("""
            import pandas as pd

            from vidquant import tables as vq_tables

            for task in ("t2v", "i2v"):
                cells_csv = Path(tables_dir) / f"methods_formats_{task}.csv"
                intervals_csv = Path(tables_dir) / f"methods_formats_{task}_intervals.csv"
                if not cells_csv.is_file():
                    continue
                cells = pd.read_csv(cells_csv)
                print(f"== {task.upper()}")
                if intervals_csv.is_file():
                    intervals = pd.read_csv(intervals_csv)
                    print("\\n".join(vq_tables.verdict(intervals, cells)))
                    display(intervals)
                display(cells)
        """),
        md("## Sweeps"),
        code("""
            tables = nb.sweep_tables(tables_dir)
            for name, table in tables.items():
                print(f"{name}: {len(table)} run(s)")
                display(table)
        """),
        code("""
            figures = {name: plots.sweep(table, title=name) for name, table in tables.items()}
            for name, fig in figures.items():
                if fig is not None:
                    fig.savefig(f"{plots_dir}/{name}.png", bbox_inches="tight")
                    display(fig)
        """),
        md("## Metrics"),
        code("""
            metrics = {"runs": len(runs), "sweep_tables": len(tables),
                       "figures": sum(f is not None for f in figures.values()) + bool(len(methods))}
            if len(methods) and "video_psnr" in methods:
                    metrics["best_method"] = methods.loc[methods.video_psnr.astype(float).idxmax(), "label"]
        """),
        RECORD,
    ]


def nb10() -> list[dict]:
    return [
        md("""
            # 10 · Wan2.2: both experts of the A14B mixture, calibrated, exported for lightx2v and run

            Wan2.2-A14B is two transformers: diffusers' pipeline calls `transformer` (the high-noise expert) at
            timesteps ≥ `boundary_ratio`·1000 and `transformer_2` (the low-noise expert) below. Each expert only
            ever sees its own noise range, so each is calibrated on block-0 inputs captured at *its* steps (both CFG
            branches) and gets its own smoothing factors, grids and error report. lightx2v's `wan2.2_moe` runner
            loads the two quantized checkpoints from `high_noise_quantized_ckpt` / `low_noise_quantized_ckpt` and
            switches at `boundary`.

            Here on the shipped two-expert tiny model (`assets/models/tiny-wan22-t2v`); point `model_path` and
            `config` at a local Wan2.2-T2V-A14B-Diffusers directory and `configs/quantization/video_gen/wan22_t2v/`
            on a GPU box. TI2V-5B (one transformer, per-token timesteps) runs through the ordinary single-model
            path: `config = "configs/quantization/video_gen/tiny_wan22_ti2v/smoothquant_w_a.yaml"`.
        """),
        params("""
            # The tiny two-expert Wan2.2 T2V; for a real mixture: configs/quantization/video_gen/wan22_t2v/...
            config = "configs/quantization/video_gen/tiny_wan22_t2v/smoothquant_w_a.yaml"  # LLMC-style YAML
            model_path = "assets/models/tiny-wan22-t2v"  # diffusers-format Wan2.2 folder with transformer_2
            alpha = 0.75  # SmoothQuant migration strength (both experts)
            calib_path = None  # None: the config's calib.path
            eval_path = None  # None: the config's eval.path
            num_eval_samples = 2  # the first N eval prompts; None: all of them
            height = None  # None: the config's target_height
            width = None  # None: the config's target_width
            num_frames = None  # None: the config's num_frames
            num_inference_steps = None  # None: the config's (20 tiny, 40 Wan2.2 A14B)
            sample_steps = None  # None: the config's calib.sample_steps (captured calls per prompt, per expert)
            seed = 42
            output_dir = "outputs/notebooks/10_wan22"  # everything this notebook writes
            metrics_path = None  # None: <output_dir>/metrics.json
        """),
        SETUP,
        md("""
            ## Which expert runs when
            The split comes from the pipeline's own scheduler and `boundary_ratio`, exactly as diffusers decides it.
        """),
        code("""
            import pandas as pd
            from vidquant.calib.capture import expert_steps
            from vidquant.models import load_pipeline, pipeline_experts

            cfg = nb.notebook_config(
                config, <<CONFIG_ARGS>>, save_lightx2v=True,
                overrides={"quant.video_gen.special.alpha": alpha, "save.overwrite": True})
            float_pipe = load_pipeline(cfg.resolve_path(cfg.model.path), cfg.model.type, "float32")
            steps = cfg.calib.num_inference_steps
            pd.DataFrame([{"expert": e.label, "boundary (timestep)": e.boundary,
                           "steps served": expert_steps(float_pipe, steps, e)} for e in pipeline_experts(float_pipe)])
        """),
        md("""
            ## Calibrate each expert on its own steps
            One `quantize` call: capture (one pipeline run per prompt feeds both experts), the blockwise loop per
            expert, the two-checkpoint export, fake-quant evaluation. Every table carries an `expert` column.
        """),
        code("""
            from vidquant.run import quantize

            result = quantize(cfg, progress=False)
            pd.DataFrame(result.summary["experts"]).T
        """),
        md("""
            ## Per-expert error
            Per-layer SQNR of each expert on its own calibration inputs, and the whole denoiser's error per captured
            timestep (teacher-forced). The dashed line is the boundary: left of it the high-noise expert runs.
        """),
        code("""
            result.layer_metrics.groupby(["expert", "subset"]).sqnr_db.agg(["mean", "min"]).unstack("expert")
        """),
        code("""
            import matplotlib.pyplot as plt

            tm = result.timestep_metrics.groupby(["expert", "timestep"]).rel_err.mean().reset_index()
            fig, ax = plt.subplots(figsize=(7, 3))
            for name, group in tm.groupby("expert"):
                ax.plot(group.timestep, group.rel_err, "o-", label=name)
            ax.axvline(pipeline_experts(float_pipe)[0].boundary, ls="--", c="grey")
            ax.set(xlabel="timestep", ylabel="relative error of the prediction", title="per-expert denoiser error")
            ax.invert_xaxis(); ax.legend();
        """),
        md("""
            ## Two checkpoints for lightx2v: convert, verify, the MoE inference JSON
            `lightx2v_quant_model/high_noise_model` and `low_noise_model`, each converted to Wan keys and verified on
            its own; the JSON has lightx2v's `high_noise_quantized_ckpt`, `low_noise_quantized_ckpt` and `boundary`.
        """),
        code("""
            from vidquant.export.experts import convert_experts, verify_experts, write_lightx2v_moe_config
            from vidquant.export.lightx2v_export import check_lightx2v_exportable

            converted = convert_experts(result.export_dir, f"{output_dir}/converted", direction="backward",
                                        copy_no_weight_files=True, overwrite=True, progress=False)
            problems = verify_experts(converted)
            assert not any(problems.values()), problems
            ev = cfg.evals[0]
            moe_json = write_lightx2v_moe_config(
                f"{output_dir}/wan_moe_t2v_advanced_ptq.json", task="t2v",
                scheme=check_lightx2v_exportable(cfg.quant.video_gen),
                quantized_ckpts={d: f"{converted}/{d}" for d in ("high_noise_model", "low_noise_model")},
                boundary=float_pipe.config.boundary_ratio, guidance_scale=ev.guidance_scale,
                infer_steps=ev.num_inference_steps, target_height=ev.target_height, target_width=ev.target_width,
                target_video_length=ev.num_frames, seed=cfg.base.seed)
            {k: v for k, v in moe_json.items() if "noise" in k or k in ("boundary", "sample_guide_scale")}
        """),
        md("""
            ## Both experts on real int8 / fp8 GEMMs
            The runtime builds each expert from its converted checkpoint and guards every call: a non-finite or
            constant prediction (the reported all-black clips) stops generation and names the expert and timestep.
        """),
        code("""
            from vidquant.runtime.moe import load_quantized_moe_pipeline

            ckpts = {"transformer": f"{converted}/high_noise_model", "transformer_2": f"{converted}/low_noise_model"}
            pipe = load_quantized_moe_pipeline(cfg.resolve_path(cfg.model.path), ckpts, dtype=float_pipe.dtype)
            runtime_clips = nb.generate_eval_clips(pipe, cfg)
            float_clips, fake_clips = zip(*(nb.clip_pair(result, i) for i in range(len(runtime_clips))))
            fidelity = nb.fidelity_table({"runtime": runtime_clips, "fake-quant": fake_clips},
                                         {"float": float_clips, "fake-quant": fake_clips})
            fidelity
        """),
        code("""
            from vidquant.eval.video import side_by_side

            clips = {"float": float_clips[0], "fake-quant": fake_clips[0], "runtime (W8A8)": runtime_clips[0]}
            plots.frames_side_by_side(clips, title="Wan2.2 mixture: float vs quantized (same seed)")
            nb.show_clip(side_by_side(*clips.values()), f"{output_dir}/clips/float_fake_runtime.mp4",
                         caption=" | ".join(clips))
        """),
        md("## Metrics"),
        code("""
            means = fidelity.groupby(["clips", "vs"]).psnr.mean()
            metrics = {**nb.summary_metrics(result), "alpha": alpha,
                       "verify_problems": sum(len(p) for p in problems.values()),
                       "runtime": {"psnr_vs_float": means["runtime", "float"],
                                   "psnr_vs_fake_quant": means["runtime", "fake-quant"]}}
        """),
        RECORD,
    ]


BUILDERS = {
    "00_quickstart": nb00,
    "01_calibration_data": nb01,
    "02_rtn_baseline": nb02,
    "03_smoothquant": nb03,
    "04_awq": nb04,
    "05_gptq": nb05,
    "06_fp8_emulation": nb06,
    "07_lightx2v_export": nb07,
    "08_quantized_inference": nb08,
    "09_results": nb09,
    "10_wan22": nb10,
}

# ------------------------------------------------------------------------------------------------- writing


def build(stem: str) -> nbformat.NotebookNode:
    """The notebook `stem` as an nbformat node: deterministic cell ids, no outputs, the project's `vidquant` kernel
    (scripts/setup_env.sh installs it into the venv)."""
    cells = []
    for i, cell in enumerate(BUILDERS[stem]()):
        meta = {"tags": cell["tags"]} if cell.get("tags") else {}
        if cell["cell_type"] == "markdown":
            node = nbformat.v4.new_markdown_cell(cell["source"], metadata=meta)
        else:
            node = nbformat.v4.new_code_cell(cell["source"], metadata=meta)
        node["id"] = f"{stem[:2]}-{i:02d}"
        cells.append(node)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"name": "vidquant", "display_name": "vidquant", "language": "python"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(nb)
    return nb


def render(stem: str) -> str:
    return nbformat.writes(build(stem)) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if any notebook differs from what would be written")
    p.add_argument("--out", default=str(NOTEBOOKS), help="folder to write into (default: notebooks/)")
    args = p.parse_args(argv)
    out = Path(args.out)
    stale = []
    for stem in BUILDERS:
        path = out / f"{stem}.ipynb"
        text = render(stem)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
            continue
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print("out of date (run python scripts/build_notebooks.py):\n  " + "\n  ".join(map(str, stale)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
