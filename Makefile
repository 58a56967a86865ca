# Two commands do all their own set-up on a fresh machine:
#   make run    the study (config/config.yaml) with every core
#   make test   the test suite
# plus `make quick DATA=path/to/cifar10-jpeg.tar.gz` (the real-data CPU profile),
# `make smoke` (tiny synthetic archive, a few minutes) and `make bench`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
CORES ?= all
# Image folder or archive for `make quick` (an image-folder .tar.gz or directory).
DATA ?=
SNAKEMAKE_ARGS ?=

.PHONY: run quick smoke test test-slurm lint bench report clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else \
	  "cifarlab needs Python 3.11 (pinned torch wheels); set PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)

quick: $(STAMP)
	@test -n "$(DATA)" || { echo "make quick needs DATA=<image folder or .tar.gz>, e.g. DATA=../shared/data/cifar10-jpeg.tar.gz"; exit 2; }
	$(BIN)/snakemake --cores $(CORES) --configfile config/quick.yaml \
	  --config "data={source: folder, path: '$(abspath $(DATA))'}" $(SNAKEMAKE_ARGS)

smoke: $(STAMP)
	md5=$$($(BIN)/python tests/helpers.py results/smoke-data/cifar-10-python.tar.gz) && \
	$(BIN)/snakemake --cores $(CORES) --configfile config/smoke.yaml \
	  --config "data={source: url, url: 'file://$(CURDIR)/results/smoke-data/cifar-10-python.tar.gz', md5: $$md5}" $(SNAKEMAKE_ARGS)

test: $(STAMP)
	$(BIN)/ruff check src tests workflow/scripts
	$(BIN)/python -m pytest -q -m "not slurm"

# A real single-node SLURM on loopback (root + Debian packages; skips with the reason
# otherwise). About 7-9 minutes; CI runs it after `make test`.
test-slurm: $(STAMP)
	$(BIN)/python -m pytest -q -m slurm -s

bench: $(STAMP)
	$(BIN)/cifarlab bench --quick

report: $(STAMP)
	$(BIN)/snakemake --cores 1 --forcerun report $(SNAKEMAKE_ARGS)

clean-venv:
	rm -rf $(VENV)
