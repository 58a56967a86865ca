"""One run's folder: the only module that knows its file names and formats.

A run folder (``results/runs/<run id>/``) holds::

    spec.yaml       the canonical spec as run
    history.csv     one row per completed epoch (HISTORY_COLUMNS)
    metrics.json    written last: its presence means the run is complete
    best.pt         state dict of the best-validation epoch's model
    first_layer.pt  the first-layer units the feature figure draws, from best.pt (float16
                    images, at most 64 small filters or 32 image-sized units: ~200 KB for
                    the MLP instead of best.pt's 13 MB), for models that register a first
                    layer
    checkpoint.pt   the resumable RunState after the last completed epoch (removed when done)
    record/         the completed run's record: spec.yaml, history.csv, best.pt,
                    first_layer.pt and metrics.json as they were when training finished

Snakemake's outputs are metrics.json and history.csv; everything downstream (tables,
figures, report) reads only spec.yaml, history.csv, metrics.json and first_layer.pt, the
*portable* files. A run folder holding just those (brought back from a GPU machine by
``cifarlab bundle``, without weights) is complete: the pipeline neither trains it again
nor needs its weights. It gets a record like any completed run (``write_record``, also
done by the planner), without the weights it does not have.

The record is not a Snakemake output, so it survives what Snakemake deletes before
rerunning a job (a rebuilt data cache, ``--rerun-incomplete`` after a killed controller,
``--forcerun``): ``train_run`` restores the outputs from it in seconds instead of training
again. Its files are hard links to the outputs where the file system allows (no extra
space), else copies.

Training, aggregation, figures, the report and the Snakemake rules go through ``RunDir``;
no other module names these files. Every write is atomic (temporary file + rename), so
a killed job or a full disk leaves the previous version of a file intact.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

__all__ = ["RunDir", "RunState", "RunFileError", "HISTORY_COLUMNS", "FILES"]

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")

# Role -> file name inside a run folder. The Snakemake rules take their paths from here.
FILES = {"spec": "spec.yaml", "history": "history.csv", "metrics": "metrics.json",
         "best": "best.pt", "first_layer": "first_layer.pt", "checkpoint": "checkpoint.pt"}
# The completed run's record (a subfolder) and the outputs it keeps; metrics.json last,
# because its presence marks the record complete. A run brought back without weights has
# no best.pt, a model without a registered first layer no first_layer.pt: each is kept
# where the run has it; the REQUIRED ones always.
RECORD = "record"
RECORDED = ("spec", "history", "best", "first_layer", "metrics")
REQUIRED = ("spec", "history", "metrics")


class RunFileError(RuntimeError):
    """A file of a run folder cannot be read; the message names the file and the fix."""


@dataclass
class RunState:
    """Everything needed to continue a run after its last completed epoch.

    ``best`` is ``{"epoch", "val_acc", "state"}`` with ``state`` the best epoch's model
    state dict (None before the first completed epoch). ``rng`` holds the global torch
    generator, the epoch-permutation generator and, on CUDA or MPS, the device generator.
    """

    model: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "val_acc": -1.0,
                                                          "state": None})
    seconds: float = 0.0
    train_seconds: float = 0.0
    started: str | None = None
    rng: dict[str, Any] = field(default_factory=dict)
    data_checksum: str | None = None  # the data the epochs so far were trained on

    @property
    def epochs_done(self) -> int:
        """Number of completed epochs."""
        return len(self.history)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's on-disk form (plain containers and tensors: weights_only-safe)."""
        return {"model": self.model, "optimizer": self.optimizer, "history": self.history,
                "best": self.best, "seconds": self.seconds,
                "train_seconds": self.train_seconds, "started": self.started, "rng": self.rng,
                "data_checksum": self.data_checksum}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        """Inverse of ``to_dict``; a checkpoint missing a key is an error naming the key."""
        required = ("model", "optimizer", "history", "best", "seconds", "train_seconds", "rng")
        missing = [k for k in required if k not in d]
        if missing:
            raise KeyError(f"missing {', '.join(missing)}")
        return cls(model=d["model"], optimizer=d["optimizer"], history=d["history"],
                   best=d["best"], seconds=d["seconds"], train_seconds=d["train_seconds"],
                   started=d.get("started"), rng=d["rng"],
                   data_checksum=d.get("data_checksum"))


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through ``write(tmp)`` and a rename: readers never see a partial file.

    ENOSPC becomes a RunFileError that says the disk is full and that the previous
    version of the file is intact.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if _is_disk_full(exc):
            raise RunFileError(f"no space left on device while writing {path}; the previous "
                               "version of the file is intact. Free space and rerun: the run "
                               "resumes from its last checkpoint") from exc
        raise


