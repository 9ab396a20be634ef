"""Quality pins on the shipped tiny models: the deterministic metrics of RTN, SmoothQuant and GPTQ W8A8.

For each task (assets/models/tiny-wan-t2v, -i2v) the float pipeline captures a small calibration set once;
each method then calibrates a copy of the transformer (blockwise, as `vidquant quantize` does) and we record

* the per-layer SQNR (dB) of every linear of every block (BlockwiseResult.layer_rows), and
* the teacher-forced per-call relative error of the whole fake-quantized denoiser (eval.denoiser).

tests/test_regression_pins.py compares a fresh computation with tests/data/regression_pins.json. Regenerate
the file (after a change that is *meant* to move the numbers, and say why in the commit) with

    PYTHONPATH=lib OMP_NUM_THREADS=1 python tests/regression_pins.py --write
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
from pathlib import Path

import torch

from vidquant.algos.deploy import deploy_fake_quant
from vidquant.algos.engine import build_algorithms, run_blockwise
from vidquant.calib.capture import capture_block_inputs
from vidquant.calib.samples import load_samples
from vidquant.config import METHODS
from vidquant.eval.denoiser import denoiser_outputs, timestep_errors
from vidquant.generate import GenParams
from vidquant.models.loading import load_pipeline
from vidquant.quant import IntQuantizer

REPO = Path(__file__).resolve().parents[1]
PINS = REPO / "tests" / "data" / "regression_pins.json"
TASKS = {"t2v": ("WanT2V", 16), "i2v": ("WanI2V", 512)}  # model type, max_sequence_length
#: Small settings: 2 prompts, 32×32, 5 frames, 4 steps with CFG, 2 of them captured (4 calls per prompt).
PROMPTS, SAMPLE_STEPS, SEED = 2, 2, 42
PARAMS = dict(height=32, width=32, num_frames=5, guidance_scale=5.0, num_inference_steps=4, seed=SEED)
METHOD_SPECIAL = {"RTN": {}, "SmoothQuant": {"alpha": 0.75}, "GPTQ": {"true_sequential": True}}


def quantizers() -> tuple[IntQuantizer, IntQuantizer]:
    """W8A8 int8: symmetric per-channel weights, per-token activations."""
    return IntQuantizer(8), IntQuantizer(8, granularity="per_token")


def compute_task(task: str) -> dict[str, dict[str, list[float]]]:
    """{method: {"layer_sqnr_db": [...], "timestep_rel_err": [...]}} for one shipped tiny model."""
    model_type, max_len = TASKS[task]
    torch.manual_seed(SEED)
    pipe = load_pipeline(REPO / "assets" / "models" / f"tiny-wan-{task}", model_type, "torch.float32", "cpu")
    samples = load_samples(REPO / "assets" / "calib" / f"tiny_{task}", task)[:PROMPTS]
    calib = capture_block_inputs(pipe, samples, GenParams(**PARAMS, max_sequence_length=max_len), SAMPLE_STEPS,
                                 progress=False)
    float_transformer = pipe.transformer
    float_preds = denoiser_outputs(float_transformer, calib)
    wq, aq = quantizers()
    out = {}
    for method, special in METHOD_SPECIAL.items():
        transformer = copy.deepcopy(float_transformer)
        algos = build_algorithms([method], lambda m, s=special: {**METHODS[m], **s})
        result = run_blockwise(transformer, calib, algos, wq, aq, "cpu", progress=False)
        deploy_fake_quant(transformer, wq, aq, result.weight_qparams)
        errors = timestep_errors(float_preds, denoiser_outputs(transformer, calib), calib)
        out[method] = {"layer_sqnr_db": [round(r["sqnr_db"], 6) for r in result.layer_rows],
                       "timestep_rel_err": [round(float(e), 9) for e in errors["rel_err"]]}
    return out


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {PINS.relative_to(REPO)}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pins = {"settings": {"prompts": PROMPTS, "sample_steps": SAMPLE_STEPS, **PARAMS, "methods": METHOD_SPECIAL,
                         "weight": "int8 per_channel sym", "act": "int8 per_token sym"},
            "generated_on": {"torch": torch.__version__, "cpu": _cpu_name()},
            **{task: compute_task(task) for task in TASKS}}
    text = json.dumps(pins, indent=1) + "\n"
    if args.write:
        PINS.parent.mkdir(parents=True, exist_ok=True)
        PINS.write_text(text)
        print(f"wrote {PINS}")
    else:
        print(text)


if __name__ == "__main__":
    main()
