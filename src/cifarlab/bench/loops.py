"""Section ``loops``: our training step against a course-style and a torchvision-style loop."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..models import build_model
from .results import Results, ratio
from .settings import BenchSettings
from .workload import OPTIMIZER, OursLoop, loop_speeds, synthetic_data

__all__ = ["CourseLoop", "TorchvisionLoop", "bench_loops"]


class CourseLoop:
    """What a course assignment writes: numpy data, numpy normalisation per batch,
    ``torch.from_numpy``, the default (for-loop) AdamW and ``.item()`` every step."""

    name = "course"

    def __init__(self, model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int,
                 device: torch.device, seed: int = 0) -> None:
        self.model, self.batch, self.device = model, batch, device
        self.X, self.Y = images, labels  # uint8 (N, 3, 32, 32), int64 (N,)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=OPTIMIZER["lr"])
        self.criterion = nn.CrossEntropyLoss()
        self.rng = np.random.default_rng(seed)

    def run(self, steps: int) -> float:
        """``steps`` training steps; returns their mean loss."""
        self.model.train()
        order = self.rng.permutation(len(self.Y))
        running_loss, correct = 0.0, 0
        for i in range(steps):
            idx = order[i * self.batch:(i + 1) * self.batch]
            xb = (self.X[idx].astype(np.float32) - 128.0) / 255.0
            inputs = torch.from_numpy(xb).to(self.device)
            targets = torch.from_numpy(self.Y[idx]).to(self.device)
            self.optimizer.zero_grad()
            outputs = self.model(inputs)
            loss = self.criterion(outputs, targets)
            loss.backward()
            self.optimizer.step()
            running_loss += loss.item()
            correct += (outputs.argmax(1) == targets).sum().item()
        return running_loss / steps


class _CifarLikeDataset(torch.utils.data.Dataset):
    """Like ``torchvision.datasets.CIFAR10``: HWC uint8 array in memory, one PIL image
    per ``__getitem__``, passed through ``transform``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.data = np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # (N, 32, 32, 3)
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image

        img = self.transform(Image.fromarray(self.data[index]))
        return img, self.targets[index]


class TorchvisionLoop:
    """The torchvision tutorial's loop: per-sample ``Compose([ToTensor(), Normalize()])``,
    ``DataLoader(batch_size, shuffle=True, num_workers=0)``, default AdamW, ``.item()``."""

    name = "torchvision"

    def __init__(self, model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int,
                 device: torch.device, seed: int = 0) -> None:
        from torchvision import transforms

        self.model, self.device = model, device
        # ToTensor scales to [0, 1]; Normalize(128/255, 1) then gives (x - 128) / 255, the
        # same numbers our loop and the course loop feed the network.
        transform = transforms.Compose([transforms.ToTensor(),
                                        transforms.Normalize((128 / 255,) * 3, (1.0,) * 3)])
        self.loader = torch.utils.data.DataLoader(
            _CifarLikeDataset(images, labels, transform), batch_size=batch, shuffle=True,
            num_workers=0, generator=torch.Generator().manual_seed(seed))
        self.iterator = iter(self.loader)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=OPTIMIZER["lr"])
        self.criterion = nn.CrossEntropyLoss()

    def _next(self) -> tuple[Tensor, Tensor]:
        try:
            return next(self.iterator)
        except StopIteration:  # a new epoch
            self.iterator = iter(self.loader)
            return next(self.iterator)

    def run(self, steps: int) -> float:
        """``steps`` training steps; returns their mean loss."""
        self.model.train()
        running_loss = 0.0
        for _ in range(steps):
            inputs, targets = self._next()
            inputs, targets = inputs.to(self.device), targets.to(self.device)
            self.optimizer.zero_grad()
            outputs = self.model(inputs)
            loss = self.criterion(outputs, targets)
            loss.backward()
            self.optimizer.step()
            running_loss += loss.item()
        return running_loss / steps


def bench_loops(settings: BenchSettings, res: Results, device: torch.device) -> None:
    """Section 1: images/s of our loop, the course-style and the torchvision-style loop."""
    images, labels = synthetic_data(settings.data_n, seed=0, learnable=False)
    for name, kwargs in settings.models.items():
        torch.manual_seed(0)
        base = build_model(name, **kwargs).to(device)
        loops = {cls.name: cls(copy.deepcopy(base), images, labels, settings.batch, device)
                 for cls in (OursLoop, CourseLoop, TorchvisionLoop)}
        stats = loop_speeds(loops, settings.loops_steps[name], settings.batch,
                            settings.loops_repeats[name], device)
        for k, s in stats.items():
            res.add("loops", f"{name}/{k}", "images_per_s", s)
        res.add("loops", f"{name}/ours_vs_course", "ratio", ratio(stats["ours"], stats["course"]))
        res.add("loops", f"{name}/ours_vs_torchvision", "ratio",
                ratio(stats["ours"], stats["torchvision"]))
        del loops, base
