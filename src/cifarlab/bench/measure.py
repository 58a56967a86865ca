"""How every section measures: one interleaved-repeats helper, device sync and machine probes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from .results import Stat, summarize

__all__ = ["measure_interleaved", "timed", "sync", "cores", "load_average", "cpu_busy_fraction"]


def measure_interleaved(
    cases: Mapping[str, Callable[[], Mapping[str, float]]],
    rounds: int,
    *,
    higher_is_better: bool,
    warm_up: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, dict[str, Stat]]:
    """Warm up every case, measure each once per round in interleaved order, summarise.

    ``cases`` maps a case name to a callable that measures it once and returns
    ``{metric: value}`` (one or more metrics, e.g. ``{"images_per_s": 8123.0}``).
    ``warm_up`` maps a case name to what runs first, untimed (allocator, thread pools,
    first-call costs); None runs each case's own measurement once and discards it, and a
    case missing from the mapping is not warmed up (``{}``: the cases warm themselves).
    Each of the ``rounds`` then measures every case once, the order reversed every other
    round, so a slow moment of the machine hits all cases and none always runs first (cold)
    or last. Returns case -> metric -> Stat (median and best over the rounds) in the order
    of ``cases`` and of the first measurement's metrics.
    """
    if rounds < 1:
        raise ValueError(f"measure_interleaved needs at least one round, got {rounds}")
    warm = cases if warm_up is None else warm_up
    for name in cases:
        if name in warm:
            warm[name]()
    samples: dict[str, list[Mapping[str, float]]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            samples[name].append(cases[name]())
    return {name: {metric: summarize([s[metric] for s in runs], higher_is_better)
                   for metric in runs[0]}
            for name, runs in samples.items()}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA and MPS are asynchronous) before reading
    the clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn()`` takes, including the device work it queues."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        return None


def cpu_busy_fraction(seconds: float = 0.5) -> float | None:
    """Fraction of all CPUs' time spent busy over ``seconds`` (Linux /proc/stat), else None."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)
