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
# The predictor every target serves: cog.yaml's `run:` (PREDICTOR=file.py:Class to try another).
PREDICTOR ?= $(shell sed -n 's/^run: *"\{0,1\}\([^"]*\)"\{0,1\} *$$/\1/p' cog.yaml)
PREDICTOR_FILE := $(firstword $(subst :, ,$(PREDICTOR)))
# coglet starts its worker with the `python` found first on PATH: make it the venv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# Inputs of `make predict` / `make cog-predict`: INPUT='name=value ...' (none: the defaults).
INPUT ?=
export INPUT
PORT ?= 5000

.PHONY: help setup predict serve schema context test check coverage test-legacy lint fix bench cog-predict push clean FORCE

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

schema: $(SCHEMA) ## Write .cog/openapi_schema.json from the predictor (the server needs it)

# Rewritten only when PREDICTOR changes, so that the schema follows it.
.cog/predictor: FORCE
	@mkdir -p .cog && { echo '$(PREDICTOR)' | cmp -s - $@ || echo '$(PREDICTOR)' > $@; }

$(SCHEMA): $(PREDICTOR_FILE) .cog/predictor scripts/schema.py scripts/cog_static.py $(STAMP)
	$(PY) scripts/schema.py $(PREDICTOR) -o $@

# INPUT='name=value ...': any inputs, each read as `cog predict -i name=value` reads it, split
# and unquoted as a shell would (it reaches the script through the environment, unexpanded),
# except that a JSON array or object value stays whole (tags=[1, 2], opts={"a": "b c"}); an
# empty value (name=) leaves the input out, so it takes its default; name="" is an empty string.
predict: $(SCHEMA) ## One prediction, printed as it arrives: make predict [INPUT='name=value ...' OUTPUT_DIR=]
	@$(PY) scripts/local_predict.py --url http://127.0.0.1:$(PORT) --predictor $(PREDICTOR) \
	  --inputs "$$INPUT"

serve: $(SCHEMA) ## Run the Cog server for the predictor on 127.0.0.1:5000 (PORT=...; Ctrl-C stops)
	rm -rf .cog/context && $(PY) scripts/build_context.py stage .cog/context
	mkdir -p .cog/context/.cog && cp $(SCHEMA) .cog/context/.cog/
	cd .cog/context && COG_PREDICT_TYPE_STUB=$(PREDICTOR) PORT=$(PORT) PYTHONPATH=. \
	COG_MAX_CONCURRENCY=$$(PYTHONPATH=$(CURDIR)/scripts $(CURDIR)/$(PY) -c 'import sys; \
	  from cog_static import check; print(check(sys.argv[1]).concurrency_max or 1)' $(PREDICTOR)) \
	  $(CURDIR)/$(PY) -m cog.server.http --host 127.0.0.1

# The budget of `make context`, in MiB: a build context over it fails (scripts/build_context.py).
BUDGET_MIB ?= 64

context: $(STAMP) ## The image's files (after .dockerignore) by folder; fails over BUDGET_MIB
	$(PY) scripts/build_context.py report --budget-mib $(BUDGET_MIB)

# Tests run in PYTEST_WORKERS processes (pytest-xdist; auto: one per CPU; 0: in this one): a
# module whose tests share a server runs in one worker, the longest files start first
# (tests/conftest.py), any other test goes to the first free worker (docs/testing.md).
PYTEST_WORKERS ?= auto
PYTEST_PARALLEL = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder)

test: $(STAMP) $(LEGACY_STAMP) lint context ## Lint, then run every test (unit, real-server, legacy-server)
	$(PY) -m pytest $(PYTEST_PARALLEL)

# The template's test files: every other tests/**/test_*.py is the model's own (a fork's, or the
# demo model's tests/model/ here), which `make check` runs with the contract. The worked
# examples' tests (tests/examples/) are neither: a fork deletes them with examples/.
TEMPLATE_TESTS := $(addprefix tests/,test_bench_bridge.py test_bridge_server.py \
  test_build_context.py test_cog_static.py test_coglet_behaviour.py test_coglet_cancel.py \
  test_coglet_inputs.py test_coglet_inputs_unit.py test_contract.py test_contract_fuzz.py \
  test_fork_drill.py test_gpu_check.py test_in_process_setup.py test_legacy.py \
  test_local_predict.py test_prediction_files.py test_probe_contracts.py test_proc_times.py \
  test_schema.py test_structured_outputs.py test_threading_batch.py test_threading_callback.py \
  test_threading_channel.py test_threading_context.py test_threading_gpu.py \
  test_threading_methods.py test_threading_ordered.py test_threading_stream.py)
OWN_TESTS = $(filter-out $(TEMPLATE_TESTS),$(shell find tests -name 'test_*.py' \
  -not -path 'tests/predictors/*' -not -path 'tests/examples/*' | sort))
