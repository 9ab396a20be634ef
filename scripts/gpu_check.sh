#!/usr/bin/env bash
# make gpu-check: on a CUDA machine, the CUDA tests and the CUDA GEMM / block / denoiser-step benchmarks in under
# 8 minutes, writing results/benchmarks/{gemm,block}_cuda.{csv,md} and gemm_cuda_speedup.png (commit them).
# Without CUDA it says so and exits 0, so it is safe anywhere.
#
# Python: $PY, else the project's .venv, else python3 with lib/ on the path (a lent GPU machine has no network:
# `make setup` cannot install there, the machine's own torch + diffusers are used as they are).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; export PYTHONPATH="$PWD/lib${PYTHONPATH:+:$PYTHONPATH}"; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu-check: skipped, no CUDA device visible to torch ($("$PY" -c 'import torch; print("torch", torch.__version__)' 2>/dev/null || echo "no torch"))"
    exit 0
fi
"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'gpu-check: {p.name}, sm{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}')"
start=$SECONDS
# 1. every CUDA test (runtime vs fake-quant and vs CPU on the GPU, fp8 on sm89+, benchmark smoke) -- ~2 min
timeout 180 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests
# 2. the GEMM, block and denoiser-step benchmarks on the GPU (all cores for the CPU side) -- ~4 min
OMP_NUM_THREADS=$(getconf _NPROCESSORS_ONLN) timeout 300 "$PY" benchmarks/run_all.py --device cuda --only gemm block
echo "gpu-check: done in $((SECONDS - start)) s; results/benchmarks/*_cuda.* written"
