"""``cifarlab bench``: how fast the study trains on this machine, and why.

Five sections, each on the same synthetic data, models and machine, with repeats
interleaved between the things compared (so a slow moment of the machine hits all of
them) and reported as median and best:

``loops``      our training step (``train_epoch``: in-memory normalised tensors, fused
               AdamW) against a course-style loop (numpy uint8 array, per-batch numpy
               slicing and normalisation, ``torch.from_numpy``, default AdamW, ``.item()``
               per step) and a torchvision-style loop (per-sample PIL image ->
               ``Compose([ToTensor(), Normalize()])`` -> ``DataLoader``), MLP and CNN.
``layers``     the hand-written BatchNorm/Dropout against torch's fused layers inside the
               study's MLP and CNN: forward, backward and whole-step time, overhead in %.
``peak``       achieved GFLOP/s of a training step (FLOPs from ``FlopCounterMode``) as a
               fraction of a large fp32 GEMM and of the CNN's own conv2 forward; 1 thread
               and all threads.
``jobs``       1 job x N threads against N jobs x 1 thread (and N x N, oversubscribed):
               real processes running MLP steps for a fixed time; total images/s.
``precision``  bf16 autocast against fp32: speed, and test accuracy after a short run on
               a learnable synthetic data set.

Results: ``bench.csv`` (long: section, case, metric, median, best, n), ``bench.json``
(the same numbers, targets, settings and machine info) and a table on stdout.

torch's ``nn.BatchNorm*``/``nn.Dropout*`` appear here, and only here, as the reference
the hand-written layers are measured against.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import layers
from .models import build_model
from .system import machine_info, tune_cpu_allocator
from .train import evaluate, make_optimizer, normalize, set_threads, train_epoch

__all__ = ["SECTIONS", "Stat", "BenchSettings", "Results", "summarize", "ratio", "settings_for",
           "run_bench", "bench_loops", "bench_layers", "bench_peak", "bench_jobs",
           "bench_precision", "torch_layer_twin", "synthetic_data", "CourseLoop",
           "TorchvisionLoop", "OursLoop", "CSV_COLUMNS"]

SECTIONS = ("loops", "layers", "peak", "jobs", "precision")
CSV_COLUMNS = ("section", "case", "metric", "median", "best", "n")
OPTIMIZER = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01}  # AdamW's defaults


# ----------------------------------------------------------------------------- statistics

@dataclass(frozen=True)
class Stat:
    """Median and best of n repeats ("best" is the max for rates, the min for times)."""

    median: float
    best: float
    n: int


def summarize(samples: Iterable[float], higher_is_better: bool) -> Stat:
    """Median and best of the samples; raises on an empty sequence."""
    values = [float(v) for v in samples]
    if not values:
        raise ValueError("summarize needs at least one sample")
    best = max(values) if higher_is_better else min(values)
    return Stat(statistics.median(values), best, len(values))


def ratio(a: Stat, b: Stat) -> Stat:
    """a / b: median over median and best over best (n = the smaller n)."""
    return Stat(a.median / b.median, a.best / b.best, min(a.n, b.n))


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


# Rows the stdout table leaves out (bench.csv has everything).
_SHORT_SKIP = {("layers", "forward_ms"), ("layers", "backward_ms"), ("peak", "images_per_s"),
               ("peak", "forward_mflop_per_image")}


@dataclass
class Results:
    """Rows of (section, case, metric, Stat) plus the target checks."""

    rows: list[dict] = field(default_factory=list)
    targets: list[dict] = field(default_factory=list)

    def add(self, section: str, case: str, metric: str, stat: Stat) -> None:
        self.rows.append({"section": section, "case": case, "metric": metric,
                          "median": stat.median, "best": stat.best, "n": stat.n})

    def get(self, section: str, case: str, metric: str) -> Stat | None:
        for r in self.rows:
            if (r["section"], r["case"], r["metric"]) == (section, case, metric):
                return Stat(r["median"], r["best"], r["n"])
        return None

    def check(self, name: str, stat: Stat | None, op: str, threshold: float) -> None:
        """Record a target (on the median) if its measurement exists."""
        if stat is None:
            return
        met = stat.median <= threshold if op == "<=" else stat.median >= threshold
        self.targets.append({"target": name, "median": stat.median, "best": stat.best,
                             "op": op, "threshold": threshold, "met": bool(met)})

    def write(self, out: Path, meta: dict) -> None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "bench.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            w.writeheader()
            w.writerows(self.rows)
        (out / "bench.json").write_text(json.dumps(
            {**meta, "results": self.rows, "targets": self.targets}, indent=2) + "\n")

    def table(self, short: bool = True) -> str:
        """The rows as an aligned text table; ``short`` leaves out the raw per-implementation
        forward/backward times and derived rates (they stay in bench.csv)."""
        head = ("section", "case", "metric", "median", "best", "n")
        body = [(r["section"], r["case"], r["metric"], _fmt(r["median"]), _fmt(r["best"]),
                 str(r["n"])) for r in self.rows
                if not (short and (r["section"], r["metric"]) in _SHORT_SKIP)]
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(row, widths))) for row in [head, *body]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for t in self.targets:
            status = "met" if t["met"] else "MISSED"
            lines.append(f"target {status:<6}  {t['target']}: "
                         f"{_fmt(t['median'])} (best {_fmt(t['best'])}) {t['op']} "
                         f"{_fmt(t['threshold'])}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class BenchSettings:
    """How much of each section to run; ``settings_for`` gives the presets."""

    label: str
    batch: int = 100
    mlp: dict = field(default_factory=dict)  # MLP(**mlp): {} is the study's network
    cnn: dict = field(default_factory=dict)  # CNN(**cnn): {} is the study's network
    data_n: int = 2000  # synthetic training images for the loops
    loops_repeats: dict = field(default_factory=lambda: {"mlp": 5, "cnn": 2})
    loops_steps: dict = field(default_factory=lambda: {"mlp": 10, "cnn": 1})
    layers_repeats: dict = field(default_factory=lambda: {"mlp": 15, "cnn": 3})
    peak_repeats: int = 3
    peak_steps: dict = field(default_factory=lambda: {"mlp": 10, "cnn": 1})
    gemm_size: int = 2048
    jobs_repeats: int = 2
    jobs_seconds: float = 2.0
    jobs_mlp: dict = field(default_factory=dict)
    precision_repeats: int = 2
    precision_steps: dict = field(default_factory=lambda: {"mlp": 10, "cnn": 1})
    accuracy_hidden: int = 256
    accuracy_epochs: int = 4
    accuracy_train: int = 3000
    accuracy_test: int = 2000
    accuracy_seeds: int = 1
    accuracy_signal: float = 0.1  # class signal strength: ~70% test accuracy, not 100%


def settings_for(mode: str) -> BenchSettings:
    """'quick' (< 2 minutes on 2 cores), 'full' (more repeats) or 'test' (tiny, seconds)."""
    if mode == "quick":
        return BenchSettings(label="quick")
    if mode == "full":
        return BenchSettings(
            label="full", data_n=5000, loops_repeats={"mlp": 9, "cnn": 5},
            loops_steps={"mlp": 20, "cnn": 2}, layers_repeats={"mlp": 50, "cnn": 7},
            peak_repeats=5, peak_steps={"mlp": 20, "cnn": 2},
            jobs_repeats=5, jobs_seconds=5.0, precision_repeats=5,
            precision_steps={"mlp": 20, "cnn": 2}, accuracy_epochs=8, accuracy_train=10000,
            accuracy_test=5000, accuracy_seeds=3)
    if mode == "test":
        return BenchSettings(
            label="test (tiny models: not the study's networks)", batch=20,
            mlp={"hidden": 32}, cnn={"channels": (4, 8)}, data_n=200,
            loops_repeats={"mlp": 2, "cnn": 1},
            loops_steps={"mlp": 2, "cnn": 1}, layers_repeats={"mlp": 2, "cnn": 2},
            peak_repeats=2, peak_steps={"mlp": 2, "cnn": 1}, gemm_size=128, jobs_repeats=1,
            jobs_seconds=0.2, jobs_mlp={"hidden": 16}, precision_repeats=1,
            precision_steps={"mlp": 2, "cnn": 1}, accuracy_hidden=16, accuracy_epochs=1,
            accuracy_train=200, accuracy_test=100)
    raise ValueError(f"unknown bench mode {mode!r}; valid: quick, full, test")


# ----------------------------------------------------------------------------- helpers

def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device: torch.device) -> None:
    # CUDA work is asynchronous: wait for it before reading the clock.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        return None


def _cpu_busy_fraction(seconds: float = 0.5) -> float | None:
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


def _interleaved(names: Sequence[Any], r: int) -> list[Any]:
    # Alternate the order between repeats, so no contender always runs first (cold) or last.
    return list(names) if r % 2 == 0 else list(reversed(names))


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


def _build(name: str, kwargs: dict) -> nn.Module:
    # Through the model registry, as training builds them (tuples from BenchSettings are fine).
    return build_model(name, **kwargs)


def torch_layer_twin(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose hand-written BN/Dropout are torch's own layers.

    Same weights, running statistics and dropout rates: the two differ only in the
    layer implementations.
    """
    twin = copy.deepcopy(model)
    device = next(twin.parameters()).device
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, layers._BatchNorm):
                cls = nn.BatchNorm2d if isinstance(child, layers.BatchNorm2d) else nn.BatchNorm1d
                new = cls(child.num_features, eps=child.eps, momentum=child.momentum,
                          affine=child.affine, track_running_stats=child.track_running_stats)
                new.load_state_dict(child.state_dict())
            elif isinstance(child, layers.Dropout2d):
                new = nn.Dropout2d(child.p)
            elif isinstance(child, layers.Dropout):
                new = nn.Dropout(child.p)
            else:
                continue
            new.train(child.training)
            setattr(parent, name, new.to(device))
    return twin


