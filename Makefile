# Every target creates the virtual environment on first use; nothing else needs installing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Test processes, each with its own dev server: the tests mostly wait on the server and on
# subprocesses, so more processes than cores still shortens the run (4 on 2 cores: ~2x).
TEST_PROCESSES ?= 4

.PHONY: demo demo-llm demo-agent test test-fast worker server lint bench chaos clean sandbox histories

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed; set PYTHON=python3.11 (or newer)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Tool commands run in bubblewrap (--sandbox bwrap, the default): install it where we can.
BWRAP_HINT := bubblewrap (bwrap) is missing: install it (apt-get install bubblewrap, dnf install bubblewrap, pacman -S bubblewrap) or run jobs with --sandbox none
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else SUDO=no; fi; \
	  if [ "$$SUDO" != no ] && command -v apt-get >/dev/null 2>&1; then \
	    $$SUDO apt-get install -y -qq bubblewrap || { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq bubblewrap; }; \
	  fi; \
	  command -v bwrap >/dev/null 2>&1 || echo "$(BWRAP_HINT)"; }

demo: $(STAMP) sandbox
	$(BIN)/python -m examples.demo

demo-llm: $(STAMP) sandbox
	$(BIN)/python -m examples.demo_llm

# The coding agent on the example with a scripted model server (DEMO_MODEL=openai:gpt-4.1: a real one)
demo-agent: $(STAMP) sandbox
	$(BIN)/python -m examples.demo_agent

test: $(STAMP) sandbox lint
	$(BIN)/python -m pytest -q -n $(TEST_PROCESSES) --maxschedchunk 1 $(PYTEST_ARGS)

test-fast: $(STAMP) sandbox
	$(BIN)/python -m pytest -q -n $(TEST_PROCESSES) --maxschedchunk 1 -m 'not slow' $(PYTEST_ARGS)

worker: $(STAMP) sandbox
	$(BIN)/agentparallels worker

server: $(STAMP)
	$(BIN)/agentparallels server

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy -p agentparallels

bench: $(STAMP) sandbox
	$(BIN)/python -m bench.refactor_bench --sizes 200 1000 2000 --repeat 2
	$(BIN)/python -m bench.step_bench
	$(BIN)/python -m bench.llm_bench
	$(BIN)/python -m bench.sandbox_bench
	$(BIN)/python -m bench.agent_bench

# The replay corpus (tests/histories), recorded anew from the current workflows through the
# project's plugin; HISTORIES=refactor review ... records only those groups.
histories: $(STAMP) sandbox
	$(BIN)/python -m tests.histories.record $(HISTORIES)

# Jobs on workers that are killed, paused and starved, and a server restart; CHAOS_ARGS=--rounds 10
chaos: $(STAMP) sandbox
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
