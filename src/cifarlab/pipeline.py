"""Helpers the Snakemake rules call: data arguments, resources, figure names, notices."""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .models import build_model

# Throughputs used to size cluster requests; measured on this project's machines.
# CPU: ~70 img/s for the full CNN (2,371 MFLOP per training image) on 2 threads of a
# 2-core EPYC, i.e. ~83 GFLOP/s per thread; GPU: a conservative 15 TFLOP/s for fp32 convs.
CPU_FLOPS_PER_THREAD = 80e9
GPU_FLOPS = 15e12
STEP_OVERHEAD_S = {"cpu": 1e-3, "gpu": 2e-3}  # optimiser + Python per step, size-independent
EVAL_FRACTION = 0.35  # validation pass each epoch, relative to the training images' FLOPs
# Per job: interpreter and torch import (~2.5 s), data loading, the test pass, outputs.
JOB_OVERHEAD_S = {"cpu": 6.0, "gpu": 15.0}
# A plan whose runs left would train longer than this on the CPU stops before any job,
# unless the config says allow_cpu_full: true (README, "Which profile").
CPU_STOP_HOURS = 24.0


def export_job_environment(src: str) -> None:
    """Let jobs run `python -m cifarlab` from ``src`` with the interpreter running Snakemake.

    A rule's conda env (prepended to PATH by Snakemake) still takes precedence; jobs
    inherit the environment locally and through sbatch.
    """
    paths = [src] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    bindir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[:1] != [bindir]:
        os.environ["PATH"] = os.pathsep.join([bindir, *path])


@functools.lru_cache(maxsize=64)
def _train_flops_per_image(model: str, arch_json: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    net = build_model(model, **json.loads(arch_json)).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, 3, 32, 32))
    return 3.0 * counter.get_total_flops()  # forward + backward (2x forward)


def train_flops_per_image(spec: dict) -> float:
    return _train_flops_per_image(spec["model"], json.dumps(spec["arch"], sort_keys=True))


def estimated_seconds(spec: dict, gpu: bool, threads: int = 1) -> float:
    """The cost model's estimate of one run's training time (seconds), job start-up included.

    FLOPs of the training and validation passes at the measured throughput, a fixed cost
    per step (optimiser, Python) and per job (interpreter, imports, data loading, test
    pass). A guide for time limits, the start notice and the progress ETA, which rescales
    it by the runs' measured speed.
    """
    n = spec["data"].get("train_subset") or spec["data"].get("n_train", 40000)
    steps = n // spec["batch_size"]
    flops = train_flops_per_image(spec) * n * (1 + EVAL_FRACTION)
    rate = GPU_FLOPS if gpu else CPU_FLOPS_PER_THREAD * max(threads, 1)
    kind = "gpu" if gpu else "cpu"
    per_epoch = flops / rate + steps * STEP_OVERHEAD_S[kind]
    return spec["epochs"] * per_epoch + JOB_OVERHEAD_S[kind]


def runtime_minutes(spec: dict, gpu: bool, threads: int = 1, scale: float = 1.0) -> int:
    """A generous wall-time request for one run: twice the estimate plus 10 minutes."""
    minutes = 2.0 * estimated_seconds(spec, gpu, threads) / 60.0 * scale + 10.0
    return int(min(minutes, 7 * 24 * 60))


def prepare_args(config: dict) -> str:
    """`cifarlab prepare` arguments for the config's data source (shell-quoted)."""
    from .study import data_identity

    data = config.get("data", {})
    source = data.get("source", "url")
    args = ["--source", source, "--identity", data_identity(data)]
    split = config.get("split", {})
    args += ["--split", json.dumps({k: split.get(k) for k in ("n_train", "n_val",
                                                              "test_subset")})]
    if source == "url":
        if data.get("url"):
            args += ["--url", data["url"]]
    else:
        args += ["--path", str(data.get("path"))]
    args += ["--md5", data.get("md5") or "none"]
    return " ".join(shlex.quote(a) for a in args)


@dataclass(frozen=True)
class DataState:
    """What the planner knows about the prepared data before anything runs.

    ``manifest``: the cache's manifest (identity, checksum, counts) when a cache prepared
    with the current settings exists, else None (the prepare job is planned). ``reason``
    says why an existing cache is prepared again.
    """

    manifest: dict | None
    reason: str = ""


