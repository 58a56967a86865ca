"""What the planner decides before Snakemake builds its DAG: the data, old runs, the notice."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest

from cifarlab import pipeline
from cifarlab.data import manifest_path, prepare
from cifarlab.rundir import RunDir
from cifarlab.study import ConfigError, load_config
from cifarlab.train import train_run
from helpers import make_official_archive
from test_train import make_splits, spec

ROOT = Path(__file__).resolve().parents[1]


def _config(archive: Path, md5: str) -> dict:
    return {"data": {"source": "archive", "path": str(archive), "md5": md5},
            "split": {"n_train": 400, "n_val": 100}}


def _prepared(tmp_path: Path, by_hand: bool = False) -> tuple[dict, Path]:
    """An official-format archive prepared into a cache as the pipeline (or a user) does."""
    archive = tmp_path / "cifar-10-python.tar.gz"
    md5 = make_official_archive(archive, per_batch=100)  # 500 training images
    cfg = _config(archive, md5)
    cache = tmp_path / "data" / "cifar10.npz"
    prepare("archive", str(archive), cache, md5=md5, progress=False,
            identity=f"official:{md5}", request="" if by_hand else pipeline.prepare_args(cfg))
    return cfg, cache


def test_data_state_keeps_a_good_cache_and_prepares_a_gone_or_foreign_one(tmp_path):
    cfg, cache = _prepared(tmp_path, by_hand=True)
    # Prepared by hand (no request): used as it is, and its manifest is written.
    state = pipeline.data_state(cfg, cache)
    assert state.manifest["n_train"] == 500 and state.reason == ""
    assert manifest_path(cache).exists()
    # Another source in the config: prepared again, and said so.
    other = copy.deepcopy(cfg)
    other["data"]["md5"] = "0" * 32
    state = pipeline.data_state(other, cache)
    assert state.manifest is None and "but the config asks for official:000" in state.reason
    assert not manifest_path(cache).exists()  # so Snakemake plans the prepare job
    # The manifest deleted (a failed prepare job): rebuilt from the intact cache.
    state = pipeline.data_state(cfg, cache)
    assert state.manifest is not None and manifest_path(cache).exists()
    # Jobs re-reading the Snakefile never write.
    cache.unlink()
    state = pipeline.data_state(cfg, cache, write=False)
    assert state.manifest is None
    assert "missing, unreadable or from an older cifarlab" in state.reason
    assert manifest_path(cache).exists()


def test_changed_arguments_prepare_again_through_a_missing_output(tmp_path):
    """Arguments reach the prepare job through a file the planner writes when they change;
    a cache prepared with other arguments loses its manifest, so prepare is planned
    because its output is missing (never merely because its input is newer)."""
    cfg, cache = _prepared(tmp_path)
    assert pipeline.data_state(cfg, cache).manifest is not None
    req = pipeline.request_path(cache)
    assert req.read_text() == pipeline.prepare_args(cfg)
    assert manifest_path(cache).stat().st_mtime >= req.stat().st_mtime
    bigger = {**cfg, "split": {"n_train": 450, "n_val": 50}}
    state = pipeline.data_state(bigger, cache)
    assert state.manifest is None and "prepared with other arguments" in state.reason
    assert not manifest_path(cache).exists() and "450" in req.read_text()


def test_sizes_the_data_cannot_hold_stop_planning_and_change_nothing(tmp_path):
    cfg, cache = _prepared(tmp_path)
    pipeline.data_state(cfg, cache)
    request = pipeline.request_path(cache).read_text()
    too_big = {**cfg, "split": {"n_train": 450, "n_val": 100}}
    with pytest.raises(ConfigError, match=r"450 \+ 100 = 550 images, but the data's training "
                       r"pool has 500"):
        pipeline.data_state(too_big, cache)
    assert manifest_path(cache).exists()
    assert pipeline.request_path(cache).read_text() == request


def test_a_changed_source_is_prepared_again_even_after_a_failed_prepare(tmp_path):
    cfg, cache = _prepared(tmp_path)
    assert pipeline.data_state(cfg, cache).manifest is not None
    later = cache.stat().st_mtime + 10
    os.utime(cfg["data"]["path"], (later, later))  # the source replaced after the cache
    manifest_path(cache).unlink()  # as after a failed prepare job
    state = pipeline.data_state(cfg, cache)
    assert state.manifest is None and "is newer than" in state.reason
    assert not manifest_path(cache).exists()


def test_completed_runs_without_a_record_gain_one(tmp_path):
    s = spec(epochs=1)
    train_run(s, make_splits(), tmp_path / "runs" / "r1", threads=1)
    run = RunDir(tmp_path / "runs" / "r1")
    shutil.rmtree(run.record.path)  # as a run folder of an older cifarlab
    before = run.metrics_path.stat().st_mtime_ns
    plan = {"r1": {"spec": s}, "r2": {"spec": spec(epochs=2)}}  # r2 never ran
    assert pipeline.record_completed_runs(plan, tmp_path / "runs") == 1
    assert run.recorded_metrics(s) == run.read_metrics()
    assert run.metrics_path.stat().st_mtime_ns == before  # linked: nothing downstream reruns
    assert pipeline.record_completed_runs(plan, tmp_path / "runs") == 0


def test_device_notice_suits_the_profile(monkeypatch):
    """Hours for the full study, with the quick profile as the laptop-sized advice;
    minutes and no advice to use the profile already in use for the quick one."""
    full = load_config()
    quick = load_config([ROOT / "config/quick.yaml"])
    monkeypatch.setattr(pipeline, "accelerator", lambda: None)
    text = pipeline.device_notice(full, n_runs=29, parallel=2)
    assert "make quick" in text and " h of CPU time" in text
    assert "README, 'Running on a cluster'" in text
    text = pipeline.device_notice(quick, n_runs=87, parallel=2)
    assert "make quick" not in text and " min here" in text and "0.0 h" not in text


def test_full_study_on_a_cpu_stops_unless_confirmed(monkeypatch, tmp_path, capsys):
    """A CPU-only machine asked for the full study stops before any job, with the
    estimate, the alternatives and the switch; confirmed, or quick, it goes on."""
    from snakemake.exceptions import WorkflowError

    from cifarlab.study import build_plan

    monkeypatch.setattr(pipeline, "accelerator", lambda: None)
    full = load_config()
    plan = build_plan(full)
    with pytest.raises(WorkflowError, match=r"stopped before training: the 29 runs left would "
                       r"take about \d+ h on this CPU .*allow_cpu_full=true.*make run FULL=1"):
        pipeline.start_notice(full, plan, str(tmp_path), parallel=2)
    assert not any(tmp_path.iterdir())  # nothing written
    pipeline.start_notice(load_config(overrides=["allow_cpu_full=true"]), plan,
                          str(tmp_path), parallel=2)
    quick = load_config([ROOT / "config/quick.yaml"])
    pipeline.start_notice(quick, build_plan(quick), str(tmp_path), parallel=2)
    # With a GPU, the same plan starts.
    monkeypatch.setattr(pipeline, "accelerator", lambda: "NVIDIA H200")
    pipeline.start_notice(full, plan, str(tmp_path), parallel=2)
    assert "training will use NVIDIA H200" in capsys.readouterr().err


def test_plan_takes_the_runs_config_and_overrides():
    """`cifarlab plan`/`status` see what snakemake sees: config.yaml, then --configfile,
    then --config (typed as Snakemake types it), with the schema's defaults."""
    base = load_config()
    assert base["profile"] == "full" and base["report_dir"] is None
    quick = load_config([ROOT / "config/quick.yaml"], ["seeds=[0,1]", "data={source: url, "
                                                 "url: 'file:///x.tar.gz', md5: none}"])
    assert quick["profile"] == "quick" and quick["seeds"] == [0, 1]
    assert quick["data"]["url"] == "file:///x.tar.gz" and quick["models"]["mlp"]["lr"] == 1e-3
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([ROOT / "config/nope.yaml"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(overrides=["seeds"])
    with pytest.raises(ConfigError, match="profile"):
        load_config(overrides=["profile=../elsewhere"])


def test_the_worker_serves_local_cpu_runs_only(monkeypatch):
    monkeypatch.setattr(pipeline, "accelerator", lambda: None)
    quick = load_config([ROOT / "config/quick.yaml"])
    assert pipeline.use_worker(quick, local=True) == (os.uname().sysname == "Linux")
    assert not pipeline.use_worker(quick, local=False)  # a cluster: jobs run elsewhere
    assert not pipeline.use_worker(load_config(overrides=["train={worker: false}"]), True)
    assert not pipeline.use_worker(load_config(overrides=["train={gpus: 1}"]), True)
    monkeypatch.setattr(pipeline, "accelerator", lambda: "NVIDIA H200")
    assert not pipeline.use_worker(quick, local=True)  # no fork after CUDA


def test_train_args_carry_the_device_switches_and_checkpoint_interval():
    from cifarlab.pipeline import train_args

    assert train_args({}) == "--device auto"
    assert train_args({"device": "cuda:1", "channels_last": True, "compile": False,
                       "cuda_graphs": True, "checkpoint_seconds": 30}) == \
        "--device cuda:1 --channels-last --cuda-graphs --checkpoint-seconds 30"
    # every flag is one `cifarlab train` accepts
    from cifarlab.cli import build_parser

    args = build_parser().parse_args(
        ["train", "--spec", "{}", "--out", "x",
         *train_args({"channels_last": True, "compile": True, "cuda_graphs": True,
                      "checkpoint_seconds": 2.5}).split()])
    assert (args.device, args.channels_last, args.compile, args.cuda_graphs,
            args.checkpoint_seconds) == ("auto", True, True, True, 2.5)
