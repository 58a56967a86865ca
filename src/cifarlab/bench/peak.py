"""Section ``peak``: achieved GFLOP/s of a training step against a GEMM and a conv peak."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import build_model
from .measure import measure_interleaved, timed
from .results import Results, Stat, ratio
from .settings import BenchSettings
from .workload import OursLoop, synthetic_data

__all__ = ["CONV_MODEL", "training_flops", "bench_peak"]

# The registered model whose last convolution (the CNN's conv2, the bulk of its FLOPs) is
# the conv peak; its case is named after it.
CONV_MODEL = "cnn"


def training_flops(model: nn.Module, x: Tensor, y: Tensor) -> tuple[int, int]:
    """(forward, forward + backward) FLOPs of one training step, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).train()
    with FlopCounterMode(display=False) as counter:
        loss = F.cross_entropy(model(x), y)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        loss.backward()
    return forward, forward + counter.get_total_flops()


def _last_conv(model: nn.Module) -> tuple[nn.Conv2d, tuple[int, int]]:
    """The model's last ``Conv2d`` and the spatial size of its input, from a 1-image probe
    (found by module type, so no model's attribute names are assumed)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d for the conv peak")
    seen: list[tuple[int, int]] = []
    handle = convs[-1].register_forward_pre_hook(
        lambda _module, args: seen.append(tuple(args[0].shape[-2:])))
    was = model.training
    model.eval()  # the probe must not move BatchNorm's running statistics
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, 32, 32, device=next(model.parameters()).device))
    finally:
        handle.remove()
        model.train(was)
    return convs[-1], seen[0]


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
    models = {name: build_model(name, **kwargs).to(device)
              for name, kwargs in settings.models.items()}
    flops = {}
    for name, model in models.items():
        fwd, total = training_flops(model, x, y)
        flops[name] = total
        res.add("peak", name, "train_mflop_per_image", Stat(total / bs / 1e6, total / bs / 1e6, 1))
        res.add("peak", name, "forward_mflop_per_image", Stat(fwd / bs / 1e6, fwd / bs / 1e6, 1))
    # The CNN's own second convolution, the bulk of its FLOPs, at the training batch size.
    last_conv, conv_hw = _last_conv(models[CONV_MODEL])
    conv = copy.deepcopy(last_conv)
    conv_in = torch.randn(bs, conv.in_channels, *conv_hw, generator=gen).to(device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        conv(conv_in)
    conv_flops = counter.get_total_flops()

    def conv_forward() -> None:
        with torch.no_grad():
            conv(conv_in)

    loops = {name: OursLoop(model, *synthetic_data(bs * settings.peak_steps[name], seed=3,
                                                   learnable=False), bs, device)
             for name, model in models.items()}
    # name -> (callable, FLOPs per call); repeats interleave all of them, so the peaks and the
    # training steps see the same state of the machine (its speed drifts by 20% or more).
    work: dict[str, tuple[Callable[[], object], float]] = {
        "gemm": (lambda: torch.mm(a, b, out=c), 2.0 * n**3),
        "conv": (conv_forward, conv_flops),
        **{name: (partial(loop.run, settings.peak_steps[name]),
                  flops[name] * settings.peak_steps[name]) for name, loop in loops.items()},
    }

    def gflops(fn: Callable[[], object], fl: float) -> dict[str, float]:
        return {"gflops": fl / timed(fn, device) / 1e9}

    cases = {k: partial(gflops, fn, fl) for k, (fn, fl) in work.items()}
    all_threads = torch.get_num_threads()
    thread_counts = [1, all_threads] if device.type == "cpu" and all_threads > 1 else [all_threads]
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        for t in thread_counts:
            torch.set_num_threads(t)
            # The helper warms every case up again at this thread count.
            stats = {k: s["gflops"] for k, s in measure_interleaved(
                cases, settings.peak_repeats, higher_is_better=True).items()}
            gemm, convp = stats["gemm"], stats["conv"]
            res.add("peak", f"{gemm_case}/{t}t", "gflops", gemm)
            res.add("peak", f"{CONV_MODEL}_conv2_forward/{t}t", "gflops", convp)
            for name in models:
                step = stats[name]
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
