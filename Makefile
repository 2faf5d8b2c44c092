# `make` (or `make test`) installs into .venv, lints, type-checks and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test check lint format typecheck serve bench bench-quick clean

test: check

check: lint typecheck
	$(BIN)/pytest

$(BIN)/voucherd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

install: $(BIN)/voucherd

lint: $(BIN)/voucherd
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/voucherd
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(BIN)/voucherd
	$(BIN)/mypy

serve: $(BIN)/voucherd
	$(BIN)/voucherd serve

bench-quick: $(BIN)/voucherd
	$(BIN)/python -m bench --quick

bench: $(BIN)/voucherd
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
