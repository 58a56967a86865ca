"""Every figure of the study, drawn from the tables and the runs' histories and first layers.

With several seeds, curves show the mean with a 95% band (Student t over seeds) and
summaries show error bars; with one seed the test accuracy's error bar is its binomial
interval. Nothing here holds a result: all numbers come from ``results/``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import multiprocessing
import sys
import textwrap
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from .models import MODELS, display_name  # noqa: E402
from .pipeline import FINDINGS_FIGURE, RUN_FIGURE_FORMATS, figure_names  # noqa: E402
from .reporting.format import first_layer_caption, readable_title  # noqa: E402
from .rundir import RunDir  # noqa: E402
from .tables import Finding, StudyTables  # noqa: E402

log = logging.getLogger("cifarlab.plots")

plt.rcParams.update({"figure.dpi": 110, "font.size": 10, "axes.grid": True,
                     "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False})
SPLIT_STYLE = {"train": "--", "val": "-"}


class Histories:
    """Per-run histories, loaded once."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir
        self._cache: dict[str, pd.DataFrame] = {}

    def __getitem__(self, rid: str) -> pd.DataFrame:
        if rid not in self._cache:
            self._cache[rid] = RunDir(self.runs_dir / rid).read_history()
        return self._cache[rid]

    def band(self, rids: list[str], column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Epochs, mean and 95% half-width over runs (seeds); 0 width for one run."""
        frames = [self[r].set_index("epoch")[column] for r in rids]
        table = pd.concat(frames, axis=1)
        mean = table.mean(axis=1).to_numpy()
        n = table.count(axis=1).to_numpy()
        sd = table.std(axis=1, ddof=1).fillna(0).to_numpy()
        t = np.array([stats.t.ppf(0.975, k - 1) if k > 1 else 0.0 for k in n])
        return table.index.to_numpy(), mean, t * sd / np.sqrt(np.maximum(n, 1))


def _save(fig: plt.Figure, out: Path, name: str,
          formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    for ax in fig.axes:
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    paths = []
    for ext in formats:
        p = out / f"{name}.{ext}"
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, bbox_inches="tight", dpi=130 if ext == "png" else None)
        paths.append(p)
    plt.close(fig)
    return paths


def _line(ax, h: Histories, rids, column, label, color, style="-") -> None:
    x, mean, half = h.band(rids, column)
    scale = 100.0 if column.endswith("acc") else 1.0
    ax.plot(x, mean * scale, style, color=color, label=label, lw=1.6)
    if np.any(half > 0):
        ax.fill_between(x, (mean - half) * scale, (mean + half) * scale, color=color, alpha=0.18,
                        lw=0)


def _legend_triplet(points: pd.DataFrame, rids: list[str]) -> str:
    g = points.drop_duplicates("run_id").set_index("run_id").loc[rids]
    return (f"({g['best_train_acc'].mean():.1f}, {g['best_val_acc'].mean():.1f}, "
            f"{g['test_acc'].mean():.1f})")


def _fmt_title(model: str) -> str:
    return display_name(model)


def with_notes(title: str, *notes: str) -> str:
    """``title`` with its notes in one pair of parentheses, "; "-separated.

    Appending each note in its own parentheses gave titles such as "... (best val at
    epoch 4) (mean and 95% band over 3 seeds)"; one group reads as one remark.
    """
    notes = tuple(n for n in notes if n)
    return f"{title} ({'; '.join(notes)})" if notes else title


def fig_curves(h: Histories, rids: list[str], title: str, note: str = "") -> plt.Figure:
    """Loss and accuracy curves of ``rids`` (mean and 95% band over seeds); ``note`` joins
    the band's description in the title's one parenthetical remark."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "acc"), strict=True):
        for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
            _line(ax, h, rids, f"{split}_{metric}", {"train": "training", "val": "validation"}[
                split], color, SPLIT_STYLE[split])
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy loss" if metric == "loss" else "accuracy (%)")
        ax.legend()
    n = len(rids)
    fig.suptitle(with_notes(title, note, f"mean and 95% band over {n} seeds" if n > 1 else ""))
    return fig


