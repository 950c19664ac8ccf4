# Two set-up commands (see README): `make demo` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
VENV ?= .venv
# Debian's /usr/bin/python3 is preferred: staticx refuses pyenv builds (docs/BINARY.md).
PYTHON ?= $(shell /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 && echo /usr/bin/python3 || echo python3)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint unit binary smoke bench bench-quick fuzz clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	# The editable install is a path entry (setuptools' compat mode): the default mode's
	# import finder costs every start-up about 21 ms (pathlib, importlib.util, fnmatch)
	# that a wheel install or the frozen binary never pays (docs/PERFORMANCE.md); where a
	# setuptools no longer has that mode, the default one.
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,build,torch]' \
	    --config-settings editable_mode=compat 2>/dev/null \
	  || $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,build,torch]'
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/appliance demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --durations=15 $(PYTEST_ARGS)

test: lint unit

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick $(BENCH_ARGS)

clean:
	rm -rf build/work dist .pytest_cache .mypy_cache .ruff_cache

# --- the one-file binary (issue 6; docs/BINARY.md); these targets belong to build/ ---
.PHONY: binary binary-static smoke
BINARY_BUILD := build/build.sh

binary: $(STAMP)
	$(BINARY_BUILD)

binary-static: $(STAMP)
	$(BINARY_BUILD) --static

smoke: binary-static
	build/smoke.sh

# --- coverage-guided fuzzing (issue 7; docs/SECURITY.md); atheris is installed here only ---
FUZZ_MINUTES ?= 1
fuzz: $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check 'atheris>=2.3'
	$(BIN)/python fuzz/run.py --minutes $(FUZZ_MINUTES)