def data_state(config: dict, cache: str | Path, write: bool = True) -> DataState:
    """Decide, before Snakemake builds its DAG, whether the data must be prepared again.

    The prepare rule's output is the manifest beside the cache (data.smk). It is deleted
    here, which plans the prepare job, when the cache is gone or unreadable, holds
    another source, was prepared with other arguments, or its local source file is newer.
    Snakemake then also plans every training job once, because their input is missing
    while the DAG is built; completed runs restore their outputs from their records in
    seconds and are never trained again. (Keeping the manifest and letting Snakemake rerun
    prepare instead would rely on ancient(), which in Snakemake 9.27 also hides the jobs
    of new runs for that invocation.)

    A manifest that Snakemake deleted after a failed prepare is rebuilt from the intact
    cache when that cache was prepared with exactly the configured arguments, or by hand
    with `cifarlab prepare` from the configured source. The arguments reach the prepare
    job through a file (``request_path``), written here when they change. Only the
    controller passes ``write``; jobs re-reading the Snakefile change nothing.
    """
    from .data import manifest_path, read_manifest, write_manifest

    cache = Path(cache)
    manifest = manifest_path(cache)
    request = prepare_args(config)
    had_manifest = manifest.exists()
    meta = read_manifest(cache)
    wanted = _identity(config)
    sources = [Path(f) for f in data_inputs(config)]
    reason = ""
    if meta is None:
        reason = f"{cache} is missing, unreadable or from an older cifarlab"
    elif meta["identity"] != wanted:
        reason = f"{cache} holds {meta['identity']}, but the config asks for {wanted}"
    elif meta["request"] and meta["request"] != request:
        # A cache prepared by hand (`cifarlab prepare`, no request) is used as it is.
        reason = f"{cache} was prepared with other arguments ({meta['request']})"
    elif any(f.exists() and f.stat().st_mtime > cache.stat().st_mtime for f in sources):
        # Against the cache, not the manifest: a manifest rebuilt after a failed prepare
        # must not hide a source that changed.
        reason = f"the data source {sources[0]} is newer than {cache}"
    if meta is not None and meta["identity"] == wanted:
        # Sizes the data cannot hold stop the planning here, before anything is written.
        from .study import check_sizes

        check_sizes(config.get("split", {}), meta["n_train"], meta["n_test"])
    # Silent on a first run (nothing prepared yet), said whenever data was there.
    seen = had_manifest or cache.exists() or request_path(cache).exists()
    if write and _write_request(request_path(cache), request) and not reason and had_manifest:
        os.utime(manifest)  # still valid: keep it newer than its input, the request
    if reason:
        if write and had_manifest:
            manifest.unlink(missing_ok=True)
        return DataState(None, reason + ": it is prepared again before any run that needs "
                         "it" if seen else "")
    if write and not had_manifest:
        write_manifest(cache, meta)  # after the request: newer, so prepare is not rerun
    return DataState(meta)


def request_path(cache: str | Path) -> Path:
    """The prepare job's arguments beside the cache (``cifar10.request``): its input."""
    return Path(cache).with_suffix(".request")


def _write_request(path: Path, request: str) -> bool:
    # Rewritten only when the arguments change. A cache prepared with other arguments has
    # lost its manifest by then, so the prepare job is planned because its output is
    # missing, never because its input is newer (which, with the train jobs' ancient()
    # input, would hide new runs' jobs for that invocation). The arguments are not the
    # rule's params: Snakemake records a failed job's params too, and would rerun prepare
    # once a typo is fixed.
    if path.exists() and path.read_text() == request:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(request)
    os.replace(tmp, path)
    return True


def _identity(config: dict) -> str:
    from .study import data_identity

    return data_identity(config.get("data", {}))


def record_completed_runs(plan: dict, runs_dir: str | Path) -> int:
    """Give every completed run of ``plan`` that has no record one (hard links: cheap).

    Runs trained before records existed are then restored, not retrained, when Snakemake
    reruns their jobs (after a change of the train rule, say). Returns how many gained one.
    """
    from .rundir import RunDir

    added = 0
    for rid, entry in plan.items():
        run = RunDir(Path(runs_dir) / rid)
        if run.record.metrics_path.exists() or not run.outputs_complete():
            continue
        try:
            if run.read_spec() == entry["spec"]:
                run.write_record()
                added += 1
        except (OSError, ValueError, RuntimeError):
            continue  # a damaged folder: its job reports it when it runs
    return added


def data_inputs(config: dict) -> list[str]:
    """A local archive or folder, tracked so that replacing it prepares the data again."""
    data = config.get("data", {})
    if data.get("source", "url") != "url":
        if not data.get("path"):
            from .study import ConfigError

            raise ConfigError(f"config key 'data.path': data.source is {data.get('source')!r} "
                              "but no path is given; set data.path to the archive or folder")
        return [str(data["path"])]
    return []


