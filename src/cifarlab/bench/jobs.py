"""Section ``jobs``: one multi-threaded job against many single-threaded ones, as processes.

Each job is a process running ``_jobs_worker`` (launched as
``python -c "from cifarlab.bench.jobs import _jobs_worker; _jobs_worker()"``), talking JSON
lines on its stdin/stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch

from ..models import build_model
from ..system import tune_cpu_allocator
from ..train import set_threads
from .measure import cores, measure_interleaved
from .results import Results, Stat, ratio
from .settings import BenchSettings
from .workload import OursLoop, synthetic_data

__all__ = ["GPU_SHARES", "CPU_JOBS_MODEL", "bench_jobs"]

GPU_SHARES = (1, 2, 4)  # runs sharing one GPU
CPU_JOBS_MODEL = "mlp"  # the registered model the CPU arrangements train (sized by jobs_mlp)


def _jobs_worker() -> None:
    """A job of the ``jobs`` section, run as its own process; talks JSON lines on stdio.

    First line in: the settings; out: {"ready": true} after a warm-up. Then per line in
    {"threads": t, "seconds": s}: training steps of cfg["model"] (built with cfg["kwargs"])
    with t threads for s seconds; out: {"images": ..., "seconds": ...}. {"quit": true} or the end
    of input stops it.
    """
    cfg = json.loads(sys.stdin.readline())
    set_threads(1)  # also pins the inter-op pool to 1 thread, as the pipeline's jobs do
    tune_cpu_allocator()  # as `cifarlab train` does
    torch.manual_seed(cfg["seed"])
    device = torch.device(cfg.get("device", "cpu"))
    # OursLoop.run waits for the device at its end: on a GPU run several steps per call so
    # the measurement has no per-step host sync (as a real epoch has none).
    chunk = 10 if device.type == "cuda" else 1
    bs = cfg["batch"]
    model = build_model(cfg["model"], **cfg["kwargs"]).to(device)
    loop = OursLoop(model, *synthetic_data(cfg["n"], seed=cfg["seed"], learnable=False), bs,
                    device, seed=cfg["seed"])
    loop.run(2)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        torch.set_num_threads(cmd["threads"])
        loop.run(chunk)  # warm the thread pool at the new size
        t0 = time.perf_counter()
        steps = 0
        while time.perf_counter() - t0 < cmd["seconds"]:
            loop.run(chunk)
            steps += chunk
        print(json.dumps({"images": steps * bs, "seconds": time.perf_counter() - t0}),
              flush=True)


class _Worker:
    """One ``_jobs_worker`` process and its JSON-lines pipe."""

    def __init__(self, cfg: dict) -> None:
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])  # the cifarlab package's parent
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-c",
             "from cifarlab.bench.jobs import _jobs_worker; _jobs_worker()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.send(cfg)

    def send(self, msg: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench job process {self.proc.pid} exited "
                               f"(code {self.proc.poll()}); see its error output above")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.send({"quit": True})
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=30)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def bench_jobs(settings: BenchSettings, res: Results, device: torch.device) -> None:
    """Section 4: 1 job x N threads vs N jobs x 1 thread (vs N x N), N = cores, on the CPU;
    with CUDA also 1, 2 and 4 runs of each model sharing the GPU (``--resources gpu=K``,
    README)."""
    _bench_cpu_jobs(settings, res)
    if device.type == "cuda":
        _bench_gpu_sharing(settings, res, device)


def _measure_arrangements(cfg: dict, arrangements: dict[str, tuple[int, int]],
                          settings: BenchSettings) -> dict[str, Stat]:
    """Total images/s of each arrangement name -> (jobs, threads per job), as processes.

    One process per possible job, started once (torch takes seconds to import); an
    arrangement with fewer jobs leaves the rest blocked on their input, using no CPU.
    """
    workers: list[_Worker] = []

    def run(jobs: int, threads: int) -> dict[str, float]:
        for w in workers[:jobs]:
            w.send({"threads": threads, "seconds": settings.jobs_seconds})
        reports = [w.receive() for w in workers[:jobs]]
        return {"total_images_per_s": sum(rep["images"] / rep["seconds"] for rep in reports)}

    try:
        for _ in range(max(jobs for jobs, _ in arrangements.values())):
            workers.append(_Worker(cfg))
        for w in workers:
            w.receive()
        # No warm-up here: each worker warmed up before reporting ready, and warms its
        # thread pool at the new size before every timed stretch.
        stats = measure_interleaved(
            {k: partial(run, jobs, threads) for k, (jobs, threads) in arrangements.items()},
            settings.jobs_repeats, higher_is_better=True, warm_up={})
    finally:
        for w in workers:
            w.close()
    return {k: s["total_images_per_s"] for k, s in stats.items()}


def _bench_gpu_sharing(settings: BenchSettings, res: Results, device: torch.device) -> None:
    for name, kwargs in settings.models.items():
        cfg = {"seed": 0, "batch": settings.batch, "model": name, "kwargs": kwargs,
               "device": str(device), "n": max(settings.batch * 50, 1000)}
        stats = _measure_arrangements(cfg, {f"{k}_runs": (k, 1) for k in GPU_SHARES}, settings)
        for k in GPU_SHARES:
            res.add("jobs", f"{name}_gpu/{k}_runs", "total_images_per_s", stats[f"{k}_runs"])
            if k > 1:
                res.add("jobs", f"{name}_gpu/{k}_runs_vs_1", "ratio",
                        ratio(stats[f"{k}_runs"], stats["1_runs"]))


def _bench_cpu_jobs(settings: BenchSettings, res: Results) -> None:
    n = cores()
    name = CPU_JOBS_MODEL
    cfg = {"seed": 0, "batch": settings.batch, "model": name,
           "kwargs": settings.jobs_mlp or settings.models[name],
           "n": max(settings.batch * 10, 1000)}
    arrangements = {f"1x{n}": (1, n), f"{n}x1": (n, 1)}
    if n > 1:
        arrangements[f"{n}x{n}_oversubscribed"] = (n, n)
    stats = _measure_arrangements(cfg, arrangements, settings)
    for k, s in stats.items():
        res.add("jobs", f"{name}/{k}", "total_images_per_s", s)
    if n > 1:
        res.add("jobs", f"{name}/{n}x1_vs_1x{n}", "ratio", ratio(stats[f"{n}x1"], stats[f"1x{n}"]))
        res.add("jobs", f"{name}/{n}x{n}_vs_1x{n}", "ratio",
                ratio(stats[f"{n}x{n}_oversubscribed"], stats[f"1x{n}"]))
