"""One output tree per profile (cifarlab.layout) and the terminal's progress lines
(cifarlab.progress): pure functions over folders, no Snakemake."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from cifarlab import progress
from cifarlab.data import manifest_path, prepare
from cifarlab.layout import Layout, data_key, migrate_legacy_cache
from cifarlab.rundir import RunDir
from cifarlab.study import load_config
from helpers import make_official_archive

ROOT = Path(__file__).resolve().parents[1]


def test_profiles_have_their_own_outputs_and_share_runs_and_same_data():
    full = Layout.from_config(load_config())
    quick = Layout.from_config(load_config([ROOT / "config/quick.yaml"]))
    smoke = Layout.from_config(load_config([ROOT / "config/smoke.yaml"], [
        "data={source: url, url: 'file:///s.tar.gz', md5: 1b565e4b3b33d0800a51213c645c6b98}"]))
    assert full.tables == "results/full/tables" and quick.tables == "results/quick/tables"
    assert quick.report == "results/quick/report" and full.logs == "logs/full"
    assert full.runs == quick.runs == smoke.runs == "results/runs"
    # The same (official) data: one cache; other data: its own folder.
    assert full.data_cache == quick.data_cache
    assert full.data_cache == "results/data/official-c58f30108f718f92721af3b95e74349a/cifar10.npz"
    assert smoke.data_dir != full.data_dir
    published = Layout.from_config(load_config([ROOT / "config/quick.yaml"],
                                               ["report_dir=report/quick"]))
    assert published.report == "report/quick" and published.tables == quick.tables


def test_data_key_is_a_safe_folder_name():
    assert data_key("folder:cifar10-jpeg.tar.gz:19433620") == "folder-cifar10-jpeg.tar.gz-19433620"
    assert "/" not in data_key("folder:../../etc:1") and data_key("::") == "data"


def _legacy_cache(root: Path) -> tuple[Path, str]:
    md5 = make_official_archive(root / "a.tar.gz", per_batch=50)
    cache = root / "results/data/cifar10.npz"
    prepare("archive", str(root / "a.tar.gz"), cache, md5=md5, progress=False,
            identity=f"official:{md5}", request="--old")
    cache.with_suffix(".request").write_text("--old")
    return cache, md5


def test_the_old_single_cache_moves_to_its_folder_when_it_holds_the_data(tmp_path):
    cache, md5 = _legacy_cache(tmp_path)
    checksum = json.loads(manifest_path(cache).read_text())["checksum"]
    other = Layout(profile="quick", data_identity="official:" + "0" * 32)
    assert not migrate_legacy_cache(other, tmp_path)  # other data: left alone
    assert cache.exists()
    layout = Layout(profile="quick", data_identity=f"official:{md5}")
    assert migrate_legacy_cache(layout, tmp_path)
    target = tmp_path / layout.data_cache
    assert not cache.exists() and target.exists()
    assert json.loads(manifest_path(target).read_text())["checksum"] == checksum
    assert target.with_suffix(".request").read_text() == "--old"
    assert not migrate_legacy_cache(layout, tmp_path)  # done once


def _finished(runs: Path, rid: str, seconds: float, epochs: int = 4, **extra) -> RunDir:
    run = RunDir(runs / rid)
    run.path.mkdir(parents=True)
    run.write_metrics({"test_acc": 0.5, "seconds": seconds, "epochs_completed": epochs,
                       "best_epoch": epochs, "diverged": False, **extra})
    return run


def test_finished_line_counts_the_grid_and_projects_the_time_left(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    costs = {"a": 10.0, "b": 10.0, "c": 30.0, "d": 40.0, "old": 5.0}
    _finished(runs, "old", 99.0)  # done before this invocation: not a measure of speed
    plan_file = tmp_path / "progress.json"
    progress.write_plan(plan_file, costs, parallel=2, runs_dir=str(runs),
                        log_pattern="logs/{run}.log")
    assert json.loads(plan_file.read_text())["parallel"] == 2
    # "a" trained in 20 s for an estimated 10: twice slower than estimated.
    _finished(runs, "a", 20.0)
    Path("logs").mkdir()
    Path("logs/c.log").write_text("epoch 1/4")  # started after the plan: running
    line = progress.finished_line(plan_file, "a", {"test_acc": 0.4321, "seconds": 20.0,
                                                   "epochs_completed": 4, "best_epoch": 3})
    # left: b (10) + d (40), running: c (30) counted half: 65 x 2 s per unit / 2 jobs = 65 s
    assert line.startswith("[2/5 done, 1 running, 2 left, ETA 65 s] a: test 43.21% "
                           "(best epoch 3 of 4, 20 s)"), line
    _finished(runs, "b", 500.0)  # restored in seconds: its old time must not count
    restored = progress.finished_line(plan_file, "b", {"test_acc": 0.5, "seconds": 500.0},
                                      restored=True)
    # left: d (40), running: c (30) half: 55 x 2 s per unit / 2 jobs = 55 s
    assert restored == "[3/5 done, 1 running, 1 left, ETA 55 s] b: already trained, " \
        "outputs restored", restored
    diverged = progress.finished_line(plan_file, "d", {"diverged": True, "diverged_epoch": 2,
                                                       "diverged_train_loss": "nan"})
    assert "d: DIVERGED at epoch 2 (train loss nan)" in diverged
    # Run by hand (no plan file): the result alone.
    assert progress.finished_line(tmp_path / "none.json", "a", {"test_acc": 0.5}) \
        .startswith("a: test 50.00%")


def test_failed_line_names_the_error_and_the_log(tmp_path):
    plan_file = tmp_path / "progress.json"
    progress.write_plan(plan_file, {"a": 1.0}, 1, str(tmp_path / "runs"), "logs/train/{run}.log")
    line = progress.failed_line(plan_file, "a", RuntimeError("no CUDA device\ntraceback"))
    assert line == "a: FAILED: no CUDA device (log: logs/train/a.log)"


def test_status_rows_tell_done_diverged_running_and_missing(tmp_path):
    runs = tmp_path / "runs"
    plan = {r: {"spec": {"epochs": 4}} for r in ("done", "div", "run", "miss", "stale")}
    _finished(runs, "done", 12.0)
    _finished(runs, "div", 3.0, epochs=2, diverged=True)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "run.log").write_text("")
    (logs / "stale.log").write_text("")
    old = time.time() - 7200
    os.utime(logs / "stale.log", (old, old))  # an old job's log: not running now
    rows = {r.run_id: r for r in progress.status_rows(plan, runs, str(logs / "{run}.log"))}
    assert {k: r.state for k, r in rows.items()} == {
        "done": "done", "div": "diverged", "run": "running", "miss": "missing",
        "stale": "missing"}
    assert rows["done"].test_acc == 0.5 and rows["div"].epochs_done == 2
    table = progress.status_table(list(rows.values()))
    assert "5 runs: 1 done, 1 diverged, 1 running, 2 missing" in table
    assert "50.00%" in table and "2/4" in table


@pytest.mark.parametrize("seconds,text", [(0.2, "1 s"), (45, "45 s"), (600, "10 min"),
                                          (7200, "2.0 h")])
def test_durations_read_at_a_glance(seconds, text):
    assert progress.format_duration(seconds) == text


def test_a_failing_rule_shows_its_logs_tail_on_the_terminal(tmp_path):
    """workflow/scripts/logged.sh: the rules' output goes to their log; on failure the
    terminal gets the log's last lines (the profiles' quiet: rules hides Snakemake's)."""
    import subprocess

    log = tmp_path / "x.log"
    script = ROOT / "workflow/scripts/logged.sh"
    ok = subprocess.run(["bash", str(script), str(log), "echo", "fine"], capture_output=True,
                        text=True)
    assert ok.returncode == 0 and ok.stderr == "" and log.read_text() == "fine\n"
    bad = subprocess.run(["bash", str(script), str(log), "sh", "-c",
                          "echo step one; echo 'error: boom' >&2; exit 3"],
                         capture_output=True, text=True)
    assert bad.returncode == 3
    assert f"failed (exit 3); the last lines of {log}:" in bad.stderr
    assert "    error: boom" in bad.stderr and "error: boom" in log.read_text()


def test_failure_report_shows_the_logs_of_what_failed_in_this_invocation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    _finished(runs, "ok", 1.0)
    Path("logs").mkdir()
    old = Path("logs/old.log")
    old.write_text("an earlier failure")
    os.utime(old, (time.time() - 600, time.time() - 600))
    progress.write_plan("progress.json", {"ok": 1.0, "bad": 1.0, "old": 1.0}, 1, str(runs),
                        "logs/{run}.log")
    Path("logs/ok.log").write_text("fine")
    Path("logs/bad.log").write_text("epoch 1/4\nerror: out of memory\n")
    Path("logs/prepare.log").write_text("error: MD5 mismatch\n")
    text = progress.failure_report("progress.json", ["logs/prepare.log"])
    assert "cifarlab: run bad did not complete; the last lines of logs/bad.log:\n" \
           "    epoch 1/4\n    error: out of memory" in text
    assert "prepare failed; the last lines of logs/prepare.log:\n    error: MD5 mismatch" in text
    assert "run ok" not in text and "old" not in text  # complete, or from before this run
