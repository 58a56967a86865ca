# Every target does its own set-up on a fresh machine (a .venv with the pinned packages).
#   make quick       the whole study scaled to a laptop CPU (~15 min on 2 cores; downloads
#                    CIFAR-10, or DATA=<image folder or its .tar.gz>)
#   make smoke       a tiny synthetic archive through the whole pipeline (a few minutes)
#   make run         the full study (config/config.yaml): a GPU or a cluster job
#   make status      every planned run of PROFILE (full, quick, smoke): done, running, missing
#   make report      redraw PROFILE's report from its runs
#   make test / make lint / make bench
# Each profile writes results/<profile>/ and logs/<profile>/; runs (results/runs/) are shared.
SHELL := /bin/bash
# The newest supported CPython on PATH that runs (3.13, 3.12, 3.11; a pyenv shim of an
# inactive version does not), or PYTHON=/path/to/python3.
PYTHON ?= $(firstword $(foreach v,3.13 3.12 3.11,$(shell python$(v) -c \
  'import sys; print(sys.executable)' 2>/dev/null)) python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
CORES ?= all
PROFILE ?= full
# Image folder (train/<class>/*, test/<class>/*) or its .tar.gz, instead of the download;
# DATA_SOURCE=archive for a cifar-10-python.tar.gz or an extracted cifar-10-batches-py/.
DATA ?=
DATA_SOURCE ?= folder
# FULL=1: train the full study on a CPU anyway (days). PUBLISH=1: write the report into
# report/<profile>/ (the committed one) instead of results/<profile>/report/.
FULL ?=
PUBLISH ?=
SNAKEMAKE_ARGS ?=

SMOKE_ARCHIVE := results/smoke-data/cifar-10-python.tar.gz
CONFIGFILE_full :=
CONFIGFILE_quick := --configfile config/quick.yaml
CONFIGFILE_smoke := --configfile config/smoke.yaml
CONFIGFILE := $(CONFIGFILE_$(PROFILE))
# The smoke profile "downloads" a synthetic archive built here (its MD5 at recipe time).
SMOKE_PREP := md5=$$($(BIN)/python tests/helpers.py $(SMOKE_ARCHIVE)) &&
SMOKE_DATA := "data={source: url, url: 'file://$(CURDIR)/$(SMOKE_ARCHIVE)', md5: $$md5}"
USER_DATA := "data={source: $(DATA_SOURCE), path: '$(abspath $(DATA))'}"
PREP := $(if $(filter smoke,$(PROFILE)),$(SMOKE_PREP))
DATA_ITEM := $(if $(filter smoke,$(PROFILE)),$(SMOKE_DATA),$(if $(DATA),$(USER_DATA)))
CONFIG_ITEMS := $(strip $(DATA_ITEM) $(if $(FULL),allow_cpu_full=true) \
  $(if $(PUBLISH),report_dir=report/$(PROFILE)))
# The same arguments reach snakemake, `cifarlab status` and `cifarlab plan`, so the run
# ids they print are the ones the run trains.
ARGS := $(CONFIGFILE) $(if $(CONFIG_ITEMS),--config $(CONFIG_ITEMS))

.PHONY: run quick smoke status plan report test test-slurm lint bench clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else \
	  f"cifarlab supports CPython 3.11-3.13 (torch 2.14.1 wheels); {sys.executable} is " \
	  f"{sys.version.split()[0]}: set PYTHON=/path/to/python3.12, say")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --progress-bar on --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PREP) $(BIN)/snakemake --cores $(CORES) $(ARGS) $(SNAKEMAKE_ARGS)

quick smoke:
	$(MAKE) run PROFILE=$@

status: $(STAMP)
	$(PREP) $(BIN)/cifarlab status $(ARGS)

plan: $(STAMP)
	$(PREP) $(BIN)/cifarlab plan $(ARGS)

report: $(STAMP)
	$(PREP) $(BIN)/snakemake --cores 1 --forcerun report $(ARGS) $(SNAKEMAKE_ARGS)

test: $(STAMP)
	$(BIN)/ruff check src tests workflow/scripts
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/python -m pytest -q -m "not slurm" -n auto --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow/scripts
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint

# A real single-node SLURM on loopback (root + Debian packages; skips with the reason
# otherwise). About 7-9 minutes; CI runs it after `make test`.
test-slurm: $(STAMP)
	$(BIN)/python -m pytest -q -m slurm -s

bench: $(STAMP)
	$(BIN)/cifarlab bench --quick

clean-venv:
	rm -rf $(VENV)
