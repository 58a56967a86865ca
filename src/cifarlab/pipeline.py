"""Helpers the Snakemake rules call: data arguments, resources, figure names, notices."""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys

import torch

from .models import build_model

# Throughputs used to size cluster requests; measured on this project's machines.
# CPU: ~70 img/s for the full CNN (2,371 MFLOP per training image) on 2 threads of a
# 2-core EPYC, i.e. ~83 GFLOP/s per thread; GPU: a conservative 15 TFLOP/s for fp32 convs.
CPU_FLOPS_PER_THREAD = 80e9
GPU_FLOPS = 15e12
STEP_OVERHEAD_S = {"cpu": 1e-3, "gpu": 2e-3}  # optimiser + Python per step, size-independent
EVAL_FRACTION = 0.35  # validation pass each epoch, relative to the training images' FLOPs


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


def runtime_minutes(spec: dict, gpu: bool, threads: int = 1, scale: float = 1.0) -> int:
    """A generous wall-time request for one run: twice the estimate plus 10 minutes."""
    n = spec["data"].get("train_subset") or spec["data"].get("n_train", 40000)
    steps = n // spec["batch_size"]
    flops = train_flops_per_image(spec) * n * (1 + EVAL_FRACTION)
    rate = GPU_FLOPS if gpu else CPU_FLOPS_PER_THREAD * max(threads, 1)
    per_epoch = flops / rate + steps * STEP_OVERHEAD_S["gpu" if gpu else "cpu"]
    minutes = 2.0 * spec["epochs"] * per_epoch / 60.0 * scale + 10.0
    return int(min(minutes, 7 * 24 * 60))


def prepare_args(config: dict) -> str:
    data = config.get("data", {})
    source = data.get("source", "url")
    args = ["--source", source]
    if source == "url":
        if data.get("url"):
            args += ["--url", data["url"]]
    else:
        args += ["--path", str(data.get("path"))]
    args += ["--md5", data.get("md5") or "none"]
    return " ".join(shlex.quote(a) for a in args)


def data_inputs(config: dict) -> list[str]:
    data = config.get("data", {})
    if data.get("source", "url") != "url":
        if not data.get("path"):
            from .study import ConfigError

            raise ConfigError(f"config key 'data.path': data.source is {data.get('source')!r} "
                              "but no path is given; set data.path to the archive or folder")
        return [str(data["path"])]
    return []


def figure_names(plan: dict, experiments: dict) -> list[str]:
    """The figure files (without extension) that `cifarlab figures` draws for this plan.

    Each experiment's kind names its figures; each model with a registered first layer
    gets ``first_layer_<model>``.
    """
    from .experiments import experiments_from_config
    from .models import MODELS

    used = {m["experiment"] for e in plan.values() for m in e["members"]}
    models = sorted({e["spec"]["model"] for e in plan.values()})
    names = [f"curves_{m}" for m in models]
    for name, exp in experiments_from_config(experiments).items():
        if name in used:
            names += exp.figure_names()
    names += [f"first_layer_{m}" for m in models if MODELS[m].first_layer is not None]
    return names + [f"runs/{rid}" for rid in sorted(plan)]


def device_notice(config: dict, n_runs: int) -> str:
    train = config.get("train", {})
    wanted = train.get("device", "auto")
    has_cuda = torch.cuda.is_available()
    if wanted == "cpu" or (wanted == "auto" and not has_cuda and not train.get("gpus")):
        from .study import build_plan

        threads = train.get("threads", 1)
        total = sum(runtime_minutes(e["spec"], gpu=False, threads=threads) - 10
                    for e in build_plan(config).values()) / 2
        return (f"cifarlab: {n_runs} runs in the plan; training will use the CPU "
                f"({torch.get_num_threads()} threads available, {threads} per job). "
                f"Estimated CPU time for the whole plan: about {total / 60:.1f} h. "
                "For a laptop-sized run use `--configfile config/quick.yaml`; for the full "
                "study use a GPU machine or `--profile profiles/slurm` (README, 'Cluster').")
    device = torch.cuda.get_device_name(0) if has_cuda else "GPUs on the executing nodes"
    return f"cifarlab: {n_runs} runs in the plan; training will use {device}."