@dataclass(frozen=True)
class FigureEntry:
    """One figure of the plan, with where Snakemake's own report files it."""

    name: str  # file name without extension, under the figures folder
    category: str  # the report's category: "Learning curves", an experiment, ...
    subcategory: str  # a model, or "Runs" for the per-run figures
    caption: str  # caption file in workflow/report/
    formats: tuple[str, ...] = ("png", "svg")  # the files drawn: name.png, name.svg


# The per-run learning curves are drawn as PNG only: they are for looking at a run, one per
# run (69 in the quick profile), and the SVG of each cost ~0.13 of its ~0.39 s. The
# study's figures keep an SVG for print.
RUN_FIGURE_FORMATS = ("png",)


# The figure of how each of the study's findings developed over training (the report's
# section of the same name).
FINDINGS_FIGURE = "findings_over_training"


def figure_entries(plan: dict, experiments: dict) -> list[FigureEntry]:
    """The figures `cifarlab figures` draws for this plan, with their report categories.

    Each experiment's kind names its figures; each model with a registered first layer
    gets ``first_layer_<model>``; a plan with an experiment that measures one of the
    study's findings gets ``findings_over_training``; every run gets ``runs/<run id>``
    (its learning curves, PNG only: RUN_FIGURE_FORMATS).
    """
    from . import published
    from .experiments import experiments_from_config
    from .models import MODELS

    used = {m["experiment"] for e in plan.values() for m in e["members"]}
    models = sorted({e["spec"]["model"] for e in plan.values()})
    out = [FigureEntry(f"curves_{m}", "Learning curves", m.upper(), "curves.rst")
           for m in models]
    for name, exp in experiments_from_config(experiments).items():
        if name in used:
            title = name.replace("_", " ").capitalize()
            out += [FigureEntry(f, title, f.rsplit("_", 1)[-1].upper()
                                if not f.endswith("_summary") else "Summary", "experiment.rst")
                    for f in exp.figure_names()]
    out += [FigureEntry(f"first_layer_{m}", "First-layer weights", m.upper(), "first_layer.rst")
            for m in models if MODELS[m].first_layer is not None]
    if used & published.finding_experiments():
        out.append(FigureEntry(FINDINGS_FIGURE, "Findings", "Over training", "findings.rst"))
    out += [FigureEntry(f"runs/{rid}", "Runs", plan[rid]["spec"]["model"].upper(), "run.rst",
                        RUN_FIGURE_FORMATS) for rid in sorted(plan)]
    return out


def figure_names(plan: dict, experiments: dict) -> list[str]:
    """The figure files (without extension) that `cifarlab figures` draws for this plan."""
    return [f.name for f in figure_entries(plan, experiments)]


def trains_on_cpu(config: dict) -> bool:
    """Whether the config's training jobs will run on this machine's CPU."""
    train = config.get("train", {})
    wanted = str(train.get("device", "auto"))
    if wanted == "cpu":
        return True
    if wanted != "auto" or train.get("gpus"):
        return False  # a GPU asked for by name, or GPUs allocated on the executing nodes
    return accelerator() is None


def accelerator() -> str | None:
    """The accelerator `--device auto` trains on here, by name; None for the CPU."""
    from .train import resolve_device

    device = resolve_device("auto")
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return None if device.type == "cpu" else f"{device.type.upper()} ({device})"


