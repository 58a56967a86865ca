"""A read-only view of the study's tables, shared by the figures and the report.

``StudyTables.load(results/<profile>/tables)`` reads every table ``aggregate`` wrote once. The
figures and every report section take their numbers from it through the same lookups
(``baseline``, ``effect``, ``point_runs``, ``experiment_table``), so the two never
disagree on which run is a model's baseline or which rows make an effect. Nothing that
holds a ``StudyTables`` modifies it: the lookups return filtered copies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import pandas as pd

from . import published
from .experiments import Experiment, experiments_from_config
from .models import display_name, model_order

__all__ = ["StudyTables", "Finding", "find_effect", "read_optional"]


def read_optional(path: Path, missing_ok: bool = False) -> pd.DataFrame:
    """A table that may legitimately be empty (e.g. no experiment defines an effect), or,
    with ``missing_ok``, absent (a table added after older tables were aggregated)."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except FileNotFoundError:
        if missing_ok:
            return pd.DataFrame()
        raise


def _effect_rows(table: pd.DataFrame, key: tuple[str, str, str, str]) -> pd.DataFrame:
    """The rows of an effects table (effects.csv, effects_by_epoch.csv) with effect id
    (experiment, model, a, b)."""
    if table.empty:
        return table
    exp, model, a, b = key
    return table[(table["experiment"] == exp) & (table["model"] == model)
                 & (table["a"].astype(str) == a) & (table["b"].astype(str) == b)]


def find_effect(effects: pd.DataFrame, key: tuple[str, str, str, str]) -> pd.Series | None:
    """The effects row of id (experiment, model, a, b), or None when it was not measured."""
    m = _effect_rows(effects, key)
    return None if m.empty else m.iloc[0]


@dataclass(frozen=True, eq=False)  # it holds a pd.Series: no elementwise ==, no hash
class Finding:
    """One of the study's findings as this run measured it.

    ``key`` is the effect id (experiment, model, a, b) of ``effect``, the effects.csv row;
    ``expect`` the study's direction of a - b ("better" or "worse"); ``reproduced`` whether
    the run's verdict (and, for "the smallest value is the worst", its worst point) agrees.
    """

    name: str
    key: tuple[str, str, str, str]
    expect: str
    effect: pd.Series
    reproduced: bool
    versus: str = ""  # what a sweep's smallest value was compared with, e.g. "vs 100"


