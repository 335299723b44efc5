# Every target creates the virtual environment on first use; nothing else needs installing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-llm test test-fast worker server lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed; set PYTHON=python3.11 (or newer)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

demo-llm: $(STAMP)
	$(BIN)/python examples/demo_llm.py

test: $(STAMP) lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not slow' $(PYTEST_ARGS)

worker: $(STAMP)
	$(BIN)/agentparallels worker

server: $(STAMP)
	$(BIN)/agentparallels server

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/refactor_bench.py
	$(BIN)/python bench/llm_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
