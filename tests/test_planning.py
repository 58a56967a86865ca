"""What the planner decides about the data before Snakemake builds its DAG."""

from __future__ import annotations

from cifarlab import pipeline
from cifarlab.data import manifest_path, prepare
from helpers import make_official_archive


def _config(archive, md5):
    return {"data": {"source": "archive", "path": str(archive), "md5": md5},
            "split": {"n_train": 400, "n_val": 100}}


def test_data_state_keeps_a_good_cache_and_prepares_a_gone_or_foreign_one(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    md5 = make_official_archive(archive, per_batch=100)
    cfg = _config(archive, md5)
    cache = tmp_path / "data" / "cifar10.npz"
    # Prepared by hand (no request): used as it is, and its manifest is written.
    prepare("archive", str(archive), cache, md5=md5, progress=False,
            identity=f"official:{md5}")
    state = pipeline.data_state(cfg, cache)
    assert state.manifest["n_train"] == 500 and state.reason == ""
    assert manifest_path(cache).exists()
    # Another source in the config: prepared again, and said so.
    other = _config(archive, "0" * 32)
    state = pipeline.data_state(other, cache)
    assert state.manifest is None and "but the config asks for official:000" in state.reason
    assert not manifest_path(cache).exists()  # so Snakemake plans the prepare job
    # The manifest deleted (a failed prepare job): rebuilt from the intact cache.
    state = pipeline.data_state(cfg, cache)
    assert state.manifest is not None and manifest_path(cache).exists()
    # Jobs re-reading the Snakefile never write.
    cache.unlink()
    state = pipeline.data_state(cfg, cache, write=False)
    assert state.manifest is None and "missing, unreadable or from an older cifarlab" in state.reason
    assert manifest_path(cache).exists()


def test_completed_runs_without_a_record_gain_one(tmp_path):
    from cifarlab.rundir import RunDir
    from cifarlab.train import train_run
    from test_train import make_splits, spec

    s = spec(epochs=1)
    train_run(s, make_splits(), tmp_path / "runs" / "r1", threads=1)
    run = RunDir(tmp_path / "runs" / "r1")
    import shutil

    shutil.rmtree(run.record.path)
    plan = {"r1": {"spec": s}, "r2": {"spec": spec(epochs=2)}}  # r2 never ran
    assert pipeline.record_completed_runs(plan, tmp_path / "runs") == 1
    assert run.recorded_metrics(s) == run.read_metrics()
    assert pipeline.record_completed_runs(plan, tmp_path / "runs") == 0


def test_changed_arguments_prepare_again_through_a_missing_output(tmp_path):
    """Arguments reach the prepare job through a file the planner writes when they change;
    a cache prepared with other arguments loses its manifest, so prepare is planned
    because its output is missing (never merely because its input is newer)."""
    archive = tmp_path / "cifar-10-python.tar.gz"
    md5 = make_official_archive(archive, per_batch=100)
    cfg = _config(archive, md5)
    cache = tmp_path / "data" / "cifar10.npz"
    request = pipeline.prepare_args(cfg)
    prepare("archive", str(archive), cache, md5=md5, progress=False,
            identity=f"official:{md5}", request=request)
    assert pipeline.data_state(cfg, cache).manifest is not None
    req = pipeline.request_path(cache)
    assert req.read_text() == request
    assert manifest_path(cache).stat().st_mtime >= req.stat().st_mtime
    bigger = {**cfg, "split": {"n_train": 450, "n_val": 50}}
    state = pipeline.data_state(bigger, cache)
    assert state.manifest is None and "prepared with other arguments" in state.reason
    assert not manifest_path(cache).exists() and "450" in req.read_text()


def test_sizes_the_data_cannot_hold_stop_planning_and_change_nothing(tmp_path):
    import pytest

    from cifarlab.study import ConfigError

    archive = tmp_path / "cifar-10-python.tar.gz"
    md5 = make_official_archive(archive, per_batch=100)
    cfg = _config(archive, md5)
    cache = tmp_path / "data" / "cifar10.npz"
    prepare("archive", str(archive), cache, md5=md5, progress=False,
            identity=f"official:{md5}", request=pipeline.prepare_args(cfg))
    pipeline.data_state(cfg, cache)
    request = pipeline.request_path(cache).read_text()
    too_big = {**cfg, "split": {"n_train": 450, "n_val": 100}}
    with pytest.raises(ConfigError, match=r"450 \+ 100 = 550 images, but the data's training "
                       r"pool has 500"):
        pipeline.data_state(too_big, cache)
    assert manifest_path(cache).exists()
    assert pipeline.request_path(cache).read_text() == request


def test_device_notice_suits_the_profile(monkeypatch):
    """Hours for the full study, with the quick profile as the laptop-sized advice;
    minutes and no advice to use the profile already in use for the quick one."""
    import copy
    from pathlib import Path

    import yaml

    from cifarlab.cli import _merge
    from cifarlab.study import normalize_config

    root = Path(__file__).resolve().parents[1]
    full = yaml.safe_load((root / "config/config.yaml").read_text())
    quick = _merge(copy.deepcopy(full), yaml.safe_load((root / "config/quick.yaml").read_text()))
    monkeypatch.setattr(pipeline.torch.cuda, "is_available", lambda: False)
    text = pipeline.device_notice(normalize_config(full), n_runs=29)
    assert "config/quick.yaml" in text and " h. " in text
    assert "README, 'Running on a cluster'" in text
    text = pipeline.device_notice(normalize_config(quick), n_runs=87)
    assert "config/quick.yaml" not in text and " min. " in text and "about 0 min" not in text


def test_a_changed_source_is_prepared_again_even_after_a_failed_prepare(tmp_path):
    import os

    archive = tmp_path / "cifar-10-python.tar.gz"
    md5 = make_official_archive(archive, per_batch=100)
    cfg = _config(archive, md5)
    cache = tmp_path / "data" / "cifar10.npz"
    prepare("archive", str(archive), cache, md5=md5, progress=False,
            identity=f"official:{md5}", request=pipeline.prepare_args(cfg))
    assert pipeline.data_state(cfg, cache).manifest is not None
    later = cache.stat().st_mtime + 10
    os.utime(archive, (later, later))  # the source replaced after the cache was made
    manifest_path(cache).unlink()  # as after a failed prepare job
    state = pipeline.data_state(cfg, cache)
    assert state.manifest is None and "is newer than" in state.reason
    assert not manifest_path(cache).exists()
