"""One bad run never blocks the report; completed runs are never trained again.

Real (tiny) training on synthetic images: an lr sweep whose lr = 100 diverges in the
first epoch with a finite loss, then aggregation, figures and the report.
"""

from __future__ import annotations

import copy
import json
import shutil

import pandas as pd
import pytest

from cifarlab import plots, reporting
from cifarlab.aggregate import aggregate
from cifarlab.reporting import ReportView
from cifarlab.rundir import RunDir
from cifarlab.study import build_plan, normalize_config
from cifarlab.train import RunError, train_run
from test_train import SPLIT, make_splits, spec

CONFIG = {
    "profile": "unit",
    "data": {"source": "url", "md5": "none"},  # "official:unverified": no checksum check
    "split": {k: v for k, v in SPLIT.items()},
    "seeds": [0, 1],
    "models": {"mlp": {"arch": {"hidden": 8, "bn": True, "dropout": 0.2}, "optimizer": "adamw",
                       "lr": 1e-3, "weight_decay": 1e-3, "batch_size": 50, "epochs": 2}},
    "experiments": {"lr": {"models": ["mlp"],
                           "sweep": {"key": "lr", "values": [1e-3, 100.0], "reference": 1e-3,
                                     "scale": "log", "axis": "learning rate"}}},
}


@pytest.fixture(scope="module")
def lr_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("failures")
    cfg = normalize_config(copy.deepcopy(CONFIG))
    plan = build_plan(cfg)
    data = make_splits()
    for rid, entry in plan.items():
        train_run(entry["spec"], data, root / "runs" / rid, threads=1, progress=False)
    tables = aggregate(plan, root / "runs", root / "tables", profile="unit",
                       experiments=cfg["experiments"])
    return {"root": root, "plan": plan, "tables": tables, "data": data}


def test_a_finite_exploding_loss_is_divergence(lr_study):
    runs = lr_study["tables"]["runs"]
    bad = runs[runs["lr"] == 100.0]
    assert len(bad) == 2 and bad["diverged"].all()
    assert (bad["diverged_epoch"] == 1).all() and (bad["epochs_completed"] == 0).all()
    assert (bad["diverged_train_loss"].astype(float) > 23.0).all()  # finite, yet diverged
    assert bad["test_acc"].isna().all()
    good = runs[runs["lr"] == 1e-3]
    assert not good["diverged"].any() and good["test_acc"].notna().all()


def test_tables_figures_and_report_cope_with_runs_without_epochs(lr_study, tmp_path):
    root = lr_study["root"]
    long = lr_study["tables"]["runs"]  # aggregate returned: the tables were written
    assert (root / "tables/history_long.csv").exists() and len(long) == 4
    written = plots.make_figures(root / "tables", root / "runs", tmp_path / "figures")
    assert any(p.stem == "lr_summary" for p in written)
    v = ReportView.load(root / "tables", "figures", root / "runs", profile="unit")
    text = "\n\n".join(section(v) for section in reporting.REPORT)
    assert "## Runs that diverged" in text and "2 of 4 runs diverged" in text
    effects = lr_study["tables"]["effects"]
    assert effects.empty or (effects["verdict"] == "not measured").all()


def test_no_failure_section_when_every_run_trained():
    """The section appears whenever a run diverged, and only then."""
    class Tables:
        runs = pd.DataFrame({"run_id": ["a"], "experiments": ["x"], "diverged": [False],
                             "diverged_epoch": [None], "epochs_completed": [3],
                             "test_acc": [50.0]})

    assert reporting.failures(type("V", (), {"tables": Tables})()) == ""


def test_aggregation_is_all_or_nothing(lr_study, tmp_path, monkeypatch):
    out = tmp_path / "tables"
    shutil.copytree(lr_study["root"] / "tables", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*_args, **_kwargs):
        raise OSError("disk went away")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    runs_json = json.loads((out / "plan.json").read_text())
    with pytest.raises(OSError, match="disk went away"):
        aggregate(runs_json, lr_study["root"] / "runs", out, profile="changed",
                  experiments=normalize_config(copy.deepcopy(CONFIG))["experiments"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half-written


# ---------------------------------------------------------------- completion survives
def test_outputs_deleted_by_snakemake_are_restored_not_retrained(tmp_path):
    data = make_splits()
    s = spec(epochs=2)
    first = train_run(s, data, tmp_path / "r", threads=1)
    run = RunDir(tmp_path / "r")
    files = {p: p.read_bytes() for p in (run.metrics_path, run.history_path, run.best_path)}
    for p in files:  # what Snakemake does before rerunning a job
        p.unlink()
    # No data at all: restoring needs none, so it cannot have trained.
    again = train_run(s, None, tmp_path / "r", threads=1)
    assert again == first
    assert {p: p.read_bytes() for p in files} == files


def test_killed_between_record_and_metrics_is_complete(tmp_path):
    data = make_splits()
    s = spec(epochs=1)
    first = train_run(s, data, tmp_path / "r", threads=1)
    RunDir(tmp_path / "r").metrics_path.unlink()  # the job died just before this write
    assert train_run(s, None, tmp_path / "r", threads=1) == first


def test_force_and_changed_data_retrain(tmp_path, caplog):
    data = make_splits()
    s = spec(epochs=1)
    train_run(s, data, tmp_path / "r", threads=1)
    run = RunDir(tmp_path / "r")
    run.metrics_path.unlink()
    other = make_splits()
    other.checksum = "feedface"
    with caplog.at_level("WARNING"):
        m = train_run(s, other, tmp_path / "r", threads=1)
    assert "checksum deadbeef" in caplog.text and "training it again" in caplog.text
    assert m["data_checksum"] == "feedface"
    with pytest.raises(RunError, match="no completed record"):
        train_run(spec(epochs=3), None, tmp_path / "new", threads=1)


def test_runs_completed_before_records_existed_gain_one(tmp_path):
    data = make_splits()
    s = spec(epochs=1)
    first = train_run(s, data, tmp_path / "r", threads=1)
    run = RunDir(tmp_path / "r")
    shutil.rmtree(run.record.path)  # as a run folder of an older cifarlab
    assert train_run(s, data, tmp_path / "r", threads=1) == first
    assert run.recorded_metrics(s) == first


def test_figures_and_report_when_a_baseline_diverged(tmp_path):
    """The model's own settings diverge (lr = 100): its curves figure has no best epoch."""
    cfg = copy.deepcopy(CONFIG)
    cfg["seeds"] = [0]
    cfg["models"]["mlp"]["lr"] = 100.0
    cfg["experiments"]["lr"]["sweep"].update(values=[100.0, 1e-3], reference=100.0)
    cfg = normalize_config(cfg)
    plan = build_plan(cfg)
    data = make_splits()
    for rid, entry in plan.items():
        train_run(entry["spec"], data, tmp_path / "runs" / rid, threads=1, progress=False)
    aggregate(plan, tmp_path / "runs", tmp_path / "tables", profile="unit",
              experiments=cfg["experiments"])
    written = plots.make_figures(tmp_path / "tables", tmp_path / "runs", tmp_path / "figures")
    assert any(p.stem == "curves_mlp" for p in written)
    v = ReportView.load(tmp_path / "tables", "figures", tmp_path / "runs", profile="unit")
    assert "## Runs that diverged" in "\n".join(section(v) for section in reporting.REPORT)
