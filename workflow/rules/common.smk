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

from cifarlab import pipeline, progress
from cifarlab.data import manifest_path
from cifarlab.layout import Layout, migrate_legacy_cache
from cifarlab.rundir import RunDir
from cifarlab.study import ConfigError, build_plan

pipeline.export_job_environment(SRC)

# Where this profile's outputs go (cifarlab.layout owns the folder layout): runs are shared
# by all profiles, tables/figures/report/logs are the profile's own.
LAYOUT = Layout.from_config(config)
RUNS_DIR = LAYOUT.runs
# A run folder's files, by role (metrics, history, best, ...): RunDir owns their names.
RUN_FILES = RunDir.files(f"{RUNS_DIR}/{{run}}")
# The data cache (not a rule output; see data.smk) and its manifest (the output), one
# folder per data source, shared by the profiles that use the same data.
DATA_CACHE = LAYOUT.data_cache
DATA_MANIFEST = str(manifest_path(DATA_CACHE))
DATA_REQUEST = str(pipeline.request_path(DATA_CACHE))
# Runs a rule's command with its output in its log, and shows the log's tail on failure.
LOGGED = os.path.join(workflow.basedir, "workflow", "scripts", "logged.sh")
TABLES = LAYOUT.tables
FIGURE_DIR = LAYOUT.figures
LOGS = LAYOUT.logs

try:
    PLAN = build_plan(config)
    if workflow.is_main_process:
        # A data cache of the layout before profiles had their own folders is moved, not
        # prepared again.
        migrate_legacy_cache(LAYOUT)
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
# Local CPU runs hand their training to one worker process with torch imported
# (cifarlab.worker): a quick run's job then starts in ~0.3 s instead of ~4 s.
WORKER = (
    LAYOUT.worker_socket
    if pipeline.use_worker(config, local=workflow.local_exec)
    else None
)
WORKER_FLAG = f"--worker {WORKER}" if WORKER else ""
TRAIN_ARGS = pipeline.train_args(TRAIN)
REPORT_DIR = LAYOUT.report
FIGURE_ENTRIES = pipeline.figure_entries(PLAN, config["experiments"])


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


def run_priority(wildcards):
    # Longest runs first (by the cost model): on a few local cores the grid then ends on
    # short runs instead of one core training a long run while the other idles.
    return int(
        pipeline.estimated_seconds(
            PLAN[wildcards.run]["spec"],
            gpu=TRAIN.get("gpus", 0) > 0,
            threads=TRAIN.get("threads", 1),
        )
    )


def _global_resource(name):
    value = workflow.global_resources.get(name)
    return getattr(value, "value", value)


onstart:
    # Before any job: the device, the estimate, and (on a CPU) a stop before a job of days
    # unless the user confirmed it. Then the plan that finishing jobs report progress from.
    parallel = pipeline.parallel_jobs(
        config,
        cores=_global_resource("_cores"),
        jobs=_global_resource("_nodes"),
        local=workflow.local_exec,
    )
    costs = pipeline.start_notice(config, PLAN, RUNS_DIR, parallel)
    pipeline.write_progress_plan(config, PLAN, LAYOUT, parallel, costs)
    if WORKER:
        pipeline.start_worker(WORKER, log=f"{LOGS}/worker.log")


onsuccess:
    if WORKER:
        pipeline.stop_worker(WORKER)


onerror:
    if WORKER:
        pipeline.stop_worker(WORKER)
    # Each failed run's log tail (and a failed prepare's): shown whatever `quiet` says.
    print(
        progress.failure_report(
            LAYOUT.progress,
            [] if os.path.exists(DATA_MANIFEST) else [LAYOUT.prepare_log],
        ),
        file=sys.stderr,
    )
