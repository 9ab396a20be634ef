#!/usr/bin/env bash
# The seed's `scripts/run_llmc.sh`, vidquant-shaped: run one LLMC video_gen config end to end.
#   bash scripts/run_llmc.sh configs/quantization/video_gen/tiny_i2v/smoothquant_w_a.yaml [--set a.b=c ...]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: scripts/run_llmc.sh CONFIG [--set a.b.c=value ...]}
shift
task_name=$(basename "${config%.*}")
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
echo "vidquant: ${task_name} (${config}); log: ${task_name}.log"
"$PY" -m vidquant.cli quantize --config "$config" "$@" 2>&1 | tee "${task_name}.log"
