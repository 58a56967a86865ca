"""Aggregation, figures and report sections on small hand-made runs with known accuracies.

The runs are written by the test (metrics.json, history.csv, best.pt of tiny models), so
every effect, verdict and sentence below is checked against numbers chosen here.
"""

from __future__ import annotations

import copy
import json
import math
import shutil

import pandas as pd
import pytest
import torch

from cifarlab import plots, reporting
from cifarlab.aggregate import aggregate, find_effect
from cifarlab.experiments import experiments_from_config
from cifarlab.models import build_model
from cifarlab.reporting import ReportView
from cifarlab.study import build_plan, normalize_config
from cifarlab.system import machine_info

SEEDS = [0, 1, 2]
CONFIG = {
    "profile": "unit",
    "data": {"source": "url", "md5": "0" * 32},
    "split": {"n_train": 400, "n_val": 100},
    "seeds": SEEDS,
    "models": {
        "mlp": {"arch": {"hidden": 4, "bn": True, "dropout": 0.5}, "optimizer": "adamw",
                "lr": 1e-3, "weight_decay": 1e-3, "batch_size": 50, "epochs": 2},
        "cnn": {"arch": {"channels": [2, 2], "bn": True, "dropout": 0.4}, "optimizer": "adamw",
                "lr": 1e-3, "weight_decay": 1e-5, "batch_size": 50, "epochs": 2},
    },
    "experiments": {
        "ablation": {"models": ["mlp", "cnn"],
                     "points": {"full": {}, "no_bn": {"arch": {"bn": False}},
                                "no_dropout": {"arch": {"dropout": 0.0}}},
                     "effects": [["full", "no_bn"], ["full", "no_dropout"]],
                     "model_contrast": {"a": "cnn", "b": "mlp", "point": "full"},
                     "section": "ablation"},
        # A config-only sweep no code knows by name.
        "weight_decay": {"models": ["mlp"],
                         "sweep": {"key": "weight_decay", "values": [1e-4, 1e-3, 1e-1],
                                   "reference": "best", "scale": "log",
                                   "axis": "weight decay"}},
    },
}


def made_up_accuracy(spec: dict) -> float:
    """The made-up test accuracy of a run (fraction): BN +5 points for the MLP, CNN +10."""
    arch, seed = spec["arch"], spec["seed"]
    acc = 0.50 if spec["model"] == "mlp" else 0.60
    acc += 0.05 if arch["bn"] else 0.002 * seed
    acc -= 0.0 if arch["dropout"] else 0.001 * (seed - 1)  # dropout: no real effect
    acc -= {1e-4: 0.02, 1e-3: 0.0, 1e-1: 0.08}.get(spec["weight_decay"], 0.0)
    return acc + 0.001 * seed



