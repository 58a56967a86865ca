"""The configuration is the study: 29 canonical runs, shared points, validation errors."""

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from cifarlab.study import ConfigError, build_plan, run_id

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config/config.yaml").read_text())
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


def merged(*paths):
    out = copy.deepcopy(CONFIG)
    for p in paths:
        _merge(out, yaml.safe_load((ROOT / p).read_text()))
    return out


def _merge(a, b):
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _merge(a[k], v)
        else:
            a[k] = v


def test_default_config_is_29_runs():
    plan = build_plan(CONFIG)
    assert len(plan) == 29
    models = [e["spec"]["model"] for e in plan.values()]
    assert models.count("mlp") == 14 and models.count("cnn") == 15


def test_identical_points_are_one_run():
    plan = build_plan(CONFIG)
    mlp_base = [e for e in plan.values() if e.get("baseline") and e["spec"]["model"] == "mlp"]
    assert len(mlp_base) == 1
    members = {(m["experiment"], m["label"]) for m in mlp_base[0]["members"]}
    assert members == {("ablation", "full"), ("dropout_rate", "0.6"), ("batch_size", "100")}
    no_dropout = [e for e in plan.values() if e["spec"]["model"] == "cnn"
                  and e["spec"]["arch"]["dropout"] == 0.0]
    assert len(no_dropout) == 1  # ablation no_dropout == sweep p = 0
    spec = mlp_base[0]["spec"]
    assert spec["arch"] == {"hidden": 1024, "bn": True, "dropout": 0.6}
    assert (spec["optimizer"], spec["lr"], spec["weight_decay"], spec["batch_size"],
            spec["epochs"]) == ("adamw", 1e-3, 1e-3, 100, 100)


def test_seeds_multiply_runs_and_are_part_of_the_id():
    cfg = copy.deepcopy(CONFIG)
    cfg["seeds"] = [0, 1, 2]
    plan = build_plan(cfg)
    assert len(plan) == 87
    one = set(build_plan(CONFIG))
    assert one < set(plan)  # adding seeds keeps the old runs' ids


def test_an_experiment_can_run_its_own_seeds():
    cfg = copy.deepcopy(CONFIG)
    cfg["seeds"] = [0, 1, 2]
    cfg["experiments"]["dropout_rate"]["seeds"] = [0]
    plan = build_plan(cfg)
    # ablation 3 points x 2 models, batch 3 more x 2, dropout2d 1: 13 per seed x 3 seeds;
    # the sweep's 8 points that no other grid holds x 2 models, once
    assert len(plan) == 13 * 3 + 16
    sweep = [m for e in plan.values() for m in e["members"] if m["experiment"] == "dropout_rate"]
    assert {m["seed"] for m in sweep} == {0} and len(sweep) == 20
    # the shared baseline still runs (and is the baseline) for every seed of the others
    base = [e for e in plan.values() if e.get("baseline")]
    assert sorted(e["spec"]["seed"] for e in base) == [0, 0, 1, 1, 2, 2]
    # an experiment's seeds beyond the top-level ones are runs of their own
    cfg["experiments"]["dropout2d"]["seeds"] = [0, 1, 2, 3, 4]
    more = build_plan(cfg)
    assert len(more) == len(plan) + 2 * 2  # cnn baseline and dropout2d point, seeds 3 and 4


def test_an_experiments_seeds_from_the_command_line_are_typed():
    from cifarlab.study import load_config

    cfg = load_config([], ["experiments={dropout_rate: {seeds: 4}}"])
    assert cfg["experiments"]["dropout_rate"]["seeds"] == [4]
    bad = copy.deepcopy(CONFIG)
    bad["experiments"]["ablation"]["seeds"] = [0, 0]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


