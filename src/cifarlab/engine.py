"""How a run's training steps execute: eagerly, compiled, or replayed as one CUDA graph.

The spec (model, optimizer, data order, epochs, precision) says *what* a run computes; an
``Execution`` says *how* the device computes it, and is recorded in metrics.json beside
the device. Like the device, it is not part of the run's id: it changes which random
numbers Dropout draws and the rounding of sums, never the method. Three switches:

* ``channels_last``: the CNN's activations in NHWC memory order, on CUDA (cuDNN's fast
  convolutions for it) and on a CPU (oneDNN's: measured side by side with
  `cifarlab bench --quick --only engines --cnn-channels 16 32` on a 2-core EPYC, the
  quick profile's 16/32 CNN stepped 1.19x faster at batch 100 and evaluated 1.27x the
  images/s; the study's 128/512 CNN stepped 0.90x as fast: docs/performance.md).
* ``compile``: the model's forward and backward through ``torch.compile`` (fullgraph: no
  graph breaks allowed). The hand-written layers stay hand-written; under the compiler
  they switch to formulations it can trace and fuse (``layers._batch_norm_traceable`` and
  Dropout's ``torch.rand`` mask), so BatchNorm, ReLU and Dropout become few fused kernels.
* ``cuda_graphs``: on CUDA, a whole training step (gather of the batch, forward, loss,
  backward, AdamW, the epoch's running sums) is captured once and replayed for every later
  step: two launches per step (copying the step's indices, the replay) instead of
  dozens. This needs what ``GraphSteps`` documents: static shapes (the last partial batch
  is dropped anyway), capturable AdamW, BatchNorm buffers updated in place
  (``layers._BatchNorm._update_running_stats``) and random numbers that advance on every
  replay (torch's CUDA generator does this for captured graphs). On a CPU it is ignored.

On a CPU the steps run eagerly (``train_epoch``), in either memory layout, bit-exact across
resume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Execution", "StepRunner", "EagerSteps", "GraphSteps", "train_epoch", "autocast",
           "step_runner", "compiled", "eval_batch"]

log = logging.getLogger("cifarlab.engine")

# Validation/test batch: 250 images on a CPU, where the activations must stay in the
# caches: the quick profile's CNN's first block is 250 x 16 x 32 x 32 x 4 B = 16 MB per
# tensor (64 MB at 1,000). Measured on a 2-core EPYC (32 MB L3, one thread, eval mode,
# images/s at batch 100 / 250 / 500 / 1,000): 16/32 CNN 3,400 / 3,500-3,800 / 3,800 /
# 2,000, so 1,000 was 1.8x slower (channels_last, as the config trains it: 5,100 / 5,400 /
# 3,000 at 100 / 250 / 500); MLP 9,600 / 11,100 / 10,600 / 11,400-12,000 (within
# the noise of two runs). 10,000 on CUDA, where one batch of the CNN's first block is
# 10,000 x 128 x 32 x 32 x 4 B = 5.2 GB and fewer, larger kernels keep the GPU busy.
EVAL_BATCH = {"cpu": 250, "cuda": 10_000}


@dataclass(frozen=True)
class Execution:
    """How the device runs a run's steps (an execution detail, not part of the run's id)."""

    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False

    def on(self, device: torch.device, model_allows_channels_last: bool) -> Execution:
        """What actually applies on ``device``: channels_last on CUDA and CPUs for a model
        registered with it (not on MPS, whose NHWC kernels torch does not promise), CUDA
        graphs on CUDA only, compile anywhere."""
        cuda = device.type == "cuda"
        layout_ok = device.type in ("cuda", "cpu") and model_allows_channels_last
        return Execution(channels_last=self.channels_last and layout_ok,
                         compile=self.compile, cuda_graphs=self.cuda_graphs and cuda)

    def as_metrics(self) -> dict[str, bool]:
        """The fields metrics.json records (what applied, after ``on``)."""
        return asdict(self)


def eval_batch(device: torch.device) -> int:
    """Images per validation/test batch on ``device`` (EVAL_BATCH; MPS as the CPU)."""
    return EVAL_BATCH.get(device.type, EVAL_BATCH["cpu"])


def autocast(device: torch.device, precision: str, *, cache: bool = True):
    """bf16 autocast for ``precision == 'bf16'``, else nothing. ``cache=False`` inside CUDA
    graphs: autocast's cache of cast weights must not outlive the capture."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                              cache_enabled=cache)
    return nullcontext()


