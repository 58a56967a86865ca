# Shared set-up: the study's plan (one canonical run per distinct grid point and seed),
# the per-run resources, and the device notice shown before anything trains.
import json
import os
import sys

from snakemake.exceptions import WorkflowError

# Jobs run `python -m cifarlab` from this checkout's src/ (also inside a rule's conda env,
# which holds the dependencies but not the package), and find the interpreter that runs
# Snakemake first on PATH unless a conda env puts its own in front.
SRC = os.path.join(workflow.basedir, "src")
sys.path.insert(0, SRC)

from cifarlab import pipeline
from cifarlab.data import manifest_path
from cifarlab.rundir import RunDir
from cifarlab.study import ConfigError, build_plan

pipeline.export_job_environment(SRC)

# A run folder's files, by role (metrics, history, best, ...): RunDir owns their names.
RUNS_DIR = "results/runs"
RUN_FILES = RunDir.files(f"{RUNS_DIR}/{{run}}")
# The data cache (not a rule output; see data.smk) and its manifest (the output).
DATA_CACHE = "results/data/cifar10.npz"
DATA_MANIFEST = str(manifest_path(DATA_CACHE))
DATA_REQUEST = str(pipeline.request_path(DATA_CACHE))

try:
    PLAN = build_plan(config)
    # Also checks the split's sizes against the cache's counts, when it exists. Only the
    # controller writes anything; jobs re-reading the Snakefile don't.
    DATA_STATE = pipeline.data_state(config, DATA_CACHE, write=workflow.is_main_process)
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None
if workflow.is_main_process:
    # Runs trained before records existed get one, so they are restored, never retrained.
    pipeline.record_completed_runs(PLAN, RUNS_DIR)
    if DATA_STATE.reason:
        print(f"cifarlab: {DATA_STATE.reason}", file=sys.stderr)

RUNS = sorted(PLAN)
TRAIN = config.get("train", {})
REPORT_DIR = config.get("report_dir", "report")
FIGURES = pipeline.figure_names(PLAN, config["experiments"])


wildcard_constraints:
    run="|".join(RUNS) if RUNS else "NO_RUNS",


def run_spec_json(wildcards):
    return json.dumps(PLAN[wildcards.run]["spec"], sort_keys=True)


def run_runtime(wildcards, attempt):
    # Each retry (e.g. after a cluster time limit) asks for more time and resumes
    # from the run's last completed epoch.
    minutes = TRAIN.get("runtime_minutes") or pipeline.runtime_minutes(
        PLAN[wildcards.run]["spec"],
        gpu=TRAIN.get("gpus", 0) > 0,
        threads=TRAIN.get("threads", 1),
        scale=TRAIN.get("runtime_scale", 1.0),
    )
    return minutes * attempt


onstart:
    print(pipeline.device_notice(config, n_runs=len(RUNS)), file=sys.stderr)
