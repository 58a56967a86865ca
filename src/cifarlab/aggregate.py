"""Runs' metrics and histories -> the study's tables (accuracies in %, percentage points).

Tables written to ``out``:

* ``runs.csv``        one row per run: id, experiments, spec fields, metrics
* ``points.csv``      one row per grid point and seed (a shared run appears once per point)
* ``experiment_<name>.csv``  per (model, point): n, mean, sd, 95% interval of the accuracies
* ``effects.csv``     paired effects on test accuracy with intervals and verdicts
* ``effects_by_epoch.csv``  the same effects after every epoch, on the validation accuracy
  of the best epoch so far (how each effect developed over training)
* ``published.csv``   the published numbers beside the reproduced intervals
* ``history_long.csv`` / ``.parquet``  run, seed, epoch, split, metric, value
* ``plan.json``       the plan the tables came from
* ``experiments.json`` the experiments (kinds, effects, axes) the tables were made for
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from . import published
from .experiments import EffectDef, Experiment, effect_label, experiments_from_config
from .models import MODELS, model_order
from .rundir import RunDir
from .stats import accuracy_interval, paired_effect, published_verdict, verdict
from .tables import find_effect

log = logging.getLogger("cifarlab.aggregate")

ACC = ("train_acc", "val_acc", "test_acc")
METRIC_COLUMNS = ("best_epoch", "train_acc", "val_acc", "test_acc", "train_loss", "val_loss",
                  "test_loss", "best_train_acc", "best_val_acc", "val_acc_bn_reestimated",
                  "n_params", "seconds",
                  "images_per_second", "epochs_completed", "diverged", "diverged_epoch",
                  "diverged_train_loss",
                  "n_train", "n_val", "n_test", "device", "threads", "cpu", "torch", "cuda",
                  "precision", "channels_last", "compile", "cuda_graphs", "cuda_graphs_failed",
                  "git_commit",
                  "data_checksum", "started", "finished")
PCT = ("train_acc", "val_acc", "test_acc", "best_train_acc", "best_val_acc",
       "val_acc_bn_reestimated")


def _flatten(spec: dict) -> dict:
    row = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            for k, v in value.items():
                row[f"{key}.{k}"] = json.dumps(v) if isinstance(v, list) else v
        else:
            row[key] = value
    return row


def load_runs(plan: dict, runs_dir: Path) -> pd.DataFrame:
    rows = []
    for rid, entry in plan.items():
        metrics = RunDir(runs_dir / rid).read_metrics()
        row = {"run_id": rid,
               "experiments": ";".join(f"{m['experiment']}[{m['label']}]"
                                       for m in entry["members"]),
               "baseline": bool(entry.get("baseline", False))}
        row.update(_flatten(entry["spec"]))
        row.update({k: metrics.get(k) for k in METRIC_COLUMNS})
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in PCT:
        df[col] = df[col].astype(float) * 100.0
    return df


def points_table(plan: dict, runs: pd.DataFrame) -> pd.DataFrame:
    by_id = runs.set_index("run_id")
    rows = []
    for rid, entry in plan.items():
        for order, m in enumerate(entry["members"]):
            r = by_id.loc[rid]
            rows.append({"experiment": m["experiment"], "model": m["model"],
                         "label": m["label"], "value": m["value"], "seed": m["seed"],
                         "run_id": rid, "point_index": m.get("index", order),
                         **{k: r[k] for k in ("best_epoch", *PCT, "n_val", "n_test",
                                              "diverged", "seconds")}})
    # point_index: the point's position in the config, for table rows and plot order.
    return pd.DataFrame(rows).sort_values(["experiment", "model", "point_index", "seed"],
                                          kind="stable").reset_index(drop=True)


def experiment_table(points: pd.DataFrame, name: str) -> pd.DataFrame:
    sub = points[points["experiment"] == name]
    rows = []
    for (model, label), g in sub.groupby(["model", "label"], sort=False):
        row = {"experiment": name, "model": model, "label": label, "value": g["value"].iloc[0],
               "point_index": g["point_index"].iloc[0], "n_seeds": len(g),
               "run_ids": ";".join(g["run_id"]), "diverged": int(g["diverged"].sum())}
        n_test = int(g["n_test"].iloc[0])
        for col in ACC:
            # One seed: only the test accuracy gets an interval (binomial over test images);
            # train/val were used for training and selection, so none is given for them.
            iv = accuracy_interval(list(g[col] / 100.0), n_test if col == "test_acc" else 0)
            row.update({f"{col}_mean": iv.mean * 100, f"{col}_sd": iv.std * 100,
                        f"{col}_low": iv.low * 100, f"{col}_high": iv.high * 100,
                        f"{col}_interval": iv.method})
        row["best_epoch_mean"] = g["best_epoch"].mean()
        # The BatchNorm diagnostic (validation with re-estimated statistics; see
        # layers.reestimated_copy): NaN for points without BatchNorm.
        row["val_acc_bn_reestimated_mean"] = g["val_acc_bn_reestimated"].mean()
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["model", "point_index"]).reset_index(drop=True)


def _by_seed(points: pd.DataFrame, experiment: str, model: str, label: str,
             column: str = "test_acc") -> dict:
    """seed -> the point's ``column`` (accuracies as fractions; ``run_id`` as is)."""
    g = points[(points["experiment"] == experiment) & (points["model"] == model)
               & (points["label"] == label)]
    values = g[column] / 100.0 if column in PCT else g[column]
    return dict(zip(g["seed"], values, strict=True))


