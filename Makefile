# Two commands matter: `make demo` and `make test`. Both create .venv if missing and install the package.
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# Tiny models: one thread is faster than two fighting over small matmuls (and deterministic).
export OMP_NUM_THREADS ?= 1
# Idle OpenMP threads sleep instead of spinning: on a 2-core machine spinning threads starve everyone else.
export OMP_WAIT_POLICY ?= PASSIVE
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: setup demo test test-slow lint notebooks sweep tables bench gpu-check clean mutation

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh $(PY) $(VENV)
	touch $(STAMP)

demo: $(STAMP)
	$(VPY) -m vidquant.cli demo

test: $(STAMP)
	$(VPY) -m pytest

test-slow: $(STAMP)
	$(VPY) -m pytest -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check lib tests benchmarks scripts

notebooks: $(STAMP)
	$(VPY) -m vidquant.cli notebooks

# e.g. make sweep SWEEP_ARGS="--executor submitit"  (parallel local processes, or a Slurm job array)
SWEEP_ARGS ?=
sweep: $(STAMP)
	$(VPY) -m vidquant.cli sweep notebooks/03_smoothquant.ipynb -p alpha 0.5 0.6 0.7 0.75 0.8 0.9 $(SWEEP_ARGS)

tables: $(STAMP)
	$(VPY) -m vidquant.cli tables --task t2v
	$(VPY) -m vidquant.cli tables --task i2v

# Benchmarks use every core (BENCH_THREADS to change it); the tests' one-thread default would halve every figure.
bench: $(STAMP)
	OMP_NUM_THREADS=$${BENCH_THREADS:-$$(getconf _NPROCESSORS_ONLN)} $(VPY) benchmarks/run_all.py

# On a CUDA machine: CUDA tests + CUDA GEMM/block benchmarks (< 8 min) -> results/benchmarks/*_cuda.*; else a skip.
gpu-check:
	bash scripts/gpu_check.sh

# Mutation testing of the maths (mutmut; hours on 2 cores, not part of `make test`): results/mutation/summary.md.
# MUTATION_ARGS: groups (quant gptq smoothing deploy awq linear blockfmt export), --survivors, --only GLOB,
# --max-children N.
mutation: $(STAMP)
	$(VPY) scripts/mutation.py $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
