#!/usr/bin/env bash
# Create the virtual environment and install vidquant editable.
# torch: keep an already-installed torch (GPU users); otherwise pin the CPU build 2.13.0.
set -euo pipefail
PY="${1:-python3}"
VENV="${2:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    # --system-site-packages lets a conda / system torch (e.g. a CUDA build) be seen and kept.
    "$PY" -m venv --system-site-packages "$VENV"
fi
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip
if "$VPY" -c "import torch" 2>/dev/null; then
    echo "setup: keeping installed torch $("$VPY" -c 'import torch; print(torch.__version__)')"
else
    echo "setup: installing torch==2.13.0 (CPU build)"
    "$VPY" -m pip install -q torch==2.13.0
fi
"$VPY" -m pip install -q -e ".[dev]"
# The notebooks' kernel, `vidquant`, installed inside the venv (--sys-prefix): papermill, `vidquant sweep` and a
# JupyterLab started from this venv run this checkout's code; the user's own `python3` kernel is never touched.
"$VPY" -m ipykernel install --sys-prefix --name vidquant --display-name "vidquant ($(cd "$VENV" && pwd))" >/dev/null
echo "setup: done ($("$VPY" -c 'import torch, diffusers; print("torch", torch.__version__, "diffusers", diffusers.__version__)'))"
