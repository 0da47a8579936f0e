# Two commands: `make run` (start the stack) and `make test` (run the tests).
# Both bootstrap themselves from a bare Python 3.11+ with pip.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench lock

$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/shoal up

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

# Re-pin every dependency (after changing pyproject.toml).
lock:
	rm -rf /tmp/shoal-lock && $(PY) -m venv /tmp/shoal-lock
	/tmp/shoal-lock/bin/pip install -q -e ".[dev]"
	/tmp/shoal-lock/bin/pip freeze --exclude-editable > requirements.lock
