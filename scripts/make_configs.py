"""Write configs/quantization/video_gen/<model>/*.yaml (LLMC video_gen format) for every model below.

    python scripts/make_configs.py

wan_*: LLMC's recipe for real Wan2.1 checkpoints (480×832, 81 frames, 50 steps; `model.path` is a placeholder
for your local diffusers-format checkpoint). wan22_*: the same recipes for Wan2.2 (A14B T2V / I2V, two experts,
each calibrated on the steps it serves, `calib.sample_steps` per expert; TI2V-5B at its 704×1280, 121 frames).
tiny_*: the same recipes sized for the shipped tiny models, which run here on a CPU in about a minute. Every
file loads with `vidquant.config.load_config`. Also configs/lightx2v/*wan22_moe*.json and *wan22_ti2v*.json,
lightx2v's inference JSONs for the Wan2.2 mixtures and TI2V-5B.
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "configs" / "quantization" / "video_gen"

INT8 = {"bit": 8, "symmetric": True}
FP8 = {"quant_type": "float-quant", "bit": "e4m3", "symmetric": True, "use_qtorch": True}
GPTQ = {"true_sequential": True, "static_groups": False, "actorder": True, "percdamp": 0.01, "blocksize": 128}
# The formats lightx2v runs beyond W8A8 (docs/formats.md): name -> (weight, act); act None = weight-only.
MX = {"quant_type": "mx-quant", "symmetric": True, "granularity": "per_block", "block_size": 32}
NVFP4 = {"quant_type": "nvfp4-quant", "bit": "e2m1", "symmetric": True, "granularity": "per_block", "block_size": 16}
BLOCK_FORMATS = {
    "mxfp8": ({**MX, "bit": "e4m3"}, {**MX, "bit": "e4m3"}),
    "mxfp6": ({**MX, "bit": "e3m2"}, {**MX, "bit": "e4m3"}),  # lightx2v's mxfp6-mxfp8: W MXFP6, A MXFP8
    "mxfp4": ({**MX, "bit": "e2m1"}, {**MX, "bit": "e2m1"}),
    "nvfp4": (NVFP4, NVFP4),
    "int4_g128": ({"bit": 4, "symmetric": True, "granularity": "per_group", "group_size": 128}, None),
    "fp8_pertensor": ({**FP8, "use_qtorch": False, "granularity": "per_tensor"},
                      {**FP8, "use_qtorch": False, "granularity": "per_tensor", "static": True}),
}
# GPTQ on a block grid: actorder needs the block grids fixed up front (static_groups), as for any per-group grid.
BLOCK_METHODS = {
    "rtn": ("RTN", {}),
    "smoothquant": ("SmoothQuant", {"alpha": 0.75}),
    "awq": ("Awq", {"trans": True, "trans_version": "v2", "weight_clip": False, "clip_sym": True}),
    "gptq": ("GPTQ", {**GPTQ, "static_groups": True}),
}
RECIPES = {
    "rtn_w_a": ("RTN", INT8, {}),
    "smoothquant_w_a": ("SmoothQuant", INT8, {"alpha": 0.75}),
    "smoothquant_w_a_fp8": ("SmoothQuant", FP8, {"alpha": 0.75}),
    "awq_w_a": ("Awq", INT8, {"trans": True, "trans_version": "v2", "weight_clip": False, "clip_sym": True}),
    "gptq_w_a": ("GPTQ", INT8, GPTQ),
    "smoothquant_gptq_w_a": (["SmoothQuant", "GPTQ"], INT8, {"alpha": 0.75, **GPTQ}),
}
MODELS = {
    "wan_t2v": dict(type="WanT2V", path="/path/to/Wan2.1-T2V-1.3B-Diffusers", dtype="auto", size=(480, 832, 81),
                    steps=50, text=512, sample_steps=20, calib="assets/calib/wan_t2v", eval="assets/eval/wan_t2v",
                    device="auto"),
    "wan_i2v": dict(type="WanI2V", path="/path/to/Wan2.1-I2V-14B-480P-Diffusers", dtype="auto", size=(480, 832, 81),
                    steps=50, text=512, sample_steps=40, calib="assets/calib/wan_i2v", eval="assets/eval/wan_i2v",
                    device="auto"),
    "tiny_t2v": dict(type="WanT2V", path="assets/models/tiny-wan-t2v", dtype="torch.float32", size=(64, 64, 9),
                     steps=20, text=16, sample_steps=8, calib="assets/calib/tiny_t2v", eval="assets/eval/tiny_t2v",
                     device="cpu"),
    # diffusers' I2V attention splits the image context off as everything before the last 512 text tokens,
    # so I2V prompts are always padded to 512.
    "tiny_i2v": dict(type="WanI2V", path="assets/models/tiny-wan-i2v", dtype="torch.float32", size=(64, 64, 9),
                     steps=20, text=512, sample_steps=8, calib="assets/calib/tiny_i2v", eval="assets/eval/tiny_i2v",
                     device="cpu"),
    # Wan2.2: diffusers-format directories (Wan-AI/Wan2.2-*-Diffusers); A14B runs 40 steps (lightx2v's
    # configs/wan22/wan_moe_*.json), guidance as diffusers' Wan2.2 examples (one scale for both experts here).
    "wan22_t2v": dict(type="Wan22T2V", path="/path/to/Wan2.2-T2V-A14B-Diffusers", dtype="auto", size=(480, 832, 81),
                      steps=40, text=512, sample_steps=20, calib="assets/calib/wan_t2v", eval="assets/eval/wan_t2v",
                      device="auto", guidance=4.0),
    "wan22_i2v": dict(type="Wan22I2V", path="/path/to/Wan2.2-I2V-A14B-Diffusers", dtype="auto", size=(480, 832, 81),
                      steps=40, text=512, sample_steps=20, calib="assets/calib/wan_i2v", eval="assets/eval/wan_i2v",
                      device="auto", guidance=3.5),
    "wan22_ti2v": dict(type="Wan22TI2V", path="/path/to/Wan2.2-TI2V-5B-Diffusers", dtype="auto",
                       size=(704, 1280, 121), steps=50, text=512, sample_steps=20, calib="assets/calib/wan_t2v",
                       eval="assets/eval/wan_t2v", device="auto"),
    "tiny_wan22_t2v": dict(type="Wan22T2V", path="assets/models/tiny-wan22-t2v", dtype="torch.float32",
                           size=(64, 64, 9), steps=20, text=16, sample_steps=8, calib="assets/calib/tiny_t2v",
                           eval="assets/eval/tiny_t2v", device="cpu"),
    "tiny_wan22_ti2v": dict(type="Wan22TI2V", path="assets/models/tiny-wan22-ti2v", dtype="torch.float32",
                            size=(64, 64, 9), steps=20, text=16, sample_steps=8, calib="assets/calib/tiny_t2v",
                            eval="assets/eval/tiny_t2v", device="cpu"),
}


ALL_RECIPES = [*RECIPES, *(f"{m}_{f}" for m in BLOCK_METHODS for f in BLOCK_FORMATS)]


def config(model: str, recipe: str) -> dict:
    m = MODELS[model]
    if recipe in RECIPES:
        method, fmt, special = RECIPES[recipe]
        weight, act = {**fmt, "granularity": "per_channel"}, {**fmt, "granularity": "per_token"}
    else:  # <method>_<block format>
        name, fmt_name = recipe.split("_", 1)
        (method, special), (weight, act) = BLOCK_METHODS[name], BLOCK_FORMATS[fmt_name]
    task = "i2v" if m["type"] in ("WanI2V", "Wan22I2V") else "t2v"
    h, w, frames = m["size"]
    run_dir = f"results/runs/quantize/{model}/{recipe}"
    gen = {"target_height": h, "target_width": w, "num_frames": frames, "guidance_scale": m.get("guidance", 5.0),
           "num_inference_steps": m["steps"], "max_sequence_length": m["text"]}
    cfg = {
        "base": {"seed": 42},
        "model": {"type": m["type"], "path": m["path"], "torch_dtype": m["dtype"], "device": m["device"]},
        "calib": {"name": task, "download": False, "path": m["calib"], "sample_steps": m["sample_steps"], "bs": 1,
                  **gen, "seed": 42, "step_selection": "uniform"},
        "eval": {"eval_pos": ["pretrain", "fake_quant"], "type": "video_gen", "name": task, "download": False,
                 "path": m["eval"], "bs": 1, **gen, "output_video_path": f"{run_dir}/videos", "fps": 8},
        "quant": {"video_gen": {
            "method": method,
            "weight": weight,
            **({"act": act} if act is not None else {}),
            **({"special": special} if special else {}),
        }},
        "save": {"save_lightx2v": True, "save_path": run_dir, "overwrite": True},
    }
    if method == "RTN" and not (act or {}).get("static") and (act or {}).get("quant_type") != "nvfp4-quant":
        del cfg["calib"]  # data-free, as LLMC's RTN configs
        if model.startswith("tiny"):
            # ...but on the tiny models calibration data is cheap and gives per-layer metrics.
            cfg["calib"] = {"name": task, "download": False, "path": m["calib"], "sample_steps": m["sample_steps"],
                            "bs": 1, **gen, "seed": 42, "step_selection": "uniform"}
    return cfg


# lightx2v inference JSONs for the Wan2.2 mixtures (--model_cls wan2.2_moe): both expert checkpoints and the boundary,
# as lightx2v's configs/wan22/wan_moe_{t2v,i2v}.json (boundary 0.875 / 0.900, guidance pairs, shifts 12 / 5).
MOE_JSONS = {
    "tiny_wan22_t2v_moe_advanced_ptq.json": dict(
        task="t2v", ckpt="results/runs/quantize/tiny_wan22_t2v/smoothquant_w_a/lightx2v_converted", boundary=0.875,
        guidance=(5.0, 5.0), infer_steps=20, size=(64, 64, 9), shift=3.0, fps=8, text_len=16),
    "wan22_moe_t2v_advanced_ptq.json": dict(
        task="t2v", ckpt="/path/to/Wan2.2-T2V-A14B-int8-converted", boundary=0.875, guidance=(4.0, 3.0),
        infer_steps=40, size=(480, 832, 81), shift=12.0, fps=16, text_len=512),
    "wan22_moe_i2v_advanced_ptq.json": dict(
        task="i2v", ckpt="/path/to/Wan2.2-I2V-A14B-int8-converted", boundary=0.9, guidance=(3.5, 3.5),
        infer_steps=40, size=(480, 832, 81), shift=5.0, fps=16, text_len=512),
}


def write_moe_jsons(folder: Path = ROOT / "configs" / "lightx2v") -> None:
    """Write MOE_JSONS (converted checkpoints: <ckpt>/high_noise_model and <ckpt>/low_noise_model)."""
    import json

    from vidquant.export.experts import write_lightx2v_moe_config

    for name, m in MOE_JSONS.items():
        h, w, frames = m["size"]
        path = folder / name
        config = write_lightx2v_moe_config(
            path, task=m["task"], scheme="int8", boundary=m["boundary"], guidance_scale=m["guidance"],
            quantized_ckpts={d: f"{m['ckpt']}/{d}" for d in ("high_noise_model", "low_noise_model")},
            infer_steps=m["infer_steps"], target_height=h, target_width=w, target_video_length=frames, seed=42,
            sample_shift=m["shift"], fps=m["fps"])
        path.write_text(json.dumps({**config, "text_len": m["text_len"]}, indent=4) + "\n")


# lightx2v inference JSONs for TI2V-5B (--model_cls wan2.2, one dit_quantized_ckpt, --task t2v or i2v), as
# lightx2v's configs/wan22/wan_ti2v_{t2v,i2v}.json: the latent layout of the model's VAE (num_channels_latents,
# vae_stride; `vidquant infer` checks them against the VAE) and no CLIP image encoder. The tiny TI2V keeps the
# tiny Wan2.1 VAE (z_dim 16, 8x), so its JSON says so.
TI2V_JSONS = {
    "tiny_wan22_ti2v_i2v_advanced_ptq.json": dict(
        task="i2v", ckpt="results/runs/quantize/tiny_wan22_ti2v/smoothquant_w_a/lightx2v_converted", infer_steps=20,
        size=(64, 64, 9), guidance=5.0, shift=3.0, fps=8, text_len=16, latents=16, stride=[4, 8, 8]),
    **{f"wan22_ti2v_{task}_advanced_ptq.json": dict(
        task=task, ckpt="/path/to/Wan2.2-TI2V-5B-int8-converted", infer_steps=50, size=(704, 1280, 121),
        guidance=5.0, shift=5.0, fps=24, text_len=512, latents=48, stride=[4, 16, 16]) for task in ("t2v", "i2v")},
}


def write_ti2v_jsons(folder: Path = ROOT / "configs" / "lightx2v") -> None:
    """Write TI2V_JSONS (one converted checkpoint, as any dense model)."""
    import json

    from vidquant.export.lightx2v_config import write_lightx2v_config

    for name, m in TI2V_JSONS.items():
        h, w, frames = m["size"]
        path = folder / name
        config = write_lightx2v_config(
            path, task=m["task"], scheme="int8", quantized_ckpt=m["ckpt"], infer_steps=m["infer_steps"],
            target_height=h, target_width=w, target_video_length=frames, guidance_scale=m["guidance"], seed=42,
            sample_shift=m["shift"], fps=m["fps"])
        layout = {"num_channels_latents": m["latents"], "vae_stride": m["stride"], "use_image_encoder": False}
        path.write_text(json.dumps({**config, **layout, "text_len": m["text_len"]}, indent=4) + "\n")


def main() -> None:
    write_moe_jsons()
    write_ti2v_jsons()
    written = 0
    for model in MODELS:
        folder = OUT / model
        folder.mkdir(parents=True, exist_ok=True)
        recipes = RECIPES if model.startswith(("wan22", "tiny_wan22")) else ALL_RECIPES  # block formats: Wan2.1
        for recipe in recipes:
            text = yaml.safe_dump(config(model, recipe), sort_keys=False, default_flow_style=False)
            (folder / f"{recipe}.yaml").write_text(f"# generated by scripts/make_configs.py\n{text}")
        written += len(recipes)
    print(f"wrote {written} configs under {OUT} and {len(MOE_JSONS)} MoE + {len(TI2V_JSONS)} TI2V JSONs in "
          "configs/lightx2v")


if __name__ == "__main__":
    main()