def _diagnostic_by_seed(points: pd.DataFrame, experiment: str, model: str, label: str,
                        val: dict) -> dict | None:
    """seed -> the point's validation accuracy (fraction) as the BatchNorm diagnostic sees
    it: with re-estimated statistics (``val_acc_bn_reestimated``) where the runs have them,
    eval mode's (``val``, by seed) where they have none (a run without BatchNorm has
    nothing to re-estimate). None when only some of the point's seeds have the diagnostic."""
    diag = _by_seed(points, experiment, model, label, "val_acc_bn_reestimated")
    missing = [s for s, x in diag.items() if not math.isfinite(x)]
    if missing and len(missing) < len(diag):
        return None
    return val if missing else diag


def _diagnostic_effect(points: pd.DataFrame, experiment: str, model: str, e: EffectDef,
                       seeds: list) -> dict:
    """The effect's paired difference on validation in eval mode and with the BatchNorm
    diagnostic (points; its interval too), where at least one side has the diagnostic."""
    none = {"val_difference": math.nan, "val_bn_reestimated_difference": math.nan,
            "val_bn_reestimated_low": math.nan, "val_bn_reestimated_high": math.nan,
            "val_bn_reestimated_verdict": ""}
    if "val_acc_bn_reestimated" not in points or "n_val" not in points:
        return none
    a_model, b_model = e.a_model or model, e.b_model or model
    va = _by_seed(points, experiment, a_model, e.a, "val_acc")
    vb = _by_seed(points, experiment, b_model, e.b, "val_acc")
    da = _diagnostic_by_seed(points, experiment, a_model, e.a, va)
    db = _diagnostic_by_seed(points, experiment, b_model, e.b, vb)
    if da is None or db is None or (da == va and db == vb):
        return none  # mixed seeds, or neither side has the diagnostic
    n_val = int(points["n_val"].max())
    iv = paired_effect([da[s] for s in seeds], [db[s] for s in seeds], n_val)
    return {"val_difference": 100 * sum(va[s] - vb[s] for s in seeds) / len(seeds),
            "val_bn_reestimated_difference": iv.mean * 100,
            "val_bn_reestimated_low": iv.low * 100, "val_bn_reestimated_high": iv.high * 100,
            "val_bn_reestimated_verdict": verdict(iv)}