def compiled(model: nn.Module) -> nn.Module:
    """``model`` through ``torch.compile`` with one graph per input shape and no graph
    breaks (a break would put host work inside a CUDA graph). Shares ``model``'s parameters
    and buffers: evaluating, checkpointing and loading go through ``model`` as before."""
    return torch.compile(model, dynamic=False, fullgraph=True)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                perm: Tensor, batch_size: int, precision: str = "fp32",
                on_step: Callable[[], object] | None = None) -> tuple[Tensor, Tensor]:
    """One epoch over ``perm`` in batches (last partial batch dropped), eagerly.

    Returns the sum of the batches' mean losses and the number of correct predictions,
    both as device tensors: nothing here waits for the device.
    """
    steps = len(perm) // batch_size
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(steps):
        idx = perm[i * batch_size:(i + 1) * batch_size]
        xb, yb = x[idx], y[idx]
        with autocast(x.device, precision):
            logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach()
        correct += (logits.argmax(1) == yb).sum()
        if on_step is not None:
            on_step()
    return loss_sum, correct


class StepRunner(Protocol):
    """Runs one epoch of training steps over a permutation of the training images."""

    # Why CUDA graphs were asked for but the steps run without them (None: they were not
    # asked for, or they work); metrics.json records it.
    graphs_failed: str | None

    def epoch(self, perm: Tensor,
              on_step: Callable[[], object] | None = None) -> tuple[Tensor, Tensor]:
        """Train over ``perm`` (device int64, the epoch's order); returns the sum of the
        steps' mean losses and the number of correct predictions as device tensors."""
        ...


class EagerSteps:
    """``train_epoch``: one Python-driven step after another (the CPU path)."""

    graphs_failed = None

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor,
                 y: Tensor, batch_size: int, precision: str) -> None:
        self.model, self.optimizer, self.x, self.y = model, optimizer, x, y
        self.batch_size, self.precision = batch_size, precision

    def epoch(self, perm: Tensor,
              on_step: Callable[[], object] | None = None) -> tuple[Tensor, Tensor]:
        """See ``StepRunner.epoch``."""
        return train_epoch(self.model, self.optimizer, self.x, self.y, perm, self.batch_size,
                           self.precision, on_step)


