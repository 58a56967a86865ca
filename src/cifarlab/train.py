"""One training run: in-memory tensors, per-epoch history, best-validation checkpoint, resume.

``train_run`` is a short driver: a ``Trainer`` holds the live model, optimizer and data
on the device; a ``RunState`` holds what a resumed run needs; ``RunDir`` (rundir.py)
reads and writes the run folder's files.

The data set lives on the device as normalised float tensors; each epoch indexes
batches from a seeded permutation (the last partial batch is dropped). Running sums
stay on the device, so a step never waits for the host; the only syncs are once per
epoch, when the epoch's figures are logged.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import Splits
from .engine import Execution, autocast, compiled, eval_batch, step_runner, train_epoch
from .layers import reestimated_copy
from .models import build_model, count_parameters, model_entry
from .rundir import HISTORY_COLUMNS, RunDir, RunFileError, RunState
from .system import cpu_model, tune_cpu_allocator

__all__ = ["train_run", "train_epoch", "resolve_device", "set_threads", "normalize", "evaluate",
           "make_optimizer", "Trainer", "RunError", "HISTORY_COLUMNS", "DEVICE_CHOICES",
           "accumulate_dtype", "device_name", "Execution"]

log = logging.getLogger("cifarlab.train")

# A run has diverged when an epoch's mean training loss is non-finite or above this many
# times the loss of a uniform guess, ln(classes) (2.30 for CIFAR-10): the loss a network
# starts near. A run that learns never comes back from 10x its initial loss in this study;
# without the bound, an lr of 1e8 "trains" for 100 epochs at chance with a loss of 1e7.
DIVERGED_FACTOR = 10.0
# Images per batch when the BatchNorm diagnostic re-estimates the running statistics (a
# cumulative average over batches: the batch size is part of the estimate, so it is fixed).
BN_REESTIMATE_BATCH = 1000


class RunError(RuntimeError):
    """A run cannot start or resume; the message says why and what to do."""


# What --device and the config's train.device accept (also the schema's pattern).
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"
_CUDA_NAME = re.compile(r"cuda(?::(\d+))?")


def _mps_available() -> bool:
    """Whether torch can use Apple's Metal GPU (MPS): macOS on Apple silicon only."""
    return torch.backends.mps.is_available()


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device ``name`` names; one of DEVICE_CHOICES.

    'auto' picks CUDA when torch sees a CUDA device, else Apple's MPS when available, else
    the CPU. Asking for a device that is not there (cuda or cuda:N without that GPU, mps
    off Apple silicon) or for an unknown name raises RunError naming the value and the
    valid choices.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise RunError(f"device {name!r} asked for, but torch sees no MPS device (Apple's "
                           "Metal GPU: macOS on Apple silicon only); use --device auto or cpu "
                           f"(valid: {DEVICE_CHOICES})")
        return torch.device("mps")
    cuda = _CUDA_NAME.fullmatch(name)
    if cuda is None:
        raise RunError(f"unknown device {name!r}; valid: {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise RunError(f"device {name!r} asked for, but torch sees no CUDA device; use "
                       f"--device auto or cpu (valid: {DEVICE_CHOICES})")
    if cuda.group(1) is not None and int(cuda.group(1)) >= torch.cuda.device_count():
        raise RunError(f"device {name!r} asked for, but torch sees "
                       f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 to "
                       f"cuda:{torch.cuda.device_count() - 1}); valid: {DEVICE_CHOICES}")
    return torch.device(name)


def accumulate_dtype(device: torch.device) -> torch.dtype:
    """The dtype of running loss sums on ``device``: float64, except float32 on MPS.

    Metal has no float64 (an MPS float64 tensor is an error), so on MPS the sums are
    float32; on the CPU and CUDA they stay float64, as before.
    """
    return torch.float32 if device.type == "mps" else torch.float64


def device_name(device: torch.device) -> str:
    """How metrics.json names the device: the GPU's model on CUDA, else 'cpu' or 'mps'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def set_threads(threads: int | None) -> None:
    """Give torch exactly the job's threads, so parallel jobs never oversubscribe cores."""
    if threads is None:
        return
    if threads < 1:
        raise RunError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # may be set only once per process
        torch.set_num_interop_threads(1)


def normalize(images: Tensor, device: torch.device, channels_last: bool = False) -> Tensor:
    """uint8 (N, 3, 32, 32) -> float32 (x - 128) / 255 on the device, as the study does;
    in channels_last memory when asked (the uint8 images are permuted, 4x less memory to
    move than the floats, and the float buffer is written once in its final layout)."""
    x = images.to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.float().sub_(128.0).div_(255.0)  # .float() keeps the memory format