def _write_runs(plan: dict, runs_dir, cpus: list[str]) -> None:
    for i, (rid, entry) in enumerate(sorted(plan.items())):
        spec = entry["spec"]
        acc = made_up_accuracy(spec)
        run = runs_dir / rid
        run.mkdir(parents=True)
        torch.manual_seed(i)
        model = build_model(spec["model"], **spec["arch"])
        torch.save(model.state_dict(), run / "best.pt")
        (run / "history.csv").write_text(
            "epoch,train_loss,train_acc,val_loss,val_acc,seconds\n"
            f"1,2.0,{acc - 0.05},2.1,{acc - 0.04},1.0\n2,1.5,{acc + 0.1},1.9,{acc},1.0\n")
        metrics = {"best_epoch": 2, "train_acc": acc + 0.1, "val_acc": acc, "test_acc": acc,
                   "train_loss": 1.5, "val_loss": 1.9, "test_loss": 1.9,
                   "best_train_acc": acc + 0.1, "best_val_acc": acc, "n_params": 10,
                   "seconds": 2.0, "images_per_second": 400.0, "epochs_completed": 2,
                   "diverged": False, "diverged_epoch": None, "n_train": 400, "n_val": 100,
                   "n_test": 10000, "device": "NVIDIA H200", "threads": 1,
                   "cpu": cpus[i % len(cpus)], "torch": "9.9.9", "precision": "bf16",
                   "git_commit": "abc", "data_checksum": "0" * 32,
                   "started": "2026-01-01T00:00:00+00:00",
                   "finished": "2026-01-01T00:10:00+00:00"}
        (run / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    plan = build_plan(normalize_config(copy.deepcopy(CONFIG)))  # as the Snakefile does
    _write_runs(plan, root / "runs", cpus=["Trainer CPU 9000", "Other CPU 42"])
    tables = aggregate(plan, root / "runs", root / "tables", profile="unit",
                       experiments=CONFIG["experiments"])
    return {"root": root, "plan": plan, "tables": tables}


def test_effects_are_keyed_by_ids_with_the_numbers_chosen(study):
    effects = study["tables"]["effects"]
    bn = find_effect(effects, ("ablation", "mlp", "full", "no_bn"))
    # full - no_bn per seed: 0.05 - 0.002 * seed -> 5.0, 4.8, 4.6 points.
    assert bn["difference"] == pytest.approx(4.8, abs=1e-6)
    assert bn["verdict"] == "better" and bn["n_seeds"] == 3
    assert bn["effect"] == "ablation: full - no_bn"  # derived from the id, for display
    dropout = find_effect(effects, ("ablation", "cnn", "full", "no_dropout"))
    assert dropout["difference"] == pytest.approx(0.0, abs=1e-6)
    assert dropout["verdict"].startswith("no detectable difference")
    contrast = find_effect(effects, ("ablation", "cnn-mlp", "full", "full"))
    assert contrast["difference"] == pytest.approx(10.0, abs=1e-6)
    assert contrast["verdict"] == "better"


def test_sweep_effects_are_against_the_best_on_validation(study):
    effects = study["tables"]["effects"]
    wd = effects[effects["experiment"] == "weight_decay"]
    # validation accuracy is highest at 1e-3 (the others lose 2 and 8 points)
    assert set(wd["b"].astype(str)) == {"0.001"}
    assert set(wd["a"].astype(str)) == {"0.0001", "0.1"}
    assert wd.set_index(wd["a"].astype(str)).loc["0.1", "difference"] == pytest.approx(-8.0)
    assert wd["effect"].str.contains("chosen on val").all()


def test_published_numbers_join_on_ids_not_labels(study):
    pub = study["tables"]["published"]
    row = pub[(pub["quantity"] == "effect: ablation: full - no_bn") & (pub["model"] == "mlp")]
    assert row["published"].iloc[0] == 2.08
    assert row["reproduced"].iloc[0] == pytest.approx(4.8)
    assert row["verdict"].iloc[0] == "higher"
    qualitative = pub[pub["published_finding"].fillna("") == "better"]
    assert "cnn-mlp" in set(qualitative["model"])  # CNN beats MLP, a finding without number


def test_runs_table_carries_the_training_machines(study):
    runs = study["tables"]["runs"]
    assert set(runs["cpu"]) == {"Trainer CPU 9000", "Other CPU 42"}
    assert set(runs["torch"]) == {"9.9.9"} and set(runs["precision"]) == {"bf16"}


def test_figures_draw_what_is_promised_with_the_declared_axis(study, monkeypatch):
    root = study["root"]
    out = root / "figures"
    titles: dict[str, str] = {}
    save = plots._save

    def record(fig, folder, name, *formats):  # the title each figure is saved with
        titles[name] = fig._suptitle.get_text()
        return save(fig, folder, name, *formats)

    monkeypatch.setattr(plots, "_save", record)
    written = plots.make_figures(root / "tables", root / "runs", out)
    monkeypatch.setattr(plots, "_save", save)
    names = {p.stem for p in written if p.suffix == ".png" and p.parent == out}
    assert {"weight_decay_mlp", "weight_decay_summary", "ablation_mlp", "ablation_cnn",
            "first_layer_mlp", "first_layer_cnn", "curves_mlp", "curves_cnn",
            "findings_over_training"} <= names
    table = pd.read_csv(root / "tables/experiment_weight_decay.csv", dtype={"label": str})
    exp = experiments_from_config(CONFIG["experiments"])["weight_decay"]
    fig = plots.fig_sweep_summary(table, "t", exp.axis, exp.scale == "log")
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_xlabel() == "weight decay"
    # Titles: one parenthetical remark each (never ") (" or doubled brackets), readable
    # experiment names instead of config keys, and the number of filters really shown.
    for name, title in titles.items():
        assert ") (" not in title and "((" not in title and "))" not in title, (name, title)
        assert "weight_decay" not in title and ": ablation" not in title, (name, title)
    assert titles["curves_mlp"] == ("MLP baseline: loss and accuracy (best val at epoch 2; "
                                    "mean and 95% band over 3 seeds)")
    assert titles["ablation_cnn"] == "Ablation: CNN"
    assert titles["weight_decay_mlp"] == "Weight decay sweep: MLP"
    assert titles["weight_decay_summary"].startswith("Weight decay: accuracy")
    assert "(all 2 filters," in titles["first_layer_cnn"]  # channels [2, 2]: not "first 64"
    assert "(all 4 units," in titles["first_layer_mlp"]  # hidden = 4
    assert titles["findings_over_training"].startswith("The study's findings over training")
    # The files each figure promises: the study's figures as PNG and SVG, each run's
    # learning curves as PNG only.
    from cifarlab.pipeline import figure_entries

    promised_files = {f"{e.name}.{ext}" for e in figure_entries(study["plan"],
                                                                CONFIG["experiments"])
                      for ext in e.formats}
    assert {str(p.relative_to(out)) for p in written} == promised_files
    assert any(f.startswith("runs/") for f in promised_files)
    assert not any(f.startswith("runs/") and f.endswith(".svg") for f in promised_files)
    assert "ablation_cnn.svg" in promised_files
    # The per-run figures drawn by two processes: the same files.
    twice = plots.make_figures(root / "tables", root / "runs", root / "figures_2jobs", jobs=2)
    assert sorted(p.relative_to(root / "figures_2jobs") for p in twice) == sorted(
        p.relative_to(out) for p in written)
    # An error in the study's figures stops the call (the workers are waited for, not left).
    def broken(*a):
        raise ValueError("a broken figure")

    monkeypatch.setattr(plots, "_study_figures", broken)
    with pytest.raises(ValueError, match="a broken figure"):
        plots.make_figures(root / "tables", root / "runs", root / "figures_broken", jobs=2)
    monkeypatch.undo()
    # A promised figure that is not drawn is an error, never a silent gap.
    promised = plots.figure_names
    monkeypatch.setattr(plots, "figure_names", lambda *a: [*promised(*a), "never_drawn"])
    with pytest.raises(RuntimeError, match="never_drawn"):
        plots.make_figures(root / "tables", root / "runs", root / "figures2")


def test_the_findings_figure_is_promised_only_where_an_experiment_measures_a_finding(study):
    from cifarlab.pipeline import figure_names

    assert "findings_over_training" in figure_names(study["plan"], CONFIG["experiments"])
    config = copy.deepcopy(CONFIG)
    del config["experiments"]["ablation"]  # only the weight-decay sweep: no finding
    plan = build_plan(normalize_config(config))
    assert "findings_over_training" not in figure_names(plan, config["experiments"])


def _points(rows: list[tuple[str, str, int, str]]) -> pd.DataFrame:
    """points.csv rows (experiment ablation, model mlp) from (label, run id, seed, val %)."""
    return pd.DataFrame([{"experiment": "ablation", "model": "mlp", "label": label,
                          "value": None, "seed": seed, "run_id": rid, "point_index": i,
                          "val_acc": 50.0, "test_acc": 50.0}
                         for i, (label, rid, seed) in enumerate(rows)])


def _long(curves: dict[str, list[float]]) -> pd.DataFrame:
    """history_long rows of validation accuracy (fractions) per run and epoch."""
    return pd.DataFrame([{"run_id": rid, "seed": 0, "epoch": e + 1, "split": "val",
                          "metric": "acc", "value": v}
                         for rid, vals in curves.items() for e, v in enumerate(vals)])


def test_effects_by_epoch_pair_seeds_on_the_best_validation_accuracy_so_far():
    from cifarlab.aggregate import best_val_by_epoch, effects_by_epoch_table

    curves = {"a0": [0.50, 0.40, 0.60], "b0": [0.45, 0.55, 0.50],
              "a1": [0.52, 0.58], "b1": [0.50, 0.50, 0.50]}  # a1 stopped after epoch 2
    best = best_val_by_epoch(_long(curves))
    assert list(best.loc["a0"]) == pytest.approx([50.0, 50.0, 60.0])  # the drop is not kept
    # a run that stopped keeps its checkpoint: epoch 3 pairs the same seeds as epoch 2
    assert list(best.loc["a1"]) == pytest.approx([52.0, 58.0, 58.0])
    points = _points([("full", "a0", 0), ("full", "a1", 1),
                      ("no_bn", "b0", 0), ("no_bn", "b1", 1)])
    exps = experiments_from_config({"ablation": {
        "models": ["mlp"], "points": {"full": {}, "no_bn": {"arch": {"bn": False}}},
        "effects": [["full", "no_bn"]]}})
    t = effects_by_epoch_table(points, exps, _long(curves), n_val=1000).set_index("epoch")
    assert set(t["a"]) == {"full"} and set(t["b"]) == {"no_bn"}
    assert set(t["metric"]) == {"best_val_acc_so_far"} and set(t["n_seeds"]) == {2}
    # epoch 1: 50 - 45 and 52 - 50; epoch 2: 50 - 55 and 58 - 50; epoch 3: 60 - 55, 58 - 50
    assert list(t["difference"]) == pytest.approx([3.5, 1.5, 6.5])
    assert t.at[2, "interval"] == "t over seeds" and t.at[2, "low"] < 0 < t.at[2, "high"]
    # one seed: the binomial interval over the 1,000 validation images
    one = effects_by_epoch_table(points[points["seed"] == 0], exps, _long(curves),
                                 n_val=1000).set_index("epoch")
    assert one.at[3, "n_seeds"] == 1 and one.at[3, "difference"] == pytest.approx(5.0)
    se = math.sqrt((0.6 * 0.4 + 0.55 * 0.45) / 1000) * 100
    assert one.at[3, "high"] - one.at[3, "low"] == pytest.approx(2 * 1.95996 * se, rel=1e-4)


def test_findings_over_training_show_each_findings_effect_by_epoch(study):
    v = _view(study)
    by_epoch = v.tables.effect_by_epoch(("ablation", "mlp", "full", "no_bn"))
    # The last epoch's best validation accuracy is the made-up test accuracy here, so the
    # effect there is the test effect: 4.8 points.
    assert list(by_epoch["epoch"]) == [1, 2]
    assert by_epoch["difference"].iloc[-1] == pytest.approx(4.8)
    text = reporting.findings_over_training(v)
    assert text.startswith("## How the findings developed over training")
    assert "figures/findings_over_training.png" in text
    head = _table_row(text, "finding (study)")
    assert head[1:3] == ["epoch 1", "epoch 2"]
    bn = dict(zip(head, _table_row(text, "BatchNorm raises MLP test accuracy"), strict=True))
    assert bn["epoch 2"].startswith("+4.80 [") and bn["status (on test)"] == "reproduced"
    # Every history here is offset by the same amount at epoch 1, so nothing moved.
    assert bn["change after epoch 1, the study's way"] == "0.00"
    assert ("Of the 2 findings not reproduced on test, none moved the study's way after "
            "epoch 1") in text


def test_findings_over_training_are_left_out_for_tables_without_them(study):
    import dataclasses

    v = _view(study)
    old = dataclasses.replace(v, tables=dataclasses.replace(v.tables,
                                                            effects_by_epoch=pd.DataFrame()))
    assert reporting.findings_over_training(old) == ""
    assert "**3 of 8 findings reproduced.**" in reporting.findings(old)
    # The figure cannot be drawn from such tables: the error says how to make them.
    root = study["root"]
    stale = root / "tables_before_effects_by_epoch"
    shutil.copytree(root / "tables", stale)
    (stale / "effects_by_epoch.csv").unlink()
    with pytest.raises(FileNotFoundError, match="aggregate the runs again"):
        plots.make_figures(stale, root / "runs", root / "figures_stale")


def test_figures_refuse_a_number_of_jobs_below_one(study, capsys):
    from cifarlab.cli import main

    root = study["root"]
    with pytest.raises(SystemExit) as exit_info:
        main(["figures", "--tables", str(root / "tables"), "--runs", str(root / "runs"),
              "--out", str(root / "figures_0"), "--jobs", "0"])
    assert exit_info.value.code == 2
    assert "--jobs: expected a whole number >= 1, got '0'" in capsys.readouterr().err


def test_report_header_names_the_training_machines_not_the_renderer(study):
    v = ReportView.load(study["root"] / "tables", "figures", study["root"] / "runs",
                        profile="unit")
    header = reporting.header(v)
    assert "`Other CPU 42` (" in header and "`Trainer CPU 9000` (" in header
    assert "torch `9.9.9`" in header and "precision `bf16`" in header
    assert machine_info()["cpu"] not in header


def test_report_sections_follow_the_experiment_kinds(study):
    v = ReportView.load(study["root"] / "tables", "figures", study["root"] / "runs",
                        profile="unit")
    sections = reporting.experiment_sections(v)
    assert "## The effect of BatchNorm and Dropout" in sections  # asked for by `section:`
    assert "## Weight decay\n" in sections  # the generic sweep one, titled for people
    assert "Experiment `weight_decay`, a sweep over weight decay" in sections
    assert "*Weight decay, MLP: accuracy curves per weight decay*" in sections
    assert "weight decay = 0.001" in sections  # its best value on validation
    assert "figures/weight_decay_summary.png" in sections
    findings = reporting.findings(v)
    assert "BatchNorm raises MLP test accuracy" in findings
    assert "CNN beats MLP on test accuracy" in findings
    assert "Dropout2d" not in findings  # not measured here: not claimed
    accuracy = reporting.accuracy(v)
    assert "56.09" in accuracy and "80.66" in accuracy
    contrast = reporting.model_contrast(v)
    assert "## CNN vs MLP" in contrast and "+10.00 points" in contrast
    assert "shares each filter" in contrast  # the registry's words on each model


def test_report_sections_leave_the_shared_view_unchanged(study):
    """Every section reads the one view; none may modify what the next section reads."""
    v = ReportView.load(study["root"] / "tables", "figures", study["root"] / "runs",
                        profile="unit")
    fresh = ReportView.load(study["root"] / "tables", "figures", study["root"] / "runs")
    texts = [section(v) for section in reporting.REPORT]
    assert all(isinstance(t, str) for t in texts) and sum(map(len, texts)) > 5000
    for name in ("runs", "points", "effects", "published"):
        pd.testing.assert_frame_equal(getattr(v.tables, name), getattr(fresh.tables, name))
    for name, table in fresh.tables.experiment_tables.items():
        pd.testing.assert_frame_equal(v.tables.experiment_tables[name], table)


def test_notebook_renders_the_report_sections_in_order():
    """The notebook stays a thin list of calls: the sections of REPORT, in order."""
    import re
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parents[1]
                     / "workflow/notebooks/report.ipynb").read_text())
    called = [m for c in nb["cells"] if c["cell_type"] == "code"
              for m in re.findall(r"rep\.(\w+)\(v\)", "".join(c["source"]))]
    assert called == [f.__name__ for f in reporting.REPORT]


