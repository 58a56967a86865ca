"""The benchmark's numbers: median-and-best statistics, the result rows and their files."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CSV_COLUMNS", "Stat", "summarize", "ratio", "Results"]

CSV_COLUMNS = ("section", "case", "metric", "median", "best", "n")


@dataclass(frozen=True)
class Stat:
    """Median and best of n repeats ("best" is the max for rates, the min for times)."""

    median: float
    best: float
    n: int


def summarize(samples: Iterable[float], higher_is_better: bool) -> Stat:
    """Median and best of the samples; raises on an empty sequence."""
    values = [float(v) for v in samples]
    if not values:
        raise ValueError("summarize needs at least one sample")
    best = max(values) if higher_is_better else min(values)
    return Stat(statistics.median(values), best, len(values))


def ratio(a: Stat, b: Stat) -> Stat:
    """a / b: median over median and best over best (n = the smaller n)."""
    return Stat(a.median / b.median, a.best / b.best, min(a.n, b.n))


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


# Rows the stdout table leaves out (bench.csv has everything).
_SHORT_SKIP = {("layers", "forward_ms"), ("layers", "backward_ms"), ("peak", "images_per_s"),
               ("peak", "forward_mflop_per_image")}


@dataclass
class Results:
    """Rows of (section, case, metric, Stat) plus the target checks."""

    rows: list[dict] = field(default_factory=list)
    targets: list[dict] = field(default_factory=list)

    def add(self, section: str, case: str, metric: str, stat: Stat) -> None:
        """Append one row."""
        self.rows.append({"section": section, "case": case, "metric": metric,
                          "median": stat.median, "best": stat.best, "n": stat.n})

    def get(self, section: str, case: str, metric: str) -> Stat | None:
        """The row's Stat, or None when that row was not measured."""
        for r in self.rows:
            if (r["section"], r["case"], r["metric"]) == (section, case, metric):
                return Stat(r["median"], r["best"], r["n"])
        return None

    def check(self, name: str, stat: Stat | None, op: str, threshold: float) -> None:
        """Record a target (on the median) if its measurement exists."""
        if stat is None:
            return
        met = stat.median <= threshold if op == "<=" else stat.median >= threshold
        self.targets.append({"target": name, "median": stat.median, "best": stat.best,
                             "op": op, "threshold": threshold, "met": bool(met)})

    def write(self, out: Path, meta: dict) -> None:
        """Write ``bench.csv`` (the rows) and ``bench.json`` (``meta``, rows and targets)."""
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "bench.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            w.writeheader()
            w.writerows(self.rows)
        (out / "bench.json").write_text(json.dumps(
            {**meta, "results": self.rows, "targets": self.targets}, indent=2) + "\n")

    def table(self, short: bool = True) -> str:
        """The rows as an aligned text table; ``short`` leaves out the raw per-implementation
        forward/backward times and derived rates (they stay in bench.csv)."""
        head = CSV_COLUMNS
        body = [(r["section"], r["case"], r["metric"], _fmt(r["median"]), _fmt(r["best"]),
                 str(r["n"])) for r in self.rows
                if not (short and (r["section"], r["metric"]) in _SHORT_SKIP)]
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(row, widths))) for row in [head, *body]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for t in self.targets:
            status = "met" if t["met"] else "MISSED"
            lines.append(f"target {status:<6}  {t['target']}: "
                         f"{_fmt(t['median'])} (best {_fmt(t['best'])}) {t['op']} "
                         f"{_fmt(t['threshold'])}")
        return "\n".join(lines)