# ----------------------------------------------------------------------------- the loops

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


def _time_run(loop: Any, steps: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    loop.run(steps)
    _sync(device)
    return time.perf_counter() - t0


def bench_loops(settings: BenchSettings, res: Results, device: torch.device) -> None:
    """Section 1: images/s of our loop, the course-style and the torchvision-style loop."""
    images, labels = synthetic_data(settings.data_n, seed=0, learnable=False)
    for name in ("mlp", "cnn"):
        torch.manual_seed(0)
        base = _build(name, settings.mlp if name == "mlp" else settings.cnn).to(device)
        loops = {cls.name: cls(copy.deepcopy(base), images, labels, settings.batch, device)
                 for cls in (OursLoop, CourseLoop, TorchvisionLoop)}
        steps = settings.loops_steps[name]
        for loop in loops.values():  # warm-up: allocator, thread pools, first-call costs
            loop.run(1)
        rates: dict[str, list[float]] = {k: [] for k in loops}
        for r in range(settings.loops_repeats[name]):
            for k in _interleaved(list(loops), r):
                rates[k].append(steps * settings.batch / _time_run(loops[k], steps, device))
        stats = {k: summarize(v, higher_is_better=True) for k, v in rates.items()}
        for k, s in stats.items():
            res.add("loops", f"{name}/{k}", "images_per_s", s)
        res.add("loops", f"{name}/ours_vs_course", "ratio", ratio(stats["ours"], stats["course"]))
        res.add("loops", f"{name}/ours_vs_torchvision", "ratio",
                ratio(stats["ours"], stats["torchvision"]))
        del loops, base


# ----------------------------------------------------------------------------- layers

def _timed_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                device: torch.device) -> tuple[float, float, float]:
    """(forward, backward, whole step) seconds of one training step."""
    _sync(device)
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    _sync(device)
    t1 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    _sync(device)
    t2 = time.perf_counter()
    optimizer.step()
    _sync(device)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t0