def _is_disk_full(exc: BaseException) -> bool:
    # torch.save reports a full disk as a RuntimeError ("unexpected pos ...") whose cause
    # chain may not carry errno, so the message is checked too.
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(seen, RuntimeError) and ("unexpected pos" in str(seen)
                                               or "No space left" in str(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _first_layer_payload(weights: torch.Tensor) -> dict[str, Any]:
    """first_layer.pt's content for weights (units, 3, H, W): the units the figure draws."""
    from .models import shown_units

    n, _, h, w = weights.shape
    return {"weights": weights[:shown_units(n, h, w)].detach().to("cpu", torch.float16)
            .clone(), "units": n}  # clone: a saved view would carry the whole layer


def _link_or_copy(src: Path, dest: Path) -> None:
    """``dest`` becomes a hard link to ``src`` (a copy where links are not possible)."""
    if dest.exists() and os.path.samefile(src, dest):
        return  # linked already (os.replace onto the same file would leave tmp behind)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:  # another file system, or one without hard links
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


class RunDir:
    """The folder of one run: its paths and the load/save of each of its files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        """The folder's name: the run id."""
        return self.path.name

    @staticmethod
    def files(root: str) -> dict[str, str]:
        """Role -> path under ``root`` as strings (``root`` may hold wildcards: Snakemake)."""
        return {role: f"{root}/{name}" for role, name in FILES.items()}

    # ------------------------------------------------------------------ paths
    @property
    def spec_path(self) -> Path:
        """spec.yaml: the canonical spec as run."""
        return self.path / FILES["spec"]

    @property
    def history_path(self) -> Path:
        """history.csv: one row per completed epoch."""
        return self.path / FILES["history"]

    @property
    def metrics_path(self) -> Path:
        """metrics.json: written last; its presence means the run is complete."""
        return self.path / FILES["metrics"]

    @property
    def best_path(self) -> Path:
        """best.pt: the best-validation epoch's state dict."""
        return self.path / FILES["best"]

    @property
    def checkpoint_path(self) -> Path:
        """checkpoint.pt: the resumable state (exists only while the run is unfinished)."""
        return self.path / FILES["checkpoint"]

    @property
    def first_layer_path(self) -> Path:
        """first_layer.pt: the first-layer units the feature figure draws."""
        return self.path / FILES["first_layer"]

    def portable_files(self) -> list[Path]:
        """The run's results without its weights (spec, history, metrics, first layer),
        those that exist: what a bundle brings back from a remote machine (the weights are
        13 MB a run), and all the pipeline needs of a completed run."""
        return [p for p in (self.spec_path, self.history_path, self.first_layer_path,
                            self.metrics_path) if p.exists()]

    @property
    def is_complete(self) -> bool:
        """True when metrics.json exists (it is written after every other file)."""
        return self.metrics_path.exists()

    def clear(self) -> None:
        """Delete every run file and the record (keeps the folder and anything else in it)."""
        for name in FILES.values():
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.path / RECORD, ignore_errors=True)

    # ------------------------------------------------------------------ record
    @property
    def record(self) -> RunDir:
        """The record folder, itself laid out as a run folder."""
        return RunDir(self.path / RECORD)

    def recorded_metrics(self, spec: dict) -> dict | None:
        """The record's metrics when it is complete and was trained with ``spec``, else None.

        Reads two small files (spec.yaml and metrics.json), so the planner can afford it.
        """
        rec = self.record
        if not rec.metrics_path.exists():
            return None
        try:
            if rec.read_spec() != spec:
                return None
            return rec.read_metrics()
        except RunFileError:
            return None

    def finish(self, metrics: dict) -> None:
        """Complete a run whose history and best.pt are written: the record first, then
        metrics.json (the run's completion marker), then the checkpoint goes.

        In this order a job killed at any point leaves either a resumable checkpoint or a
        complete record, never a completed run that would have to be trained again.
        """
        rec = self.record
        rec.path.mkdir(parents=True, exist_ok=True)
        rec.metrics_path.unlink(missing_ok=True)  # incomplete until metrics.json is back
        for role in self._recorded_roles(self.path):
            if role == "metrics":  # written below, last
                continue
            _link_or_copy(self.path / FILES[role], rec.path / FILES[role])
        rec.write_metrics(metrics)
        self.write_metrics(metrics)
        self.remove_checkpoint()

    def write_record(self) -> None:
        """Record a run that completed without one (its outputs are whole): trained before
        records existed, or brought back without weights from another machine.

        Links only: the outputs keep their times, so nothing downstream is redone.
        """
        rec = self.record
        rec.path.mkdir(parents=True, exist_ok=True)
        rec.metrics_path.unlink(missing_ok=True)
        for role in self._recorded_roles(self.path):  # metrics.json last: the marker
            _link_or_copy(self.path / FILES[role], rec.path / FILES[role])

    @staticmethod
    def _recorded_roles(folder: Path) -> list[str]:
        """The RECORDED roles ``folder`` holds (the REQUIRED ones always), in order."""
        return [r for r in RECORDED if r in REQUIRED or (folder / FILES[r]).exists()]

    def outputs_complete(self) -> bool:
        """True when the run's outputs are whole: spec, history and metrics, and best.pt
        and first_layer.pt wherever its record holds them."""
        return all((self.path / FILES[r]).exists()
                   for r in self._recorded_roles(self.record.path))

    def restore_record(self) -> dict:
        """Rewrite the outputs from the record (metrics.json last); returns the metrics."""
        rec = self.record
        for role in self._recorded_roles(rec.path):
            src = rec.path / FILES[role]
            atomic_write(self.path / FILES[role], lambda p, s=src: shutil.copyfile(s, p))
        self.remove_checkpoint()
        return self.read_metrics()

    # ------------------------------------------------------------------ spec
    def read_spec(self) -> dict | None:
        """The spec the folder was trained with, or None when it has none yet."""
        if not self.spec_path.exists():
            return None
        try:
            spec = yaml.safe_load(self.spec_path.read_text())
        except yaml.YAMLError as exc:
            raise RunFileError(f"{self.spec_path} is not valid YAML ({exc}); delete the run "
                               "folder to train the run again") from None
        if not isinstance(spec, dict):
            raise RunFileError(f"{self.spec_path} does not hold a mapping; delete the run "
                               "folder to train the run again")
        return spec

    def write_spec(self, spec: dict) -> None:
        """Write spec.yaml (keys in the spec's order)."""
        atomic_write(self.spec_path,
                     lambda p: p.write_text(yaml.safe_dump(spec, sort_keys=False)))

    # ------------------------------------------------------------------ history
    def write_history(self, history: list[dict]) -> None:
        """Write history.csv from rows holding every HISTORY_COLUMNS key."""
        lines = [",".join(HISTORY_COLUMNS)]
        # str() of a float is its shortest repr: it round-trips exactly through the CSV.
        lines += [",".join(str(row[c]) for c in HISTORY_COLUMNS) for row in history]
        text = "\n".join(lines) + "\n"
        atomic_write(self.history_path, lambda p: p.write_text(text))

    def read_history(self) -> pd.DataFrame:
        """history.csv as a DataFrame with HISTORY_COLUMNS (empty when no epoch finished)."""
        import pandas as pd

        if not self.history_path.exists():
            raise RunFileError(f"{self.history_path} is missing: run {self.name} has not "
                               "completed an epoch; run the pipeline to train it")
        try:
            h = pd.read_csv(self.history_path)
        except pd.errors.EmptyDataError:
            h = pd.DataFrame(columns=list(HISTORY_COLUMNS))
        missing = [c for c in HISTORY_COLUMNS if c not in h.columns]
        if missing:
            raise RunFileError(f"{self.history_path} lacks the columns {missing}; delete the "
                               "run folder to train the run again")
        return h

    # ------------------------------------------------------------------ metrics
    def read_metrics(self) -> dict:
        """metrics.json; a missing file means the run has not finished."""
        if not self.metrics_path.exists():
            raise FileNotFoundError(f"{self.metrics_path} is missing: run {self.name} has not "
                                    "finished; run the pipeline (snakemake) to train it")
        try:
            return json.loads(self.metrics_path.read_text())
        except json.JSONDecodeError as exc:
            raise RunFileError(f"{self.metrics_path} is not valid JSON ({exc}); delete it: "
                               "the run's outputs are restored from its record, or, for a run "
                               "without one, it trains again") from None

    def write_metrics(self, metrics: dict) -> None:
        """Write metrics.json: the run's completion marker, so it is written last."""
        text = json.dumps(metrics, indent=2) + "\n"
        atomic_write(self.metrics_path, lambda p: p.write_text(text))

    # ------------------------------------------------------------------ weights
    def save_best(self, state_dict: dict[str, Any]) -> None:
        """Write best.pt (a state dict)."""
        atomic_write(self.best_path, lambda p: torch.save(state_dict, p))

    def load_best(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """best.pt as a state dict (tensors only: nothing in the file is executed)."""
        fix = "delete the run folder and rerun the pipeline to train it again"
        if self.is_complete and not self.best_path.exists():
            fix = ("the run was brought back from another machine without its weights, which "
                   f"stayed there; its results and first layer are here. To have the weights "
                   f"here, {fix}")
        return self._load(self.best_path, map_location, fix)

    def load_model(self, spec: dict | None = None) -> nn.Module:
        """The run's model built from its spec (default: spec.yaml) with best.pt's weights."""
        from .models import build_model

        spec = spec if spec is not None else self.read_spec()
        if spec is None:
            raise RunFileError(f"{self.spec_path} is missing: cannot tell which model "
                               f"{self.best_path} holds")
        model = build_model(spec["model"], **spec["arch"])
        model.load_state_dict(self.load_best())
        return model

    # ------------------------------------------------------------------ first layer
    def _first_layer_from_best(self, spec: dict | None) -> dict[str, Any] | None:
        """first_layer.pt's content drawn from best.pt, through the model's registry entry;
        None for a model that registers no first layer."""
        from .models import MODELS

        spec = spec if spec is not None else self.read_spec()
        entry = MODELS.get(spec["model"]) if spec else None
        if entry is None or entry.first_layer is None:
            return None
        return _first_layer_payload(entry.first_layer(self.load_model(spec)))

    def save_first_layer(self, spec: dict | None = None) -> bool:
        """Write first_layer.pt from best.pt: the first ``shown_units`` units of the first
        layer as float16 images (units, 3, H, W) and the layer's number of units. Returns
        False, writing nothing, for a model that registers no first layer."""
        payload = self._first_layer_from_best(spec)
        if payload is None:
            return False
        atomic_write(self.first_layer_path, lambda p: torch.save(payload, p))
        return True

    def make_portable(self, spec: dict | None = None) -> None:
        """Give a completed run trained before first_layer.pt existed that file (from
        best.pt), so it can travel without its weights."""
        if self.is_complete and self.best_path.exists() and \
                not self.first_layer_path.exists():
            self.save_first_layer(spec)

    def load_first_layer(self, spec: dict | None = None) -> tuple[torch.Tensor, int]:
        """The first-layer units the figure draws, (units, 3, H, W) float32, and the layer's
        number of units: from first_layer.pt, or from best.pt for a run trained before
        first_layer.pt existed."""
        if not self.first_layer_path.exists() and self.best_path.exists():
            payload = self._first_layer_from_best(spec)
            if payload is None:
                raise RunFileError(f"run {self.name}'s model registers no first layer "
                                   "(register_model(..., first_layer=...)) to draw")
        else:
            fix = ("delete the run folder and rerun the pipeline to train it again (its "
                   "first layer is drawn from best.pt or first_layer.pt, and it has neither)"
                   if not self.best_path.exists() else
                   "delete it: it is drawn again from best.pt")
            payload = self._load(self.first_layer_path, "cpu", fix)
            if not (isinstance(payload, dict) and isinstance(payload.get("weights"),
                                                             torch.Tensor)
                    and "units" in payload):
                raise RunFileError(f"{self.first_layer_path} is not a first-layer file "
                                   f"(weights and units); {fix}")
        return payload["weights"].float(), int(payload["units"])

    # ------------------------------------------------------------------ checkpoint
    def save_state(self, state: RunState) -> None:
        """Write checkpoint.pt; the previous one stays intact until the new one is whole."""
        payload = state.to_dict()
        atomic_write(self.checkpoint_path, lambda p: torch.save(payload, p))

    def load_state(self, map_location: str | torch.device = "cpu") -> RunState | None:
        """The resumable state, or None when the run has no checkpoint."""
        if not self.checkpoint_path.exists():
            return None
        fix = ("delete it to train the run again from epoch 1 (the epochs it holds are lost)")
        raw = self._load(self.checkpoint_path, map_location, fix)
        try:
            return RunState.from_dict(raw)
        except (KeyError, TypeError, AttributeError) as exc:
            raise RunFileError(f"{self.checkpoint_path} is not a cifarlab checkpoint "
                               f"({exc}); {fix}") from None

    def remove_checkpoint(self) -> None:
        """Delete checkpoint.pt (once metrics.json is written)."""
        self.checkpoint_path.unlink(missing_ok=True)

    @staticmethod
    def _load(path: Path, map_location: str | torch.device, fix: str) -> Any:
        # weights_only=True: a checkpoint is data; a pickle that asks to run code is refused,
        # and the message must not repeat torch's advice to turn that protection off.
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            raise RunFileError(f"{path} holds objects other than tensors and plain containers "
                               f"and was refused unread (it may have been tampered with); "
                               f"{fix}. Do not load it with weights_only=False.") from None
        except (RuntimeError, OSError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, FileNotFoundError):
                raise RunFileError(f"{path} is missing; {fix}") from None
            raise RunFileError(f"{path} is truncated or corrupt ({type(exc).__name__}); "
                               f"{fix}") from None
