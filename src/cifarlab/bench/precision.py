"""Section ``precision``: bf16 autocast against fp32, speed and accuracy after a short run."""

from __future__ import annotations

import copy
import statistics

import torch

from ..models import build_model
from ..train import evaluate, normalize
from .results import Results, Stat, ratio, summarize
from .settings import BenchSettings
from .workload import OursLoop, loop_speeds, synthetic_data

__all__ = ["ACCURACY_MODEL", "bench_precision"]

PRECISIONS = ("fp32", "bf16")
ACCURACY_MODEL = "mlp"  # the registered model of the accuracy run (sized by accuracy_hidden)


def _accuracy_run(settings: BenchSettings, seed: int, precision: str,
                  device: torch.device) -> float:
    """Test accuracy of a small model after a few epochs on the learnable synthetic data."""
    images, labels = synthetic_data(settings.accuracy_train + settings.accuracy_test,
                                    seed=100 + seed, signal=settings.accuracy_signal)
    n = settings.accuracy_train
    torch.manual_seed(seed)  # the same initial weights and dropout draws for both precisions
    model = build_model(ACCURACY_MODEL, hidden=settings.accuracy_hidden).to(device)
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
    accs: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for seed in range(settings.accuracy_seeds):
        for p in accs:
            accs[p].append(_accuracy_run(settings, seed, p, device))
    case = f"{ACCURACY_MODEL}{settings.accuracy_hidden}_{settings.accuracy_epochs}ep"
    for p, v in accs.items():
        res.add("precision", f"{case}/{p}", "test_accuracy", summarize(v, True))
    diffs = [(b - a) * 100 for a, b in zip(accs["fp32"], accs["bf16"])]
    # "best" of a difference is the one closest to zero
    res.add("precision", f"{case}/bf16_minus_fp32", "accuracy_pp",
            Stat(statistics.median(diffs), min(diffs, key=abs), len(diffs)))