def bench_layers(settings: BenchSettings, res: Results, device: torch.device) -> None:
    """Section 2: our BN/Dropout against torch's inside the MLP and the CNN."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(settings.batch, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (settings.batch,), generator=gen).to(device)
    for name in ("mlp", "cnn"):
        torch.manual_seed(0)
        ours = _build(name, settings.mlp if name == "mlp" else settings.cnn).to(device).train()
        models = {"ours": ours, "torch": torch_layer_twin(ours)}
        opts = {k: make_optimizer(OPTIMIZER, m.parameters(), device) for k, m in models.items()}
        for k in models:  # warm-up
            _timed_step(models[k], opts[k], x, y, device)
        times: dict[str, list[tuple[float, float, float]]] = {k: [] for k in models}
        for r in range(settings.layers_repeats[name]):
            for k in _interleaved(list(models), r):
                times[k].append(_timed_step(models[k], opts[k], x, y, device))
        stats: dict[str, dict[str, Stat]] = {}
        for k, samples in times.items():
            stats[k] = {part: summarize([s[i] * 1e3 for s in samples], higher_is_better=False)
                        for i, part in enumerate(("forward", "backward", "step"))}
            for part, s in stats[k].items():
                res.add("layers", f"{name}/{k}", f"{part}_ms", s)
        for part in ("forward", "backward", "step"):
            q = ratio(stats["ours"][part], stats["torch"][part])
            res.add("layers", f"{name}/overhead", f"{part}_pct",
                    Stat((q.median - 1) * 100, (q.best - 1) * 100, q.n))
        del models, opts


# ----------------------------------------------------------------------------- peak

def _training_flops(model: nn.Module, x: Tensor, y: Tensor) -> tuple[int, int]:
    """(forward, forward + backward) FLOPs of one training step, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).train()
    with FlopCounterMode(display=False) as counter:
        loss = F.cross_entropy(model(x), y)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        loss.backward()
    return forward, forward + counter.get_total_flops()


