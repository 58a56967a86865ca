"""The report's sections: each a function of the shared ``ReportView`` returning Markdown.

Every number comes from the tables (or, for ``loss_gap``, the baselines' histories); none
is typed here. Experiment sections are looked up in ``EXPERIMENT_SECTIONS``: an
experiment's ``section:`` names one, else its kind's generic one (``points``/``sweep``).
"""

from __future__ import annotations

import math
from datetime import datetime

import pandas as pd
from scipy.stats import norm as norm_dist
from scipy.stats import t as t_dist

from .. import published
from ..experiments import Experiment
from ..models import MODELS, build_model, display_name
from ..pipeline import FINDINGS_FIGURE
from ..rundir import RunDir
from ..stats import accuracy_interval, effect_se, margin_in_se
from .format import ci, compact, first_layer_caption, md_table, num, readable_title
from .view import EXPERIMENT_SECTIONS, ReportView, experiment_section

__all__ = ["header", "findings", "findings_over_training", "study_findings_total", "failures",
           "data_section", "hyperparameters", "curves",
           "accuracy", "model_contrast", "experiment_sections", "loss_gap", "training_flag",
           "figures_of_features", "reproduction", "effects_section", "runs_section",
           "effect_sentence", "experiment_view", "smallest_worst_best"]


# ------------------------------------------------------------------ shared pieces
def effect_sentence(v: ReportView, key: tuple[str, str, str, str], what: str) -> str:
    """One bullet: the effect of id ``key`` with its interval and verdict."""
    model = key[1]
    e = v.tables.effect(key)
    if e is None:
        return f"- {display_name(model)}: {what} was not measured by this configuration."
    verdict = e["verdict"]
    if verdict in ("better", "worse"):
        claim = f"{what} made test accuracy **{verdict}** by {num(abs(e['difference']))} points"
    else:
        claim = (f"{what} changed test accuracy by {num(e['difference'], sign=True)} points, "
                 "which is "
                 f"**{verdict}**")
    return f"- {display_name(model)}: {claim} ({ci(e['low'], e['high'])}, {e['interval']})."


def experiment_view(v: ReportView, name: str) -> pd.DataFrame:
    """An experiment's table as the report shows it: means, test interval, best epoch and,
    where any point has BatchNorm, the BatchNorm diagnostic (``BN_DIAGNOSTIC_COLUMN``)."""
    t = v.tables.experiment_table(name)
    view = pd.DataFrame({"model": t["model"].map(display_name),
                         "point": t["label"], "seeds": t["n_seeds"]})
    for col in ("train_acc", "val_acc", "test_acc"):
        view[f"{col.split('_')[0]} %"] = t[f"{col}_mean"]
    view["test 95% CI"] = [
        "" if math.isnan(lo) else f"[{num(lo)}, {num(hi)}]"
        for lo, hi in zip(t["test_acc_low"], t["test_acc_high"], strict=True)]
    view["best epoch"] = t["best_epoch_mean"]
    diag = t.get("val_acc_bn_reestimated_mean")  # absent in tables of older aggregates
    if diag is not None and diag.notna().any():
        view[BN_DIAGNOSTIC_COLUMN] = diag.map(lambda x: "" if math.isnan(x) else num(x))
    return view


def experiment_table_md(v: ReportView, name: str) -> str:
    """``experiment_view`` as Markdown, with a line saying what the BatchNorm diagnostic's
    column means when the table has it."""
    view = experiment_view(v, name)
    note = f"\n\n{BN_DIAGNOSTIC_NOTE}" if BN_DIAGNOSTIC_COLUMN in view else ""
    return md_table(view) + note


# The experiment tables' column of the BatchNorm diagnostic, and what it means.
BN_DIAGNOSTIC_COLUMN = "val % (BN re-estimated)"
BN_DIAGNOSTIC_NOTE = (
    f"*{BN_DIAGNOSTIC_COLUMN}*: the BatchNorm diagnostic (not one of the study's metrics), "
    "the best checkpoint's validation accuracy with BatchNorm's running statistics "
    "re-estimated on the training images with Dropout off; blank without BatchNorm. Far "
    "above *val %*, it means the statistics eval mode uses do not fit its activations.")


