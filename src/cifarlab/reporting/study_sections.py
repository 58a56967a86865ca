"""Report sections written for the study's own experiments; a config selects one with
``section: <name>`` on an experiment (config/README.md, "Experiments")."""

from __future__ import annotations

import math

from ..experiments import Experiment
from ..models import display_name
from .format import ci, num
from .sections import effect_sentence, experiment_table_md, smallest_worst_best
from .view import ReportView, experiment_section

__all__ = ["ablation", "ablation_caption", "dropout2d", "dropout_rate", "batch_size"]


def ablation_caption(model: str) -> str:
    """Caption of an ablation figure: three separate configurations, each named with
    what it keeps, so "no BatchNorm, no Dropout" cannot be read as one run without both."""
    return (f"{model} ablations, three separate runs per seed: full (BatchNorm and "
            "Dropout); no BatchNorm (Dropout kept); no Dropout (BatchNorm kept)")


@experiment_section("ablation")
def ablation(v: ReportView, exp: Experiment) -> str:
    """The study's ablation: what BatchNorm and Dropout each add."""
    out = ["## The effect of BatchNorm and Dropout", "",
           "`full` is the baseline; `no_bn` removes BatchNorm only (Dropout kept); "
           "`no_dropout` sets p = 0 only (BatchNorm kept): two separate ablations. "
           "Legends give (best train, best val, test at best val) accuracy in %.", ""]
    models = v.tables.models_of(exp.name)
    out += [effect_sentence(v, (exp.name, m, "full", "no_bn"), "BatchNorm") for m in models]
    out += [effect_sentence(v, (exp.name, m, "full", "no_dropout"), "Dropout")
            for m in models]
    out.append("")
    for m in models:
        out.append(v.figure(f"{exp.name}_{m}", ablation_caption(display_name(m))))
    out.append(experiment_table_md(v, exp.name))
    return "\n".join(out)


@experiment_section("dropout2d")
def dropout2d(v: ReportView, exp: Experiment) -> str:
    """The study's element-wise vs channel-wise dropout comparison in the CNN."""
    out = ["## Dropout vs Dropout2d in the CNN", "",
           "Dropout2d drops whole feature maps instead of single activations; neighbouring "
           "activations of a feature map are strongly correlated, so element-wise dropout "
           "removes less information than its rate suggests.", ""]
    models = v.tables.models_of(exp.name)
    for m in models:
        e = v.tables.effect((exp.name, m, "dropout2d", "dropout"))
        if e is not None:
            out.append(f"Measured ({display_name(m)}): Dropout2d minus Dropout test "
                       f"accuracy = {num(e['difference'], 2, sign=True)} points "
                       f"({ci(e['low'], e['high'])}): **{e['verdict']}** (the study "
                       "found Dropout2d better).")
    out.append("")
    out += [v.figure(f"{exp.name}_{m}", f"{display_name(m)}: Dropout vs Dropout2d")
            for m in models]
    out.append(experiment_table_md(v, exp.name))
    return "\n".join(out)


def _gap_sentence(v: ReportView, exp: Experiment, model: str) -> str:
    t = v.tables.experiment_table(exp.name)
    t = t[t["model"] == model].copy()
    t["p"] = t["value"].astype(float)
    t = t.sort_values("p")
    t["gap"] = t["train_acc_mean"] - t["val_acc_mean"]
    lo, hi = t.iloc[0], t.iloc[-1]
    best = t.loc[t["val_acc_mean"].idxmax()]
    corr = t["p"].corr(t["gap"], method="spearman")
    trend = "shrinks" if corr < -0.5 else ("grows" if corr > 0.5 else "shows no clear trend")
    return (f"- {display_name(model)}: the train-validation gap at the best epoch {trend} "
            f"as p rises (Spearman {num(corr, 2, sign=True)}): {num(lo['gap'], 1)} points at "
            f"p={lo['p']:g}, "
            f"{num(hi['gap'], 1)} at p={hi['p']:g}. Validation accuracy peaks at "
            f"p={best['p']:g} ({num(best['val_acc_mean'])}%; test "
            f"{num(best['test_acc_mean'])}%), and p={hi['p']:g} reaches "
            f"{num(hi['val_acc_mean'])}% validation accuracy.")