def fig_compare(h: Histories, points: pd.DataFrame, groups: list[tuple[str, list[str], dict]],
                title: str, legend_title: str) -> plt.Figure:
    """Accuracy (and loss) curves of several points; legend: (best train, best val, test)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.cm.tab10.colors
    for i, (label, rids, _row) in enumerate(groups):
        c = colors[i % len(colors)]
        trip = _legend_triplet(points, rids)
        _line(axes[0], h, rids, "train_acc", f"{label} train", c, "--")
        _line(axes[0], h, rids, "val_acc", f"{label} val {trip}", c, "-")
        _line(axes[1], h, rids, "train_loss", f"{label} train", c, "--")
        _line(axes[1], h, rids, "val_loss", f"{label} val", c, "-")
    axes[0].set_ylabel("accuracy (%)")
    axes[1].set_ylabel("cross-entropy loss")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=8, title=legend_title, title_fontsize=8)
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def fig_sweep_curves(h: Histories, groups, title: str, key: str) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    cmap = plt.cm.viridis
    for i, (label, rids, _row) in enumerate(groups):
        c = cmap(i / max(len(groups) - 1, 1))
        _line(axes[0], h, rids, "train_acc", f"{key}={label}", c)
        _line(axes[1], h, rids, "val_acc", f"{key}={label}", c)
    axes[0].set_title("training accuracy (train mode, averaged over the epoch)")
    axes[1].set_title("validation accuracy (eval mode)")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend(fontsize=8, ncol=2)
    fig.suptitle(title)
    return fig


def fig_sweep_summary(table: pd.DataFrame, title: str, xlabel: str, log_x: bool) -> plt.Figure:
    """Accuracy at the best-validation epoch against a sweep's value, one panel a model."""
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        t = table[table["model"] == model].sort_values("point_index")
        x = pd.to_numeric(t["value"], errors="coerce")
        if x.isna().any():
            x = np.arange(len(t))
            ax.set_xticks(x, t["label"])
        for col, color, name in (("train_acc", "tab:blue", "train (at best val)"),
                                 ("val_acc", "tab:orange", "validation (best)"),
                                 ("test_acc", "tab:green", "test (at best val)")):
            y = t[f"{col}_mean"].to_numpy()
            low, high = t[f"{col}_low"].to_numpy(), t[f"{col}_high"].to_numpy()
            err = np.vstack([y - low, high - y])
            err = np.where(np.isfinite(err), err, 0)
            ax.errorbar(x, y, yerr=err, marker="o", color=color, label=name, capsize=3, lw=1.5)
        if log_x:
            ax.set_xscale("log")
            ax.set_xticks(list(x), [str(v) for v in t["label"]])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(_fmt_title(model))
        ax.legend(fontsize=8)
    fig.suptitle(with_notes(title, "error bars: 95% interval"))
    return fig