def test_between_model_effects_are_structured_not_parsed(study):
    effects = study["tables"]["effects"]
    between = effects[effects["a_model"] != effects["b_model"]]
    assert list(zip(between["a_model"], between["b_model"], strict=True)) == [("cnn", "mlp")]
    assert between["effect"].iloc[0] == "ablation: cnn - mlp at full"
    within = effects[effects["a_model"] == effects["b_model"]]
    assert (within["a_model"] == within["model"]).all()


def test_training_flag_numbers_are_the_layers_behaviour():
    from cifarlab.layers import demonstrate_training_flag

    d = demonstrate_training_flag()
    assert abs(d["bn_train_mean"]) < 1e-5 and math.isclose(d["bn_train_std"], 1, rel_tol=0.01)
    assert math.isclose(d["dropout_scale"], 2.0) and d["dropout_eval_mean"] == 1.0


def _table_row(markdown: str, first_cell: str) -> list[str]:
    """The cells of the Markdown table row whose first cell is ``first_cell``."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in\n{markdown}")


def _view(study) -> ReportView:
    return ReportView.load(study["root"] / "tables", "figures", study["root"] / "runs",
                           profile="unit")


def test_findings_count_the_study_findings_and_give_each_margin(study):
    findings = reporting.findings(_view(study))
    # 5 of the study's 8 findings are measured here (no dropout2d, no batch-size sweep);
    # BN (MLP, CNN) and CNN > MLP reproduce. The total stays the study's 8.
    assert "**3 of 8 findings reproduced.**" in findings
    assert "3 of the study's 8 findings are not measured" in findings
    head = _table_row(findings, "finding (study)")
    assert "margin (SE)" in head
    bn = dict(zip(head, _table_row(findings, "BatchNorm raises MLP test accuracy"),
                  strict=True))
    # full - no_bn per seed 5.0, 4.8, 4.6: SE = 0.2 / sqrt(3); lower end 4.8 - 4.303 SE.
    se = 0.2 / math.sqrt(3)
    assert float(bn["margin (SE)"]) == pytest.approx(4.8 / se - 4.3027, abs=0.01)
    # Dropout in the CNN: zero lies inside the interval, so the margin is negative.
    dropout = dict(zip(head, _table_row(findings, "Dropout lowers CNN test accuracy"),
                       strict=True))
    assert float(dropout["margin (SE)"]) < 0
    assert "*Margin (SE)*:" in findings and "t = 4.30 for 3 seeds" in findings
    # every seed's BN difference is positive; of full - no_dropout (-0.1, 0, +0.1 points)
    # one seed is lower, as the study's "Dropout lowers CNN" expects
    assert bn["seeds the study's way"] == "3 of 3"
    assert dropout["seeds the study's way"] == "1 of 3"
    assert "every seed's paired difference points" not in findings


def test_findings_name_the_unreproduced_ones_every_seed_agrees_with(study):
    import dataclasses

    v = _view(study)
    eff = v.tables.effects.copy()
    row = ((eff["experiment"] == "ablation") & (eff["model"] == "cnn")
           & (eff["a"] == "full") & (eff["b"] == "no_dropout"))
    eff.loc[row, "n_lower"] = 3  # all three seeds lower, the interval still across zero
    tables = dataclasses.replace(v.tables, effects=eff)
    findings = reporting.findings(dataclasses.replace(v, tables=tables))
    assert "**3 of 8 findings reproduced.** In 1 more, every seed's paired difference " \
           "points the study's way, but the interval still includes zero: Dropout lowers " \
           "CNN test accuracy." in findings
    head = _table_row(findings, "finding (study)")
    row = dict(zip(head, _table_row(findings, "Dropout lowers CNN test accuracy"), strict=True))
    assert row["seeds the study's way"] == "3 of 3" and row["status"] == "not reproduced"


def test_reproduction_does_not_call_a_row_without_a_number_reproduced(study):
    text = reporting.reproduction(_view(study))
    head = _table_row(text, "quantity")
    row = dict(zip(head, _table_row(text, "effect: ablation: cnn - mlp at full"), strict=True))
    # CNN > MLP is a finding without a published number: its direction is reproduced,
    # but no published value lies in any interval.
    assert row["published"] == "no published value"
    assert row["verdict"] != "reproduced" and row["verdict"].startswith("no published value")
    numbered = dict(zip(head, _table_row(text, "test_acc (baseline)"), strict=True))
    assert numbered["published"] == "56.09"


def test_ablation_figures_name_two_separate_ablations(study):
    sections = reporting.experiment_sections(_view(study))
    assert "full vs no BatchNorm vs no Dropout" not in sections
    assert ("*MLP ablations, three separate runs per seed: full (BatchNorm and Dropout); "
            "no BatchNorm (Dropout kept); no Dropout (BatchNorm kept)*") in sections


def test_first_layer_captions_state_the_units_shown(study):
    text = reporting.figures_of_features(_view(study))
    assert "(all 2 filters, each scaled to its own range)" in text  # CNN channels [2, 2]
    assert "(all 4 units, each scaled to its own range)" in text  # MLP hidden = 4
    assert "first 64" not in text


def test_hyperparameters_print_settings_as_the_config_writes_them(study):
    text = reporting.hyperparameters(_view(study))
    mlp = _table_row(text, "MLP")
    assert mlp[3:5] == ["1e-3", "1e-3"]  # lr, weight decay: not "1e-03"
    assert "1e-05" not in text and "1e-5" in text


def test_data_section_gives_each_experiments_seeds_and_the_profile_notes(tmp_path):
    cfg = copy.deepcopy(CONFIG)
    cfg["experiments"]["weight_decay"]["seeds"] = [0]  # a sweep no finding uses: one seed
    plan = build_plan(normalize_config(cfg))
    assert len(plan) == 3 * 6 + 2  # the ablation's 6 points x 3 seeds, 2 sweep-only points
    _write_runs(plan, tmp_path / "runs", cpus=["Trainer CPU 9000"])
    aggregate(plan, tmp_path / "runs", tmp_path / "tables", profile="unit",
              experiments=cfg["experiments"])
    wd = pd.read_csv(tmp_path / "tables/experiment_weight_decay.csv")
    assert set(wd["n_seeds"]) == {1}
    v = ReportView.load(tmp_path / "tables", "figures", tmp_path / "runs", profile="unit",
                        notes="every run trains 2 epochs,\n  by a rule.")
    text = reporting.data_section(v)
    assert "Seeds per grid point: 3 (1 in weight_decay: the experiments' `seeds`) " \
           "(intervals over seeds use Student's t)." in text
    assert "How this profile was sized: every run trains 2 epochs, by a rule." in text
    plain = ReportView.load(tmp_path / "tables", "figures", tmp_path / "runs")
    assert "How this profile was sized" not in reporting.data_section(plain)


def test_findings_give_the_batchnorm_diagnostic_of_the_baselines(study):
    import dataclasses

    v = _view(study)
    assert "BatchNorm diagnostic" not in reporting.findings(v)  # runs without it: nothing
    runs = v.tables.runs.copy()
    base = runs["baseline"] & (runs["model"] == "cnn")
    runs["val_acc_bn_reestimated"] = float("nan")
    runs.loc[base, "val_acc_bn_reestimated"] = runs.loc[base, "val_acc"] + 7.5
    text = reporting.findings(dataclasses.replace(
        v, tables=dataclasses.replace(v.tables, runs=runs)))
    assert "*BatchNorm diagnostic* (not one of the study's metrics)" in text
    assert "(per seed +7.5, +7.5, +7.5 points)" in text and "MLP" not in text.split(
        "BatchNorm diagnostic")[1].split(".")[0]  # the MLP has no value: not mentioned


def _with_experiment_table(v: ReportView, name: str, table: pd.DataFrame) -> ReportView:
    import dataclasses

    tables = dict(v.tables.experiment_tables, **{name: table})
    return dataclasses.replace(v, tables=dataclasses.replace(v.tables,
                                                             experiment_tables=tables))


def test_experiment_tables_show_the_batchnorm_diagnostic_where_runs_have_it(study):
    from cifarlab.reporting.sections import (
        BN_DIAGNOSTIC_COLUMN,
        experiment_table_md,
        experiment_view,
    )

    v = _view(study)
    table = v.tables.experiment_table("ablation")
    # These runs have no diagnostic: the column and its note stay out.
    assert table["val_acc_bn_reestimated_mean"].isna().all()
    assert BN_DIAGNOSTIC_COLUMN not in experiment_table_md(v, "ablation")
    diag = table.assign(val_acc_bn_reestimated_mean=[
        float("nan") if label == "no_bn" else 70.0 + i for i, label in
        enumerate(table["label"])])
    v2 = _with_experiment_table(v, "ablation", diag)
    view = experiment_view(v2, "ablation")
    assert list(view[BN_DIAGNOSTIC_COLUMN]) == [
        "" if label == "no_bn" else f"{70.0 + i:.2f}" for i, label in enumerate(table["label"])]
    text = experiment_table_md(v2, "ablation")
    first_mlp = list(table["model"]).index("mlp")  # "full", the first MLP row
    assert _table_row(text, "MLP")[-1] == f"{70.0 + first_mlp:.2f}"
    assert f"*{BN_DIAGNOSTIC_COLUMN}*: the BatchNorm diagnostic" in text


def test_sweep_diagnostic_says_how_much_of_the_fall_eval_mode_adds(study):
    from cifarlab.reporting.study_sections import _diagnostic_sentence

    v = _view(study)
    exp = experiments_from_config(CONFIG["experiments"])["weight_decay"]
    table = v.tables.experiment_table("weight_decay").copy()
    assert list(table["value"].astype(float)) == [1e-4, 1e-3, 1e-1]
    assert _diagnostic_sentence(v, exp, "mlp") == ""  # no diagnostic in these runs
    # n_val = 100: a gap must exceed 2 * 100 * sqrt(0.5 / 100) = 14.1 points to count.
    table["val_acc_mean"] = [60.0, 50.0, 20.0]
    table["val_acc_bn_reestimated_mean"] = [61.0, 58.0, 45.0]
    text = _diagnostic_sentence(_with_experiment_table(v, "weight_decay", table), exp, "mlp")
    assert text.startswith("- MLP, BatchNorm diagnostic: eval mode and BatchNorm's statistics "
                           "re-estimated with Dropout off differ most at p=0.1, 20.00% vs "
                           "45.00% validation accuracy (p=0.0001: 60.00% vs 61.00%).")
    # Eval mode loses 40 points, the re-estimated statistics 16: 24 of 40 are eval mode's.
    assert "Of the 40.0 points eval mode loses from p=0.0001 to p=0.1, 60% are" in text
    table["val_acc_bn_reestimated_mean"] = [61.0, 58.0, 30.0]  # gaps within the noise
    assert _diagnostic_sentence(_with_experiment_table(v, "weight_decay", table),
                                exp, "mlp") == ""


def _diag_points(full_diag: list[float]) -> pd.DataFrame:
    """Two CNN ablation points over 2 seeds: full (BatchNorm: the diagnostic given) and
    no_bn (no BatchNorm: none); validation accuracies in %."""
    rows = []
    for seed, diag in enumerate(full_diag):
        rows.append({"experiment": "ablation", "model": "cnn", "label": "full", "seed": seed,
                     "val_acc": 40.0 + seed, "val_acc_bn_reestimated": diag,
                     "test_acc": 41.0, "n_val": 3000, "n_test": 10000})
        rows.append({"experiment": "ablation", "model": "cnn", "label": "no_bn", "seed": seed,
                     "val_acc": 44.0, "val_acc_bn_reestimated": float("nan"),
                     "test_acc": 45.0, "n_val": 3000, "n_test": 10000})
    return pd.DataFrame(rows)


def test_effects_carry_the_batchnorm_diagnostic_where_a_side_has_it():
    from cifarlab.aggregate import _effect_row
    from cifarlab.experiments import EffectDef

    e = EffectDef("full", "no_bn")
    row = _effect_row(_diag_points([50.0, 52.0]), "ablation", "cnn", e)
    # eval mode: (40 - 44 + 41 - 44) / 2 = -3.5; re-estimated: (50 - 44 + 52 - 44) / 2 = +7
    assert row["difference"] == pytest.approx(-4.0)  # test: 41 - 45
    assert row["val_difference"] == pytest.approx(-3.5)
    assert row["val_bn_reestimated_difference"] == pytest.approx(7.0)
    assert row["val_bn_reestimated_low"] < 7.0 < row["val_bn_reestimated_high"]
    # Only some seeds with the diagnostic: no diagnostic effect rather than a mixed one.
    mixed = _effect_row(_diag_points([50.0, float("nan")]), "ablation", "cnn", e)
    assert math.isnan(mixed["val_bn_reestimated_difference"])
    # Neither side has it (no BatchNorm anywhere, or runs from before the diagnostic).
    none = _effect_row(_diag_points([float("nan")] * 2), "ablation", "cnn", e)
    assert math.isnan(none["val_difference"]) and math.isnan(none["val_bn_reestimated_low"])


def test_findings_give_each_findings_effect_with_the_diagnostic(study):
    import dataclasses

    v = _view(study)
    assert "The same diagnostic applied to the findings" not in reporting.findings(v)
    effects = v.tables.effects.copy()
    key = (effects["experiment"] == "ablation") & (effects["model"] == "cnn") \
        & (effects["a"] == "full") & (effects["b"] == "no_bn")
    assert key.sum() == 1
    effects["val_bn_reestimated_verdict"] = effects["val_bn_reestimated_verdict"].astype(object)
    effects.loc[key, ["val_difference", "val_bn_reestimated_difference",
                      "val_bn_reestimated_low", "val_bn_reestimated_high",
                      "val_bn_reestimated_verdict"]] = [-3.5, 4.07, 1.27, 6.87, "better"]
    text = reporting.findings(dataclasses.replace(
        v, tables=dataclasses.replace(v.tables, effects=effects)))
    assert ("BatchNorm raises CNN test accuracy: -3.50 in eval mode, +4.07 re-estimated "
            "(95% CI [1.27, 6.87], clear of zero the study's way)") in text
    assert "These are not verdicts" in text
    assert "BatchNorm raises MLP test accuracy:" not in text  # no diagnostic: left out
