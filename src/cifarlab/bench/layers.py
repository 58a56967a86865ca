"""Section ``layers``: the hand-written BatchNorm/Dropout against torch's fused layers.

torch's ``nn.BatchNorm*``/``nn.Dropout*`` appear here, and only here, as the reference
the hand-written layers are measured against.
"""

from __future__ import annotations

import copy
import time
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import layers
from ..models import build_model
from ..train import make_optimizer
from .measure import measure_interleaved, sync
from .results import Results, Stat, ratio
from .settings import BenchSettings
from .workload import OPTIMIZER

__all__ = ["torch_layer_twin", "bench_layers"]

PARTS = ("forward", "backward", "step")  # the timed parts of a training step


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


def _timed_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                device: torch.device) -> dict[str, float]:
    """Milliseconds of one training step's forward, backward and whole step (``PARTS``)."""
    sync(device)
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    sync(device)
    t1 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    sync(device)
    t2 = time.perf_counter()
    optimizer.step()
    sync(device)
    t3 = time.perf_counter()
    return {f"{part}_ms": s * 1e3 for part, s in zip(PARTS, (t1 - t0, t2 - t1, t3 - t0))}


def bench_layers(settings: BenchSettings, res: Results, device: torch.device) -> None:
    """Section 2: our BN/Dropout against torch's inside the MLP and the CNN."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(settings.batch, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (settings.batch,), generator=gen).to(device)
    for name, kwargs in settings.models.items():
        torch.manual_seed(0)
        ours = build_model(name, **kwargs).to(device).train()
        models = {"ours": ours, "torch": torch_layer_twin(ours)}
        opts = {k: make_optimizer(OPTIMIZER, m.parameters(), device) for k, m in models.items()}
        # Warm-up: one step of each (the helper's default).
        stats = measure_interleaved(
            {k: partial(_timed_step, models[k], opts[k], x, y, device) for k in models},
            settings.layers_repeats[name], higher_is_better=False)
        for k, parts in stats.items():
            for metric, s in parts.items():
                res.add("layers", f"{name}/{k}", metric, s)
        for part in PARTS:
            q = ratio(stats["ours"][f"{part}_ms"], stats["torch"][f"{part}_ms"])
            res.add("layers", f"{name}/overhead", f"{part}_pct",
                    Stat((q.median - 1) * 100, (q.best - 1) * 100, q.n))
        del models, opts
