"""Where a training step's GPU time goes: convolutions and GEMMs against everything else.

Run on a CUDA machine (scripts/device/bench.sh does): for the study's CNN and MLP at batch
100, eager and compiled, it profiles a few steps with torch.profiler and prints each
case's GPU time per step split into matrix kernels (convolution, GEMM) and the rest
(BatchNorm, ReLU, Dropout, pooling, AdamW, copies), with the top kernels, and writes the
same as JSON. That split says whether faster matrix work (bf16) or fewer, fused
elementwise kernels (compile, graphs) is the lever.
usage: python scripts/device/profile_step.py OUT.json
"""

from __future__ import annotations

import json
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from cifarlab.engine import Execution, compiled, step_runner
from cifarlab.models import build_model
from cifarlab.train import make_optimizer, normalize

MATRIX = ("gemm", "conv", "cutlass", "sm90_xmma", "wgrad", "dgrad", "fprop", "implicit")
STEPS = 10


def profile_case(name: str, execution: Execution, batch: int = 100) -> dict:
    """GPU microseconds per step of ``name`` under ``execution``, split by kernel kind."""
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True  # as the Trainer trains
    torch.manual_seed(0)
    model = build_model(name).to(dev)
    opt = make_optimizer({"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-5},
                         model.parameters(), dev, capturable=execution.cuda_graphs)
    n = batch * (STEPS + 4)
    x = normalize(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), dev)
    y = torch.randint(0, 10, (n,), device=dev)
    runner = step_runner(compiled(model) if execution.compile else model, opt, x, y, batch,
                         "fp32", execution)
    runner.epoch(torch.arange(4 * batch, device=dev))  # compile, algorithm search
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        runner.epoch(torch.arange(STEPS * batch, device=dev))
        torch.cuda.synchronize()
    kernels: dict[str, float] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels[e.name] = kernels.get(e.name, 0.0) + e.device_time
    total = sum(kernels.values()) / STEPS
    matrix = sum(t for k, t in kernels.items() if any(m in k.lower() for m in MATRIX)) / STEPS
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:8]
    return {"case": f"{name}/b{batch}/{'compile' if execution.compile else 'eager'}",
            "gpu_us_per_step": total, "matrix_us_per_step": matrix,
            "other_us_per_step": total - matrix, "kernels_per_step": len(prof.events()) / STEPS,
            "top": [(k[:90], t / STEPS) for k, t in top]}


def main(out: str) -> None:
    """Profile every case, print the table and the top kernels, write ``out``."""
    rows = [profile_case(name, ex) for name in ("cnn", "mlp")
            for ex in (Execution(), Execution(compile=True))]
    for r in rows:
        print(f"{r['case']:<22} GPU {r['gpu_us_per_step']:9.0f} us/step: matrix "
              f"{r['matrix_us_per_step']:8.0f}, other {r['other_us_per_step']:8.0f} "
              f"({r['kernels_per_step']:.0f} kernel events/step)")
        for k, t in r["top"]:
            print(f"    {t:9.1f} us  {k}")
    with open(out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("profile_step.py: torch sees no CUDA device; nothing to profile")
    main(sys.argv[1])