@dataclass(frozen=True)
class StudyTables:
    """Every table of one aggregation (see aggregate.py for their columns)."""

    root: Path
    runs: pd.DataFrame
    points: pd.DataFrame
    effects: pd.DataFrame
    published: pd.DataFrame
    plan: Mapping[str, dict]
    experiment_tables: Mapping[str, pd.DataFrame]
    experiments_config: Mapping[str, dict]
    experiments: Mapping[str, Experiment]
    effects_by_epoch: pd.DataFrame = field(default_factory=pd.DataFrame)

    @classmethod
    def load(cls, root: str | Path) -> StudyTables:
        """Read the tables in ``root`` (results/<profile>/tables)."""
        root = Path(root)
        config = json.loads((root / "experiments.json").read_text())
        experiment_tables = {
            p.stem.removeprefix("experiment_"): pd.read_csv(p, dtype={"label": str})
            for p in sorted(root.glob("experiment_*.csv"))}
        return cls(
            root=root,
            runs=pd.read_csv(root / "runs.csv"),
            points=pd.read_csv(root / "points.csv", dtype={"label": str}),
            effects=read_optional(root / "effects.csv"),
            published=read_optional(root / "published.csv"),
            plan=MappingProxyType(json.loads((root / "plan.json").read_text())),
            experiment_tables=MappingProxyType(experiment_tables),
            experiments_config=MappingProxyType(config),
            experiments=MappingProxyType(experiments_from_config(config)),
            effects_by_epoch=read_optional(root / "effects_by_epoch.csv", missing_ok=True),
        )

    @property
    def models(self) -> list[str]:
        """The runs' models in the registry's order."""
        return model_order(self.runs["model"])

    @property
    def n_seeds(self) -> int:
        """Number of distinct seeds over all runs."""
        return int(self.runs["seed"].nunique())

    def seeds_per_experiment(self) -> dict[str, int]:
        """experiment -> its seeds per grid point (the most any of its points has)."""
        return {name: int(t["n_seeds"].max()) for name, t in self.experiment_tables.items()
                if not t.empty}

    def spec(self, run_id: str) -> dict:
        """The canonical spec of a run of the plan."""
        return self.plan[run_id]["spec"]

    def baseline(self, model: str) -> pd.DataFrame:
        """The model's baseline runs (one per seed); when no experiment holds the baseline,
        the model's best run by validation accuracy (its first run when none has one)."""
        r = self.runs
        b = r[(r["model"] == model) & r["baseline"]]
        if b.empty:
            b = r[r["model"] == model].nlargest(1, "val_acc")
        return b if not b.empty else r[r["model"] == model].head(1)  # every run diverged

    def effect(self, key: tuple[str, str, str, str]) -> pd.Series | None:
        """The effect of id (experiment, model, a, b), or None when not measured."""
        return find_effect(self.effects, key)

    def effects_of(self, experiment: str, contrasts: bool = False) -> pd.DataFrame:
        """An experiment's within-model effects (or its between-model ones)."""
        e = self.effects
        if e.empty:
            return e
        between = e["a_model"].astype(str) != e["b_model"].astype(str)
        return e[(e["experiment"] == experiment) & (between if contrasts else ~between)]

    def contrasts(self) -> pd.DataFrame:
        """Every between-model effect (a_model differs from b_model)."""
        e = self.effects
        if e.empty:
            return e
        return e[e["a_model"].astype(str) != e["b_model"].astype(str)]

    def experiment_table(self, name: str) -> pd.DataFrame:
        """experiment_<name>.csv: one row per (model, point) with intervals."""
        return self.experiment_tables[name]

    def models_of(self, name: str) -> list[str]:
        """The models that ran in experiment ``name`` (none when it did not run)."""
        t = self.experiment_tables.get(name)
        return [] if t is None else model_order(t["model"])

    def point_runs(self, experiment: str, model: str) -> list[tuple[str, list[str], dict]]:
        """(label, run ids over seeds, first row) for each point, in config order."""
        p = self.points
        sub = p[(p["experiment"] == experiment) & (p["model"] == model)]
        return [(label, list(g["run_id"]), g.iloc[0].to_dict())
                for label, g in sub.sort_values("point_index").groupby("label", sort=False)]

    def sweep_extremes(self, name: str, model: str) -> tuple[pd.Series, pd.Series, pd.Series]:
        """(smallest value, worst, best) rows of a numeric sweep's table for ``model``, by
        mean test accuracy."""
        t = self.experiment_table(name)
        t = t[t["model"] == model]
        return (t.loc[pd.to_numeric(t["value"]).idxmin()],
                t.loc[t["test_acc_mean"].idxmin()], t.loc[t["test_acc_mean"].idxmax()])

    def findings(self) -> list[Finding]:
        """The study's findings this run measured, in the study's order: each of
        ``published.FINDINGS`` with an effect here, then "the smallest value is the worst"
        of each ``published.SMALLEST_IS_WORST`` sweep, per model."""
        out = []
        for name, key, expect in published.FINDINGS:
            e = self.effect(key)
            if e is not None:
                out.append(Finding(name, key, expect, e, e["verdict"] == expect))
        for sweep in published.SMALLEST_IS_WORST:
            exp = self.experiments.get(sweep)
            if exp is None or sweep not in self.experiment_tables:
                continue
            eff = self.effects_of(sweep)
            for m in self.models_of(sweep):
                smallest, worst, _best = self.sweep_extremes(sweep, m)
                row = eff[(eff["model"] == m) & (eff["a"].astype(str) == str(smallest["label"]))]
                if row.empty:
                    continue
                r = row.iloc[0]
                out.append(Finding(
                    f"{exp.axis} {smallest['label']} is the worst ({display_name(m)})",
                    (sweep, m, str(r["a"]), str(r["b"])), "worse", r,
                    worst["label"] == smallest["label"] and r["verdict"] == "worse",
                    versus=f"vs {r['b']}"))
        return out

    def effect_by_epoch(self, key: tuple[str, str, str, str]) -> pd.DataFrame:
        """The effect of id ``key`` after each epoch (effects_by_epoch.csv), by epoch; empty
        when it was not measured or the tables predate that table."""
        m = _effect_rows(self.effects_by_epoch, key)
        return m if m.empty else m.sort_values("epoch").reset_index(drop=True)