def parallel_jobs(config: dict, cores: int | None, jobs: int | None, local: bool) -> int:
    """How many training jobs run at once: cores / threads locally, --jobs on a cluster."""
    if not local:
        return max(1, int(jobs or 1))
    threads = max(1, int(config.get("train", {}).get("threads", 1)))
    return max(1, int(cores or 1) // threads)


def plan_costs(config: dict, plan: dict) -> dict[str, float]:
    """Each run's estimated seconds on the device the config's jobs will use."""
    gpu = not trains_on_cpu(config)
    threads = config.get("train", {}).get("threads", 1)
    return {rid: estimated_seconds(e["spec"], gpu=gpu, threads=threads)
            for rid, e in plan.items()}


def device_notice(config: dict, n_runs: int, n_left: int | None = None,
                  parallel: int = 1, total: float | None = None) -> str:
    """The line shown before any job: the device, and on a CPU the estimated time
    (``total``: the plan's estimated seconds, computed here when not given)."""
    from .progress import format_duration

    n_left = n_runs if n_left is None else n_left
    left = f"{n_runs} runs in the plan, {n_left} to train"
    if not trains_on_cpu(config):
        train = config.get("train", {})
        wanted = str(train.get("device", "auto"))
        device = (f"{accelerator()}" if wanted == "auto" and not train.get("gpus")
                  else "GPUs on the executing nodes" if train.get("gpus")
                  else f"device {wanted!r}")
        return f"cifarlab: {left}; training will use {device}."
    if total is None:
        from .study import build_plan

        total = sum(plan_costs(config, build_plan(config)).values())
    threads = config.get("train", {}).get("threads", 1)
    advice = ("For the full study use a GPU machine (`--profile profiles/gpu`) or a "
              "cluster (`--profile profiles/slurm`; README, 'Running on a cluster').")
    if config.get("profile") == "full":
        advice = "For a laptop-sized run use `make quick` (config/quick.yaml). " + advice
    return (f"cifarlab: {left}; training will use the CPU ({torch.get_num_threads()} threads "
            f"available, {threads} per job, {parallel} jobs at once). The whole plan is "
            f"estimated at {format_duration(total)} of CPU time, about "
            f"{format_duration(total / max(parallel, 1))} here. {advice}")


def start_notice(config: dict, plan: dict, runs_dir: str, parallel: int) -> dict[str, float]:
    """Print the device notice; stop before any job when the runs left would train for
    more than CPU_STOP_HOURS on this CPU and the config does not say allow_cpu_full.
    Returns each run's estimated cost (for the progress plan)."""
    from snakemake.exceptions import WorkflowError

    from .rundir import RunDir

    costs = plan_costs(config, plan)
    left = [rid for rid in plan if not RunDir(Path(runs_dir) / rid).is_complete]
    print(device_notice(config, len(plan), len(left), parallel, sum(costs.values())),
          file=sys.stderr)
    if not left or not trains_on_cpu(config) or config.get("allow_cpu_full"):
        return costs
    hours = sum(costs[rid] for rid in left) / max(parallel, 1) / 3600
    if hours > CPU_STOP_HOURS:
        raise WorkflowError(
            f"cifarlab: stopped before training: the {len(left)} runs left would take about "
            f"{hours:.0f} h on this CPU ({parallel} jobs at once), more than "
            f"{CPU_STOP_HOURS:.0f} h. Use the quick profile (`make quick`, config/quick.yaml), "
            "a GPU (`--profile profiles/gpu`) or a cluster (`--profile profiles/slurm`); or, "
            "to train here anyway, add `--config allow_cpu_full=true` (`make run FULL=1`). "
            "Nothing was changed.")
    return costs


def use_worker(config: dict, local: bool) -> bool:
    """Whether training jobs go through the local worker (cifarlab.worker): on by default
    for local runs on the CPU, where a run of seconds would otherwise spend ~4 s starting
    Python and importing torch; never on a cluster or a GPU (no fork after CUDA), and only
    on Linux (macOS forbids forking a process that has loaded some of its frameworks)."""
    return bool(config.get("train", {}).get("worker", True)) and local and \
        sys.platform == "linux" and trains_on_cpu(config)


# The config's execution switches (train.<key>) and the `cifarlab train` flag of each.
EXECUTION_FLAGS = {"channels_last": "--channels-last", "compile": "--compile",
                   "cuda_graphs": "--cuda-graphs"}


def train_args(train: dict) -> str:
    """The `cifarlab train` arguments for how the config's ``train`` section runs the steps
    (not part of a run's id): the device, the execution switches, the checkpoint interval."""
    flags = [f"--device {train.get('device', 'auto')}"]
    flags += [flag for key, flag in EXECUTION_FLAGS.items() if train.get(key, False)]
    if train.get("checkpoint_seconds"):
        flags.append(f"--checkpoint-seconds {float(train['checkpoint_seconds']):g}")
    return " ".join(flags)


def start_worker(socket_path: str, log: str) -> None:
    """Start the training worker in the background; jobs that start before it is ready,
    or after it is gone, train in their own process."""
    import subprocess

    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        subprocess.Popen([sys.executable, "-m", "cifarlab", "worker", "--socket", socket_path,
                          "--parent", str(os.getpid())], stdout=out, stderr=out,
                         stdin=subprocess.DEVNULL, start_new_session=True)


def stop_worker(socket_path: str) -> None:
    """Ask the worker to exit (it also exits on its own when the controller is gone)."""
    from .worker import shutdown

    shutdown(socket_path)


def write_progress_plan(config: dict, plan: dict, layout, parallel: int,
                        costs: dict[str, float] | None = None) -> None:
    """The plan file finishing training jobs read to print the grid's progress
    (``costs``: as start_notice returned them, computed here when not given)."""
    from .progress import write_plan

    write_plan(layout.progress, costs or plan_costs(config, plan), parallel, layout.runs,
               layout.train_log)
