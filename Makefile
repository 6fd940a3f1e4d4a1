# leopart-pipeline — the README's two commands live here.
#   make run    set up .venv/ if missing, then produce results/table5.csv on the toy default
#   make test   set up .venv/ if missing, then run the test suite
#   make lint   ruff, snakefmt --check and snakemake --lint
#   make report the run, the report's figures and segmentation files, then results/report.html
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= all
CONFIG ?= config/config.yaml

.PHONY: setup run report test test-fast lint bench-eval bench-pipeline bench-precision bench-robust bench-train clean

$(BIN)/snakemake: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

setup: $(BIN)/snakemake

run: setup
	$(BIN)/snakemake results/table5.csv --cores $(CORES) --configfile $(CONFIG)

report: setup
	$(BIN)/snakemake report_figures --cores $(CORES) --configfile $(CONFIG)
	$(BIN)/snakemake report_figures --report results/report.html --configfile $(CONFIG)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check leopart tests workflow/scripts bench
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

bench-eval: setup
	$(BIN)/python bench/bench_eval.py

SCALE ?= 1
bench-pipeline: setup
	$(BIN)/python bench/bench_pipeline.py --scale $(SCALE)

bench-precision: setup
	$(BIN)/python bench/bench_precision.py

bench-robust: setup
	$(BIN)/python bench/bench_robust.py

bench-train: setup
	$(BIN)/python bench/bench_train.py

clean:
	rm -rf results .snakemake