def _diagnostic_sentence(v: ReportView, exp: Experiment, model: str) -> str:
    """Where along the sweep eval mode and the BatchNorm diagnostic (validation with
    re-estimated statistics, Dropout off) differ most, and how much of the validation
    accuracy lost from the smallest to the largest p the diagnostic gets back. Empty
    without the diagnostic, or when no point's two accuracies differ by more than twice
    the binomial standard error of a difference over the validation images."""
    t = v.tables.experiment_table(exp.name)
    col = "val_acc_bn_reestimated_mean"
    if col not in t:
        return ""
    t = t[(t["model"] == model) & t[col].notna()]
    t = t.assign(p=t["value"].astype(float), gap=t[col] - t["val_acc_mean"]).sort_values("p")
    runs = v.tables.runs
    n_val = runs["n_val"].max() if "n_val" in runs and runs["n_val"].notna().any() else 0
    if len(t) < 2 or not n_val:
        return ""
    noise = 2 * 100 * math.sqrt(2 * 0.25 / n_val)  # points; 0.25: p(1 - p) at its largest
    worst = t.loc[t["gap"].idxmax()]
    if not worst["gap"] > noise:
        return ""
    lo, hi = t.iloc[0], t.iloc[-1]
    text = (f"- {display_name(model)}, BatchNorm diagnostic: eval mode and BatchNorm's "
            f"statistics re-estimated with Dropout off differ most at p={worst['p']:g}, "
            f"{num(worst['val_acc_mean'])}% vs {num(worst[col])}% validation accuracy "
            f"(p={lo['p']:g}: {num(lo['val_acc_mean'])}% vs {num(lo[col])}%).")
    fall, fall_re = lo["val_acc_mean"] - hi["val_acc_mean"], lo[col] - hi[col]
    if fall > noise:
        share = min(max((fall - fall_re) / fall, 0.0), 1.0)
        text += (f" Of the {num(fall, 1)} points eval mode loses from p={lo['p']:g} to "
                 f"p={hi['p']:g}, {share:.0%} are the running statistics not fitting eval "
                 "mode rather than what the weights learned.")
    return text + " The table's last column has every point."


@experiment_section("dropout_rate")
def dropout_rate(v: ReportView, exp: Experiment) -> str:
    """The study's dropout-rate sweep: the train-validation gap against p, and how much of
    the accuracy lost at high p the BatchNorm diagnostic gets back."""
    out = ["## Dropout rate", ""]
    models = v.tables.models_of(exp.name)
    out += [_gap_sentence(v, exp, m) for m in models]
    out += [line for m in models if (line := _diagnostic_sentence(v, exp, m))]
    out.append("")
    for m in models:
        out.append(v.figure(f"{exp.name}_{m}", f"{display_name(m)}: accuracy curves per "
                            "dropout rate"))
    out.append(v.figure(f"{exp.name}_summary", "Accuracy at the best-validation epoch "
                        "against the dropout rate"))
    out.append(experiment_table_md(v, exp.name))
    return "\n".join(out)


@experiment_section("batch_size")
def batch_size(v: ReportView, exp: Experiment) -> str:
    """The study's batch-size sweep: is the smallest batch the worst?"""
    out = ["## Batch size", ""]
    models = v.tables.models_of(exp.name)
    for m in models:
        smallest, worst, best = smallest_worst_best(v, exp, m)
        is_worst = smallest["label"] == worst["label"]
        out.append(
            f"- {display_name(m)}: test accuracy ranges from {num(worst['test_acc_mean'])}% "
            f"(batch {worst['label']}) to {num(best['test_acc_mean'])}% (batch "
            f"{best['label']}); the smallest batch ({smallest['label']}) "
            + ("is the worst." if is_worst else
               f"is not the worst here ({num(smallest['test_acc_mean'])}%)."))
    out.append("")
    for m in models:
        out.append(v.figure(f"{exp.name}_{m}", f"{display_name(m)}: accuracy curves per "
                            "batch size"))
    out.append(v.figure(f"{exp.name}_summary", "Accuracy against the batch size"))
    out.append(experiment_table_md(v, exp.name))
    return "\n".join(out)