def test_run_id_depends_on_spec_only():
    plan = build_plan(CONFIG)
    again = build_plan(copy.deepcopy(CONFIG))
    assert list(plan) == list(again)
    cfg = copy.deepcopy(CONFIG)
    cfg["models"]["mlp"]["weight_decay"] = 1e-4
    changed = build_plan(cfg)
    mlp_old = {r for r, e in plan.items() if e["spec"]["model"] == "mlp"}
    mlp_new = {r for r, e in changed.items() if e["spec"]["model"] == "mlp"}
    cnn_old = {r for r, e in plan.items() if e["spec"]["model"] == "cnn"}
    assert not (mlp_old & mlp_new) and cnn_old <= set(changed)
    for rid, e in plan.items():
        assert run_id(e["spec"]) == rid
        assert rid.startswith(e["spec"]["model"] + "-")


@pytest.mark.parametrize("profile", ["config/smoke.yaml", "config/quick.yaml"])
def test_profiles_keep_the_grid(profile):
    # The profiles are part of the repository: a missing one is a failure, not a skip.
    assert (ROOT / profile).is_file(), f"{profile} is missing"
    cfg = merged(profile)
    jsonschema.validate(cfg, SCHEMA)
    plan = build_plan(cfg)
    exps = {m["experiment"] for e in plan.values() for m in e["members"]}
    assert exps == {"ablation", "dropout_rate", "batch_size", "dropout2d"}
    if profile == "config/quick.yaml":  # the study's 29 distinct runs for the first seed
        first = cfg["seeds"][0]
        assert sum(e["spec"]["seed"] == first for e in plan.values()) == 29
        # every finding's grid runs every seed, and at least 3 (a t interval over seeds)
        for name in ("ablation", "batch_size", "dropout2d"):
            seeds = {m["seed"] for e in plan.values() for m in e["members"]
                     if m["experiment"] == name}
            assert set(cfg["seeds"]) <= seeds and len(seeds) >= 3, (name, seeds)


def test_schema_accepts_default_and_rejects_wrong_types():
    jsonschema.validate(CONFIG, SCHEMA)
    bad = copy.deepcopy(CONFIG)
    bad["models"]["mlp"]["lr"] = "fast"
    with pytest.raises(jsonschema.ValidationError, match="'fast' is not of type 'number'"):
        jsonschema.validate(bad, SCHEMA)
    bad = copy.deepcopy(CONFIG)
    bad["models"]["mlp"]["learning_rate"] = 0.1
    with pytest.raises(jsonschema.ValidationError, match="learning_rate"):
        jsonschema.validate(bad, SCHEMA)
    bad = copy.deepcopy(CONFIG)
    bad["models"]["cnn"]["optimizer"] = "lion"
    with pytest.raises(jsonschema.ValidationError, match="'adam', 'adamw', 'sgd'"):
        jsonschema.validate(bad, SCHEMA)


