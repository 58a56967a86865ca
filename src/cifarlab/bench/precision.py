"""Section ``precision``: bf16 autocast against fp32, speed and accuracy after a short run.

The accuracy run also trains the fast path (bf16, compiled, and on CUDA replayed from CUDA
graphs: ``FAST``) from the same start, so the report of a GPU bench says what the fast
path costs in test accuracy against plain fp32 eager steps.
"""

from __future__ import annotations

import copy
import statistics

import torch

from ..engine import Execution, compiled, step_runner
from ..models import build_model
from ..train import evaluate, make_optimizer, normalize
from .results import Results, Stat, ratio, summarize
from .settings import BenchSettings
from .workload import OPTIMIZER, OursLoop, loop_speeds, synthetic_data

__all__ = ["ACCURACY_MODEL", "ACCURACY_CASES", "bench_precision"]

PRECISIONS = ("fp32", "bf16")
ACCURACY_MODEL = "mlp"  # the registered model of the accuracy run (sized by accuracy_hidden)
# The accuracy run's cases: (precision, execution). "fast" is every switch on; on a CPU
# CUDA graphs do not apply (Execution.on), so there it is bf16 + compile.
FAST = Execution(compile=True, cuda_graphs=True)
ACCURACY_CASES = {"fp32": ("fp32", Execution()), "bf16": ("bf16", Execution()),
                  "fast": ("bf16", FAST)}


def _accuracy_run(settings: BenchSettings, seed: int, precision: str,
                  device: torch.device, execution: Execution | None = None) -> float:
    """Test accuracy of a small model after a few epochs on the learnable synthetic data."""
    images, labels = synthetic_data(settings.accuracy_train + settings.accuracy_test,
                                    seed=100 + seed, signal=settings.accuracy_signal)
    n = settings.accuracy_train
    torch.manual_seed(seed)  # the same initial weights and dropout draws for every case
    model = build_model(ACCURACY_MODEL, hidden=settings.accuracy_hidden).to(device)
    ex = (execution or Execution()).on(device, False)
    opt = make_optimizer(OPTIMIZER, model.parameters(), device, capturable=ex.cuda_graphs)
    x = normalize(torch.from_numpy(images[:n]), device)
    y = torch.from_numpy(labels[:n]).to(device)
    runner = step_runner(compiled(model) if ex.compile else model, opt, x, y, settings.batch,
                         precision, ex)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(settings.accuracy_epochs):
        model.train()
        runner.epoch(torch.randperm(n, generator=gen).to(device))
    x_test = normalize(torch.from_numpy(images[n:]), device)
    _, acc = evaluate(model, x_test, torch.from_numpy(labels[n:]).to(device), precision)
    return acc


def bench_precision(settings: BenchSettings, res: Results, device: torch.device) -> None:
    """Section 5: bf16 autocast vs fp32, speed (MLP, CNN) and accuracy (short run)."""
    images, labels = synthetic_data(max(settings.data_n, settings.batch * 10), seed=4,
                                    learnable=False)
    for name, kwargs in settings.models.items():
        torch.manual_seed(0)
        base = build_model(name, **kwargs).to(device)
        loops = {p: OursLoop(copy.deepcopy(base), images, labels, settings.batch, device,
                             precision=p) for p in PRECISIONS}
        stats = loop_speeds(loops, settings.precision_steps[name], settings.batch,
                            settings.precision_repeats, device)
        for k, s in stats.items():
            res.add("precision", f"{name}/{k}", "images_per_s", s)
        res.add("precision", f"{name}/bf16_vs_fp32", "speed_ratio",
                ratio(stats["bf16"], stats["fp32"]))
        del loops, base
    # Accuracy is not a timing: one run per seed and precision, nothing to interleave.
    accs: dict[str, list[float]] = {k: [] for k in ACCURACY_CASES}
    for seed in range(settings.accuracy_seeds):
        for k, (precision, execution) in ACCURACY_CASES.items():
            accs[k].append(_accuracy_run(settings, seed, precision, device, execution))
    case = f"{ACCURACY_MODEL}{settings.accuracy_hidden}_{settings.accuracy_epochs}ep"
    for k, v in accs.items():
        res.add("precision", f"{case}/{k}", "test_accuracy", summarize(v, True))
    for k in ("bf16", "fast"):
        diffs = [(b - a) * 100 for a, b in zip(accs["fp32"], accs[k])]
        # "best" of a difference is the one closest to zero
        res.add("precision", f"{case}/{k}_minus_fp32", "accuracy_pp",
                Stat(statistics.median(diffs), min(diffs, key=abs), len(diffs)))
