# Two entry points (see README): `make demo` and `make test`. Both create .venv and install clearct first, with the
# baselines' extras (open-clip-torch, transformers, merlin-vlm) so their tests run wherever code lands.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= clearct-demo

.PHONY: setup demo test test-fast lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,baselines]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/clearct demo --out $(DEMO_OUT)

# the whole suite (CI): lint first, then every test
test: lint
	$(BIN)/python -m pytest -n 2 --timeout 900

# the edit loop: everything but the slow end-to-end tests (marked slow)
test-fast: setup
	$(BIN)/python -m pytest -n 2 --timeout 300 -m "not slow"

# style, the layer order of docs/design.md (import-linter, no ignores) and types
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
