"""What machine a result came from: CPU model, cores, device, library versions."""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows of it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """The machine as a run or a benchmark records it; ``device``: the CUDA GPU's name,
    else 'mps' where Apple's Metal GPU is available, else 'cpu'."""
    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if cuda else "mps" if mps else "cpu",
        "cuda": cuda,
        "mps": mps,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_allocator": _allocator,
    }


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
ALLOCATOR_ENV = "CIFARLAB_MALLOC"
ALLOCATOR_CHOICES = ("tuned", "system")
_allocator = "system"  # what machine_info reports; tune_cpu_allocator describes its setting


def tune_cpu_allocator(limit_bytes: int = 1 << 30) -> bool:
    """Let glibc reuse freed memory for large CPU tensors instead of fresh ``mmap`` pages.

    torch allocates a new buffer for most activations and gradients; glibc serves every
    block above its mmap threshold (at most 32 MB by default) with fresh pages and returns
    them on free, so each new (100, 128, 32, 32) float32 activation (52 MB) of the CNN pays
    ~12,800 page faults: 18.5 ms to fill it fresh against 3.1 ms for a reused buffer on the
    2-core machine of docs/performance.md. Raising the mmap and trim thresholds to
    ``limit_bytes`` keeps such blocks in the heap for the next step. The cost: memory a
    job freed stays with the job (its peak) until it exits.

    ``CIFARLAB_MALLOC``: ``tuned`` (the default, also when unset or empty) or ``system``
    (glibc's own thresholds: returns False); any other value raises ConfigError before
    anything runs. No-op (False) off glibc. Idempotent.
    """
    choice = os.environ.get(ALLOCATOR_ENV, "").strip().lower() or "tuned"
    if choice not in ALLOCATOR_CHOICES:
        from .study import ConfigError  # a ValueError the CLI reports without a traceback

        raise ConfigError(f"{ALLOCATOR_ENV}={os.environ[ALLOCATOR_ENV]!r} is not a valid choice; "
                         f"use one of {ALLOCATOR_CHOICES} (or unset it for 'tuned')")
    if choice == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)  # the running process's C library
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    limit = min(int(limit_bytes), 2**31 - 1)
    ok = bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))
    if ok:
        global _allocator
        _allocator = f"glibc, freed blocks up to {limit >> 20} MiB reused"
    return ok
