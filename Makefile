# Two commands: `make run` (start the stack) and `make test` (run the tests).
# Both bootstrap themselves from a bare Python 3.11+ with pip.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench lock setup browser

$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e ".[dev]"
	touch $(STAMP)

# The Python environment, and the browser `render: true` drives (Debian's headless Chromium:
# Playwright's own browser download cannot work here). As root with apt-get it is installed;
# elsewhere this says what to install, and `make test` runs the rendering tests as visible
# skips (listed with their reason by -rs), never silently passing without them.
setup: $(STAMP) browser

browser: $(STAMP)
	@if $(BIN)/python -m shoal.render >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium-headless-shell (for render: true) ..."; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium-headless-shell >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq chromium-headless-shell >/dev/null; }; \
	  $(BIN)/python -m shoal.render; \
	else \
	  echo "*** $$($(BIN)/python -m shoal.render 2>&1)" >&2; \
	  echo "*** render: true answers 422 on this host; rendering tests will be SKIPPED" >&2; \
	fi

run: setup
	$(BIN)/shoal up

test: setup
	@if $(BIN)/python -m shoal.render >/dev/null 2>&1; then $(BIN)/python -m pytest; \
	else SHOAL_SKIP_RENDER_TESTS=1 $(BIN)/python -m pytest -rs; fi

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

# Re-pin every dependency (after changing pyproject.toml).
lock:
	rm -rf /tmp/shoal-lock && $(PY) -m venv /tmp/shoal-lock
	/tmp/shoal-lock/bin/pip install -q -e ".[dev]"
	/tmp/shoal-lock/bin/pip freeze --exclude-editable > requirements.lock
