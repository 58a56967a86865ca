"""The report's sections as Markdown, computed from the tables: every number comes from data.

The report notebook (workflow/notebooks/report.ipynb) is a thin sequence of calls to
``Report`` methods; ``render_report`` executes it with papermill and converts it to
HTML and Markdown.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from datetime import datetime
from pathlib import Path

import pandas as pd

from . import published
from .aggregate import find_effect
from .experiments import Experiment, experiments_from_config
from .models import MODELS, display_name, model_order
from .stats import accuracy_interval

log = logging.getLogger("cifarlab.reporting")

def _pct(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}%"


def _pp(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:+.{digits}f} points"


def _ci(low: float, high: float) -> str:
    if low is None or math.isnan(low):
        return "no interval (one seed)"
    return f"95% CI [{low:.2f}, {high:.2f}]"


def md_table(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """A GitHub-style Markdown table (no extra dependency)."""
    def fmt(v) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, floatfmt)
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _read_optional(path: Path) -> pd.DataFrame:
    """A table that may legitimately be empty (e.g. no experiment defines an effect)."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


class Report:
    """Reads the tables once; each method returns one section's Markdown."""

    def __init__(self, tables: Path, figures: str = "figures", runs_dir: Path | None = None,
                 profile: str = "", config_files: str = "") -> None:
        self.tables = Path(tables)
        self.fig = figures
        self.runs_dir = runs_dir
        self.profile = profile
        self.config_files = config_files
        self.runs = pd.read_csv(self.tables / "runs.csv")
        self.points = pd.read_csv(self.tables / "points.csv", dtype={"label": str})
        self.effects = _read_optional(self.tables / "effects.csv")
        self.published = _read_optional(self.tables / "published.csv")
        self.plan = json.loads((self.tables / "plan.json").read_text())
        self.experiments = {p.stem.removeprefix("experiment_"): pd.read_csv(p, dtype={
            "label": str}) for p in sorted(self.tables.glob("experiment_*.csv"))}
        self.kinds: dict[str, Experiment] = experiments_from_config(
            json.loads((self.tables / "experiments.json").read_text()))
        self.models = model_order(self.runs["model"])
        self.n_seeds = int(self.runs["seed"].nunique())

    # ---------------------------------------------------------------- helpers
    def baseline(self, model: str) -> pd.DataFrame:
        b = self.runs[(self.runs["model"] == model) & self.runs["baseline"]]
        return b if not b.empty else self.runs[self.runs["model"] == model].nlargest(1, "val_acc")

    def effect(self, experiment: str, model: str, a: str, b: str) -> pd.Series | None:
        """The effect of id (experiment, model, a, b), or None when not measured."""
        return find_effect(self.effects, (experiment, model, a, b))

    def figure(self, name: str, caption: str) -> str:
        return f"![{caption}]({self.fig}/{name}.png)\n\n*{caption}*\n"

    def _effect_sentence(self, key: tuple[str, str, str, str], what: str) -> str:
        model = key[1]
        e = self.effect(*key)
        if e is None:
            return f"- {display_name(model)}: {what} was not measured by this configuration."
        v = e["verdict"]
        if v in ("better", "worse"):
            claim = f"{what} made test accuracy **{v}** by {abs(e['difference']):.2f} points"
        else:
            claim = (f"{what} changed test accuracy by {e['difference']:+.2f} points, which is "
                     f"**{v}**")
        return (f"- {display_name(model)}: {claim} ({_ci(e['low'], e['high'])}, "
                f"{e['interval']}).")

    # ---------------------------------------------------------------- sections
    def header(self) -> str:
        r = self.runs
        started = pd.to_datetime(r.get("started"), errors="coerce").min() \
            if "started" in r else None
        finished = pd.to_datetime(r.get("finished"), errors="coerce").max() \
            if "finished" in r else None
        wall = (finished - started).total_seconds() / 60 if started is not None and \
            finished is not None and not pd.isna(started) else math.nan
        devices = ", ".join(sorted(set(map(str, r["device"]))))
        commits = ", ".join(sorted(set(map(str, r.get("git_commit", pd.Series(["?"]))))))
        data = r["data.source"].iloc[0]
        checksum = r["data_checksum"].iloc[0] if "data_checksum" in r else "?"
        lines = [
            "# CIFAR-10 with MLPs and CNNs: hand-written BatchNorm and Dropout",
            "",
            f"- **Profile:** `{self.profile or 'unnamed'}` (config: `{self.config_files}`)",
            f"- **Data source:** `{data}` (checksum `{checksum}`)",
            f"- **Trained on:** {self._distinct('cpu')}; device(s): {devices}; torch "
            f"{self._distinct('torch')}; precision {self._distinct('precision')} "
            "(from the runs' metrics)",
            f"- **Code:** commit {commits}",
            f"- **Time:** {len(r)} runs; summed training time {r['seconds'].sum() / 60:.1f} min; "
            f"wall time from the first run's start to the last run's end "
            f"{wall:.1f} min",
            f"- **Rendered:** {datetime.now().astimezone().isoformat(timespec='seconds')}",
            "",
            "Every number and figure below was computed from this run's tables "
            "(`results/tables/`) by the report notebook; none was typed by hand.",
        ]
        if self.profile != "full":
            lines += ["", f"> This is the **{self.profile}** profile, a scaled-down study "
                      "(fewer images, epochs and/or narrower networks; see the settings below). "
                      "Its comparison with the published numbers compares a quick CPU profile "
                      "with a 100-epoch GPU run: agreement in direction is what to look for, "
                      "not equal numbers."]
        return "\n".join(lines)

    def _distinct(self, column: str) -> str:
        """Every distinct value of a provenance column of runs.csv, with its run count."""
        if column not in self.runs:
            return "not recorded"
        counts = self.runs[column].fillna("not recorded").astype(str).value_counts()
        if len(counts) == 1:
            return f"`{counts.index[0]}`"
        return ", ".join(f"`{v}` ({n} runs)" for v, n in sorted(counts.items()))

    def data_section(self) -> str:
        r = self.runs.iloc[0]
        n_test = int(r["n_test"])
        accs = self.runs["test_acc"] / 100
        se = [math.sqrt(a * (1 - a) / n_test) * 100 for a in (accs.min(), accs.max())]
        return "\n".join([
            "## Data and split",
            "",
            f"Training on {int(r['n_train']):,} images, model selection on {int(r['n_val']):,} "
            f"validation images (the checkpoint with the best validation accuracy is kept), "
            f"and the test accuracy of that checkpoint on {n_test:,} test images, which are "
            f"used for nothing else. Split method: `{r['data.method']}` (seed "
            f"{r['data.seed']}). Inputs are scaled as (x - 128) / 255; no augmentation.",
            "",
            f"With {n_test:,} test images the binomial standard error of one accuracy is "
            f"{se[0]:.2f}–{se[1]:.2f} points over the accuracies seen here "
            f"({accs.min() * 100:.1f}–{accs.max() * 100:.1f}%), so differences of about "
            f"{2 * max(se):.1f} points or less between single runs are within test-set noise. "
            f"Seeds per grid point: {self.n_seeds}"
            + (" (intervals over seeds use Student's t)." if self.n_seeds > 1 else
               " (with one seed, intervals are binomial and cover test-set sampling only)."),
        ])

    def hyperparameters(self) -> str:
        rows = []
        for m in self.models:
            b = self.baseline(m).iloc[0]
            spec = self.plan[b["run_id"]]["spec"]
            arch = ", ".join(f"{k}={v}" for k, v in spec["arch"].items())
            rows.append({"model": display_name(m), "architecture": arch,
                         "optimizer": spec["optimizer"],
                         "lr": spec["lr"], "weight decay": spec["weight_decay"],
                         "batch": spec["batch_size"], "epochs": spec["epochs"],
                         "parameters": f"{int(b['n_params']):,}"})
        note = ("The study does not name the MLP's optimizer; cifarlab uses AdamW for both "
                "models. A measurement made for this project on the shared JPEG copy of "
                "CIFAR-10 (not part of this run) found AdamW within about half a point of the "
                "published MLP numbers, while Adam with L2 weight decay 1e-3 underfits "
                "(about 43% train and 48% test accuracy).")
        return "## Hyperparameters of the baselines\n\n" + md_table(pd.DataFrame(rows), ".0e") \
            + "\n\n" + note

    def curves(self) -> str:
        out = ["## Training curves of the baselines", ""]
        for m in self.models:
            out.append(self.figure(f"curves_{m}", f"{display_name(m)}: loss and accuracy, training "
                                   "(dashed) and validation (solid)"))
        return "\n".join(out)

    def accuracy(self) -> str:
        rows = []
        for m in self.models:
            b = self.baseline(m)
            row = {"model": display_name(m), "seeds": len(b), "best epoch": b["best_epoch"].mean()}
            for col, name in (("train_acc", "train %"), ("val_acc", "val %"),
                              ("test_acc", "test %")):
                iv = accuracy_interval(list(b[col] / 100), int(b["n_test"].iloc[0])
                                       if col == "test_acc" else 0)
                row[name] = iv.mean * 100
                row[f"{name.split()[0]} 95% CI"] = (
                    "" if math.isnan(iv.low) else f"[{iv.low * 100:.2f}, {iv.high * 100:.2f}]")
            p = MODELS[m].published if m in MODELS else None
            row["published train / val / test %"] = (
                f"{p['train_acc']:.2f} / {p['val_acc']:.2f} / {p['test_acc']:.2f}" if p
                else "none (the study has no numbers for this model)")
            rows.append(row)
        text = ("## Accuracy of the best-validation checkpoint\n\nTrain accuracy is the "
                "training-mode accuracy averaged over the best epoch's batches, as the study "
                "reports it. Intervals: Student t over seeds (with one seed, binomial for the "
                "test accuracy only).\n\n" + md_table(pd.DataFrame(rows)))
        return text

    def model_contrast(self) -> str:
        """Each between-model effect an experiment defines (e.g. CNN - MLP at `full`)."""
        if self.effects.empty:
            return ""
        contrasts = self.effects[self.effects["model"].astype(str).str.contains("-")]
        out = []
        for _, e in contrasts.iterrows():
            a_model, b_model = str(e["model"]).split("-", 1)
            pa, pb = (int(self.baseline(m)["n_params"].iloc[0]) for m in (a_model, b_model))
            na, nb = display_name(a_model), display_name(b_model)
            ratio = max(pa, pb) / min(pa, pb)
            size = ("The models have similar sizes" if ratio < 1.25 else
                    f"The {na if pa > pb else nb} is {ratio:.1f} times larger")
            out += [f"## {na} vs {nb}", "",
                    f"{size}: the {na} has {pa:,} trainable parameters and the {nb} {pb:,} "
                    "(counted from the built models).", ""]
            if {a_model, b_model} == {"mlp", "cnn"}:
                out += ["The CNN shares each filter over all image positions and pools nearby "
                        "activations, so it can use the spatial structure the MLP throws away "
                        "when it flattens the image; the MLP spends its parameters on "
                        "connections to fixed pixel positions.", ""]
            out.append(f"Measured: {na} minus {nb} test accuracy at `{e['a']}` = "
                       f"{e['difference']:+.2f} points ({_ci(e['low'], e['high'])}): "
                       f"**{e['verdict']}**.")
        return "\n".join(out)

    def _models_of(self, exp: Experiment) -> list[str]:
        t = self.experiments.get(exp.name)
        return [] if t is None else model_order(t["model"])

    def _effects_of(self, exp: Experiment) -> pd.DataFrame:
        if self.effects.empty:
            return self.effects
        e = self.effects[(self.effects["experiment"] == exp.name)
                         & ~self.effects["model"].astype(str).str.contains("-")]
        return e

    def _effect_sentences(self, exp: Experiment) -> list[str]:
        return [self._effect_sentence((exp.name, r["model"], str(r["a"]), str(r["b"])),
                                      f"`{r['a']}` instead of `{r['b']}`")
                for _, r in self._effects_of(exp).iterrows()]

    def points_section(self, exp: Experiment) -> str:
        """Generic section of a named-points experiment: its effects, figures and table."""
        out = [f"## Experiment `{exp.name}` (named points)", "",
               f"Points: {', '.join(f'`{p}`' for p in exp.labels)}. Legends give (best train, "
               "best val, test at best val) accuracy in %.", ""]
        out += self._effect_sentences(exp)
        out.append("")
        out += [self.figure(f"{exp.name}_{m}", f"{display_name(m)}: {exp.name}")
                for m in self._models_of(exp)]
        out.append(md_table(self._exp_view(exp.name)))
        return "\n".join(out)

    def sweep_section(self, exp: Experiment) -> str:
        """Generic section of a sweep: best value on validation, effects, figures, table."""
        t = self.experiments[exp.name]
        ref = ("the value with the best mean validation accuracy" if exp.reference == "best"
               else f"{exp.axis} = {exp.reference}")
        out = [f"## Sweep `{exp.name}` over {exp.axis}", "",
               f"Values: {', '.join(exp.labels)}; each is compared with {ref}.", ""]
        for m in self._models_of(exp):
            tm = t[t["model"] == m]
            best = tm.loc[tm["val_acc_mean"].idxmax()]
            out.append(f"- {display_name(m)}: validation accuracy peaks at {exp.axis} = "
                       f"{best['label']} ({best['val_acc_mean']:.2f}%; test "
                       f"{best['test_acc_mean']:.2f}%).")
        out += self._effect_sentences(exp)
        out.append("")
        out += [self.figure(f"{exp.name}_{m}", f"{display_name(m)}: accuracy curves per "
                            f"{exp.axis}") for m in self._models_of(exp)]
        out.append(self.figure(f"{exp.name}_summary", f"Accuracy at the best-validation epoch "
                               f"against {exp.axis}"))
        out.append(md_table(self._exp_view(exp.name)))
        return "\n".join(out)

    def ablation(self, exp: Experiment) -> str:
        """The study's ablation: what BatchNorm and Dropout each add."""
        out = ["## The effect of BatchNorm and Dropout", "",
               "`full` is the baseline; `no_bn` removes BatchNorm; `no_dropout` sets p = 0. "
               "Legends give (best train, best val, test at best val) accuracy in %.", ""]
        models = self._models_of(exp)
        out += [self._effect_sentence((exp.name, m, "full", "no_bn"), "BatchNorm")
                for m in models]
        out += [self._effect_sentence((exp.name, m, "full", "no_dropout"), "Dropout")
                for m in models]
        out.append("")
        for m in models:
            out.append(self.figure(f"{exp.name}_{m}", f"{display_name(m)}: full vs no "
                                   "BatchNorm vs no Dropout"))
        out.append(md_table(self._exp_view(exp.name)))
        return "\n".join(out)

    def _exp_view(self, name: str) -> pd.DataFrame:
        t = self.experiments[name]
        view = pd.DataFrame({"model": t["model"].map(display_name),
                             "point": t["label"], "seeds": t["n_seeds"]})
        for col in ("train_acc", "val_acc", "test_acc"):
            view[f"{col.split('_')[0]} %"] = t[f"{col}_mean"]
        view["test 95% CI"] = [
            "" if math.isnan(lo) else f"[{lo:.2f}, {hi:.2f}]"
            for lo, hi in zip(t["test_acc_low"], t["test_acc_high"], strict=True)]
        view["best epoch"] = t["best_epoch_mean"]
        return view

    def dropout2d(self, exp: Experiment) -> str:
        """The study's element-wise vs channel-wise dropout comparison in the CNN."""
        out = ["## Dropout vs Dropout2d in the CNN", "",
               "Dropout2d drops whole feature maps instead of single activations; neighbouring "
               "activations of a feature map are strongly correlated, so element-wise dropout "
               "removes less information than its rate suggests.", ""]
        for m in self._models_of(exp):
            e = self.effect(exp.name, m, "dropout2d", "dropout")
            if e is not None:
                out.append(f"Measured ({display_name(m)}): Dropout2d minus Dropout test "
                           f"accuracy = {e['difference']:+.2f} points "
                           f"({_ci(e['low'], e['high'])}): **{e['verdict']}** (the study "
                           "found Dropout2d better).")
        out.append("")
        out += [self.figure(f"{exp.name}_{m}", f"{display_name(m)}: Dropout vs Dropout2d")
                for m in self._models_of(exp)]
        out.append(md_table(self._exp_view(exp.name)))
        return "\n".join(out)

    def _gap_sentence(self, exp: Experiment, model: str) -> str:
        t = self.experiments[exp.name]
        t = t[t["model"] == model].copy()
        t["p"] = t["value"].astype(float)
        t = t.sort_values("p")
        t["gap"] = t["train_acc_mean"] - t["val_acc_mean"]
        lo, hi = t.iloc[0], t.iloc[-1]
        best = t.loc[t["val_acc_mean"].idxmax()]
        corr = t["p"].corr(t["gap"], method="spearman")
        trend = "shrinks" if corr < -0.5 else ("grows" if corr > 0.5 else "shows no clear trend")
        return (f"- {display_name(model)}: the train-validation gap at the best epoch {trend} "
                f"as p rises (Spearman {corr:+.2f}): {lo['gap']:.1f} points at p={lo['p']:g}, "
                f"{hi['gap']:.1f} at p={hi['p']:g}. Validation accuracy peaks at "
                f"p={best['p']:g} ({best['val_acc_mean']:.2f}%; test "
                f"{best['test_acc_mean']:.2f}%), and p={hi['p']:g} reaches "
                f"{hi['val_acc_mean']:.2f}% validation accuracy.")

    def dropout_rate(self, exp: Experiment) -> str:
        """The study's dropout-rate sweep: the train-validation gap against p."""
        out = ["## Dropout rate", ""]
        models = self._models_of(exp)
        out += [self._gap_sentence(exp, m) for m in models]
        out.append("")
        for m in models:
            out.append(self.figure(f"{exp.name}_{m}", f"{display_name(m)}: accuracy curves per "
                                   "dropout rate"))
        out.append(self.figure(f"{exp.name}_summary", "Accuracy at the best-validation epoch "
                               "against the dropout rate"))
        out.append(md_table(self._exp_view(exp.name)))
        return "\n".join(out)

    def _smallest_worst(self, exp: Experiment, model: str) -> tuple[pd.Series, pd.Series,
                                                                     pd.Series]:
        """(smallest, worst, best) rows of a numeric sweep, by mean test accuracy."""
        tm = self.experiments[exp.name]
        tm = tm[tm["model"] == model]
        return (tm.loc[pd.to_numeric(tm["value"]).idxmin()],
                tm.loc[tm["test_acc_mean"].idxmin()], tm.loc[tm["test_acc_mean"].idxmax()])

    def batch_size(self, exp: Experiment) -> str:
        """The study's batch-size sweep: is the smallest batch the worst?"""
        out = ["## Batch size", ""]
        models = self._models_of(exp)
        for m in models:
            smallest, worst, best = self._smallest_worst(exp, m)
            is_worst = smallest["label"] == worst["label"]
            out.append(
                f"- {display_name(m)}: test accuracy ranges from {worst['test_acc_mean']:.2f}% "
                f"(batch {worst['label']}) to {best['test_acc_mean']:.2f}% (batch "
                f"{best['label']}); the smallest batch ({smallest['label']}) "
                + ("is the worst." if is_worst else
                   f"is not the worst here ({smallest['test_acc_mean']:.2f}%)."))
        out.append("")
        for m in models:
            out.append(self.figure(f"{exp.name}_{m}", f"{display_name(m)}: accuracy curves per "
                                   "batch size"))
        out.append(self.figure(f"{exp.name}_summary", "Accuracy against the batch size"))
        out.append(md_table(self._exp_view(exp.name)))
        return "\n".join(out)

    def experiment_sections(self) -> str:
        """One section per experiment, in config order: the one its ``section`` names, else
        its kind's generic section."""
        out = []
        for name, exp in self.kinds.items():
            if name not in self.experiments:
                continue
            section = exp.section or ("points" if exp.kind == "points" else "sweep")
            if section not in SECTIONS:
                raise ValueError(f"experiment {name!r} asks for report section {section!r}; "
                                 f"valid: {', '.join(SECTIONS)}")
            out.append(getattr(self, SECTIONS[section])(exp))
        return "\n\n".join(out)


    def loss_gap(self) -> str:
        out = ["## Why training and validation loss differ", ""]
        for m in self.models:
            rid = self.baseline(m)["run_id"].iloc[0]
            h = pd.read_csv(self.runs_dir / rid / "history.csv") if self.runs_dir else None
            if h is None or h.empty:
                continue
            first, last = h.iloc[0], h.iloc[-1]
            vmin = h.loc[h["val_loss"].idxmin()]
            vbest = h.loc[h["val_acc"].idxmax()]
            out.append(
                f"- {display_name(m)}: after epoch 1 the training loss is "
                f"{first['train_loss']:.3f} "
                f"and the validation loss {first['val_loss']:.3f}; after the last epoch "
                f"({int(last['epoch'])}) they are {last['train_loss']:.3f} and "
                f"{last['val_loss']:.3f}. Validation loss is lowest at epoch "
                f"{int(vmin['epoch'])} ({vmin['val_loss']:.3f}) while validation accuracy peaks "
                f"at epoch {int(vbest['epoch'])}.")
        out += ["",
                "Two things separate the curves. The training loss of an epoch is an average "
                "over the epoch's batches while the weights are still changing, and it is "
                "measured in training mode, with Dropout removing units and BatchNorm using "
                "batch statistics; the validation loss is measured once, after the epoch, in "
                "eval mode with every unit present. Early on this makes the training loss the "
                "higher one. Later the model fits details of the training images that do not "
                "carry over, so the training loss keeps falling while the validation loss "
                "levels off or rises: the sign to stop earlier, regularise more (higher dropout "
                "or weight decay), or keep the best-validation checkpoint as this pipeline does. "
                "When both losses stay close and high (large dropout rates), the model "
                "underfits and less regularisation is the remedy."]
        return "\n".join(out)

    def figures_of_features(self) -> str:
        out = ["## What the first layers learn", ""]
        for m in self.models:
            if m in MODELS and MODELS[m].first_layer is not None:
                out.append(self.figure(f"first_layer_{m}", f"{display_name(m)} first-layer "
                                       "weights (with and without Dropout where the grid has "
                                       "both)"))
        return "\n".join(out)

    def findings(self) -> str:
        """The study's findings, each with its numbers and a verdict from the intervals."""
        rows = []

        for finding, key, expect in published.FINDINGS:
            e = self.effect(*key)
            if e is None:
                continue
            got = e["verdict"]
            rows.append({"finding (study)": finding, "measured (points)": e["difference"],
                         "95% CI": _ci(e["low"], e["high"]), "verdict": got,
                         "status": "reproduced" if got == expect else "not reproduced"})
        for name in published.SMALLEST_IS_WORST:
            exp = self.kinds.get(name)
            if exp is None or name not in self.experiments:
                continue
            for m in self._models_of(exp):
                smallest, worst, _best = self._smallest_worst(exp, m)
                eff = self._effects_of(exp)
                row = eff[(eff["model"] == m) & (eff["a"].astype(str) == str(smallest["label"]))]
                if row.empty:
                    continue
                r = row.iloc[0]
                rows.append({"finding (study)": f"{exp.axis} {smallest['label']} is the worst "
                             f"({display_name(m)})", "measured (points)": r["difference"],
                             "95% CI": _ci(r["low"], r["high"]) + f" vs {r['b']}",
                             "verdict": r["verdict"],
                             "status": "reproduced" if worst["label"] == smallest["label"]
                             and r["verdict"] == "worse" else "not reproduced"})
        if not rows:
            return ""
        df = pd.DataFrame(rows)
        n_ok = int((df["status"] == "reproduced").sum())
        return ("## Findings: which of the study's claims this run reproduces\n\n"
                f"{n_ok} of {len(df)} findings reproduced. A finding counts as reproduced only "
                "when the 95% interval of the effect excludes zero in the study's direction; "
                "an interval that includes zero is reported as no detectable difference, "
                "never as an effect.\n\n" + md_table(df))

    def reproduction(self) -> str:
        if self.published.empty:
            return ""
        view = self.published[["quantity", "model", "published", "reproduced", "low", "high",
                                "difference", "verdict", "interval"]]
        return ("## Comparison with the published numbers\n\n"
                f"Published: {published.SOURCE}. Reproduced: profile `{self.profile}`. "
                "'reproduced' means the published value lies in the reproduced 95% interval; "
                "'higher'/'lower' say where the reproduction lies.\n\n" + md_table(view))

    def effects_section(self) -> str:
        if self.effects.empty:
            return ""
        view = self.effects[["effect", "model", "a", "b", "n_seeds", "difference", "low", "high",
                             "interval", "verdict"]]
        return "## All paired effects (test accuracy, points)\n\n" + md_table(view)

    def runs_section(self) -> str:
        cols = ["run_id", "experiments", "n_params", "best_epoch", "train_acc", "val_acc",
                "test_acc", "seconds", "diverged"]
        return "## Every run\n\n" + md_table(self.runs[cols])

    def training_flag(self) -> str:
        """Demonstrates .train() vs .eval() on the hand-written layers (computed now)."""
        from .layers import demonstrate_training_flag

        d = demonstrate_training_flag()
        return "\n".join([
            "## What `self.training` changes",
            "",
            "`model.train()` and `model.eval()` set `self.training` on every submodule; only "
            "BatchNorm and Dropout read it. Computed now on cifarlab's hand-written layers:",
            "",
            f"- BatchNorm1d in training mode normalises with the batch's own statistics: on a "
            f"batch with mean about 2 and sd about 3, the output has mean "
            f"{d['bn_train_mean']:+.3f} and sd {d['bn_train_std']:.3f}, and the running "
            f"estimates move towards the data (running mean {d['running_mean']:.2f}, running "
            f"variance {d['running_var']:.2f} after 21 batches).",
            f"- In eval mode it uses those running estimates only, so a batch of 8 is mapped "
            f"sample by sample (output mean {d['bn_eval_mean']:+.3f}), independent of the "
            "rest of the batch.",
            f"- Dropout(p=0.5) in training mode zeroes {d['dropout_zero_fraction']:.1%} of "
            f"10,000 ones and scales the survivors to {d['dropout_scale']:.1f}, keeping the "
            f"mean at {d['dropout_train_mean']:.3f}; in eval mode it returns the input "
            f"unchanged (mean {d['dropout_eval_mean']:.3f}).",
        ])

