# onager: the two commands that matter are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv engines stop-engines bench scale mnist mnist-tune mnist-deps plot-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,tune]'
	touch $(STAMP)

venv: $(STAMP)

## a small sweep on the local backend: one task fails on purpose, is listed, rerun, and reported
demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/quickstart/demo.sh

## ruff and mypy, with the settings in pyproject.toml: any finding fails `make test`
lint: $(STAMP)
	$(BIN)/python -m ruff check
	$(BIN)/python -m mypy

## install everything the tests need in .venv (the tune extra included: its tests run), lint, and run the tests
test: $(STAMP) lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) || [ $$? -eq 5 ]

## start real Slurm, Son of Grid Engine and two sshd on localhost (root, Debian 12)
engines:
	bash ci/start-engines.sh

stop-engines:
	bash ci/stop-engines.sh

## every benchmark, each reference (0.1.3, xargs, prelaunch, python -c pass) measured in the same run (docs/performance.md)
bench: $(STAMP)
	$(BIN)/python benchmarks/prelaunch_bench.py
	$(BIN)/python benchmarks/build_bench.py
	$(BIN)/python benchmarks/lookup_bench.py
	$(BIN)/python benchmarks/local_bench.py
	$(BIN)/python benchmarks/list_bench.py
	$(BIN)/python benchmarks/startup_bench.py
	$(BIN)/python benchmarks/results_bench.py
	$(BIN)/python benchmarks/snapshot_bench.py
	$(BIN)/python benchmarks/ssh_bench.py
	$(BIN)/python benchmarks/cancel_bench.py
	$(BIN)/python benchmarks/tune_bench.py --no-mnist
	$(BIN)/python benchmarks/scaling_bench.py

## scale runs, not part of bench: a 10M-task prelaunch, a 1M-task slurm submission (make engines first)
scale: $(STAMP)
	set -a; [ ! -f /tmp/onager-engines.env ] || . /tmp/onager-engines.env; set +a; \
	$(BIN)/python benchmarks/scale_runs.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache

PLOT_STAMP := $(VENV)/.plot-installed
$(PLOT_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[plot]'
	touch $(PLOT_STAMP)

## the optional plotting extra (matplotlib), so that the --plot tests draw for real
plot-deps: $(PLOT_STAMP)

MNIST_STAMP := $(VENV)/.mnist-installed
$(MNIST_STAMP): $(STAMP) examples/mnist/requirements.txt
	$(BIN)/python -m pip install -q -r examples/mnist/requirements.txt
	touch $(MNIST_STAMP)

## the example's requirements (torch pinned to 2.13.0: an unpinned torch pulls a CUDA build of several GB)
mnist-deps: $(MNIST_STAMP)

## a 6-task MNIST sweep (digits fallback when no MNIST files are present), then the results by accuracy
mnist: $(MNIST_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/mnist/run_sweep.sh

## an adaptive search over the learning rate and gamma (+tune, two agents), then the best trials
mnist-tune: $(MNIST_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/mnist/run_tune.sh
