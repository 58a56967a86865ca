"""The local training worker (cifarlab.worker): a run handed to it is the run a job would
train itself, its output goes to the job's log, and its lifetime follows the job's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifarlab.data import prepare
from cifarlab.study import canonical_spec
from cifarlab.worker import shutdown
from helpers import make_official_archive

BIN = Path(sys.executable).parent
SPLIT = {"n_train": 400, "n_val": 100, "method": "auto", "seed": 0, "train_subset": None,
         "val_subset": None, "test_subset": None}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    md5 = make_official_archive(root / "a.tar.gz", per_batch=100)
    out = root / "cifar10.npz"
    prepare("archive", str(root / "a.tar.gz"), out, md5=md5, progress=False,
            identity=f"official:{md5}")
    return out, md5


def _spec(md5: str, epochs: int = 2) -> dict:
    settings = {"arch": {"hidden": 32}, "optimizer": "adamw", "lr": 1e-3,
                "weight_decay": 1e-3, "batch_size": 50, "epochs": epochs}
    return canonical_spec("mlp", settings, seed=0, split=SPLIT, data=f"official:{md5}")


def _start_worker(sock: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([str(BIN / "cifarlab"), "worker", "--socket", str(sock), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not sock.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    return proc


def _train(args: list[str], log: Path, cwd: Path, **kw) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([str(BIN / "cifarlab"), "train", *args], stdout=out,
                                stderr=subprocess.STDOUT, cwd=cwd, **kw)


@pytest.fixture
def worker(tmp_path):
    sock = tmp_path / "w.sock"
    proc = _start_worker(sock)
    yield sock, proc
    shutdown(sock)
    proc.wait(timeout=30)


def test_a_run_in_the_worker_is_the_run_a_job_trains(tmp_path, cache, worker):
    data, md5 = cache
    sock, _ = worker
    spec = json.dumps(_spec(md5))
    common = ["--spec", spec, "--data", str(data), "--threads", "1"]
    here = _train([*common, "--out", str(tmp_path / "here")], tmp_path / "here.log", tmp_path)
    assert here.wait(timeout=120) == 0
    t0 = time.monotonic()
    job = _train([*common, "--out", "there", "--worker", str(sock)], tmp_path / "there.log",
                 tmp_path)  # a relative --out: the child works in the job's directory
    assert job.wait(timeout=120) == 0
    seconds = time.monotonic() - t0
    log = (tmp_path / "there.log").read_text()
    assert "epoch 2/2" in log and '"best_epoch"' in log  # the job's log got the output
    cols = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
    import pandas as pd

    a = pd.read_csv(tmp_path / "here/history.csv")[cols]
    b = pd.read_csv(tmp_path / "there/history.csv")[cols]
    pd.testing.assert_frame_equal(a, b)
    ma = json.loads((tmp_path / "here/metrics.json").read_text())
    mb = json.loads((tmp_path / "there/metrics.json").read_text())
    assert ma["test_acc"] == mb["test_acc"] and ma["best_epoch"] == mb["best_epoch"]
    # No interpreter start-up with torch: far below a job's ~4 s here.
    assert seconds < 3.0, seconds


def test_a_failing_run_fails_its_job_with_the_error_in_its_log(tmp_path, cache, worker):
    data, md5 = cache
    sock, _ = worker
    job = _train(["--spec", json.dumps(_spec(md5)), "--data", str(data), "--out", "r",
                  "--device", "cuda:7", "--worker", str(sock)], tmp_path / "r.log", tmp_path)
    assert job.wait(timeout=60) == 2
    assert "error: device 'cuda:7' asked for" in (tmp_path / "r.log").read_text()


def test_without_a_worker_the_job_trains_itself(tmp_path, cache):
    data, md5 = cache
    job = _train(["--spec", json.dumps(_spec(md5)), "--data", str(data), "--out", "r",
                  "--worker", str(tmp_path / "none.sock")], tmp_path / "r.log", tmp_path)
    assert job.wait(timeout=120) == 0
    assert (tmp_path / "r/metrics.json").exists()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def test_a_killed_job_takes_its_run_with_it(tmp_path, cache, worker):
    data, md5 = cache
    sock, proc = worker
    job = _train(["--spec", json.dumps(_spec(md5, epochs=20000)), "--data", str(data),
                  "--out", "long", "--worker", str(sock)], tmp_path / "long.log", tmp_path)
    deadline = time.monotonic() + 60
    while not _children(proc.pid):
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.05)
    (child,) = _children(proc.pid)
    job.send_signal(signal.SIGKILL)  # as Snakemake ends a job on Ctrl-C or a failure
    job.wait(timeout=10)
    deadline = time.monotonic() + 20
    while Path(f"/proc/{child}").exists() and \
            Path(f"/proc/{child}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the run outlived its job"
        time.sleep(0.1)
    assert not (tmp_path / "long/metrics.json").exists()


def test_the_worker_leaves_when_idle_or_orphaned(tmp_path):
    idle = _start_worker(tmp_path / "idle.sock", "--idle-timeout", "1")
    assert idle.wait(timeout=30) == 0 and "served 0 runs" in idle.stdout.read()
    assert not (tmp_path / "idle.sock").exists()
    parent = subprocess.Popen(["sleep", "60"])
    orphan = _start_worker(tmp_path / "orphan.sock", "--parent", str(parent.pid))
    parent.kill()
    parent.wait()
    assert orphan.wait(timeout=30) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker forks (POSIX only)")
def test_shutdown_is_answered(tmp_path):
    proc = _start_worker(tmp_path / "s.sock")
    assert shutdown(tmp_path / "s.sock")
    assert proc.wait(timeout=30) == 0
    assert not shutdown(tmp_path / "s.sock")  # gone: nothing answers


def test_the_worker_preloads_the_data_a_train_command_names(monkeypatch, tmp_path, capsys):
    from cifarlab import data, worker

    seen = []
    monkeypatch.setattr(data, "preload_cache", seen.append)
    argv = ["train", "--spec", "{}", "--data", "results/d.npz", "--out", "o", "--threads", "1"]
    worker._preload_data({"argv": argv, "cwd": str(tmp_path)})
    assert seen == [tmp_path / "results/d.npz"]
    worker._preload_data({"argv": ["train", "--bogus"], "cwd": str(tmp_path)})  # left to
    worker._preload_data({"argv": ["status"], "cwd": str(tmp_path)})  # the child: no data
    assert len(seen) == 1 and capsys.readouterr().err == ""