# Report sections an experiment can name with `section:` in the config -> Report method.
SECTIONS = {"points": "points_section", "sweep": "sweep_section", "ablation": "ablation",
            "dropout2d": "dropout2d", "dropout_rate": "dropout_rate",
            "batch_size": "batch_size"}


def render_report(notebook: Path, executed: Path, tables: Path, figures: Path, runs: Path,
                  out: Path, profile: str = "", config_files: str = "") -> None:
    """Execute the report notebook with papermill and write report.html / report.md."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter, MarkdownExporter

    out.mkdir(parents=True, exist_ok=True)
    executed.parent.mkdir(parents=True, exist_ok=True)
    fig_out = out / "figures"
    if fig_out.exists():
        shutil.rmtree(fig_out)
    fig_out.mkdir()
    for png in figures.glob("*.png"):  # per-run figures stay in results/figures/runs
        shutil.copy2(png, fig_out / png.name)
    papermill.execute_notebook(
        str(notebook), str(executed), kernel_name="python3", progress_bar=False,
        parameters={"tables": str(Path(tables).resolve()), "runs": str(Path(runs).resolve()),
                    "figures": "figures", "profile": profile, "config_files": config_files},
    )
    nb = nbformat.read(executed, as_version=4)
    html, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                           exclude_output_prompt=True).from_notebook_node(nb)
    (out / "report.html").write_text(html)
    md, _ = MarkdownExporter(exclude_input=True).from_notebook_node(nb)
    (out / "report.md").write_text(md)
    log.info("report written to %s", out)