def smallest_worst_best(v: ReportView, exp: Experiment, model: str
                        ) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(smallest value, worst, best) rows of a numeric sweep, by mean test accuracy."""
    return v.tables.sweep_extremes(exp.name, model)


def _effect_sentences(v: ReportView, exp: Experiment) -> list[str]:
    return [effect_sentence(v, (exp.name, r["model"], str(r["a"]), str(r["b"])),
                            f"`{r['a']}` instead of `{r['b']}`")
            for _, r in v.tables.effects_of(exp.name).iterrows()]


def _distinct(runs: pd.DataFrame, column: str) -> str:
    """Every distinct value of a provenance column of runs.csv, with its run count."""
    if column not in runs:
        return "not recorded"
    counts = runs[column].fillna("not recorded").astype(str).value_counts()
    if len(counts) == 1:
        return f"`{counts.index[0]}`"
    return ", ".join(f"`{val}` ({n} runs)" for val, n in sorted(counts.items()))


def _cuda(runs: pd.DataFrame) -> str:
    """'; CUDA 13.0' when runs trained on CUDA recorded its version, else ''."""
    if "cuda" not in runs or runs["cuda"].isna().all():
        return ""
    return f"; CUDA {_distinct(runs, 'cuda')}"


def _execution(runs: pd.DataFrame) -> str:
    """How the steps executed (docs/gpu.md), when any run compiled or used CUDA graphs."""
    switches = [c for c in ("compile", "cuda_graphs") if c in runs and runs[c].eq(True).any()]
    return "".join(f"; {c.replace('_', ' ')} {_distinct(runs, c)}" for c in switches)


# ------------------------------------------------------------------ sections
def header(v: ReportView) -> str:
    """Title, profile, data, the training machines (from the runs' metrics), code, time."""
    r = v.tables.runs
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
        f"- **Profile:** `{v.profile or 'unnamed'}` (config: `{v.config_files}`)",
        f"- **Data source:** `{data}` (checksum `{checksum}`)",
        f"- **Trained on:** {_distinct(r, 'cpu')}; device(s): {devices}; torch "
        f"{_distinct(r, 'torch')}{_cuda(r)}; precision {_distinct(r, 'precision')}"
        f"{_execution(r)} (from the runs' metrics)",
        f"- **Code:** commit {commits}",
        f"- **Time:** {len(r)} runs; summed training time {r['seconds'].sum() / 60:.1f} min; "
        f"wall time from the first run's start to the last run's end "
        f"{wall:.1f} min",
        f"- **Rendered:** {datetime.now().astimezone().isoformat(timespec='seconds')}",
        "",
        "Every number and figure below was computed from this run's tables "
        f"(`results/{v.profile or '<profile>'}/tables/`) by the report notebook; none was "
        "typed by hand.",
    ]
    if v.profile != "full":
        lines += ["", f"> This is the **{v.profile}** profile, a scaled-down study "
                  "(fewer images, epochs and/or narrower networks; see the settings below). "
                  "Its comparison with the published numbers compares a quick CPU profile "
                  "with a 100-epoch GPU run: agreement in direction is what to look for, "
                  "not equal numbers."]
    return "\n".join(lines)


def failures(v: ReportView) -> str:
    """Runs that diverged or completed no epoch; empty when every run trained normally."""
    from ..train import DIVERGED_FACTOR

    r = v.tables.runs
    bad = r[r["diverged"].fillna(False).astype(bool) | (r["epochs_completed"] == 0)]
    if bad.empty:
        return ""
    table = pd.DataFrame({
        "run": bad["run_id"], "experiments": bad["experiments"],
        "diverged in epoch": bad["diverged_epoch"].map(
            lambda e: "" if pd.isna(e) else str(int(e))),
        "train loss then": bad.get("diverged_train_loss", pd.Series(index=bad.index)).map(
            lambda x: "" if pd.isna(x) else (f"{float(x):.4g}" if _is_number(x) else str(x))),
        "epochs completed": bad["epochs_completed"].astype(int),
        "test % (best epoch before)": bad["test_acc"],
    })
    return "\n".join([
        "## Runs that diverged",
        "",
        f"{len(bad)} of {len(r)} runs diverged. A run is stopped, and recorded as diverged, at "
        "the first epoch whose mean training loss is not finite or above "
        f"{DIVERGED_FACTOR:g} times the loss of a uniform guess (ln 10 = 2.30 for "
        "CIFAR-10). Its best checkpoint before that epoch is evaluated when there is one; a "
        "run that diverged in its first epoch has no accuracy and is left out of the means, "
        "intervals and effects (an effect with no seed left is 'not measured'). The "
        "usual cause is a learning rate too high for the setting.",
        "",
        md_table(table),
    ])


def _is_number(x: object) -> bool:
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return True


# The study's training per run: 40,000 images x 100 epochs.
STUDY_IMAGES_SEEN = 40_000 * 100


def _pct(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.2g}"


