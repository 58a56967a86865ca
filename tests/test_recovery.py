"""A completed run is never trained again, and one bad run never blocks the report.

The smoke pipeline on its own work directory, then what goes wrong in real use: the data
cache deleted and rebuilt, a typo in data.md5, the controller killed while a job runs,
a run that diverges, data paths and sizes that cannot work.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import make_official_archive, serve_directory
from test_pipeline import BIN, ROOT, job_counts, smoke_args, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    work = tmp_path_factory.mktemp("recovery")
    served = tmp_path_factory.mktemp("served")
    md5 = make_official_archive(served / "cifar-10-python.tar.gz", per_batch=100)
    with serve_directory(served) as url:
        def common(md5_: str = md5) -> list[str]:
            return smoke_args(url, md5_)

        snakemake(work, *common())
        yield {"work": work, "common": common, "md5": md5}


def _outputs(work: Path) -> dict[str, bytes]:
    runs = work / "results/runs"
    return {f"{rid}/{name}": (runs / rid / name).read_bytes()
            for rid in sorted(os.listdir(runs))
            for name in ("metrics.json", "history.csv", "best.pt")}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache(work):
    """The smoke data's cache: results/data/<data key>/cifar10.npz (cifarlab.layout)."""
    (cache,) = (work / "results/data").glob("*/cifar10.npz")
    return cache


def _prepare_log(work):
    """The newest data log: logs/data/<data key>.log, one per data source (a wrong md5 is
    another identity, so its prepare has its own log and folder)."""
    return max((work / "logs/data").glob("*.log"), key=lambda p: p.stat().st_mtime)


NEW_POINT = ("experiments={dropout2d: {points: {dropout2d: {arch: {dropout: 0.5, "
             "dropout2d: true}}}}}")


def test_rebuilt_cache_restores_runs_instead_of_training_them(study):
    work = study["work"]
    before, cache = _outputs(work), _cache(work)
    checksum = _sha(cache)
    cache.unlink()
    # Every run is complete: nothing needs the data, so nothing is planned at all.
    proc = snakemake(work, *study["common"](), "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    # A new grid point needs the data: it is prepared again (the same data), the new run
    # trains, and the completed runs, planned again by Snakemake because their input was
    # rebuilt, restore their outputs from their records.
    t0 = time.time()
    proc = snakemake(work, *study["common"](), NEW_POINT)
    assert ("cifar10.npz is missing, unreadable or from an older cifarlab: it is prepared "
            "again") in proc.stdout + proc.stderr
    assert _sha(cache) == checksum
    after = _outputs(work)
    assert {k: v for k, v in after.items() if k in before} == before  # byte for byte
    new = {k.split("/")[0] for k in after} - {k.split("/")[0] for k in before}
    assert len(new) == 1
    rerun = [log for log in (work / "logs/train").glob("*.log") if log.stat().st_mtime > t0]
    # 10 of the 11 runs are still in the plan (NEW_POINT replaces one), plus the new one.
    assert len(rerun) == 11
    # The terminal says so: one line per run, the restored ones as restored.
    assert (proc.stdout + proc.stderr).count("already trained, outputs restored") == 10
    for log in rerun:
        text = log.read_text()
        if log.stem in new:
            assert "epoch 2/2" in text
        else:
            assert "restoring its outputs" in text and "epoch 1/" not in text, log.name


def test_a_failed_prepare_keeps_the_good_cache(study):
    work = study["work"]
    cache = _cache(work)
    good = _sha(cache)
    proc = snakemake(work, *study["common"]("0" * 32), NEW_POINT, check=False)
    assert proc.returncode != 0
    assert "expected 00000000000000000000000000000000" in \
        _prepare_log(work).read_text()
    assert _sha(cache) == good
    # The typo fixed: the cache is the configured one, so nothing at all is planned.
    proc = snakemake(work, *study["common"](), NEW_POINT, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


SLOW_RUN = "experiments={long: {models: [mlp], points: {long: {epochs: 40}}}}"


def test_a_run_that_finished_after_its_controller_was_killed_is_not_retrained(study):
    work = study["work"]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    cmd = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(work),
           *study["common"](), SLOW_RUN]
    controller = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=env)
    logs = work / "logs/train"
    deadline = time.time() + 300
    started = None
    while time.time() < deadline and started is None:
        started = next((p for p in logs.glob("mlp-*.log")
                        if "epoch 1/40" in p.read_text()), None)
        time.sleep(0.5)
    assert started is not None, "the long run never started"
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    run_dir = work / "results/runs" / started.stem
    while time.time() < deadline and not (run_dir / "metrics.json").exists():
        time.sleep(0.5)  # the orphaned job finishes on its own
    assert (run_dir / "metrics.json").exists()
    history = (run_dir / "history.csv").read_bytes()
    snakemake(work, "--unlock", *study["common"](), SLOW_RUN)
    snakemake(work, *study["common"](), SLOW_RUN)
    text = started.read_text()
    assert "epoch 1/40" not in text and ("restoring its outputs" in text
                                         or "is complete" in text), text
    assert (run_dir / "history.csv").read_bytes() == history


DIVERGING = "experiments={lr: {models: [mlp], sweep: {key: lr, values: [1.0e-3, 1.0e+8]}}}"


def test_a_diverging_run_is_data_and_the_report_is_written(study):
    work = study["work"]
    snakemake(work, *study["common"](), DIVERGING)
    runs = pd.read_csv(work / "results/smoke/tables/runs.csv")
    bad = runs[runs["lr"] == 1e8]
    assert len(bad) == 1 and bool(bad["diverged"].iloc[0])
    assert int(bad["epochs_completed"].iloc[0]) == 0
    md = (work / "results/smoke/report/report.md").read_text()
    assert "## Runs that diverged" in md and "1 of" in md


def test_impossible_data_settings_stop_before_any_job(study):
    work = study["work"]
    proc = snakemake(work, *study["common"](), "-n", "--config",
                     "data={source: folder, path: /tmp/nope.tar.gz}", check=False)
    assert proc.returncode != 0
    assert "'data.path': '/tmp/nope.tar.gz' does not exist" in proc.stdout + proc.stderr
    # The smoke archive holds 500 training images: the cache's counts are known.
    proc = snakemake(work, *study["common"](), "split={n_train: 450, n_val: 100}", "-n",
                     check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "'split.n_train + split.n_val': 450 + 100 = 550 images, but the data's training " \
           "pool has 500" in out
    assert "train" not in job_counts(out)
