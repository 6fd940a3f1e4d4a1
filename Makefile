# leopart-pipeline — the README's two commands live here.
#   make run    set up .venv/ if missing, then produce results/table5.csv on the toy default
#   make test   set up .venv/ if missing, then run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= all
CONFIG ?= config/config.yaml

.PHONY: setup run test test-fast lint bench-eval bench-train clean

$(BIN)/snakemake: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

setup: $(BIN)/snakemake

run: setup
	$(BIN)/snakemake results/table5.csv --cores $(CORES) --configfile $(CONFIG)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/snakemake --lint

bench-eval: setup
	$(BIN)/python bench/bench_eval.py

bench-train: setup
	$(BIN)/python bench/bench_train.py

clean:
	rm -rf results .snakemake