def _training_budget(runs: pd.DataFrame) -> str:
    """How much training each run got, against the study's, from the runs' specs."""
    seen = (runs["n_train"] * runs["epochs"]).astype(int)
    epochs = sorted(set(runs["epochs"].astype(int)))
    if len(set(seen)) == 1:
        return (f"Every run trains {epochs[0]} epochs on {int(runs['n_train'].iloc[0]):,} "
                f"images: {int(seen.iloc[0]):,} training images seen, "
                f"{_pct(100 * seen.iloc[0] / STUDY_IMAGES_SEEN)}% of the study's 40,000 x 100, "
                "the same for every grid point (batch sizes are compared at equal epochs, as "
                "in the study).")
    return (f"Runs train {min(epochs)}-{max(epochs)} epochs: "
            f"{int(seen.min()):,}-{int(seen.max()):,} training images seen, "
            f"{_pct(100 * seen.min() / STUDY_IMAGES_SEEN)}-"
            f"{_pct(100 * seen.max() / STUDY_IMAGES_SEEN)}% of the study's 40,000 x 100.")


def data_section(v: ReportView) -> str:
    """The split, the inputs and how much test-set noise one accuracy carries."""
    runs = v.tables.runs
    r = runs.iloc[0]
    n_test = int(r["n_test"])
    accs = runs["test_acc"] / 100
    se = [math.sqrt(a * (1 - a) / n_test) * 100 for a in (accs.min(), accs.max())]
    per_exp = v.tables.seeds_per_experiment()
    n_seeds = max(per_exp.values(), default=v.tables.n_seeds)
    seeds_text = str(n_seeds)
    if len(set(per_exp.values())) > 1:  # the experiments' own `seeds` differ
        seeds_text += " (" + ", ".join(f"{n} in {name}" for name, n in per_exp.items()
                                       if n != n_seeds) + ": the experiments' `seeds`)"
    return "\n".join([
        "## Data and split",
        "",
        _training_budget(runs),
        *(["", f"How this profile was sized: {' '.join(v.notes.split())}"] if v.notes else []),
        "",
        f"Training on {int(r['n_train']):,} images, model selection on {int(r['n_val']):,} "
        f"validation images (the checkpoint with the best validation accuracy is kept), "
        f"and the test accuracy of that checkpoint on {n_test:,} test images, which are "
        f"used for nothing else. Split method: `{r.get('data.method', 'not recorded')}` "
        f"(seed {r.get('data.seed', 'not recorded')}). Inputs are scaled as (x - 128) / 255; "
        "no augmentation.",
        "",
        f"With {n_test:,} test images the binomial standard error of one accuracy is "
        f"{se[0]:.2f}–{se[1]:.2f} points over the accuracies seen here "
        f"({accs.min() * 100:.1f}–{accs.max() * 100:.1f}%), so differences of about "
        f"{2 * max(se):.1f} points or less between single runs are within test-set noise. "
        f"Seeds per grid point: {seeds_text}"
        + (" (intervals over seeds use Student's t)." if n_seeds > 1 else
           " (with one seed, intervals are binomial and cover test-set sampling only)."),
    ])


def hyperparameters(v: ReportView) -> str:
    """Each baseline's architecture and training settings, from its spec."""
    rows = []
    for m in v.tables.models:
        b = v.tables.baseline(m).iloc[0]
        spec = v.tables.spec(b["run_id"])
        arch = ", ".join(f"{k}={val}" for k, val in spec["arch"].items())
        rows.append({"model": display_name(m), "architecture": arch,
                     "optimizer": spec["optimizer"],
                     # 1e-3, not 1e-03: shorter, and the way the config writes it
                     "lr": compact(spec["lr"]), "weight decay": compact(spec["weight_decay"]),
                     "batch": spec["batch_size"], "epochs": spec["epochs"],
                     "parameters": f"{int(b['n_params']):,}"})
    note = ("The study does not name the MLP's optimizer; cifarlab uses AdamW for both "
            "models. A measurement made for this project on the shared JPEG copy of "
            "CIFAR-10 (not part of this run) found AdamW within about half a point of the "
            "published MLP numbers, while Adam with L2 weight decay 1e-3 underfits "
            "(about 43% train and 48% test accuracy).")
    table = md_table(pd.DataFrame(rows), right=("lr", "weight decay", "parameters"))
    return "## Hyperparameters of the baselines\n\n" + table \
        + "\n\n" + note


def curves(v: ReportView) -> str:
    """The baselines' loss and accuracy curves."""
    out = ["## Training curves of the baselines", ""]
    for m in v.tables.models:
        out.append(v.figure(f"curves_{m}", f"{display_name(m)}: loss and accuracy, training "
                            "(dashed) and validation (solid)"))
    return "\n".join(out)


