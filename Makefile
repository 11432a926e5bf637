# Two commands on a fresh machine: `make run` serves the demo, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

# The modules mypyc compiles (zonda/_compiled.py lists them); `make build` compiles them again after an edit,
# and the suite always runs on a fresh build.
COMPILED_SOURCES := $(shell sed -n 's/^    "\(zonda\.[a-z0-9_.]*\)",$$/src\/\1.py/p' src/zonda/_compiled.py | sed 's,\.,/,g; s,/py$$,.py,')

.PHONY: run test lint pytest test-all bench clean build

$(BIN)/zonda: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[standard]'
	touch $@

$(VENV)/.dev: $(BIN)/zonda
	$(BIN)/pip install -q -e '.[standard,dev]'
	touch $@ $(VENV)/.compiled

run: $(BIN)/zonda
	$(BIN)/zonda examples.hello:app --host $(HOST) --port $(PORT)

test: lint pytest

# Compile the request path again in place (the editable install compiled it once), unless ZONDA_COMPILE=0.
$(VENV)/.compiled: $(VENV)/.dev setup.py $(COMPILED_SOURCES)
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

build: $(VENV)/.compiled

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench examples fuzz
	$(BIN)/ruff format --check src tests bench examples fuzz
	$(BIN)/mypy

pytest: $(VENV)/.dev $(VENV)/.compiled
	$(BIN)/pytest $(PYTEST_ARGS)

# The whole suite on each of Python 3.10-3.13 found here (pyenv or python3.X on PATH), each in its own
# .venvs/3.X; what CI runs. ZONDA_PYTHONS="3.12 3.13" narrows it.
test-all:
	bash .ci/test-pythons

bench: $(VENV)/.dev
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .venvs build dist src/*.egg-info src/*.so src/zonda/*.so src/zonda/*/*.so