@pytest.mark.parametrize("mutate,match", [
    (lambda c: c["models"]["mlp"]["arch"].update(dropout=1.0), r"models.mlp.arch.dropout.*\[0, 1\)"),
    (lambda c: c["experiments"]["dropout_rate"]["sweep"].update(values=[0.5, 1.2]),
     r"dropout_rate\[1.2\].*outside \[0, 1\)"),
    (lambda c: c["experiments"]["batch_size"]["sweep"].update(values=[100, 50000]),
     r"batch size 50000 is larger than the training split \(40000"),
    (lambda c: c["split"].update(train_subset=400), r"batch size 500 is larger than the training split \(400 "),
    (lambda c: c["models"].update(resnet=c["models"]["mlp"]), r"unknown model 'resnet'.*cnn, mlp"),
    (lambda c: c["models"]["mlp"].update(optimizer="lion"), r"unknown optimizer 'lion'.*adam, adamw, sgd"),
    (lambda c: c["models"]["mlp"]["arch"].update(width=3), r"unknown argument.*width.*hidden"),
    (lambda c: c["experiments"]["ablation"].update(models=["mlp", "vit"]), r"model 'vit'"),
    (lambda c: c["experiments"]["batch_size"]["sweep"].update(key="batchsize"),
     r"unknown setting.*batchsize"),
    # Sweep values are typed by the key they set, as the schema types them under `models`.
    (lambda c: c["experiments"].update(bn={"models": ["mlp"], "sweep": {
        "key": "arch.bn", "values": [True, "maybe"]}}),
     r"experiments.bn\[maybe\] \(mlp\).arch.bn': 'maybe' is not of type 'boolean'"),
    (lambda c: c["experiments"].update(lr={"models": ["mlp"], "sweep": {
        "key": "lr", "values": [0.001, 0]}}),
     r"experiments.lr\[0\] \(mlp\).lr': 0 is less than or equal to the minimum of 0"),
    # A setting the optimizer ignores would collapse every point into the baseline.
    (lambda c: c["experiments"].update(mom={"models": ["mlp"], "sweep": {
        "key": "momentum", "values": [0.5, 0.9]}}),
     r"experiments.mom\[0.5\] \(mlp\).momentum': optimizer 'adamw' ignores 'momentum'"),
    # Architecture arguments the constructor refuses name the config key.
    (lambda c: c["models"]["cnn"]["arch"].update(kernels=[5, 7, 3]),
     r"models.cnn.arch': model 'cnn' cannot be built.*kernels needs 2 values"),
    (lambda c: c["models"]["cnn"]["arch"].update(channels=[0, 512]),
     r"models.cnn.arch'.*channels must be positive"),
    (lambda c: c["models"]["mlp"]["arch"].update(hidden=-5),
     r"models.mlp.arch'.*hidden must be a positive integer, got -5"),
    (lambda c: c.update(experiments={}), r"'experiments': no experiment is defined"),
    (lambda c: c.update(data={"source": "folder", "path": "/tmp/nope.tar.gz"}),
     r"'data.path': '/tmp/nope.tar.gz' does not exist"),
])
def test_semantic_errors_name_key_and_choices(mutate, match):
    cfg = copy.deepcopy(CONFIG)
    mutate(cfg)
    with pytest.raises(ConfigError, match=match):
        build_plan(cfg)


def test_sizes_are_checked_against_the_prepared_counts():
    from cifarlab.study import check_sizes

    check_sizes({"n_train": 40000, "n_val": 10000}, 50000, 10000)
    with pytest.raises(ConfigError, match=r"split.n_train \+ split.n_val': 45000 \+ 10000"):
        check_sizes({"n_train": 45000, "n_val": 10000}, 50000, 10000)
    with pytest.raises(ConfigError, match=r"split.test_subset': 20000 is larger than the 10000"):
        check_sizes({"n_train": 100, "n_val": 100, "test_subset": 20000}, 50000, 10000)


def test_spec_files_keep_small_numbers_numeric(tmp_path):
    # json.dumps writes 1e-05, which YAML 1.1 (PyYAML) alone would read as a string.
    from cifarlab.cli import _load_spec

    spec = {"model": "cnn", "optimizer": "adamw", "lr": 0.001, "weight_decay": 1e-5,
            "data": {"source": "folder", "checksum": "0123"}}
    as_json = tmp_path / "spec.json"
    as_json.write_text(json.dumps(spec))
    as_yaml = tmp_path / "spec.yaml"
    as_yaml.write_text("model: cnn\noptimizer: adamw\nlr: 1e-3\nweight_decay: 1e-5\n"
                       "data: {source: folder, checksum: '0123'}\n")
    for path in (as_json, as_yaml):
        loaded = _load_spec(str(path))
        assert loaded["weight_decay"] == 1e-5 and loaded["lr"] == 1e-3
        assert loaded["data"]["checksum"] == "0123"


def test_plan_command_reads_exponent_numbers(tmp_path, capsys):
    from cifarlab.cli import main

    override = tmp_path / "override.yaml"
    override.write_text("models:\n  cnn:\n    weight_decay: 1e-4\n")
    out = tmp_path / "plan.json"
    assert main(["plan", str(ROOT / "config" / "config.yaml"), str(override),
                 "--out", str(out)]) == 0
    plan = json.loads(out.read_text())
    cnn = [e["spec"] for e in plan.values() if e["spec"]["model"] == "cnn"]
    assert cnn and all(s["weight_decay"] == 1e-4 for s in cnn)
