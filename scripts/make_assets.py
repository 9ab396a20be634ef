"""Write the shipped calibration / evaluation sample sets under assets/ (deterministic; no downloads).

    python scripts/make_assets.py

tiny_t2v / tiny_i2v: procedural prompts (and first frames for I2V) the tiny models were trained on.
wan_t2v / wan_i2v: LLMC's single-sample sets for real Wan2.1 checkpoints (the I2V image is scikit-image's
astronaut, which ships with the package).
"""

from __future__ import annotations

import json
from pathlib import Path

from vidquant.data.procedural import eval_prompt_set, make_prompt, sample_spec

ROOT = Path(__file__).resolve().parents[1] / "assets"
WAN_NEGATIVE = ("Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, "
                "static, overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, "
                "extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, "
                "fused fingers, still picture, messy background, three legs, many people in the background, "
                "walking backwards")
# Calibration prompts: four combinations covering every colour and direction, drawn apart from the eval set's
# start positions (seed 7).
CALIB = [("red", "square", "left"), ("green", "circle", "up"), ("blue", "square", "right"),
         ("yellow", "circle", "down")]
# Evaluation: 8 of the 32 combinations (every colour × direction pair appears across calib + eval).
EVAL_INDEX = [0, 5, 10, 15, 17, 22, 27, 30]
# The full eval set for intervals (tiny_<task>_32): the 8 above first (eval.num_samples 8 is the small set), then
# the other 24 combinations in eval_prompt_set order.
EVAL_FULL_INDEX = EVAL_INDEX + [i for i in range(32) if i not in EVAL_INDEX]


def write_set(folder: Path, specs, with_images: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i, spec in enumerate(specs):
        entry = {"prompt": spec.prompt, "negative_prompt": ""}
        if with_images:
            name = f"frame_{i:02d}.png"
            spec.first_frame().save(folder / name)
            entry["image"] = name
        samples.append(entry)
    (folder / "samples.json").write_text(json.dumps(samples, indent=2) + "\n")


def main() -> None:
    import numpy as np

    rng = np.random.default_rng(7)
    calib = [sample_spec(rng, colour=c, shape=s, direction=d) for c, s, d in CALIB]
    evals = [eval_prompt_set()[i] for i in EVAL_INDEX]
    for task in ("t2v", "i2v"):
        write_set(ROOT / "calib" / f"tiny_{task}", calib, task == "i2v")
        write_set(ROOT / "eval" / f"tiny_{task}", evals, task == "i2v")
        write_set(ROOT / "eval" / f"tiny_{task}_32", [eval_prompt_set()[i] for i in EVAL_FULL_INDEX], task == "i2v")

    from PIL import Image
    from skimage import data

    for kind in ("calib", "eval"):
        t2v = ROOT / kind / "wan_t2v"
        t2v.mkdir(parents=True, exist_ok=True)
        (t2v / "samples.json").write_text(json.dumps(
            [{"prompt": "A cat walks on the grass, realistic", "negative_prompt": WAN_NEGATIVE}], indent=2) + "\n")
        i2v = ROOT / kind / "wan_i2v"
        i2v.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.astronaut()).save(i2v / "astronaut.png")
        (i2v / "samples.json").write_text(json.dumps([{
            "prompt": "An astronaut hatching from an egg, on the surface of the moon, the darkness and depth of "
                      "space realised in the background. High quality, ultrarealistic detail and breath-taking "
                      "movie-like camera shot.",
            "negative_prompt": WAN_NEGATIVE, "image": "astronaut.png"}], indent=2) + "\n")
    print(f"wrote sample sets under {ROOT}; example prompt: {make_prompt('red', 'square', 'left')!r}")


if __name__ == "__main__":
    main()
