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

.PHONY: setup demo test test-slow lint results-notebooks strip-notebooks sweep tables bench gpu-check clean mutation

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

# Every notebook executed on the tiny models, one at a time, in order (09 reads what 02-06 recorded):
# results/notebooks/NN_name.ipynb (committed), runs in results/runs/<nb>/defaults/, metrics in
# results/tables/notebooks.{csv,md}. The method notebooks 02-06 evaluate 32 prompts x 2 seeds with the noise floor
# (METHOD_EVAL; 5-10 minutes each), the others run with their defaults (1-6 minutes each); about an hour in all.
# One notebook, with its defaults: make results-notebooks NOTEBOOK_ARGS=notebooks/03_smoothquant.ipynb
NOTEBOOK_ARGS ?=
METHOD_EVAL = -p eval_path assets/eval/tiny_t2v_32 -p eval_seeds "[42, 43]" -p noise_floor True
results-notebooks: $(STAMP)
ifeq ($(NOTEBOOK_ARGS),)
	$(VPY) -m vidquant.cli notebooks notebooks/00_*.ipynb notebooks/01_*.ipynb
	$(VPY) -m vidquant.cli notebooks notebooks/0[2-6]_*.ipynb $(METHOD_EVAL)
	$(VPY) -m vidquant.cli notebooks notebooks/0[7-9]_*.ipynb notebooks/1[0-9]_*.ipynb
else
	$(VPY) -m vidquant.cli notebooks $(NOTEBOOK_ARGS)
endif

# The notebooks are the sources and are committed without outputs (tests/test_notebooks.py checks it).
strip-notebooks: $(STAMP)
	$(VENV)/bin/nbstripout --keep-id notebooks/*.ipynb

# The committed α sweep and methods × formats tables (results/tables/), each run one submitit job: parallel local
# processes here, a Slurm job array on a cluster (JOB_ARGS, e.g. "--slurm-partition gpu --gpus-per-job 1").
# Resumable: run again after an interruption and only unfinished runs do work. The eval: 32 prompts × 2 seeds with
# the noise floor and jitter, 16 clips per pipeline call.
JOB_ARGS ?= --executor submitit --max-parallel 2
EVAL32 = --set eval.path=assets/eval/tiny_t2v_32 --set eval.num_samples=32 --set "eval.seeds=[42, 43]" \
	--set eval.noise_floor=true --set eval.jitter=true --set eval.bs=16
sweep: $(STAMP)
	VIDQUANT_CACHE_DIR=$${VIDQUANT_CACHE_DIR:-results/runs/tables/.cache} $(VPY) -m vidquant.cli quantize-grid \
	  --configs configs/quantization/video_gen/tiny_t2v/smoothquant_w_a.yaml \
	  -p quant.video_gen.special.alpha 0.5 0.6 0.7 0.75 0.8 0.9 $(EVAL32) --set save.save_lightx2v=false \
	  --baseline quant.video_gen.special.alpha=0.75 --name alpha_sweep_t2v $(JOB_ARGS)

tables: $(STAMP)
	$(VPY) -m vidquant.cli tables --task t2v --full $(JOB_ARGS)
	$(VPY) -m vidquant.cli tables --task i2v --full --video-formats W8A8-int8 W4A8 NVFP4 $(JOB_ARGS)

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
