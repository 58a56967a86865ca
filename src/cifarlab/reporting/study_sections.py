"""Report sections written for the study's own experiments; a config selects one with
``section: <name>`` on an experiment (config/README.md, "Experiments")."""

from __future__ import annotations

from ..experiments import Experiment
from ..models import display_name
from .format import ci, md_table, num
from .sections import effect_sentence, experiment_view, smallest_worst_best
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
    out.append(md_table(experiment_view(v, exp.name)))
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
    out.append(md_table(experiment_view(v, exp.name)))
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


@experiment_section("dropout_rate")
def dropout_rate(v: ReportView, exp: Experiment) -> str:
    """The study's dropout-rate sweep: the train-validation gap against p."""
    out = ["## Dropout rate", ""]
    models = v.tables.models_of(exp.name)
    out += [_gap_sentence(v, exp, m) for m in models]
    out.append("")
    for m in models:
        out.append(v.figure(f"{exp.name}_{m}", f"{display_name(m)}: accuracy curves per "
                            "dropout rate"))
    out.append(v.figure(f"{exp.name}_summary", "Accuracy at the best-validation epoch "
                        "against the dropout rate"))
    out.append(md_table(experiment_view(v, exp.name)))
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
    out.append(md_table(experiment_view(v, exp.name)))
    return "\n".join(out)