def fig_findings_over_training(panels: list[tuple[Finding, pd.DataFrame]]) -> plt.Figure:
    """One panel per finding: its paired effect (points) on the best validation accuracy so
    far against the epoch, the mean over seeds with its 95% band; the side of zero the
    study found is shaded."""
    if not panels:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "None of the study's findings has runs on both sides here",
                ha="center", va="center")
        return fig
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (finding, t) in zip(axes.flat, panels, strict=False):
        x, y = t["epoch"].to_numpy(), t["difference"].to_numpy()
        low, high = t["low"].to_numpy(dtype=float), t["high"].to_numpy(dtype=float)
        ax.plot(x, y, marker=".", color="tab:blue", lw=1.5)
        ok = np.isfinite(low) & np.isfinite(high)
        ax.fill_between(x[ok], low[ok], high[ok], color="tab:blue", alpha=0.2, lw=0)
        ax.axhline(0.0, color="black", lw=0.8)
        span = max(1.0, float(np.nanmax(np.abs(np.concatenate([y, low[ok], high[ok]])))))
        ax.set_ylim(-1.1 * span, 1.1 * span)
        # The study's side of zero: a - b > 0 for "better", < 0 for "worse".
        side = (0.0, 1.1 * span) if finding.expect == "better" else (-1.1 * span, 0.0)
        ax.axhspan(*side, color="tab:green", alpha=0.08, lw=0)
        ax.set_title("\n".join(textwrap.wrap(finding.name, 34)), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("effect (points)")
    fig.suptitle(with_notes("The study's findings over training: paired effect on the best "
                            "validation accuracy so far", "band: 95% interval; shaded: the "
                            "study's direction"))
    fig.tight_layout()
    return fig


def _unit_images(w: torch.Tensor, n: int) -> np.ndarray:
    """(units, 3, H, W) -> (n, H, W, 3) in [0, 1], each unit scaled by its own range."""
    w = w[:n].float()
    lo = w.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = w.flatten(1).max(1).values.view(-1, 1, 1, 1)
    return ((w - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()


def fig_weights(panels: list[tuple[str, np.ndarray]], title: str, cols: int = 8) -> plt.Figure:
    """Grids of first-layer unit images, one panel per (name, images) pair."""
    rows = math.ceil(max(len(p[1]) for p in panels) / cols)
    fig, axes = plt.subplots(rows, cols * len(panels) + len(panels) - 1,
                             figsize=(1.1 * (cols * len(panels) + 1), 1.1 * rows + 0.8),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for p, (name, imgs) in enumerate(panels):
        offset = p * (cols + 1)
        for i, img in enumerate(imgs):
            ax = axes[i // cols, offset + i % cols]
            ax.imshow(img, interpolation="nearest")
        axes[0, offset + cols // 2].set_title(name, fontsize=10)
    fig.suptitle(title)
    return fig


def _draw_runs(runs_dir: Path, rids: list[str], out: Path) -> list[Path]:
    h = Histories(runs_dir)
    written: list[Path] = []
    for rid in rids:
        written += _save(fig_curves(h, [rid], f"run {rid}"), out, f"runs/{rid}",
                         RUN_FIGURE_FORMATS)
    return written


class _RunFigures:
    """Each run's learning-curve figure, drawn by ``jobs`` processes while the caller draws
    the study's figures: one figure per run is most of the figures (69 for the quick
    profile, ~0.26 s each on one core), and nothing else runs while the figures rule does.
    With one job they are drawn here, first. ``result()`` waits and returns the files."""

    def __init__(self, runs_dir: Path, rids: list[str], out: Path, jobs: int) -> None:
        # Forked workers inherit the imported modules (no second `import torch`); only on
        # Linux: macOS forbids forking a process that has loaded some of its frameworks.
        # They are forked here, before this process runs any torch code (the first-layer
        # figures do): a process that forks must not have started OpenMP threads.
        jobs = max(1, min(jobs, len(rids))) if sys.platform == "linux" else 1
        self._written: list[Path] = []
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        if jobs == 1:
            self._written = _draw_runs(runs_dir, rids, out)
            return
        chunks = [rids[i::jobs] for i in range(jobs)]
        self._pool = concurrent.futures.ProcessPoolExecutor(
            jobs, mp_context=multiprocessing.get_context("fork"))
        self._futures = [self._pool.submit(_draw_runs, runs_dir, c, out) for c in chunks]

    def result(self) -> list[Path]:
        if self._pool is not None:
            with self._pool:
                self._written = [p for f in self._futures for p in f.result()]
            self._pool = None
        return self._written

    def cancel(self) -> None:
        """Stop waiting for the workers (after an error in the caller's figures)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def make_figures(tables: Path, runs_dir: Path, out: Path, jobs: int = 1) -> list[Path]:
    """Draw every figure `figure_names(plan)` promises; returns the files written.
    ``jobs``: processes that draw the per-run figures (more than one: while this process
    draws the study's figures)."""
    t = StudyTables.load(tables)
    h = Histories(runs_dir)
    expected = figure_names(dict(t.plan), dict(t.experiments_config))
    if FINDINGS_FIGURE in expected and not (Path(tables) / "effects_by_epoch.csv").exists():
        raise FileNotFoundError(
            f"{Path(tables) / 'effects_by_epoch.csv'} is missing: these tables predate it; "
            "aggregate the runs again (`cifarlab aggregate`, or snakemake, which does)")
    # The per-run figures in worker processes, while this one draws the study's figures.
    per_run = _RunFigures(runs_dir, sorted(t.plan), out, jobs)
    try:
        written = _study_figures(t, h, runs_dir, out, expected)
    except BaseException:
        per_run.cancel()
        raise
    written = per_run.result() + written
    missing = [n for n in expected if not (out / f"{n}.png").exists()]
    if missing:
        raise RuntimeError(f"figures promised by the plan were not drawn: {missing}")
    log.info("wrote %d figure files to %s", len(written), out)
    return written


def _study_figures(t: StudyTables, h: Histories, runs_dir: Path, out: Path,
                   expected: list[str]) -> list[Path]:
    """The study's figures (every one but the per-run curves); returns the files written."""
    runs, points = t.runs, t.points
    written: list[Path] = []
    models = t.models

    def baseline(model: str) -> list[str]:
        return list(t.baseline(model)["run_id"])

    for model in models:
        rids = baseline(model)
        r = runs.set_index("run_id").loc[rids[0]]
        best = ("no completed epoch" if pd.isna(r["best_epoch"])
                else f"best val at epoch {int(r['best_epoch'])}")
        written += _save(fig_curves(h, rids, f"{_fmt_title(model)} baseline: loss and "
                                    "accuracy", best),
                         out, f"curves_{model}")
    for name, exp in t.experiments.items():
        if name not in set(points["experiment"]):
            continue
        for model in exp.models:
            groups = t.point_runs(name, model)
            if not groups:
                continue
            # A readable title, not the config key ("Dropout rate", not "dropout_rate").
            if exp.kind == "points":
                fig = fig_compare(h, points, groups,
                                  f"{readable_title(name)}: {_fmt_title(model)}",
                                  "(best train, best val, test at best val) %")
            else:
                fig = fig_sweep_curves(h, groups, f"{readable_title(name)} sweep: "
                                       f"{_fmt_title(model)}", exp.axis)
            written += _save(fig, out, f"{name}_{model}")
        if exp.kind == "sweep":
            fig = fig_sweep_summary(t.experiment_table(name), f"{readable_title(name)}: "
                                    "accuracy at the best-validation epoch", exp.axis,
                                    exp.scale == "log")
            written += _save(fig, out, f"{name}_summary")

    by_id = {rid: e["spec"] for rid, e in t.plan.items()}
    for model in models:
        entry = MODELS[model]
        if entry.first_layer is None:
            continue
        rid = baseline(model)[0]
        spec = by_id[rid]
        # The units the figure draws (never more than the layer has: a 16-filter CNN
        # shows 16, and the title says so), from first_layer.pt: no weights are read.
        w, n_units = RunDir(runs_dir / rid).load_first_layer(spec)
        units = w.shape[0]
        p = spec["arch"].get("dropout", 0.0)
        panels = [(f"with Dropout (p={p:g})" if p > 0 else "baseline", _unit_images(w, units))]
        # The same run without dropout, when the grid has it: what dropout changes. The
        # canonical spec of p = 0 also resets dropout2d (study.canonical_spec).
        twin = {**spec, "arch": {**spec["arch"], "dropout": 0.0}}
        if "dropout2d" in twin["arch"]:
            twin["arch"]["dropout2d"] = False
        other = next((r for r, s in by_id.items() if p > 0 and s == twin), None)
        if other is not None:
            panels.append(("without Dropout", _unit_images(
                RunDir(runs_dir / other).load_first_layer(by_id[other])[0], units)))
        title = first_layer_caption(entry.display, n_units, w.shape[2], w.shape[3])
        written += _save(fig_weights(panels, title), out, f"first_layer_{model}")
    if FINDINGS_FIGURE in expected:
        panels = [(f, t.effect_by_epoch(f.key)) for f in t.findings()]
        written += _save(fig_findings_over_training([(f, e) for f, e in panels if not e.empty]),
                         out, FINDINGS_FIGURE)
    return written
