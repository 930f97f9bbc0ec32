# carecoord: the two commands of the quick start, and the steps `make test` is made of.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install when the project's dependencies change.
STAMP  := $(VENV)/.installed

.PHONY: up test lint types unit integration e2e test-future venv clean

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
	$(BIN)/python -m schemas.asyncapi --check
	$(BIN)/python -m services.api.graphql.sdl --check docs/schema.graphql

types: $(STAMP)
	$(BIN)/mypy

# Unit and integration tests run on two processes (each integration process starts its own
# PostgreSQL and broker; every test has its own database and topics anyway).
unit: $(STAMP)
	$(BIN)/pytest tests/unit -q -n 2

integration: $(STAMP)
	$(BIN)/pytest tests/integration -q -n 2

e2e: $(STAMP)
	$(BIN)/pytest tests/e2e -q

# The tests under a clock a year ahead (FUTURE=+1095d for three), in PostgreSQL, Chromium and
# every Python process of the run (the broker is static: it keeps the real clock, which the
# suite never compares with). tests/faketime works around libfaketime 0.9.10 (see there).
FAKETIME_LIB ?= $(firstword $(wildcard /usr/lib/*/faketime/libfaketime.so.1))
FUTURE       ?= +365d

test-future: $(STAMP)
	@test -f "$(FAKETIME_LIB)" || { echo "make test-future needs libfaketime: apt-get install faketime" >&2; exit 1; }
	FAKETIME=$(FUTURE) DONT_FAKE_MONOTONIC=1 LD_PRELOAD=$(FAKETIME_LIB) \
	PYTHONPATH=$(CURDIR)/tests/faketime $(if $(wildcard /usr/bin/chromium),PATH=$(CURDIR)/tests/faketime:$$PATH) \
	$(BIN)/pytest tests/unit tests/integration tests/e2e -q

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache
