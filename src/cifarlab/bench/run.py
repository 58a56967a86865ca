"""The ``cifarlab bench`` driver: runs the chosen sections, judges targets, writes results."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from ..system import machine_info, tune_cpu_allocator
from .engines import ENGINES, bench_engines
from .jobs import bench_jobs
from .layers import bench_layers
from .loops import bench_loops
from .measure import cpu_busy_fraction, load_average
from .peak import bench_peak
from .precision import bench_precision
from .results import Results
from .settings import BenchSettings, settings_for

__all__ = ["SECTIONS", "SECTION_FUNCS", "run_bench"]

SECTIONS = ("loops", "layers", "peak", "jobs", "precision", "engines")

SECTION_FUNCS: dict[str, Callable[[BenchSettings, Results, torch.device], None]] = {
    "loops": bench_loops, "layers": bench_layers, "peak": bench_peak, "jobs": bench_jobs,
    "precision": bench_precision, "engines": bench_engines,
}


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_targets(res: Results, device: torch.device) -> None:
    # The targets, judged on the medians of this one run: CPU training (the machine of
    # docs/performance.md) and, on CUDA, issue 11's targets for one H200, each on the fastest
    # engine of the engines section (the study's networks; meaningless for tiny presets).
    if device.type == "cuda":
        for name, batch, metric, op, value in (
                ("cnn", 100, "images_per_s", ">=", 60_000), ("mlp", 100, "images_per_s", ">=",
                                                            300_000),
                ("cnn", 5, "us_per_step", "<=", 150), ("mlp", 5, "us_per_step", "<=", 60)):
            res.check(f"engines: {name.upper()} batch {batch}, fastest engine ({metric})",
                      _fastest(res, name, batch, metric), op, value)
        return
    if device.type != "cpu":
        return
    res.check("layers: CNN step overhead of our BN/Dropout vs torch's (%)",
              res.get("layers", "cnn/overhead", "step_pct"), "<=", 10.0)
    res.check("layers: MLP step overhead of our BN/Dropout vs torch's (%)",
              res.get("layers", "mlp/overhead", "step_pct"), "<=", 5.0)
    res.check("loops: MLP ours / course-style loop",
              res.get("loops", "mlp/ours_vs_course", "ratio"), ">=", 1.25)
    res.check("loops: MLP ours / torchvision-style loop",
              res.get("loops", "mlp/ours_vs_torchvision", "ratio"), ">=", 2.0)
    threads = torch.get_num_threads()
    res.check(f"peak: CNN training step / fp32 GEMM peak ({threads} threads)",
              res.get("peak", f"cnn_train_step/{threads}t", "fraction_of_gemm_peak"), ">=", 0.8)


def _fastest(res: Results, name: str, batch: int, metric: str):
    """The engines section's best case of ``name`` at ``batch`` by ``metric``, or None."""
    stats = [s for k in ENGINES if (s := res.get("engines", f"{name}/b{batch}/{k}", metric))]
    if not stats:
        return None
    return (max if metric == "images_per_s" else min)(stats, key=lambda s: s.median)


def run_bench(quick: bool = False, out: Path = Path("results/bench"),
              sections: Sequence[str] | None = None, *,
              settings: BenchSettings | None = None) -> Results:
    """Run the chosen sections (None = all), write bench.csv/bench.json to ``out``,
    print a table, and return the results. ``settings`` overrides the quick/full preset."""
    chosen = list(SECTIONS) if not sections else list(sections)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown bench section(s) {unknown}; valid: {', '.join(SECTIONS)}")
    settings = settings or settings_for("quick" if quick else "full")
    tune_cpu_allocator()  # as `cifarlab train` does; CIFARLAB_MALLOC=system measures without
    device = _device()
    res = Results()
    load_start = load_average()
    busy = cpu_busy_fraction()
    if busy is not None and busy > 0.2:
        # Other processes share the cores: every timing below would include their share
        # (and OpenMP's multi-threaded kernels slow down far more than their share).
        print(f"[bench] warning: the CPUs were {busy:.0%} busy before starting; timings "
              "will be noisy (run on an idle machine)", file=sys.stderr, flush=True)
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    for name in SECTIONS:
        if name in chosen:
            t0 = time.perf_counter()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            SECTION_FUNCS[name](settings, res, device)
            seconds[name] = round(time.perf_counter() - t0, 2)
    _check_targets(res, device)
    meta = {
        "machine": machine_info(),
        "mode": settings.label,
        "device": str(device),
        "sections": [s for s in SECTIONS if s in chosen],
        "section_seconds": seconds,
        "wall_seconds": round(time.perf_counter() - t_start, 2),
        "cpu_busy_before_start": busy,
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "settings": asdict(settings),
    }
    res.write(Path(out), meta)
    print(res.table())
    print(f"[bench] {settings.label}: {meta['wall_seconds']} s on {meta['machine']['cpu']} "
          f"({device}); results in {out}/bench.csv and bench.json")
    return res
