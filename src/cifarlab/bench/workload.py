"""What the sections train on and with: synthetic CIFAR-shaped data and our training step."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..train import make_optimizer, normalize, train_epoch
from .measure import measure_interleaved, timed
from .results import Stat

__all__ = ["OPTIMIZER", "Loop", "OursLoop", "synthetic_data", "loop_speeds"]

OPTIMIZER = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01}  # AdamW's defaults


def synthetic_data(n: int, seed: int, learnable: bool = True, noise: float = 64.0,
                   signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-shaped uint8 images (n, 3, 32, 32) and int64 labels (n,).

    ``learnable=False``: uniform random pixels and labels (for timing: the speed of a
    step does not depend on what the pixels show). ``learnable=True``: class k has its own
    colour and stripe pattern (amplitude scaled by ``signal``) around grey 128, buried in
    Gaussian noise of std ``noise``; a small ``signal`` makes the task hard enough that
    accuracy is below 100% and precision could matter.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    if not learnable:
        return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8), labels
    colours = np.random.default_rng(1234).uniform(-58, 58, size=(10, 3))  # (10, 3) offsets
    # (10, 32, 32) patterns: stripes of class-dependent frequency, horizontal or vertical
    wave = np.sin(np.outer(np.arange(10) // 2 + 1, np.arange(32) / 32 * 2 * np.pi))  # (10, 32)
    patterns = np.where((np.arange(10) % 2 == 1)[:, None, None], wave[:, :, None],
                        wave[:, None, :]) * np.ones((1, 32, 32))
    images = 128.0 + signal * (colours[labels][:, :, None, None]
                               + 30.0 * patterns[labels][:, None])
    images = images + rng.normal(0.0, noise, size=(n, 3, 32, 32))
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels


class Loop(Protocol):
    """A training loop the benchmark times: ``run(steps)`` trains and returns the mean loss."""

    def run(self, steps: int) -> float:
        """``steps`` training steps; returns their mean loss."""
        ...


class OursLoop:
    """Our training step: ``train_epoch`` over in-memory normalised tensors, fused AdamW."""

    name = "ours"

    def __init__(self, model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int,
                 device: torch.device, seed: int = 0, precision: str = "fp32") -> None:
        self.model, self.batch, self.device, self.precision = model, batch, device, precision
        self.x = normalize(torch.from_numpy(images), device)  # (N, 3, 32, 32) float32
        self.y = torch.from_numpy(labels).to(device)
        self.optimizer = make_optimizer(OPTIMIZER, model.parameters(), device)
        self.gen = torch.Generator().manual_seed(seed)

    def run(self, steps: int) -> float:
        """``steps`` training steps; returns their mean loss (waits for the device)."""
        self.model.train()
        perm = torch.randperm(len(self.y), generator=self.gen)[:steps * self.batch]
        loss_sum, _ = train_epoch(self.model, self.optimizer, self.x, self.y,
                                  perm.to(self.device), self.batch, self.precision)
        return loss_sum.item() / steps


def loop_speeds(loops: Mapping[str, Loop], steps: int, batch: int, rounds: int,
                device: torch.device) -> dict[str, Stat]:
    """Images/s of each loop: ``rounds`` interleaved timings of ``steps`` steps of ``batch``
    images, after one warm-up step each (allocator, thread pools, first-call costs)."""

    def case(loop: Loop) -> dict[str, float]:
        return {"images_per_s": steps * batch / timed(partial(loop.run, steps), device)}

    stats = measure_interleaved({k: partial(case, loop) for k, loop in loops.items()}, rounds,
                                higher_is_better=True,
                                warm_up={k: partial(loop.run, 1) for k, loop in loops.items()})
    return {k: s["images_per_s"] for k, s in stats.items()}
