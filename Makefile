# Fresh machine: `make demo` sets up .venv and runs the demo; `make test` sets up and runs the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= dev,models,ltx2,scale,bench
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: setup demo test test-fast bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first: 2.13.0 (the CPU build on local disk here); pyproject asks for a range it satisfies,
# so a GPU user who already has their own torch build keeps it.
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "== installing avits into $(VENV) (first time, or pyproject.toml changed): a few minutes"
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	PREFECT_HOME=$${PREFECT_HOME:-$(CURDIR)/.prefect} $(BIN)/avits run data/configs/demo.yaml

test: $(STAMP)
	PREFECT_HOME=$${PREFECT_HOME:-$(CURDIR)/.prefect} $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not server" $(PYTEST_ARGS)

bench: $(STAMP)
	for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .prefect .pytest_cache
