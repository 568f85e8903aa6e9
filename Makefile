# Two commands set everything up on a fresh machine with Python >= 3.11 and make:
#   make run   - create .venv, install converge, run the main job on the embedded SQLite store
#   make test  - install the dev extras, run ruff, mypy --strict and pytest
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: run test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(BIN)/converge run examples/code_review/graph.yaml --input source_code=@examples/code_review/sample.py

lint: $(STAMP_DEV)
	$(BIN)/ruff check src tests bench examples docs
	$(BIN)/ruff format --check src tests bench examples docs/*.py

typecheck: $(STAMP_DEV)
	$(BIN)/mypy --strict src

pytest: $(STAMP_DEV)
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP_RUN)
	@for f in bench/bench_*.py; do echo "# $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .converge .pytest_cache .mypy_cache .ruff_cache
