# Two commands set everything up on a fresh machine:
#   make demo   create .venv, install the locked dependencies, run the whole pipeline on synthetic data
#   make test   same set-up, then the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
UV_VERSION := 0.13.8
# The rules call `avbias`, `snakemake` and `dvc` from the venv.
export PATH := $(BIN):$(PATH)
DEMO := --configfile params.yaml config/demo.yaml config/scenarios/claim3_underuse.yaml

.PHONY: demo demo-check test test-cluster test-scenarios install lock lint clean-demo mutation

install: $(VENV)/.installed

# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (Docker images, CI, this dev machine) Python never
# caches a .pyc, so every job recompiled torch, sympy and pandas, about 4 s of CPU per process (docs/benchmarks.md).
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

demo: install
	$(BIN)/snakemake all --cores all $(DEMO)
	@echo
	@echo "Report:  $(CURDIR)/results/demo/report/report.html"
	@echo "Tables:  $(CURDIR)/results/demo/summary.md"

# The demo again with 2 threads per training job, then `avbias compare-verdicts`: a non-zero exit on a
# contradiction or an estimate that moved beyond seed noise; verdicts that only straddle p = 0.05 are listed
# (src/avbias/analyse/compare.py says why). With oneDNN off too, prefix AVBIAS_ONEDNN=0 (on 2 cores that made a
# visual-only epoch about 20x slower, so not by default).
demo-check: demo
	$(BIN)/snakemake all --cores all $(DEMO) config/demo_check.yaml
	$(BIN)/avbias compare-verdicts results/demo/analysis/synth_cremad results/demo_check/analysis/synth_cremad

test: install
	$(BIN)/pytest

# The pipeline through a real single-node SLURM started here (installs slurm-wlm and munge with apt-get
# when missing and allowed; skips with the reason otherwise).
test-cluster: install
	$(BIN)/pytest -m cluster -n 0

# Each shipped scenario's planted truths recovered through the pipeline (a few minutes).
test-scenarios: install
	$(BIN)/pytest -m scenarios

# Mutation testing of methods/ and the analysis core (mutmut; [tool.mutmut] in pyproject.toml says which modules
# and which fast tests): over an hour on 2 shared cores (docs/benchmarks.md), not in CI. Survivors: mutants/, `mutmut results`,
# `mutmut show NAME`; the score and the equivalent mutants are in docs/benchmarks.md.
mutation: install
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

# ruff (settings in pyproject.toml), then Snakemake's lints: any lint or error fails.
lint: install
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint $(DEMO)

# Regenerate the lock file after changing pyproject.toml (universal: Linux/macOS, CPU/GPU wheels alike).
lock: install
	$(BIN)/uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 --quiet -o requirements.lock

clean-demo:
	rm -rf data/demo results/demo logs/demo results/demo_check logs/demo_check

# Sharing results with a lab through a DVC remote (docs/sharing.md).
.PHONY: push pull repair adopt
push: install
	$(BIN)/avbias push

pull: install
	$(BIN)/avbias pull

repair: install
	$(BIN)/avbias repair

# After `make demo` (plain Snakemake): DVC records what Snakemake built, so `dvc repro` reports up to date.
# Writes the merged demo parameters into params.yaml (DVC reads only params.yaml); commit it with dvc.lock.
adopt: install
	$(BIN)/avbias adopt $(DEMO)
