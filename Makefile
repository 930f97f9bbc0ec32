# carecoord: the two commands of the quick start, and the steps `make test` is made of.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install when the project's dependencies change.
STAMP  := $(VENV)/.installed

.PHONY: up test lint types unit integration e2e venv clean

up: $(STAMP)
	exec $(BIN)/carecoord up

test: $(STAMP) lint types unit integration e2e

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff format --check services schemas tests
	$(BIN)/ruff check services schemas tests
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m schemas.export --check
	$(BIN)/python -m services.api.graphql.sdl --check docs/schema.graphql

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

integration: $(STAMP)
	$(BIN)/pytest tests/integration -q

e2e: $(STAMP)
	$(BIN)/pytest tests/e2e -q

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache
