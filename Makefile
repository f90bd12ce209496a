# The two commands of the README: `make demo` (main job) and `make test` (whole suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install bytecode demo test lint tool-venvs bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Every CLI process imports the project: with PYTHONDONTWRITEBYTECODE set it would compile each module
# from source every time, so the bytecode is written once here (only modules changed since are redone).
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q engine checks actions transports simcore >/dev/null

demo: $(STAMP) bytecode
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check engine checks actions transports simcore tests bench
	$(BIN)/mypy --strict engine checks actions transports simcore

# The linters and the downloads of the tools the tests drive (freqtrade, ansible-core) overlap.
test: $(STAMP) bytecode
	$(MAKE) --no-print-directory -j2 --output-sync=target lint tool-venvs
	$(BIN)/runbook validate
	$(BIN)/pytest -n auto --dist worksteal

tool-venvs: $(STAMP)
	$(BIN)/python -m tests.tool_venvs

bench: $(STAMP) bytecode
	$(BIN)/python bench/paired.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .runbook build *.egg-info