def _effect_row(points: pd.DataFrame, experiment: str, model: str, e: EffectDef
                ) -> dict | None:
    sa = _by_seed(points, experiment, e.a_model or model, e.a)
    sb = _by_seed(points, experiment, e.b_model or model, e.b)
    seeds = sorted(set(sa) & set(sb))
    if not seeds:
        return None
    n_test = int(points["n_test"].iloc[0])
    iv = paired_effect([sa[s] for s in seeds], [sb[s] for s in seeds], n_test)
    diffs = [sa[s] - sb[s] for s in seeds]
    return {**_diagnostic_effect(points, experiment, model, e, seeds),
            "experiment": experiment, "model": model, "a": e.a, "b": e.b,
            "a_model": e.a_model or model, "b_model": e.b_model or model,
            "effect": effect_label(experiment, model, e, e.chosen_on_val),
            "metric": "test_acc", "n_seeds": len(seeds), "difference": iv.mean * 100,
            "sd": iv.std * 100, "low": iv.low * 100, "high": iv.high * 100,
            "interval": iv.method, "verdict": verdict(iv),
            # how many seeds' paired differences point each way (a verdict's evidence
            # beside its interval: 3 of 3 seeds agreeing is not nothing at n = 3)
            "n_higher": sum(d > 0 for d in diffs), "n_lower": sum(d < 0 for d in diffs)}


EFFECT_COLUMNS = ("experiment", "model", "a", "b", "a_model", "b_model", "effect", "metric",
                  "n_seeds", "difference", "sd", "low", "high", "interval", "verdict",
                  "n_higher", "n_lower",
                  # The BatchNorm diagnostic (not the study's metric): the effect on
                  # validation in eval mode, and with re-estimated statistics (its interval
                  # too), where a side has BatchNorm; NaN otherwise.
                  "val_difference", "val_bn_reestimated_difference", "val_bn_reestimated_low",
                  "val_bn_reestimated_high", "val_bn_reestimated_verdict")


def _effect_defs(points: pd.DataFrame, experiments: dict[str, Experiment]
                 ) -> list[tuple[str, str, EffectDef]]:
    """(experiment, model, effect) for every effect the experiments' kinds define."""
    out = []
    for name, exp in experiments.items():
        sub = points[points["experiment"] == name]
        if sub.empty:
            continue
        # Mean validation accuracy per (model, label): picks a sweep's "best" reference.
        val = {m: {str(k): v for k, v in g.groupby("label", sort=False)["val_acc"].mean().items()}
               for m, g in sub.sort_values("point_index").groupby("model")}
        out += [(name, m, e) for m, e in exp.effect_defs(val)]
    return out


def effects_table(points: pd.DataFrame, experiments: dict[str, Experiment]) -> pd.DataFrame:
    """Every effect the experiments' kinds define, keyed by (experiment, model, a, b)."""
    rows = [_effect_row(points, name, m, e) for name, m, e in _effect_defs(points, experiments)]
    return pd.DataFrame([r for r in rows if r is not None], columns=list(EFFECT_COLUMNS))


EFFECT_BY_EPOCH_COLUMNS = ("experiment", "model", "a", "b", "a_model", "b_model", "epoch",
                           "metric", "n_seeds", "difference", "sd", "low", "high", "interval")


def best_val_by_epoch(long: pd.DataFrame) -> pd.DataFrame:
    """run id x epoch: the validation accuracy (%) of the best epoch so far, i.e. of the
    checkpoint a run would have kept had it stopped after that epoch. After a run's last
    epoch (it diverged, or trains fewer epochs than others) it is the checkpoint the run
    kept, as in effects.csv, so every epoch pairs the same seeds."""
    val = long[(long["split"] == "val") & (long["metric"] == "acc")]
    table = val.pivot_table(index="run_id", columns="epoch", values="value", aggfunc="first")
    # cummax skips NaN but leaves it in place; ffill carries the kept checkpoint forward.
    return table.sort_index(axis=1).astype(float).cummax(axis=1).ffill(axis=1) * 100.0


