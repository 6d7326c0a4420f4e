# Two entry points: `make demo` runs the workflow on the embedded demo, `make test`
# runs the test suite (`make check`: its fast tier). Each creates .venv and installs the package if needed.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
# make test: one pytest run on pytest-xdist workers, each test file whole on one of them and the longest
# started first (tests/conftest.py): the science test's workflow on one worker while two more run the
# other files beside it, so that no core waits while a workflow has one job left
TEST_WORKERS ?= 3

.PHONY: demo test check lint bench bench-memory clean-demo

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/snakemake --cores $(CORES) all --configfile config/mini_world.yaml

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --no-loadscope-reorder --durations=15 tests

# The fast tier for the edit-test loop: every test but those marked `workflow` (pyproject's pytest markers: the
# ones that start Snakemake or take minutes). SDI_FAST_TIER makes a test that starts Snakemake without the
# marker fail, naming the marker (tests/helpers.py snakemake_env).
check: $(BIN)/.installed
	SDI_FAST_TIER=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --no-loadscope-reorder --durations=10 \
		-m "not workflow" tests

# Generation throughput, reference style vs engine (bench/README.md): CPU with the tiny
# models by default; `make bench BENCH_DEVICE=cuda` for SD v1.5 at 512x512 on a GPU.
BENCH_DEVICE ?= cpu
bench: $(BIN)/.installed
	$(BIN)/python bench/bench_generation.py --device $(BENCH_DEVICE)

# Peak memory of every stage with the full-size architectures (bench/README.md; about an hour on CPUs).
bench-memory: $(BIN)/.installed
	$(BIN)/python bench/memory_per_stage.py --device $(BENCH_DEVICE)

lint: $(BIN)/.installed
	$(BIN)/ruff check sdi workflow_scripts tests bench
	$(BIN)/snakefmt --check Snakefile rules