class GraphSteps:
    """Every step is the same fixed-address computation, replayed from a CUDA graph.

    The step reads the batch's indices from one static (batch,) buffer, gathers its images
    and labels from the training tensors already on the device, and adds its loss and
    correct count into two static accumulators, so a replay needs no host input but the
    indices and returns nothing to the host. The first ``WARM_UP`` steps of the run execute
    eagerly on a side stream (cuDNN/cuBLAS choose their algorithms, AdamW creates its
    state, the compiler compiles); the next one is captured, which executes nothing, and
    is then replayed like every later step. Every step of the epoch runs exactly once.

    With ``capture=False`` (any device) the same static-buffer step runs eagerly: the CPU
    tests check that it computes exactly what ``train_epoch`` computes.

    A capture that fails (an operation CUDA graphs do not allow, in a torch or driver
    version this was not measured on) costs the run nothing: the step that was being
    captured executed nothing, so it and every later step run eagerly instead, the log
    says why, and ``graphs_failed`` holds the error for metrics.json.
    """

    WARM_UP = 3

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor,
                 y: Tensor, batch_size: int, precision: str, *, capture: bool = True) -> None:
        if capture and x.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {x.device}; run with "
                             "capture=False (or without cuda_graphs) on this device")
        self.model, self.optimizer, self.x, self.y = model, optimizer, x, y
        self.batch_size, self.precision, self.capture = batch_size, precision, capture
        dev = x.device
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=dev)  # (B,) this step's
        self.loss_sum = torch.zeros((), device=dev)
        self.correct = torch.zeros((), dtype=torch.long, device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_steps = 0
        self.graphs_failed: str | None = None

    def _step(self) -> None:
        # Only in-place writes to tensors that outlive the step: a replay repeats exactly
        # these kernels on exactly these addresses.
        xb, yb = self.x[self.idx], self.y[self.idx]  # (B, 3, 32, 32), (B,)
        with autocast(self.x.device, self.precision, cache=not self.capture):
            logits = self.model(xb)
            loss = F.cross_entropy(logits.float(), yb)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach()
        self.correct += (logits.argmax(1) == yb).sum()

    def _warm_step(self) -> None:
        side = torch.cuda.Stream(self.x.device)
        side.wait_stream(torch.cuda.current_stream(self.x.device))
        with torch.cuda.stream(side):
            self._step()
        torch.cuda.current_stream(self.x.device).wait_stream(side)

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # gradients are allocated in the graph
        with torch.cuda.graph(graph):
            self._step()
        self.graph = graph

    def _try_capture(self) -> None:
        cuda = self.x.device.type == "cuda"
        if cuda:
            dev = self.x.device.index if self.x.device.index is not None \
                else torch.cuda.current_device()
            stream = torch.cuda.current_stream(dev)
            rng = torch.cuda.default_generators[dev]
            seed, offset = rng.initial_seed(), rng.get_offset()
        try:
            self._capture()
        except RuntimeError as exc:  # torch's CUDA errors are RuntimeErrors
            self.graph, self.capture = None, False
            if cuda:
                _recover_from_capture(stream, rng, seed, offset)
            # An operation a graph refuses raises inside the capture; leaving the capture
            # then fails too ("operation failed due to a previous error during capture")
            # with the first error as its context: name that one, the cause.
            cause: BaseException = exc
            while isinstance(cause.__context__, RuntimeError):
                cause = cause.__context__
            first_line = (str(cause).strip().splitlines() or [""])[0]
            self.graphs_failed = f"{type(cause).__name__}: {first_line}"[:300]
            log.warning("CUDA graph capture failed (%s); training on without CUDA graphs "
                        "(train.cuda_graphs: false avoids the attempt)", self.graphs_failed)

    def epoch(self, perm: Tensor,
              on_step: Callable[[], object] | None = None) -> tuple[Tensor, Tensor]:
        """See ``StepRunner.epoch``."""
        self.loss_sum.zero_()
        self.correct.zero_()
        b = self.batch_size
        for i in range(len(perm) // b):
            self.idx.copy_(perm[i * b:(i + 1) * b])
            if not self.capture:
                self._step()
            elif self.graph is None and self.eager_steps < self.WARM_UP:
                self._warm_step()
                self.eager_steps += 1
            else:
                if self.graph is None:
                    self._try_capture()
                if self.graph is not None:
                    self.graph.replay()
                else:  # the capture failed: this step (which it did not run) eagerly
                    self._step()
            if on_step is not None:
                on_step()
        return self.loss_sum.clone(), self.correct.clone()


def _recover_from_capture(stream: torch.cuda.Stream, rng: torch.Generator, seed: int,
                          offset: int) -> None:
    """Undo what a failed ``torch.cuda.graph`` capture leaves behind, so the steps can run
    eagerly: when leaving the capture fails, its stream stays the current one, and the
    device's random generator stays in capture mode (any later random op then fails with
    "Offset increment outside graph capture encountered unexpectedly"). The generator
    gets a fresh state at the seed and offset it had before the capture, which consumed
    no random numbers since it executed nothing."""
    torch.cuda.set_stream(stream)
    fresh = torch.Generator(device=stream.device)
    fresh.manual_seed(seed)
    fresh.set_offset(offset)
    rng.graphsafe_set_state(fresh.graphsafe_get_state())


def step_runner(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                batch_size: int, precision: str, execution: Execution) -> StepRunner:
    """The runner ``execution`` asks for (already resolved for the device by
    ``Execution.on``): GraphSteps with CUDA graphs, else EagerSteps. ``model`` is the
    module the steps call (the compiled one when ``execution.compile``)."""
    if execution.cuda_graphs:
        return GraphSteps(model, optimizer, x, y, batch_size, precision)
    return EagerSteps(model, optimizer, x, y, batch_size, precision)
