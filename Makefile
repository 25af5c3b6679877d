# Every target builds on .venv, which `make setup` creates (idempotently) at the repository root.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LEGACY_VENV  := .venv-legacy
LEGACY_STAMP := $(LEGACY_VENV)/.installed
SCHEMA := .cog/openapi_schema.json
# coglet starts its worker with the `python` found first on PATH: make it the venv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# Inputs of `make predict` / `make cog-predict` (empty = the predictor's default).
PROMPT ?= def fibonacci(n):
MAX_NEW_TOKENS ?=
TEMPERATURE ?=
TOP_K ?=
TOP_P ?=
SEED ?=
PORT ?= 5000
export PROMPT

.PHONY: help setup predict serve schema test test-legacy lint bench weights cog-predict push clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install everything the targets need (idempotent)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	touch $@

$(LEGACY_STAMP): # cog 0.16.12 with its Python (FastAPI) server, no coglet: for test-legacy
	test -x $(LEGACY_VENV)/bin/python || $(PYTHON) -m venv $(LEGACY_VENV)
	$(LEGACY_VENV)/bin/python -m pip install -q cog==0.16.12
	touch $@

schema: $(SCHEMA) ## Write .cog/openapi_schema.json from predict.py (the server needs it)

$(SCHEMA): predict.py scripts/schema.py scripts/cog_static.py $(STAMP)
	$(PY) scripts/schema.py predict.py:Predictor -o $@

# INPUT='name=value ...': any inputs, each read as `cog predict -i name=value` reads it, split
# and unquoted as a shell would (it reaches the script through the environment, unexpanded).
PREDICT_ARGS = $(if $(MAX_NEW_TOKENS),--max-new-tokens $(MAX_NEW_TOKENS)) \
  $(if $(TEMPERATURE),--temperature $(TEMPERATURE)) $(if $(TOP_K),--top-k $(TOP_K)) \
  $(if $(TOP_P),--top-p $(TOP_P)) $(if $(SEED),--seed $(SEED)) $(if $(INPUT),--inputs "$$INPUT")

predict: $(SCHEMA) ## Stream one prediction: make predict PROMPT="..." [MAX_NEW_TOKENS= SEED= INPUT='k=v ...']
	@$(PY) scripts/local_predict.py --url http://127.0.0.1:$(PORT) --prompt "$$PROMPT" $(PREDICT_ARGS)

serve: $(SCHEMA) ## Run the Cog server for predict.py on 127.0.0.1:5000 (PORT=...; Ctrl-C stops)
	COG_PREDICT_TYPE_STUB=predict.py:Predictor PORT=$(PORT) \
	COG_MAX_CONCURRENCY=$$($(PY) -c 'import predict; print(predict.Predictor.run.__cog_concurrent_max__)') \
	  $(PY) -m cog.server.http --host 127.0.0.1

test: $(STAMP) $(LEGACY_STAMP) lint ## Lint, then run every test (unit, real-server, legacy-server)
	$(PY) -m pytest

test-legacy: $(STAMP) $(LEGACY_STAMP) ## Only the tests against the legacy cog 0.16.12 Python server
	$(PY) -m pytest -m legacy

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: $(STAMP) ## Benchmarks: bridge vs seed, model decode, batched server vs raw loop, cancel
	$(PY) -m benchmarks.bench_bridge
	$(PY) -m benchmarks.model.bench_model
	$(PY) -m benchmarks.model.bench_server
	$(PY) -m benchmarks.model.bench_cancel

weights: $(STAMP) ## Train the byte-level model on the stdlib into weights/ (~11 min, 2 CPU cores)
	$(PY) -m model.train

cog-predict: ## The same prediction in Docker with the cog CLI (needs cog and Docker)
	@command -v cog >/dev/null || { echo "cog-predict needs the cog CLI (and Docker): see README"; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "cog-predict needs a running Docker daemon"; exit 1; }
	cog predict -i prompt="$$PROMPT" $(if $(MAX_NEW_TOKENS),-i max_new_tokens=$(MAX_NEW_TOKENS)) \
	  $(if $(SEED),-i seed=$(SEED))

push: ## Build and push to Replicate: make push MODEL=r8.im/<you>/<model> (needs cog, Docker)
	@command -v cog >/dev/null || { echo "push needs the cog CLI (and Docker): see README"; exit 1; }
	@test -n "$(MODEL)" || { echo "usage: make push MODEL=r8.im/<user>/<model>"; exit 1; }
	cog push $(MODEL)

clean: ## Remove the venvs, .cog/ and caches (weights/ stays)
	rm -rf $(VENV) $(LEGACY_VENV) .cog .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