# Python files changed since git HEAD, and new ones git does not ignore (none outside git).
CHANGED_PY = $(shell { git diff --name-only --diff-filter=d HEAD -- '*.py'; \
  git ls-files --others --exclude-standard -- '*.py'; } 2>/dev/null | sort -u)
# Of those, what mypy checks (its config leaves out tests/ and benchmarks/).
CHANGED_TYPED = $(filter-out tests/% benchmarks/%,$(CHANGED_PY))

check: $(STAMP) ## After an edit: lint what changed, then your own tests and the contract on predict.py
	$(if $(CHANGED_PY),$(PY) -m ruff check $(CHANGED_PY) || { echo '$(LINT_HINT)' >&2; exit 1; })
	$(if $(CHANGED_PY),$(PY) -m ruff format --check $(CHANGED_PY) || { echo '$(LINT_HINT)' >&2; exit 1; })
	$(if $(CHANGED_TYPED),$(PY) -m mypy $(CHANGED_TYPED))
	$(PY) -m pytest $(PYTEST_PARALLEL) $(OWN_TESTS) tests/test_contract.py

coverage: $(STAMP) $(LEGACY_STAMP) ## Every test, with line and branch coverage of the template's code
	$(PY) -m pytest $(PYTEST_PARALLEL) --cov --cov-report=term

test-legacy: $(STAMP) $(LEGACY_STAMP) ## Only the tests against the legacy cog 0.16.12 Python server
	$(PY) -m pytest -m legacy

LINT_HINT := lint failed: `make fix` repairs formatting and fixable lint (then make lint again)

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(PY) -m ruff check . || { echo '$(LINT_HINT)' >&2; exit 1; }
	$(PY) -m ruff format --check . || { echo '$(LINT_HINT)' >&2; exit 1; }
	$(PY) -m mypy

# Fixes first, then the formatter: a fix can leave what the formatter tidies (blank lines where
# an unused import was), never the reverse here; the last check lists what needs a hand.
fix: $(STAMP) ## ruff check --fix, then ruff format; lists what is left for a hand to fix
	$(PY) -m ruff check --fix --exit-zero --silent .
	$(PY) -m ruff format .
	$(PY) -m ruff check .

bench: $(STAMP) ## Benchmarks: the bridge vs the seed's decorator, then benchmarks/*/bench_*.py
	$(PY) -m benchmarks.bench_bridge
	@for f in $(sort $(wildcard benchmarks/*/bench_*.py)); do m=$${f%.py}; m=$${m//\//.}; \
	  echo "$(PY) -m $$m"; $(PY) -m $$m || exit 1; done

cog-predict: ## The same prediction in Docker with the cog CLI (needs cog and Docker)
	@command -v cog >/dev/null || { echo "cog-predict needs the cog CLI (and Docker): see README"; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "cog-predict needs a running Docker daemon"; exit 1; }
	@eval "set -- $$INPUT"; args=(); for kv in "$$@"; do args+=(-i "$$kv"); done; \
	  set -x; cog predict "$${args[@]}"

push: ## Build and push to Replicate: make push MODEL=r8.im/<you>/<model> (needs cog, Docker)
	@command -v cog >/dev/null || { echo "push needs the cog CLI (and Docker): see README"; exit 1; }
	@test -n "$(MODEL)" || { echo "usage: make push MODEL=r8.im/<user>/<model>"; exit 1; }
	cog push $(MODEL)

clean: ## Remove the venvs, .cog/ and caches (tracked files stay)
	rm -rf $(VENV) $(LEGACY_VENV) .cog .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# A folder may bring its own targets in a `<folder>/*.mk`; deleting the folder takes them along.
-include $(wildcard */*.mk)

# A CUDA machine has no .venv: gpu-check runs with its own python3 and torch, installing
# cog, coglet and the test tools from GPU_WHEELS (filled here by gpu-wheels) when missing.
GPU_WHEELS ?= gpu-wheels
PYTHON_GPU ?= $(if $(wildcard $(PY)),$(PY),python3)
OUT ?= runs/gpu-check
.PHONY: gpu-wheels gpu-check

gpu-wheels: $(STAMP) ## Download cog/coglet/pytest wheels (Python 3.12, x86_64) for gpu-check
	$(PY) -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
	  --abi cp312 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform any -d $(GPU_WHEELS) \
	  cog==0.23.1 coglet==0.23.1 pytest==9.2.0 pytest-timeout==2.4.0 hypothesis==6.170.17 \
	  docker==7.2.0
	@du -sh $(GPU_WHEELS)

gpu-check: ## On a CUDA machine (else the CPU): GPU tests + server measurements into OUT=dir
	$(PYTHON_GPU) scripts/gpu_check.py --out $(OUT) --wheels $(GPU_WHEELS)