def accuracy(v: ReportView) -> str:
    """The baselines' accuracies with intervals, beside the published ones."""
    rows = []
    for m in v.tables.models:
        b = v.tables.baseline(m)
        row = {"model": display_name(m), "seeds": len(b), "best epoch": b["best_epoch"].mean()}
        for col, name in (("train_acc", "train %"), ("val_acc", "val %"),
                          ("test_acc", "test %")):
            iv = accuracy_interval(list(b[col] / 100), int(b["n_test"].iloc[0])
                                   if col == "test_acc" else 0)
            row[name] = iv.mean * 100
            row[f"{name.split()[0]} 95% CI"] = (
                "" if math.isnan(iv.low) else f"[{num(iv.low * 100)}, {num(iv.high * 100)}]")
        p = MODELS[m].published if m in MODELS else None
        row["published train / val / test %"] = (
            f"{num(p['train_acc'])} / {num(p['val_acc'])} / {num(p['test_acc'])}" if p
            else "none (the study has no numbers for this model)")
        rows.append(row)
    return ("## Accuracy of the best-validation checkpoint\n\nTrain accuracy is the "
            "training-mode accuracy averaged over the best epoch's batches, as the study "
            "reports it. Intervals: Student t over seeds (with one seed, binomial for the "
            "test accuracy only).\n\n" + md_table(pd.DataFrame(rows)))


def model_contrast(v: ReportView) -> str:
    """Each between-model effect an experiment defines (e.g. CNN - MLP at `full`)."""
    out = []
    for _, e in v.tables.contrasts().iterrows():
        a_model, b_model = str(e["a_model"]), str(e["b_model"])
        pa, pb = (int(v.tables.baseline(m)["n_params"].iloc[0]) for m in (a_model, b_model))
        na, nb = display_name(a_model), display_name(b_model)
        ratio = max(pa, pb) / min(pa, pb)
        size = ("The models have similar sizes" if ratio < 1.25 else
                f"The {na if pa > pb else nb} is {ratio:.1f} times larger")
        out += [f"## {na} vs {nb}", "",
                f"{size}: the {na} has {pa:,} trainable parameters and the {nb} {pb:,} "
                "(counted from the built models).", ""]
        why = _contrast_reason(a_model, b_model)
        if why:
            out += [why, ""]
        out.append(f"Measured: {na} minus {nb} test accuracy at `{e['a']}` = "
                   f"{num(e['difference'], sign=True)} points ({ci(e['low'], e['high'])}): "
                   f"**{e['verdict']}**.")
    return "\n".join(out)


def _contrast_reason(a_model: str, b_model: str) -> str:
    """What the models' registry entries say about why one may beat the other."""
    notes = [MODELS[m].inductive_bias for m in (a_model, b_model)
             if m in MODELS and MODELS[m].inductive_bias]
    return " ".join(notes)


@experiment_section("points")
def points_section(v: ReportView, exp: Experiment) -> str:
    """Generic section of a named-points experiment: its effects, figures and table."""
    out = [f"## {readable_title(exp.name)}", "",
           f"Experiment `{exp.name}` (named points): "
           f"{', '.join(f'`{p}`' for p in exp.labels)}, each a separate run per seed. Legends "
           "give (best train, best val, test at best val) accuracy in %.", ""]
    out += _effect_sentences(v, exp)
    out.append("")
    out += [v.figure(f"{exp.name}_{m}", f"{readable_title(exp.name)}: {display_name(m)}")
            for m in v.tables.models_of(exp.name)]
    out.append(experiment_table_md(v, exp.name))
    return "\n".join(out)


@experiment_section("sweep")
def sweep_section(v: ReportView, exp: Experiment) -> str:
    """Generic section of a sweep: best value on validation, effects, figures, table."""
    t = v.tables.experiment_table(exp.name)
    ref = ("the value with the best mean validation accuracy" if exp.reference == "best"
           else f"{exp.axis} = {exp.reference}")
    out = [f"## {readable_title(exp.name)}", "",
           f"Experiment `{exp.name}`, a sweep over {exp.axis}. Values: "
           f"{', '.join(exp.labels)}; each is compared with {ref}.", ""]
    models = v.tables.models_of(exp.name)
    for m in models:
        tm = t[t["model"] == m]
        best = tm.loc[tm["val_acc_mean"].idxmax()]
        out.append(f"- {display_name(m)}: validation accuracy peaks at {exp.axis} = "
                   f"{best['label']} ({num(best['val_acc_mean'])}%; test "
                   f"{num(best['test_acc_mean'])}%).")
    out += _effect_sentences(v, exp)
    out.append("")
    out += [v.figure(f"{exp.name}_{m}", f"{readable_title(exp.name)}, {display_name(m)}: "
                     f"accuracy curves per {exp.axis}") for m in models]
    out.append(v.figure(f"{exp.name}_summary", f"{readable_title(exp.name)}: accuracy at "
                        f"the best-validation epoch against {exp.axis}"))
    out.append(experiment_table_md(v, exp.name))
    return "\n".join(out)


