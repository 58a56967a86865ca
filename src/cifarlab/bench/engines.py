"""Section ``engines``: the same training steps eager, in channels_last, compiled,
CUDA-graphed and both.

For each network and batch size, each execution path (``cifarlab.engine``) that the device
supports trains the same steps from the same initial weights. Reported per case: time per
step (µs), training images/s, the first call's seconds (4 steps: cuDNN's algorithm search,
compilation, graph capture) and the ratio to eager steps. The ``eager`` and
``channels_last`` cases also report evaluation images/s (``evaluate`` in eval mode on the
device's validation batch, as a run's validation and test do): the memory layout is the one
switch that changes evaluation too. The cases share one process, so
``compile+graphs`` reuses what ``compile`` compiled for the same shapes: its first call is
the capture's cost, and ``compile``'s is the compilation a fresh process pays (less with
inductor's on-disk cache warm). The batch-5 rows measure what the grid's slowest runs (8,000
steps an epoch) pay per step.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from ..engine import Execution, compiled, step_runner
from ..models import build_model, model_entry
from ..train import evaluate, make_optimizer, normalize
from .measure import measure_interleaved, sync
from .results import Results, Stat, ratio
from .settings import BenchSettings
from .workload import OPTIMIZER, synthetic_data

__all__ = ["ENGINES", "engines_for", "bench_engines"]

# Case name -> the execution switches it turns on.
ENGINES = {
    "eager": Execution(),
    "channels_last": Execution(channels_last=True),
    "compile": Execution(compile=True),
    "graphs": Execution(cuda_graphs=True),
    "compile+graphs": Execution(compile=True, cuda_graphs=True),
    # what profiles/gpu turns on when all three pay
    "channels_last+compile+graphs": Execution(channels_last=True, compile=True,
                                              cuda_graphs=True),
}


def engines_for(device: torch.device, model_allows_channels_last: bool = True
                ) -> dict[str, Execution]:
    """The engines that apply on ``device`` (``Execution.on``): CUDA graphs on CUDA only,
    channels_last for a model registered with it on CUDA and CPUs."""
    return {k: e for k, e in ENGINES.items()
            if e.on(device, model_allows_channels_last) == e}


class _Case:
    """One engine training one copy of the network on the synthetic images."""

    def __init__(self, base: nn.Module, execution: Execution, x: torch.Tensor, y: torch.Tensor,
                 batch: int, precision: str) -> None:
        self.model = copy.deepcopy(base)
        if execution.channels_last:  # as Trainer does: the weights and the images
            self.model = self.model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        opt = make_optimizer(OPTIMIZER, self.model.parameters(), x.device,
                             capturable=execution.cuda_graphs)
        step_model = compiled(self.model) if execution.compile else self.model
        self.runner = step_runner(step_model, opt, x, y, batch, precision, execution)
        self.x, self.y, self.batch = x, y, batch
        self.gen = torch.Generator().manual_seed(0)

    def steps(self, n: int) -> float:
        """Seconds ``n`` training steps take, the device's work included."""
        perm = torch.randperm(len(self.x), generator=self.gen)[:n * self.batch].to(self.x.device)
        sync(self.x.device)
        t0 = time.perf_counter()
        self.runner.epoch(perm)
        sync(self.x.device)
        return time.perf_counter() - t0

    def evaluation(self, images: int) -> float:
        """Seconds ``evaluate`` takes over the first ``images`` images."""
        sync(self.x.device)
        t0 = time.perf_counter()
        evaluate(self.model, self.x[:images], self.y[:images])
        sync(self.x.device)
        return time.perf_counter() - t0


def bench_engines(settings: BenchSettings, res: Results, device: torch.device) -> None:
    """Section ``engines``: µs per step, images/s, first-call seconds and the ratio to
    eager of every engine, per network and batch size."""
    if device.type == "cuda":  # as Trainer does: cuDNN times its algorithms per shape
        torch.backends.cudnn.benchmark = True
    for name, kwargs in settings.models.items():
        for batch, steps in settings.engines_steps[name].items():
            n = max(settings.data_n, batch * (steps + 4))
            images, labels = synthetic_data(n, seed=5, learnable=False)
            x = normalize(torch.from_numpy(images), device)
            y = torch.from_numpy(labels).to(device)
            torch.manual_seed(0)
            base = build_model(name, **kwargs).to(device)
            engines = engines_for(device, model_entry(name).channels_last)
            cases = {k: _Case(base, e, x, y, batch, "fp32") for k, e in engines.items()}
            # The first call: compilation, cuDNN's algorithm search, graph warm-up and capture.
            first = {k: c.steps(4) for k, c in cases.items()}

            def measure(case: _Case, steps: int = steps) -> dict[str, float]:
                return {"us_per_step": case.steps(steps) / steps * 1e6}

            stats = measure_interleaved({k: (lambda c=c: measure(c)) for k, c in cases.items()},
                                        settings.engines_repeats, higher_is_better=False,
                                        warm_up={})
            eager = stats["eager"]["us_per_step"]
            for k, s in stats.items():
                us, label = s["us_per_step"], f"{name}/b{batch}/{k}"
                res.add("engines", label, "us_per_step", us)
                # images/s from the same samples: the fastest step is the most images/s
                res.add("engines", label, "images_per_s",
                        Stat(batch / us.median * 1e6, batch / us.best * 1e6, us.n))
                res.add("engines", label, "first_call_s", Stat(first[k], first[k], 1))
                if k != "eager":  # > 1: faster than eager steps
                    res.add("engines", f"{name}/b{batch}/{k}_vs_eager", "speed_ratio",
                            ratio(eager, us))
            _bench_evaluation(name, batch, cases, settings, res)
            del cases, base, x, y


def _bench_evaluation(name: str, batch: int, cases: dict[str, _Case],
                      settings: BenchSettings, res: Results) -> None:
    """Evaluation images/s of the eager and channels_last cases (once per network: at the
    first batch size), and their ratio."""
    timed = {k: c for k, c in cases.items() if k in ("eager", "channels_last")}
    if batch != next(iter(settings.engines_steps[name])) or len(timed) < 2:
        return
    images = min(len(next(iter(timed.values())).x), settings.engines_eval_images)
    stats = measure_interleaved(
        {k: (lambda c=c: {"images_per_s": images / c.evaluation(images)})
         for k, c in timed.items()}, settings.engines_repeats, higher_is_better=True)
    for k, s in stats.items():
        res.add("engines", f"{name}/eval/{k}", "images_per_s", s["images_per_s"])
    res.add("engines", f"{name}/eval/channels_last_vs_eager", "speed_ratio",
            ratio(stats["channels_last"]["images_per_s"], stats["eager"]["images_per_s"]))
