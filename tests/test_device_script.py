"""scripts/device/study.sh on the CPU: the GPU profile's pipeline, its time budget, the bundle.

The script is what a GPU session runs in one command; here it runs the smoke profile (1
epoch per run) on the CPU through profiles/gpu, first stopped by a budget too short to
finish, then again to the end, as a second call on the machine would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cifarlab.bundle import unpack
from helpers import make_official_archive

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    base = tmp_path_factory.mktemp("device")
    archive = base / "cifar-10-python.tar.gz"
    md5 = make_official_archive(archive, per_batch=100)

    def study(budget: int, out: str, work: str = "work", **more: str
              ) -> subprocess.CompletedProcess:
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}",
               "PYTHON": str(BIN / "python"), "WORK": str(base / work), **more,
               "OUT": str(base / out), "DATA": str(archive), "DATA_SOURCE": "archive",
               "DATA_MD5": md5, "BUDGET_S": str(budget),
               "CONFIGFILES": f"{ROOT}/config/smoke.yaml {ROOT}/profiles/gpu/gpu.yaml"}
        return subprocess.run(
            ["bash", str(ROOT / "scripts/device/study.sh"),
             "models={mlp: {epochs: 1}, cnn: {epochs: 1}}"],
            env=env, capture_output=True, text=True, timeout=900)

    return {"base": base, "study": study}


def _manifest(folder: Path) -> tuple[dict, list[str]]:
    (bundle,) = folder.iterdir()
    assert bundle.name == "results.tar.gz" and bundle.stat().st_size <= 16 * 2**20
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    return unpack(folder, folder.parent / f"{folder.name}-unpacked"), names


def test_a_budget_too_short_stops_snakemake_and_still_bundles(device):
    proc = device["study"](60, "short")
    assert proc.returncode == 124, proc.stdout + proc.stderr
    manifest, names = _manifest(device["base"] / "short")
    assert manifest["profile"] == "smoke" and manifest["runs_complete"] < 11
    assert "logs/device/snakemake.log" in names and "logs/device/study.txt" in names
    assert not any(n.endswith(("best.pt", "checkpoint.pt")) for n in names)


def test_the_next_call_finishes_the_study_and_bundles_its_report(device):
    proc = device["study"](600, "full")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest, names = _manifest(device["base"] / "full")
    assert manifest["runs_complete"] == manifest["runs_planned"] == 11
    for needed in ("results/smoke/report/report.md", "results/smoke/report/report.html",
                   "results/smoke/tables/runs.csv", "logs/device/info.txt"):
        assert needed in names, needed
    runs = [n for n in names if n.endswith("/metrics.json")]
    assert len(runs) == 11 and not any(n.endswith(("best.pt", "checkpoint.pt")) for n in names)
    assert sum(n.endswith("/first_layer.pt") for n in names) == 11  # what the figures need
    work = device["base"] / "work"
    metrics = [json.loads((work / n).read_text()) for n in runs]
    # the GPU profile on a CPU: no CUDA graphs, as recorded; every run 1 epoch
    assert all(m["cuda_graphs"] is False and m["epochs_completed"] == 1 for m in metrics)
    assert "study.sh: snakemake exited 0" in (work / "logs/device/study.txt").read_text()


def test_another_machine_resumes_from_the_bundle_and_trains_nothing_done(device):
    # A fresh machine (another WORK) given the bundle brought back: every completed run is
    # restored without weights and none is trained again; the report is rendered there.
    base = device["base"]
    proc = device["study"](600, "resumed", work="work2", RESUME=str(base / "full"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "restored 11 completed run(s)" in proc.stdout
    assert "study.sh: before training: 11 runs: 11 done" in proc.stdout
    manifest, names = _manifest(base / "resumed")
    assert manifest["runs_complete"] == manifest["runs_planned"] == 11
    assert "results/smoke/report/report.html" in names
    work = base / "work2"
    logs = list((work / "logs/train").glob("*.log"))
    assert len(logs) == 11
    assert not any("epoch 1/1" in log.read_text() for log in logs)
    assert not list((work / "results/runs").glob("*/best.pt"))
    # a RESUME that is not there stops before anything runs, and says so
    proc = device["study"](600, "bad", work="work3", RESUME=str(base / "no-such-bundle"))
    assert proc.returncode == 2 and "RESUME=" in proc.stderr and "brought back" in proc.stderr
    assert not (base / "work3" / "results").exists()


def test_without_wheels_or_packages_it_says_what_to_do(tmp_path):
    # A python without site-packages (so without snakemake) and a checkout copy without
    # .device/: the script stops before doing anything and names the fix.
    repo = tmp_path / "repo"
    (repo / "scripts/device").mkdir(parents=True)
    for name in ("study.sh", "env.sh"):
        (repo / "scripts/device" / name).write_text((ROOT / "scripts/device" / name).read_text())
    bare = tmp_path / "python-without-site"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    assert subprocess.run([str(bare), "-c", "import snakemake"]).returncode != 0
    proc = subprocess.run(["bash", str(repo / "scripts/device/study.sh")], capture_output=True,
                          text=True, env={**os.environ, "PYTHON": str(bare),
                                          "WORK": str(tmp_path / "w")}, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "run scripts/device/prepare.sh where PyPI is reachable" in proc.stderr
    assert not (tmp_path / "w" / "results").exists()