def experiment_sections(v: ReportView) -> str:
    """One section per experiment that ran, in config order: the one its ``section``
    names, else its kind's generic section."""
    out = []
    for name, exp in v.tables.experiments.items():
        if name not in v.tables.experiment_tables:
            continue
        section = exp.section or exp.kind
        if section not in EXPERIMENT_SECTIONS:
            raise ValueError(f"experiment {name!r} asks for report section {section!r}; "
                             f"valid: {', '.join(EXPERIMENT_SECTIONS)}")
        out.append(EXPERIMENT_SECTIONS[section](v, exp))
    return "\n\n".join(out)


def loss_gap(v: ReportView) -> str:
    """Why training and validation loss differ, with the baselines' own curves."""
    out = ["## Why training and validation loss differ", ""]
    for m in v.tables.models:
        rid = v.tables.baseline(m)["run_id"].iloc[0]
        h = RunDir(v.runs_dir / rid).read_history() if v.runs_dir else None
        if h is None or h.empty:
            continue
        first, last = h.iloc[0], h.iloc[-1]
        vmin = h.loc[h["val_loss"].idxmin()]
        vbest = h.loc[h["val_acc"].idxmax()]
        out.append(
            f"- {display_name(m)}: after epoch 1 the training loss is "
            f"{num(first['train_loss'], 3)} "
            f"and the validation loss {num(first['val_loss'], 3)}; after the last epoch "
            f"({int(last['epoch'])}) they are {num(last['train_loss'], 3)} and "
            f"{num(last['val_loss'], 3)}. Validation loss is lowest at epoch "
            f"{int(vmin['epoch'])} ({num(vmin['val_loss'], 3)}) while validation accuracy peaks "
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


def figures_of_features(v: ReportView) -> str:
    """The first-layer weight figures of the models that register a first layer."""
    out = ["## What the first layers learn", ""]
    for m in v.tables.models:
        if m in MODELS and MODELS[m].first_layer is not None:
            # The layer's size comes from the baseline's spec (the same model the figure
            # draws), so the caption cannot promise 64 filters of a 16-filter CNN.
            spec = v.tables.spec(v.tables.baseline(m)["run_id"].iloc[0])
            w = MODELS[m].first_layer(build_model(spec["model"], **spec["arch"]))
            caption = first_layer_caption(display_name(m), w.shape[0], w.shape[2], w.shape[3])
            out.append(v.figure(f"first_layer_{m}", f"{caption}; with and without Dropout "
                                "where the grid has both"))
    return "\n".join(out)


def study_findings_total() -> int:
    """How many findings the study states: each of ``published.FINDINGS``, plus "the
    smallest value is the worst" of each ``SMALLEST_IS_WORST`` sweep for each of the
    study's models (those the registry holds published numbers for): 8 for the study."""
    study_models = [m for m, entry in MODELS.items() if entry.published]
    return len(published.FINDINGS) + len(published.SMALLEST_IS_WORST) * len(study_models)


def _margin(e: pd.Series) -> float:
    """The finding's effect interval's distance from zero in standard errors."""
    se = effect_se(float(e["sd"]), int(e["n_seeds"]), str(e["interval"]))
    return margin_in_se(e["difference"], e["low"], e["high"], se)


def _critical_values(effects: list[pd.Series]) -> str:
    """The critical values the findings' intervals use, e.g. "4.30 for 3 seeds"."""
    out = []
    for n in sorted({int(e["n_seeds"]) for e in effects if e["interval"] == "t over seeds"}):
        out.append(f"t = {num(float(t_dist.ppf(0.975, n - 1)))} for {n} seeds")
    if any(str(e["interval"]).startswith("binomial") for e in effects):
        out.append(f"z = {num(float(norm_dist.ppf(0.975)))} for one seed")
    return ", ".join(out)


def _seeds_agreeing(effect: pd.Series, expect: str) -> tuple[int, int] | None:
    """(k, n): k of the n seeds have a paired difference of the study's sign ("better":
    a > b, "worse": a < b); None when the table predates the count or has one seed."""
    n = int(effect["n_seeds"])
    key = {"better": "n_higher", "worse": "n_lower"}.get(expect)
    if key is None or key not in effect or pd.isna(effect[key]) or n < 2:
        return None
    return int(effect[key]), n


def _of(agreement: tuple[int, int] | None) -> str:
    return "" if agreement is None else f"{agreement[0]} of {agreement[1]}"


def findings(v: ReportView) -> str:
    """The study's findings, each with its numbers, its interval's distance from zero and
    a verdict from the intervals; headed by how many of the study's findings reproduce."""
    measured = v.tables.findings()
    rows, used = [], [f.effect for f in measured]
    agree = [_seeds_agreeing(f.effect, f.expect) for f in measured]
    for f, agreement in zip(measured, agree, strict=True):
        e = f.effect
        rows.append({"finding (study)": f.name, "measured (points)": e["difference"],
                     "95% CI": ci(e["low"], e["high"]) + (f" {f.versus}" if f.versus else ""),
                     "margin (SE)": _margin(e),
                     "seeds the study's way": _of(agreement),
                     "verdict": e["verdict"],
                     "status": "reproduced" if f.reproduced else "not reproduced"})
    if not rows:
        return ""
    df = pd.DataFrame(rows)
    n_ok = int((df["status"] == "reproduced").sum())
    total = max(study_findings_total(), len(df))
    headline = f"**{n_ok} of {total} findings reproduced.**"
    unanimous = [r for r, a in zip(rows, agree, strict=True)
                 if r["status"] != "reproduced" and a is not None and a[0] == a[1]]
    if unanimous:
        # Evidence short of a verdict: the direction every seed took, stated, never counted.
        headline += (f" In {len(unanimous)} more, every seed's paired difference points "
                     "the study's way, but the interval still includes zero: "
                     + "; ".join(r["finding (study)"] for r in unanimous) + ".")
    critical = _critical_values(used)
    critical = f" ({critical})" if critical else ""
    if len(df) < total:
        # Unmeasured findings stay out of the table (nothing is claimed for them) but
        # count against the total: "2 of 5" would hide that three were never tested.
        headline += (f" {total - len(df)} of the study's {total} findings are not measured "
                     "by this configuration (its experiments do not include them).")
    return ("## Findings: which of the study's claims this run reproduces\n\n"
            f"{headline} A finding counts as reproduced only "
            "when the 95% interval of the effect excludes zero in the study's direction; "
            "an interval that includes zero is reported as no detectable difference, "
            "never as an effect.\n\n" + md_table(df) + "\n\n"
            "*Margin (SE)*: how far the end of the 95% interval nearer to zero lies from "
            "zero, in standard errors of the effect (SE = sd of the per-seed differences / "
            "√n; with one seed, the binomial SE): positive means the interval clears zero "
            "by that much, negative that zero lies inside it; it equals |effect| / SE minus "
            f"the critical value{critical}, so a margin near 0 marks a verdict that slightly "
            "different seeds could flip. *Seeds the study's way*: of the seeds both sides "
            "ran, how many show a paired difference in the study's direction."
            + _bn_diagnostic(v) + _findings_with_diagnostic(v))


def _epochs_shown(last: int) -> list[int]:
    """The epochs the table shows: about a quarter, half, three quarters and the end."""
    return sorted({max(1, math.ceil(last * q / 4)) for q in (1, 2, 3, 4)})


def _effect_cell(at: pd.DataFrame, epoch: int) -> str:
    """The effect at ``epoch`` of an effects_by_epoch table indexed by epoch, with its
    interval in brackets ("" when that epoch has no pair of runs)."""
    if epoch not in at.index:
        return ""
    text = num(at.at[epoch, "difference"], sign=True)
    if pd.isna(at.at[epoch, "low"]):
        return text
    return f"{text} [{num(at.at[epoch, 'low'])}, {num(at.at[epoch, 'high'])}]"


def _toward_study(difference: float, expect: str) -> float:
    """``difference`` signed so that positive is the study's direction."""
    return difference if expect == "better" else -difference


def findings_over_training(v: ReportView) -> str:
    """Each finding's effect after every epoch (effects_by_epoch.csv: on the validation
    accuracy of the best epoch so far): the direction each effect took as training went
    on, which is the evidence a finding that is not reproduced has or lacks."""
    measured = [(f, v.tables.effect_by_epoch(f.key)) for f in v.tables.findings()]
    measured = [(f, t) for f, t in measured if not t.empty]
    if not measured:
        return ""
    last = int(max(t["epoch"].max() for _, t in measured))
    shown = _epochs_shown(last)
    mid = shown[len(shown) // 2 - 1] if len(shown) > 1 else shown[0]
    rows, moved = [], []
    for f, t in measured:
        at = t.set_index("epoch")
        row = {"finding (study)": f.name}
        for e in shown:
            row[f"epoch {e}"] = _effect_cell(at, e)
        change = (_toward_study(at.at[last, "difference"] - at.at[mid, "difference"],
                                f.expect)
                  if mid in at.index and last in at.index and last > mid else math.nan)
        row[f"change after epoch {mid}, the study's way"] = num(change, sign=True)
        row["status (on test)"] = "reproduced" if f.reproduced else "not reproduced"
        rows.append(row)
        if not f.reproduced and not math.isnan(change):
            moved.append((f.name, change))
    # As printed: a change that rounds to 0.00 moved no way.
    toward = [f"{name} ({num(c, sign=True)})" for name, c in moved if round(c, 2) > 0]
    other = [f"{name} ({num(c, sign=True)})" for name, c in moved if round(c, 2) <= 0]
    summary = ""
    if moved:
        if toward:
            parts = [f"{len(toward)} moved the study's way after epoch {mid} (mean change "
                     "in points): " + "; ".join(toward)]
            others = "the others"
        else:
            parts = [f"none moved the study's way after epoch {mid}"]
            others = "mean changes"
        if other:
            parts.append(f"{others}: " + "; ".join(other))
        summary = (f"\n\nOf the {len(moved)} findings not reproduced on test, "
                   + "; ".join(parts) + ". A mean change is not a verdict: it says where "
                   "longer training might lead, which only a longer run can show.")
    return ("## How the findings developed over training\n\n"
            "Each finding's paired effect (points, a - b as in the table above) after every "
            "epoch, on the validation accuracy of the best epoch so far: the checkpoint a "
            "run would have kept had it stopped there. Validation images chose those "
            "checkpoints, so these numbers show the direction an effect took as training "
            "went on; the verdicts above are on test. Brackets: 95% interval over seeds "
            "(with one seed, the binomial interval over the validation images). *Change*: "
            f"the mean effect at epoch {last} minus at epoch {mid}, signed so that positive "
            "is the study's direction.\n\n"
            + v.figure(FINDINGS_FIGURE, "Each finding's effect on the best validation "
                       "accuracy so far, by epoch: mean over seeds and 95% interval; the "
                       "shaded side of zero is the study's direction")
            + "\n" + md_table(pd.DataFrame(rows)) + summary)


def _bn_diagnostic(v: ReportView) -> str:
    """The baselines' eval-mode validation accuracy beside the accuracy with BatchNorm's
    statistics re-estimated (Dropout off): evidence for or against the running statistics
    misleading eval mode. Empty when no baseline has the diagnostic."""
    col = "val_acc_bn_reestimated"
    if col not in v.tables.runs:
        return ""
    parts = []
    for m in v.tables.models:
        b = v.tables.baseline(m)
        b = b[b[col].notna()]
        if b.empty:
            continue
        gap = b[col] - b["val_acc"]
        parts.append(f"{display_name(m)} {num(b['val_acc'].mean())}% in eval mode vs "
                     f"{num(b[col].mean())}% re-estimated (per seed "
                     + ", ".join(f"{g:+.1f}" for g in gap) + " points)")
    if not parts:
        return ""
    return ("\n\n*BatchNorm diagnostic* (not one of the study's metrics): the baselines' best "
            "checkpoints on validation, as evaluated (eval mode, BatchNorm's running "
            "statistics gathered while Dropout was on) and with those statistics "
            "re-estimated on the training images with Dropout off: " + "; ".join(parts)
            + ". A large gap means the running statistics do not fit the activations of "
            "eval mode, so the eval-mode accuracy understates what the weights learned and "
            "varies with the seed: Dropout before a MaxPool and a later BatchNorm (the "
            "study's CNN) inflates the activations those statistics were gathered from.")


def _findings_with_diagnostic(v: ReportView) -> str:
    """Each finding whose points have BatchNorm, on validation in eval mode and with
    re-estimated statistics (effects.csv's ``val_*`` columns): how much of a finding the
    running statistics make or unmake. Empty when no finding has the diagnostic."""
    parts = []
    for f in v.tables.findings():
        e = f.effect
        if pd.isna(e.get("val_bn_reestimated_difference", math.nan)):
            continue
        low, high = e["val_bn_reestimated_low"], e["val_bn_reestimated_high"]
        # the same test as a finding's: the interval's verdict in the study's direction
        clear = (", clear of zero the study's way"
                 if e.get("val_bn_reestimated_verdict") == f.expect else "")
        versus = f" {f.versus}" if f.versus else ""
        parts.append(f"{f.name}{versus}: {num(e['val_difference'], 2, sign=True)} in eval "
                     f"mode, {num(e['val_bn_reestimated_difference'], 2, sign=True)} "
                     f"re-estimated ({ci(low, high)}{clear})")
    if not parts:
        return ""
    return ("\n\nThe same diagnostic applied to the findings (validation accuracy of the "
            "best checkpoints, paired by seed, points; re-estimated wherever a side has "
            "BatchNorm): " + "; ".join(parts) + ". These are not verdicts: the study's "
            "metric is test accuracy in eval mode, and validation chose the checkpoints. "
            "They show which findings the running statistics, rather than what the "
            "weights learned, decide in this run.")


def reproduction(v: ReportView) -> str:
    """published.csv: the published numbers beside the reproduced intervals."""
    pub = v.tables.published
    if pub.empty:
        return ""
    view = pub[["quantity", "model", "published", "reproduced", "low", "high",
                "difference", "verdict", "interval"]].copy()
    # A finding the study states without a number (e.g. "Dropout2d beats Dropout") has no
    # published value to lie in the interval; "reproduced" there would read as a
    # numeric match. Say so, and keep what was compared: the study's direction.
    no_value = view["published"].isna()
    finding = (pub["published_finding"].astype(object) if "published_finding" in pub
               else pd.Series("", index=pub.index, dtype=object)).fillna("").astype(str)
    view["published"] = [("no published value" if missing else num(x))
                         for x, missing in zip(view["published"], no_value, strict=True)]
    view.loc[no_value, "verdict"] = [
        f"no published value; the study's direction ({f or 'none stated'}): {verdict}"
        for f, verdict in zip(finding[no_value], view.loc[no_value, "verdict"],
                              strict=True)]
    return ("## Comparison with the published numbers\n\n"
            f"Published: {published.SOURCE}. Reproduced: profile `{v.profile}`. "
            "'reproduced' means the published value lies in the reproduced 95% interval; "
            "'higher'/'lower' say where the reproduction lies. Rows marked 'no published "
            "value' are findings the study states without a number: only their direction "
            "is compared (as in the findings above).\n\n"
            + md_table(view, right=("published",)))


def effects_section(v: ReportView) -> str:
    """Every paired effect of effects.csv."""
    effects = v.tables.effects
    if effects.empty:
        return ""
    view = effects[["effect", "model", "a", "b", "n_seeds", "difference", "low", "high",
                    "interval", "verdict"]]
    return "## All paired effects (test accuracy, points)\n\n" + md_table(view)


def runs_section(v: ReportView) -> str:
    """One row per run."""
    cols = ["run_id", "experiments", "n_params", "best_epoch", "train_acc", "val_acc",
            "test_acc", "seconds", "diverged"]
    return "## Every run\n\n" + md_table(v.tables.runs[cols])


def training_flag(v: ReportView) -> str:
    """Demonstrates .train() vs .eval() on the hand-written layers (computed now)."""
    from ..layers import demonstrate_training_flag

    d = demonstrate_training_flag()
    return "\n".join([
        "## What `self.training` changes",
        "",
        "`model.train()` and `model.eval()` set `self.training` on every submodule; only "
        "BatchNorm and Dropout read it. Computed now on cifarlab's hand-written layers:",
        "",
        f"- BatchNorm1d in training mode normalises with the batch's own statistics: on a "
        f"batch with mean about 2 and sd about 3, the output has mean "
        f"{num(d['bn_train_mean'], 3, sign=True)} and sd {num(d['bn_train_std'], 3)}, and "
        "the running "
        f"estimates move towards the data (running mean {num(d['running_mean'])}, running "
        f"variance {num(d['running_var'])} after 21 batches).",
        f"- In eval mode it uses those running estimates only, so a batch of 8 is mapped "
        f"sample by sample (output mean {num(d['bn_eval_mean'], 3, sign=True)}), "
        "independent of the rest of the batch.",
        f"- Dropout(p=0.5) in training mode zeroes {d['dropout_zero_fraction']:.1%} of "
        f"10,000 ones and scales the survivors to {num(d['dropout_scale'], 1)}, keeping the "
        f"mean at {num(d['dropout_train_mean'], 3)}; in eval mode it returns the input "
        f"unchanged (mean {num(d['dropout_eval_mean'], 3)}).",
    ])