def effects_by_epoch_table(points: pd.DataFrame, experiments: dict[str, Experiment],
                           long: pd.DataFrame, n_val: int) -> pd.DataFrame:
    """Every effect of ``effects_table`` after every epoch, on the validation accuracy of the
    best epoch so far, paired by seed as on test (one seed: the binomial interval over the
    ``n_val`` validation images). How an effect developed over training: the verdicts stay
    those on test, since validation chose the checkpoints."""
    best = best_val_by_epoch(long)
    rows = []
    for name, model, e in _effect_defs(points, experiments):
        sa = _by_seed(points, name, e.a_model or model, e.a, "run_id")
        sb = _by_seed(points, name, e.b_model or model, e.b, "run_id")
        seeds = [s for s in sorted(set(sa) & set(sb)) if sa[s] in best.index
                 and sb[s] in best.index]
        if not seeds:
            continue
        for epoch in best.columns:
            a = [best.at[sa[s], epoch] / 100.0 for s in seeds]
            b = [best.at[sb[s], epoch] / 100.0 for s in seeds]
            iv = paired_effect(a, b, n_val)
            if iv.n == 0:  # no seed has this epoch on both sides
                continue
            rows.append({"experiment": name, "model": model, "a": e.a, "b": e.b,
                         "a_model": e.a_model or model, "b_model": e.b_model or model,
                         "epoch": int(epoch), "metric": "best_val_acc_so_far",
                         "n_seeds": iv.n, "difference": iv.mean * 100, "sd": iv.std * 100,
                         "low": iv.low * 100, "high": iv.high * 100, "interval": iv.method})
    return pd.DataFrame(rows, columns=list(EFFECT_BY_EPOCH_COLUMNS))


def published_table(points: pd.DataFrame, runs: pd.DataFrame, effects: pd.DataFrame,
                    profile: str) -> pd.DataFrame:
    rows = []
    note = (f"reproduced by the '{profile}' profile; published: {published.SOURCE}. "
            "A scaled-down profile is not expected to match the published numbers.")
    for model in model_order(runs["model"]):
        values = MODELS[model].published if model in MODELS else None
        base = runs[(runs["model"] == model) & runs["baseline"]]
        if not values or base.empty:
            continue
        for col, pub in values.items():
            n_images = int(base["n_test"].iloc[0]) if col == "test_acc" else 0
            iv = accuracy_interval(list(base[col] / 100.0), n_images)
            rows.append(_published_row(f"{col} (baseline)", model, pub, iv.mean * 100,
                                       iv.low * 100, iv.high * 100, iv.method, profile, note))
    for key, pub in published.EFFECTS.items():
        r = find_effect(effects, key)
        if r is None:
            continue
        rows.append(_published_row(f"effect: {r['effect']}", key[1], pub, r["difference"],
                                   r["low"], r["high"], r["interval"], profile, note))
    for _finding, key, sign in published.FINDINGS:
        if key in published.EFFECTS:
            continue  # compared by number above
        r = find_effect(effects, key)
        if r is None:
            continue
        got = r["verdict"]
        rows.append({"quantity": f"effect: {r['effect']}", "model": key[1],
                     "published": math.nan, "published_finding": sign,
                     "reproduced": r["difference"], "low": r["low"], "high": r["high"],
                     "difference": math.nan, "interval": r["interval"],
                     "verdict": "reproduced" if got == sign else f"not reproduced ({got})",
                     "profile": profile, "note": note})
    return pd.DataFrame(rows)


