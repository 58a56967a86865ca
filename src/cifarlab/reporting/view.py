"""What every report section reads: the tables and where the report's figures and runs are."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..experiments import Experiment
from ..tables import StudyTables
from .format import figure

__all__ = ["ReportView", "EXPERIMENT_SECTIONS", "experiment_section"]


@dataclass(frozen=True)
class ReportView:
    """One shared, read-only input of every section function.

    ``figures`` is the figures' folder relative to the rendered report; ``runs_dir`` the
    run folders (for sections that read a run's history); ``profile`` and
    ``config_files`` name the configuration the tables came from; ``notes`` is its
    ``profile_notes`` (how the profile was sized).
    """

    tables: StudyTables
    figures: str = "figures"
    runs_dir: Path | None = None
    profile: str = ""
    config_files: str = ""
    notes: str = ""

    @classmethod
    def load(cls, tables: str | Path, figures: str = "figures", runs_dir: Path | None = None,
             profile: str = "", config_files: str = "", notes: str = "") -> ReportView:
        """Read the tables in ``tables`` once."""
        return cls(StudyTables.load(tables), figures, runs_dir, profile, config_files, notes)

    def figure(self, name: str, caption: str) -> str:
        """Markdown of the figure ``name`` with its caption."""
        return figure(self.figures, name, caption)


# Report sections an experiment can ask for by name (`section:` in the config), plus each
# kind's generic one ("points", "sweep"). Filled by the @experiment_section decorators.
EXPERIMENT_SECTIONS: dict[str, Callable[[ReportView, Experiment], str]] = {}


def experiment_section(name: str) -> Callable:
    """Register ``f(view, experiment) -> Markdown`` as the report section ``name``."""
    def register(f: Callable[[ReportView, Experiment], str]):
        if name in EXPERIMENT_SECTIONS:
            raise ValueError(f"report section {name!r} is registered twice")
        EXPERIMENT_SECTIONS[name] = f
        return f
    return register
