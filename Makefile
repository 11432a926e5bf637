# Two commands on a fresh machine: `make run` serves the demo, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint pytest test-all bench clean

$(BIN)/zonda: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[standard]'
	touch $@

$(VENV)/.dev: $(BIN)/zonda
	$(BIN)/pip install -q -e '.[standard,dev]'
	touch $@

run: $(BIN)/zonda
	$(BIN)/zonda examples.hello:app --host $(HOST) --port $(PORT)

test: lint pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench examples fuzz
	$(BIN)/ruff format --check src tests bench examples fuzz
	$(BIN)/mypy

pytest: $(VENV)/.dev
	$(BIN)/pytest $(PYTEST_ARGS)

# The whole suite on each of Python 3.10-3.13 found here (pyenv or python3.X on PATH), each in its own
# .venvs/3.X; what CI runs. ZONDA_PYTHONS="3.12 3.13" narrows it.
test-all:
	bash .ci/test-pythons

bench: $(VENV)/.dev
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .venvs build dist src/*.egg-info src/zonda/*.so
