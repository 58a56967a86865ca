"""Where a profile's outputs go: the one owner of the pipeline's folder layout.

::

    results/runs/<run id>/           every run, shared by all profiles: the id is a hash of
                                     the run's settings and data, so two profiles that ask for
                                     the same run share it and different runs never collide
    results/data/<data key>/         the prepared data, one folder per data source identity
                                     (cifar10.npz, its manifest cifar10.json, cifar10.request)
    results/<profile>/tables/        the profile's tables, figures, executed notebook and
    results/<profile>/figures/       progress file; another profile never touches them
    results/<profile>/report/        the rendered report, unless ``report_dir`` names another
                                     folder (the committed quick report: report/quick)
    logs/<profile>/                  the profile's aggregate, figures and report logs
    logs/train/<run id>.log          a run's training log (shared, like the run)

Layouts before this one wrote ``results/tables``, ``results/figures`` and one data cache
``results/data/cifar10.npz``. Their runs are kept as they are (same folder, same ids);
``migrate_legacy_cache`` moves the old cache into its keyed folder when it holds the
configured data, so nothing is prepared or trained again. The old tables and figures are
simply no longer written: delete them when you like.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Layout", "PROFILE_PATTERN", "data_key", "migrate_legacy_cache"]

# A profile names folders: letters, digits, '.', '_' and '-' only (the schema says so too).
PROFILE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
DEFAULT_PROFILE = "full"
CACHE_NAME = "cifar10.npz"


def data_key(identity: str) -> str:
    """The data folder's name for a data identity (``official:c58f...`` ->
    ``official-c58f...``): the same data shares one cache, other data gets its own."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", identity).strip("-.") or "data"


@dataclass(frozen=True)
class Layout:
    """The paths of one profile's outputs, relative to the working directory."""

    profile: str = DEFAULT_PROFILE
    data_identity: str = "official:unverified"
    report_override: str | None = None
    root: str = "results"

    @classmethod
    def from_config(cls, config: dict) -> Layout:
        """The layout a (normalized) config asks for."""
        from .study import data_identity

        return cls(profile=str(config.get("profile") or DEFAULT_PROFILE),
                   data_identity=data_identity(config.get("data", {})),
                   report_override=config.get("report_dir") or None)

    @property
    def runs(self) -> str:
        """Every run's folder: shared by all profiles (ids are content hashes)."""
        return f"{self.root}/runs"

    @property
    def data_dir(self) -> str:
        """The folder of the prepared data for this profile's data source."""
        return f"{self.root}/data/{data_key(self.data_identity)}"

    @property
    def data_cache(self) -> str:
        """The prepared data (uint8 .npz) that every run of the profile loads."""
        return f"{self.data_dir}/{CACHE_NAME}"

    @property
    def outputs(self) -> str:
        """The profile's own folder under results/."""
        return f"{self.root}/{self.profile}"

    @property
    def tables(self) -> str:
        """The profile's tables (CSV, Parquet, JSON)."""
        return f"{self.outputs}/tables"

    @property
    def figures(self) -> str:
        """The profile's figures (PNG and SVG; per-run figures in runs/)."""
        return f"{self.outputs}/figures"

    @property
    def notebook(self) -> str:
        """The executed report notebook."""
        return f"{self.outputs}/report.ipynb"

    @property
    def progress(self) -> str:
        """The plan's progress file that finishing training jobs read (see progress.py)."""
        return f"{self.outputs}/progress.json"

    @property
    def worker_socket(self) -> str:
        """The local training worker's socket (cifarlab.worker), while a run is going."""
        return f"{self.outputs}/worker.sock"

    @property
    def report(self) -> str:
        """The rendered report's folder: ``report_dir`` when set, else results/<profile>/report."""
        return self.report_override or f"{self.outputs}/report"

    @property
    def logs(self) -> str:
        """The profile's own logs (aggregate, figures, report)."""
        return f"logs/{self.profile}"

    @property
    def train_log(self) -> str:
        """A run's training log, as a pattern with ``{run}``: shared, like the run."""
        return "logs/train/{run}.log"

    @property
    def prepare_log(self) -> str:
        """The data preparation's log, one per data folder."""
        return f"logs/data/{data_key(self.data_identity)}.log"


def migrate_legacy_cache(layout: Layout, root: str | Path = ".") -> bool:
    """Move the single data cache of older layouts (results/data/cifar10.npz and the files
    beside it) into ``layout``'s keyed folder when it holds the data the config asks for.

    Returns True when it moved something. A legacy cache of other data stays where it is
    (it is no longer used; the configured data is prepared into its own folder).
    """
    from .data import manifest_path, read_manifest

    root = Path(root)
    legacy = root / layout.root / "data" / CACHE_NAME
    target = root / layout.data_cache
    if not legacy.exists() or target.exists():
        return False
    meta = read_manifest(legacy)
    if meta is None or meta.get("identity") != layout.data_identity:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    # The manifest last: a cache without one is prepared again, never trusted half-moved.
    request = legacy.with_suffix(".request")
    if request.exists():
        os.replace(request, target.with_suffix(".request"))
    os.replace(legacy, target)
    if manifest_path(legacy).exists():  # else the planner writes it from the cache
        os.replace(manifest_path(legacy), manifest_path(target))
    return True