def make_optimizer(spec: dict, params: Any, device: torch.device, *,
                   capturable: bool = False) -> torch.optim.Optimizer:
    """The spec's optimizer (adam, adamw, sgd) over ``params``, fused where torch allows.

    ``capturable`` (CUDA graphs): Adam's step counts live on the device and its update
    never reads them on the host, so the step can be captured and replayed.
    """
    name, lr, wd = spec["optimizer"], spec["lr"], spec["weight_decay"]
    classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    if name not in classes:
        raise RunError(f"unknown optimizer {name!r}; valid: {', '.join(classes)}")
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": wd}
    if name == "sgd":
        kwargs["momentum"] = spec.get("momentum") or 0.0
    elif capturable:
        kwargs["capturable"] = True
    try:  # fused kernels: measured 1.29x faster MLP steps than the default on this CPU
        return classes[name](params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return classes[name](params, **kwargs)


@torch.inference_mode()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, precision: str = "fp32",
             batch: int | None = None,
             transform: Callable[[Tensor], Tensor] | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` in eval mode over (x, y), in batches
    of ``batch`` images (None: the device's ``engine.eval_batch``). ``transform``, when
    given, turns each batch of ``x`` into the model's input: e.g. uint8 images normalised
    batch by batch, so that the 10,000 test images are never held as float32 (123 MB of
    fresh memory for one evaluation)."""
    batch = batch or eval_batch(x.device)
    was_training = model.training
    model.eval()
    acc = accumulate_dtype(x.device)  # float64 (float32 on MPS, which has no float64)
    loss_sum = torch.zeros((), device=x.device, dtype=acc)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        if transform is not None:
            xb = transform(xb)
        with autocast(x.device, precision):
            logits = model(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum").to(acc)
        correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    n = max(len(x), 1)
    return loss_sum.item() / n, correct.item() / n


def git_commit() -> str:
    """The checkout's commit (12 hex digits), $CIFARLAB_COMMIT, or 'unknown'."""
    if os.environ.get("CIFARLAB_COMMIT"):
        return os.environ["CIFARLAB_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _check_data(spec: dict, data: Splits) -> None:
    source = spec["data"]["source"]
    if data.identity and data.identity != source:
        raise RunError(
            f"the data cache was prepared from {data.identity}, but this run's spec names "
            f"{source}; prepare the data from the configured source again (the pipeline "
            "does this by itself; by hand: `cifarlab prepare`)")
    if source.startswith("official:") and not source.endswith(":unverified"):
        expected = source.split(":", 1)[1]
        if data.checksum != expected:
            raise RunError(
                f"the prepared data's checksum {data.checksum} is not the one this run's spec "
                f"names ({expected}); prepare the data from the configured source again "
                "(`cifarlab prepare`) or fix data.md5 in the config")


class Trainer:
    """The live parts of one run on its device: model, optimizer, data tensors, generators.

    Built in a fixed order (global seed, permutation generator, model, optimizer) so that a
    run is reproducible and a resumed run continues the same random streams.
    """

    def __init__(self, spec: dict, data: Splits, *, device: str = "auto",
                 threads: int | None = None, execution: Execution | None = None) -> None:
        self.spec, self.data = spec, data
        self.device = dev = resolve_device(device)
        set_threads(threads)
        tune_cpu_allocator()  # reuse freed activation buffers: ~7-14% faster CNN steps on a CPU
        if dev.type == "cuda":  # cuDNN times its algorithms once per shape and keeps the best
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(spec["seed"])
        self.perm_gen = torch.Generator().manual_seed(spec["seed"])
        self.precision = spec.get("precision", "fp32")
        self.execution = ex = (execution or Execution()).on(
            dev, model_entry(spec["model"]).channels_last)
        model = build_model(spec["model"], **spec["arch"]).to(dev)
        self.model = model.to(memory_format=torch.channels_last) if ex.channels_last else model
        self.optimizer = make_optimizer(spec, self.model.parameters(), dev,
                                        capturable=ex.cuda_graphs)
        self.x_train, self.y_train = self._images(data.train.images), data.train.labels.to(dev)
        self.x_val, self.y_val = self._images(data.val.images), data.val.labels.to(dev)
        self.n, self.batch_size = len(self.x_train), spec["batch_size"]
        if self.batch_size > self.n:
            raise RunError(f"batch size {self.batch_size} is larger than the training split "
                           f"({self.n} images); lower batch_size or enlarge the split")
        self.steps = self.n // self.batch_size
        # The module the training steps call (compiled: the same parameters and buffers);
        # evaluation, checkpoints and the diagnostic use self.model itself.
        self.step_model = compiled(self.model) if ex.compile else self.model
        self.runner = step_runner(self.step_model, self.optimizer, self.x_train, self.y_train,
                                  self.batch_size, self.precision, ex)
        self.diverged_above = DIVERGED_FACTOR * math.log(max(len(data.classes), 2))

    def _images(self, images: Tensor) -> Tensor:
        return normalize(images, self.device, self.execution.channels_last)

    def restore(self, state: RunState) -> None:
        """Continue from a checkpoint: weights, optimizer moments and random streams."""
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        _set_capturable(self.optimizer, self.execution.cuda_graphs)
        # Generator states must be CPU byte tensors; the checkpoint was loaded onto the
        # run's device (map_location), which moves them to the GPU on CUDA and MPS.
        rng = {k: v.cpu() if isinstance(v, Tensor) else v for k, v in state.rng.items()}
        torch.set_rng_state(rng["torch"])
        self.perm_gen.set_state(rng["perm"])
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        if self.device.type == "mps" and "mps" in rng:
            torch.mps.set_rng_state(rng["mps"])

    def snapshot(self, state: RunState) -> RunState:
        """``state`` with the live weights, optimizer and random streams filled in."""
        state.model, state.optimizer = self.model.state_dict(), self.optimizer.state_dict()
        state.rng = {"torch": torch.get_rng_state(), "perm": self.perm_gen.get_state()}
        if self.device.type == "cuda":
            state.rng["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.device.type == "mps":
            state.rng["mps"] = torch.mps.get_rng_state()
        return state

    def epoch(self, epoch: int, show_bar: bool) -> tuple[dict, float]:
        """Train one epoch and validate; returns (history row, seconds of training).

        A diverged epoch (``diverged``) skips validation: its row has no val_* keys.
        """
        t0 = time.perf_counter()
        self.model.train()
        perm = torch.randperm(self.n, generator=self.perm_gen).to(self.device)
        bar = _bar(self.steps, f"epoch {epoch}/{self.spec['epochs']}", show_bar)
        loss_sum, correct = self.runner.epoch(perm, on_step=bar.update if bar else None)
        if bar is not None:
            bar.close()
        row = {"epoch": epoch, "train_loss": loss_sum.item() / self.steps,
               "train_acc": correct.item() / (self.steps * self.batch_size)}
        t_train = time.perf_counter() - t0
        if not self.diverged(row["train_loss"]):
            row["val_loss"], row["val_acc"] = evaluate(self.model, self.x_val, self.y_val,
                                                       self.precision)
        row["seconds"] = time.perf_counter() - t0
        return row, t_train

    def diverged(self, train_loss: float) -> bool:
        """Non-finite, or above DIVERGED_FACTOR x the loss of a uniform guess."""
        return not math.isfinite(train_loss) or train_loss > self.diverged_above

    def bn_reestimated_val_acc(self) -> float | None:
        """Validation accuracy of the current weights with BatchNorm's statistics
        re-estimated on the training images, Dropout off (a diagnostic beside the study's
        eval-mode accuracy; see layers.reestimated_copy); None without BatchNorm."""
        with autocast(self.device, self.precision):
            twin = reestimated_copy(self.model, self.x_train, BN_REESTIMATE_BATCH)
        if twin is None:
            return None
        return evaluate(twin, self.x_val, self.y_val, self.precision)[1]

    def final_metrics(self, state: RunState, diverged: dict | None) -> dict:
        """metrics.json's content: the best epoch's figures, its test accuracy, provenance."""
        history, best, dev = state.history, state.best, self.device
        metrics: dict[str, Any] = {
            "best_epoch": None, "train_acc": None, "train_loss": None, "val_acc": None,
            "val_loss": None, "test_acc": None, "test_loss": None,
            "best_train_acc": max((r["train_acc"] for r in history), default=None),
            "best_val_acc": max((r["val_acc"] for r in history), default=None),
            "val_acc_bn_reestimated": None,
        }
        if best["state"] is not None:
            self.model.load_state_dict(best["state"])
            test_loss, test_acc = evaluate(self.model, self.data.test.images.to(dev),
                                           self.data.test.labels.to(dev), self.precision,
                                           transform=self._images)
            row = history[best["epoch"] - 1]
            metrics.update(best_epoch=best["epoch"], train_acc=row["train_acc"],
                           train_loss=row["train_loss"], val_acc=row["val_acc"],
                           val_loss=row["val_loss"], test_acc=test_acc, test_loss=test_loss,
                           val_acc_bn_reestimated=self.bn_reestimated_val_acc())
        images = self.steps * self.batch_size * len(history)
        metrics.update({
            "epochs_completed": len(history),
            "diverged": diverged is not None,
            "diverged_epoch": diverged["epoch"] if diverged else None,
            # JSON has no inf/nan: a non-finite loss is kept as its text ("nan", "inf")
            "diverged_train_loss": (_json_float(diverged["train_loss"]) if diverged
                                    else None),
            "n_params": count_parameters(self.model),
            "n_train": len(self.data.train.labels), "n_val": len(self.data.val.labels),
            "n_test": len(self.data.test.labels),
            "seconds": round(state.seconds, 3),
            "images_per_second": round(images / state.train_seconds, 1)
            if state.train_seconds > 0 else None,
            "device": device_name(dev),
            "threads": torch.get_num_threads(),
            "cpu": cpu_model(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda if dev.type == "cuda" else None,
            "git_commit": git_commit(),
            "data_checksum": self.data.checksum,
            "precision": self.precision,
            **self.execution.as_metrics(),
            # CUDA graphs asked for but failed to capture: the steps ran eagerly.
            "cuda_graphs_failed": self.runner.graphs_failed,
        })
        if self.runner.graphs_failed:
            metrics["cuda_graphs"] = False
        return metrics


def _set_capturable(optimizer: torch.optim.Optimizer, capturable: bool) -> None:
    """Make a restored optimizer capturable (or not) as this process needs, whatever the
    checkpoint's process used: ``load_state_dict`` brings back the saved groups' flags, so
    a run checkpointed without CUDA graphs would fail its capture on resume. Capturable
    Adam keeps its step counts on the parameters' device as float32."""
    for group in optimizer.param_groups:
        if "capturable" not in group:  # SGD has no such flag
            continue
        group["capturable"] = capturable
        if capturable:
            for p in group["params"]:
                state = optimizer.state.get(p, {})
                if isinstance(state.get("step"), Tensor):
                    state["step"] = state["step"].to(device=p.device, dtype=torch.float32)


def _claim(run: RunDir, spec: dict, force: bool, data: Splits | None) -> dict | None:
    """Make ``run`` hold ``spec``; returns the metrics when the run completed before.

    A completed run is never trained again: when Snakemake deleted its outputs (to rerun
    the job after a rebuilt data cache, a killed controller or --forcerun), they are
    restored from the run's record. Only ``force``, or data whose checksum differs from the
    one the run was trained on, trains it again, and only once the data is known to be
    usable: nothing is deleted before that.
    """
    old_spec = run.read_spec()
    if old_spec is not None and old_spec != spec and not force:
        raise RunError(f"{run.path} holds a run with a different spec; choose another folder "
                       "or pass --force to discard it")
    if force:
        _usable(run, spec, data, "--force retrains it")
        run.clear()
    elif (recorded := run.recorded_metrics(spec)) is not None:
        trained_on = recorded.get("data_checksum")
        if data is not None and trained_on not in (None, data.checksum):
            _usable(run, spec, data, "its data changed")
            log.warning("run %s was trained on data with checksum %s, but the data now has "
                        "checksum %s: training it again", run.name, trained_on, data.checksum)
            run.clear()
        elif run.is_complete and run.outputs_complete() and _readable(run):
            log.info("run %s is complete; not training it again (--force retrains)", run.name)
            return run.read_metrics()
        else:
            log.info("run %s completed earlier; restoring its outputs from %s instead of "
                     "training it again (--force retrains)", run.name, run.record.path)
            return run.restore_record()
    elif run.is_complete and run.outputs_complete():
        # Completed before records existed, or brought back from another machine without
        # its weights (cifarlab unbundle --runs-only): all the pipeline needs of it.
        log.info("run %s is complete%s; not training it again (--force retrains)", run.name,
                 "" if run.best_path.exists() else " (its results came without weights)")
        run.write_record()
        run.remove_checkpoint()  # of an unfinished run the completed one replaced
        return run.read_metrics()
    run.write_spec(spec)
    return None


def _usable(run: RunDir, spec: dict, data: Splits | None, why: str) -> None:
    """Refuse, before anything is deleted, to retrain without usable data."""
    if data is None:
        raise RunError(f"run {run.name}: {why}, which needs the data cache (--data "
                       "results/data/cifar10.npz); nothing was changed")
    _check_data(spec, data)


def _readable(run: RunDir) -> bool:
    try:
        run.read_metrics()
    except RunFileError:
        return False  # a damaged metrics.json: restored from the record instead
    return True


def train_run(
    spec: dict,
    data: Splits | None,
    out_dir: str | Path,
    *,
    device: str = "auto",
    threads: int | None = None,
    force: bool = False,
    execution: Execution | None = None,
    progress: bool | None = None,
    stop_after: int | None = None,
    checkpoint_seconds: float = 0.0,
) -> dict | None:
    """Train one run to completion (or resume it) and return its metrics.

    ``data`` may be None when the run completed before (its outputs are restored from its
    record). ``checkpoint_seconds``: the resumable checkpoint is written after an epoch
    once this many seconds have passed since the last one (0: after every epoch); a job
    killed in between resumes from the last one written, losing at most that much
    training. ``stop_after`` ends this call after that many epochs in total have completed,
    leaving a resumable checkpoint (used to test interruption); it returns None then.
    """
    run = RunDir(out_dir)
    done = _claim(run, spec, force, data)
    if done is not None:
        return done
    if data is None:
        raise RunError(f"run {run.name} has no completed record to restore its outputs from; "
                       "give the data cache (--data results/data/cifar10.npz) to train it")
    _check_data(spec, data)
    t = Trainer(spec, data, device=device, threads=threads, execution=execution)
    state = run.load_state(map_location=t.device)
    if state is not None and state.data_checksum not in (None, data.checksum):
        log.warning("run %s: its checkpoint was trained on data with checksum %s, but the "
                    "data now has checksum %s: starting again from epoch 1", run.name,
                    state.data_checksum, data.checksum)
        run.remove_checkpoint()
        state = None
    if state is None:
        state = RunState(started=datetime.now(UTC).isoformat(timespec="seconds"),
                         data_checksum=data.checksum)
    else:
        t.restore(state)
        log.info("resuming %s after epoch %d of %d", run.name, state.epochs_done,
                 spec["epochs"])

    show_bar = sys.stderr.isatty() if progress is None else progress
    log.info("training %s on %s (%d threads): %d params, %d train / %d val images, "
             "%d epochs of %d steps", run.name, t.device, torch.get_num_threads(),
             count_parameters(t.model), t.n, len(t.x_val), spec["epochs"], t.steps)
    diverged = None
    last_saved = time.monotonic()
    for epoch in range(state.epochs_done + 1, spec["epochs"] + 1):
        row, t_train = t.epoch(epoch, show_bar)
        if "val_acc" not in row:
            diverged = row
            state.seconds += row["seconds"]
            log.warning("run %s diverged in epoch %d (train loss %s; the bound is %.2f, %g x "
                        "the loss of a uniform guess); stopping it", run.name, epoch,
                        row["train_loss"], t.diverged_above, DIVERGED_FACTOR)
            break
        _record(state, row, t_train, t.model)
        log.info("epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  "
                 "(%.1fs, %.0f img/s)", epoch, spec["epochs"], row["train_loss"],
                 row["train_acc"], row["val_loss"], row["val_acc"], row["seconds"],
                 t.steps * t.batch_size / t_train)
        stopping = stop_after is not None and stop_after <= epoch < spec["epochs"]
        if stopping or time.monotonic() - last_saved >= checkpoint_seconds:
            # ~40 MB for the study's networks (weights and AdamW's two moments), against
            # epochs of 1-2 s on a GPU: train.checkpoint_seconds spaces them out there.
            run.save_state(t.snapshot(state))
            last_saved = time.monotonic()
        run.write_history(state.history)
        if stopping:
            log.info("stopping after epoch %d as asked; rerun to resume", epoch)
            return None

    run.write_history(state.history)
    metrics = t.final_metrics(state, diverged)
    metrics["started"] = state.started
    metrics["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    # A run that diverged in its first epoch has no best state: keep the (non-finite) last
    # weights for inspection.
    run.save_best(state.best["state"] if state.best["state"] is not None
                  else t.model.state_dict())
    run.save_first_layer(spec)  # what the figures need of the weights (portable)
    run.finish(metrics)
    return metrics


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def _record(state: RunState, row: dict, t_train: float, model: nn.Module) -> None:
    """Add a completed epoch to ``state``; keep a copy of the weights if it is the best."""
    dt = row["seconds"]
    state.seconds += dt
    state.train_seconds += t_train
    state.history.append({**row, "seconds": round(dt, 3)})
    if row["val_acc"] > state.best["val_acc"]:
        state.best = {"epoch": row["epoch"], "val_acc": row["val_acc"],
                      "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def _bar(total: int, desc: str, show: bool):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, unit="step")