def _published_row(quantity, model, pub, mean, low, high, method, profile, note) -> dict:
    from .stats import Interval

    v = published_verdict(pub / 100, Interval(mean / 100, 0, 1, low / 100, high / 100, method))
    return {"quantity": quantity, "model": model, "published": pub, "published_finding": "",
            "reproduced": mean, "low": low, "high": high, "difference": mean - pub,
            "interval": method, "verdict": v, "profile": profile, "note": note}


def history_long(plan: dict, runs_dir: Path) -> pd.DataFrame:
    frames = []
    for rid, entry in plan.items():
        h = RunDir(runs_dir / rid).read_history()
        if h.empty:  # diverged in its first epoch: nothing to add
            continue
        long = h.melt(id_vars=["epoch"], value_vars=["train_loss", "train_acc", "val_loss",
                                                      "val_acc"], var_name="key")
        long[["split", "metric"]] = long["key"].str.split("_", n=1, expand=True)
        long.insert(0, "seed", entry["spec"]["seed"])
        long.insert(0, "run_id", rid)
        frames.append(long.drop(columns="key")[["run_id", "seed", "epoch", "split", "metric",
                                                "value"]])
    if not frames:
        return pd.DataFrame(columns=["run_id", "seed", "epoch", "split", "metric", "value"])
    return pd.concat(frames, ignore_index=True)


def default_experiments(plan: dict) -> dict:
    """The experiments of a plan as named points with default effects (no config at hand)."""
    out: dict[str, dict] = {}
    for entry in plan.values():
        for m in entry["members"]:
            exp = out.setdefault(m["experiment"], {"models": [], "points": {}})
            if m["model"] not in exp["models"]:
                exp["models"].append(m["model"])
            exp["points"].setdefault(m["label"], {})
    return out


def aggregate(plan: dict | Path, runs_dir: Path, out: Path, profile: str = "",
              experiments: dict | None = None) -> dict:
    """Write every table; returns {name: DataFrame}.

    ``experiments`` is the config's ``experiments`` section (it decides the effects); it is
    written to ``experiments.json`` beside the tables for the figures and the report.
    """
    if not isinstance(plan, dict):
        plan = json.loads(Path(plan).read_text())
    experiments = dict(experiments) if experiments else default_experiments(plan)
    runs = load_runs(plan, runs_dir)
    points = points_table(plan, runs)
    tables = {"runs": runs, "points": points}
    for name in dict.fromkeys(points["experiment"]):
        tables[f"experiment_{name}"] = experiment_table(points, name)
    effects = effects_table(points, experiments_from_config(experiments))
    tables["effects"] = effects
    tables["published"] = published_table(points, runs, effects, profile)
    long = history_long(plan, runs_dir)
    n_val = int(runs["n_val"].dropna().max()) if runs["n_val"].notna().any() else 0
    by_epoch = effects_by_epoch_table(points, experiments_from_config(experiments), long,
                                      n_val)
    _write_all(out, {
        "effects_by_epoch.csv": lambda p: by_epoch.to_csv(p, index=False),
        **{f"{name}.csv": (lambda p, df=df: df.to_csv(p, index=False))
           for name, df in tables.items()},
        "history_long.csv": lambda p: long.to_csv(p, index=False),
        "history_long.parquet": lambda p: long.to_parquet(p, index=False),
        "plan.json": lambda p: p.write_text(json.dumps(plan, indent=1) + "\n"),
        "experiments.json": lambda p: p.write_text(json.dumps(experiments, indent=1) + "\n"),
    })
    log.info("wrote %d tables for %d runs to %s", len(tables) + 1, len(runs), out)
    return tables


def _write_all(out: Path, writers: dict[str, Callable[[Path], object]]) -> None:
    """All or nothing: every file is written into a scratch folder first and moved into
    ``out`` only when all were written, so a failure leaves the previous tables as they
    were (never half old, half new)."""
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".aggregate-", dir=out))
    try:
        for name, write in writers.items():
            write(scratch / name)
        for name in writers:
            os.replace(scratch / name, out / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
