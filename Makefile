# onager: the two commands that matter are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv engines stop-engines bench mnist clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## a small sweep on the local backend: one task fails on purpose, is listed, rerun, and reported
demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/quickstart/demo.sh

## install everything the tests need in .venv and run them
test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) || [ $$? -eq 5 ]

## start real Slurm, Son of Grid Engine and two sshd on localhost (root, Debian 12)
engines:
	bash ci/start-engines.sh

stop-engines:
	bash ci/stop-engines.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/prelaunch_bench.py
	$(BIN)/python benchmarks/lookup_bench.py
	$(BIN)/python benchmarks/local_bench.py
	$(BIN)/python benchmarks/list_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