def bench_peak(settings: BenchSettings, res: Results, device: torch.device) -> None:
    """Section 3: training-step GFLOP/s against a GEMM and a conv peak, 1 and all threads."""
    from torch.utils.flop_counter import FlopCounterMode

    bs = settings.batch
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(bs, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (bs,), generator=gen).to(device)
    # On a GPU a 2048^2 product is too small to show the peak, and cuDNN convolutions use
    # TF32 by default (torch.backends.cudnn.allow_tf32): the GEMM is measured the same way.
    n = settings.gemm_size if device.type == "cpu" else max(settings.gemm_size, 8192)
    tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    gemm_case = f"gemm_{'tf32' if tf32 else 'fp32'}_{n}"
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    c = torch.empty(n, n, device=device)

    torch.manual_seed(0)
    models = {name: _build(name, settings.mlp if name == "mlp" else settings.cnn).to(device)
              for name in ("mlp", "cnn")}
    flops = {}
    for name, model in models.items():
        fwd, total = _training_flops(model, x, y)
        flops[name] = total
        res.add("peak", name, "train_mflop_per_image", Stat(total / bs / 1e6, total / bs / 1e6, 1))
        res.add("peak", name, "forward_mflop_per_image", Stat(fwd / bs / 1e6, fwd / bs / 1e6, 1))
    # The CNN's own second convolution, the bulk of its FLOPs, at the training batch size.
    conv = copy.deepcopy(models["cnn"].features[-1][0])
    conv_in = torch.randn(bs, conv.in_channels, *_conv_input_size(models["cnn"]),
                          generator=gen).to(device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        conv(conv_in)
    conv_flops = counter.get_total_flops()

    def conv_forward() -> None:
        with torch.no_grad():
            conv(conv_in)

    loops = {name: OursLoop(model, *synthetic_data(bs * settings.peak_steps[name], seed=3,
                                                   learnable=False), bs, device)
             for name, model in models.items()}
    # name -> (callable, FLOPs per call); repeats interleave all four, so the peaks and the
    # training steps see the same state of the machine (its speed drifts by 20% or more).
    work: dict[str, tuple[Callable[[], object], float]] = {
        "gemm": (lambda: torch.mm(a, b, out=c), 2.0 * n**3),
        "conv": (conv_forward, conv_flops),
        **{name: (lambda lp=loop, k=settings.peak_steps[name]: lp.run(k),
                  flops[name] * settings.peak_steps[name]) for name, loop in loops.items()},
    }
    all_threads = torch.get_num_threads()
    thread_counts = [1, all_threads] if device.type == "cpu" and all_threads > 1 else [all_threads]
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        for t in thread_counts:
            torch.set_num_threads(t)
            for fn, _ in work.values():  # warm-up at this thread count
                fn()
            samples: dict[str, list[float]] = {k: [] for k in work}
            for r in range(settings.peak_repeats):
                for k in _interleaved(list(work), r):
                    fn, fl = work[k]
                    _sync(device)
                    t0 = time.perf_counter()
                    fn()
                    _sync(device)
                    samples[k].append(fl / (time.perf_counter() - t0) / 1e9)
            gemm, convp = summarize(samples["gemm"], True), summarize(samples["conv"], True)
            res.add("peak", f"{gemm_case}/{t}t", "gflops", gemm)
            res.add("peak", f"cnn_conv2_forward/{t}t", "gflops", convp)
            for name in models:
                step = summarize(samples[name], True)
                case = f"{name}_train_step/{t}t"
                res.add("peak", case, "gflops", step)
                per_image = flops[name] / bs / 1e9  # GFLOP per image
                res.add("peak", case, "images_per_s",
                        Stat(step.median / per_image, step.best / per_image, step.n))
                res.add("peak", case, "fraction_of_gemm_peak", ratio(step, gemm))
                res.add("peak", case, "fraction_of_conv_peak", ratio(step, convp))
    finally:
        torch.set_num_threads(all_threads)
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


def _conv_input_size(cnn: nn.Module) -> tuple[int, int]:
    # Spatial size entering the last conv block: run a 1-image probe through the others.
    with torch.no_grad():
        probe = torch.zeros(1, 3, 32, 32, device=next(cnn.parameters()).device)
        was = cnn.training
        cnn.eval()
        for block in list(cnn.features)[:-1]:
            probe = block(probe)
        cnn.train(was)
    return probe.shape[-2], probe.shape[-1]


# ----------------------------------------------------------------------------- jobs

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
    model = _build(cfg["model"], cfg["kwargs"]).to(device)
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
    def __init__(self, cfg: dict) -> None:
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[1])  # the cifarlab package's parent
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from cifarlab.bench import _jobs_worker; _jobs_worker()"],
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
    with CUDA also 1, 2 and 4 MLP runs sharing the GPU (``--resources gpu=K``, README)."""
    _bench_cpu_jobs(settings, res)
    if device.type == "cuda":
        _bench_gpu_sharing(settings, res, device)


GPU_SHARES = (1, 2, 4)


def _measure_arrangements(cfg: dict, arrangements: dict[str, tuple[int, int]],
                          settings: BenchSettings) -> dict[str, Stat]:
    """Total images/s of each arrangement name -> (jobs, threads per job), as processes.

    One process per possible job, started once (torch takes seconds to import); an
    arrangement with fewer jobs leaves the rest blocked on their input, using no CPU.
    """
    workers: list[_Worker] = []
    try:
        for _ in range(max(jobs for jobs, _ in arrangements.values())):
            workers.append(_Worker(cfg))
        for w in workers:
            w.receive()
        rates: dict[str, list[float]] = {k: [] for k in arrangements}
        for r in range(settings.jobs_repeats):
            for k in _interleaved(list(arrangements), r):
                jobs, threads = arrangements[k]
                for w in workers[:jobs]:
                    w.send({"threads": threads, "seconds": settings.jobs_seconds})
                reports = [w.receive() for w in workers[:jobs]]
                rates[k].append(sum(rep["images"] / rep["seconds"] for rep in reports))
    finally:
        for w in workers:
            w.close()
    return {k: summarize(v, True) for k, v in rates.items()}


def _bench_gpu_sharing(settings: BenchSettings, res: Results, device: torch.device) -> None:
    for name in ("mlp", "cnn"):
        kwargs = settings.mlp if name == "mlp" else settings.cnn
        cfg = {"seed": 0, "batch": settings.batch, "model": name, "kwargs": kwargs,
               "device": str(device), "n": max(settings.batch * 50, 1000)}
        stats = _measure_arrangements(cfg, {f"{k}_runs": (k, 1) for k in GPU_SHARES}, settings)
        for k in GPU_SHARES:
            res.add("jobs", f"{name}_gpu/{k}_runs", "total_images_per_s", stats[f"{k}_runs"])
            if k > 1:
                res.add("jobs", f"{name}_gpu/{k}_runs_vs_1", "ratio",
                        ratio(stats[f"{k}_runs"], stats["1_runs"]))


def _bench_cpu_jobs(settings: BenchSettings, res: Results) -> None:
    n = _cores()
    cfg = {"seed": 0, "batch": settings.batch, "model": "mlp",
           "kwargs": settings.jobs_mlp or settings.mlp, "n": max(settings.batch * 10, 1000)}
    arrangements = {f"1x{n}": (1, n), f"{n}x1": (n, 1)}
    if n > 1:
        arrangements[f"{n}x{n}_oversubscribed"] = (n, n)
    stats = _measure_arrangements(cfg, arrangements, settings)
    for k, s in stats.items():
        res.add("jobs", f"mlp/{k}", "total_images_per_s", s)
    if n > 1:
        res.add("jobs", f"mlp/{n}x1_vs_1x{n}", "ratio", ratio(stats[f"{n}x1"], stats[f"1x{n}"]))
        res.add("jobs", f"mlp/{n}x{n}_vs_1x{n}", "ratio",
                ratio(stats[f"{n}x{n}_oversubscribed"], stats[f"1x{n}"]))


# ----------------------------------------------------------------------------- precision

def _accuracy_run(settings: BenchSettings, seed: int, precision: str,
                  device: torch.device) -> float:
    """Test accuracy of a small MLP after a few epochs on the learnable synthetic data."""
    images, labels = synthetic_data(settings.accuracy_train + settings.accuracy_test,
                                    seed=100 + seed, signal=settings.accuracy_signal)
    n = settings.accuracy_train
    torch.manual_seed(seed)  # the same initial weights and dropout draws for both precisions
    model = build_model("mlp", hidden=settings.accuracy_hidden).to(device)
    loop = OursLoop(model, images[:n], labels[:n], settings.batch, device, seed=seed,
                    precision=precision)
    for _ in range(settings.accuracy_epochs):
        loop.run(n // settings.batch)
    x_test = normalize(torch.from_numpy(images[n:]), device)
    _, acc = evaluate(model, x_test, torch.from_numpy(labels[n:]).to(device), precision)
    return acc


def bench_precision(settings: BenchSettings, res: Results, device: torch.device) -> None:
    """Section 5: bf16 autocast vs fp32, speed (MLP, CNN) and accuracy (short run)."""
    images, labels = synthetic_data(max(settings.data_n, settings.batch * 10), seed=4,
                                    learnable=False)
    for name in ("mlp", "cnn"):
        torch.manual_seed(0)
        base = _build(name, settings.mlp if name == "mlp" else settings.cnn).to(device)
        loops = {p: OursLoop(copy.deepcopy(base), images, labels, settings.batch, device,
                             precision=p) for p in ("fp32", "bf16")}
        steps = settings.precision_steps[name]
        for loop in loops.values():
            loop.run(1)
        rates: dict[str, list[float]] = {k: [] for k in loops}
        for r in range(settings.precision_repeats):
            for k in _interleaved(list(loops), r):
                rates[k].append(steps * settings.batch / _time_run(loops[k], steps, device))
        stats = {k: summarize(v, True) for k, v in rates.items()}
        for k, s in stats.items():
            res.add("precision", f"{name}/{k}", "images_per_s", s)
        res.add("precision", f"{name}/bf16_vs_fp32", "speed_ratio",
                ratio(stats["bf16"], stats["fp32"]))
        del loops, base
    accs: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for seed in range(settings.accuracy_seeds):
        for p in accs:
            accs[p].append(_accuracy_run(settings, seed, p, device))
    case = f"mlp{settings.accuracy_hidden}_{settings.accuracy_epochs}ep"
    for p, v in accs.items():
        res.add("precision", f"{case}/{p}", "test_accuracy", summarize(v, True))
    diffs = [(b - a) * 100 for a, b in zip(accs["fp32"], accs["bf16"])]
    # "best" of a difference is the one closest to zero
    res.add("precision", f"{case}/bf16_minus_fp32", "accuracy_pp",
            Stat(statistics.median(diffs), min(diffs, key=abs), len(diffs)))


# ----------------------------------------------------------------------------- driver

SECTION_FUNCS: dict[str, Callable[[BenchSettings, Results, torch.device], None]] = {
    "loops": bench_loops, "layers": bench_layers, "peak": bench_peak, "jobs": bench_jobs,
    "precision": bench_precision,
}


def _check_targets(res: Results, device: torch.device) -> None:
    # The targets, judged on the medians of this one run, were set for CPU training (the
    # machine of docs/performance.md); on a GPU the same comparisons are reported without them.
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
    load_start = _load_average()
    busy = _cpu_busy_fraction()
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
        "load_average_end": _load_average(),
        "settings": asdict(settings),
    }
    res.write(Path(out), meta)
    print(res.table())
    print(f"[bench] {settings.label}: {meta['wall_seconds']} s on {meta['machine']['cpu']} "
          f"({device}); results in {out}/bench.csv and bench.json")
    return res
