#!/usr/bin/env bash
# The seed's step 1.4.2 ("Offline Inference", lightx2v's scripts/run_wan_i2v_advanced_ptq.sh), on vidquant's runtime:
# quantized I2V inference from an LLMC advanced-PTQ checkpoint converted with `converter.py -d backward`.
#
#   bash scripts/run_wan_i2v_advanced_ptq.sh                       # the tiny I2V model + the demo's checkpoint
#   model_path=/path/to/Wan2.1-I2V-14B-480P-Diffusers config_json=/path/to/wan_i2v.json \
#       bash scripts/run_wan_i2v_advanced_ptq.sh                   # a real model (its JSON names dit_quantized_ckpt)
#
# Run `make demo` first for the default checkpoint (results/demo/lightx2v_converted).

# set path and first
lightx2v_path=${lightx2v_path:-$(cd "$(dirname "$0")/.." && pwd)}  # vidquant plays lightx2v's part here
# The base pipeline the checkpoint was quantized from (VAE, T5, CLIP, scheduler); the demo records the one it used.
model_path=${model_path:-$(cat "${lightx2v_path}/results/demo/MODEL_PATH" 2>/dev/null || echo "${lightx2v_path}/assets/models/tiny-wan-i2v")}
config_json=${config_json:-${lightx2v_path}/configs/lightx2v/tiny_wan_i2v_advanced_ptq.json}
image_path=${image_path:-${lightx2v_path}/assets/eval/tiny_i2v/frame_00.png}
prompt=${prompt:-"a red square moving left on a dark background"}
negative_prompt=${negative_prompt:-""}
save_video_path=${save_video_path:-${lightx2v_path}/results/save_results/output_lightx2v_wan_i2v_advanced_ptq.mp4}

set -euo pipefail
cd "${lightx2v_path}"  # relative paths in the config (dit_quantized_ckpt) are relative to the repository

# check section
if [ ! -d "${model_path}" ]; then
    echo "model_path ${model_path} not found: set model_path, or run 'make demo' (it records the model it used)" >&2
    exit 2
fi
if [[ "${config_json}" == */configs/lightx2v/tiny_wan_i2v_advanced_ptq.json && ! -d results/demo/lightx2v_converted ]]; then
    echo "results/demo/lightx2v_converted not found: run 'make demo' first (it quantizes, exports and converts)" >&2
    exit 2
fi

# lightx2v's variables: DTYPE=BF16 runs activations in bf16 (unset: fp32, what the tiny models use).
export ENABLE_GRAPH_MODE=false
export DTYPE=${DTYPE:-}

VIDQUANT=${VIDQUANT:-${lightx2v_path}/.venv/bin/vidquant}
[ -x "${VIDQUANT}" ] || VIDQUANT=vidquant

"${VIDQUANT}" infer \
--model_cls wan2.1 \
--task i2v \
--model_path "${model_path}" \
--config_json "${config_json}" \
--prompt "${prompt}" \
--negative_prompt "${negative_prompt}" \
--image_path "${image_path}" \
--save_video_path "${save_video_path}"
