"""The committed quick report (report/quick/) must come from the training code on this
commit: its header names the commit(s) its runs were trained at, and the training code
(layers, models, data, training) must not have changed since."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "report/quick/report.md"
# What decides a run's numbers. Reporting, plotting and pipeline code may change freely:
# `make report PROFILE=quick` redraws them from the same runs.
TRAINING_CODE = ["src/cifarlab/layers.py", "src/cifarlab/models.py", "src/cifarlab/zoo",
                 "src/cifarlab/data.py", "src/cifarlab/engine.py", "src/cifarlab/train.py"]
REGENERATE = (
    "regenerate the committed report from scratch with this code: move results/runs away "
    "(completed runs are otherwise restored, not retrained), then run "
    "`make quick PUBLISH=1 DATA=<CIFAR-10 image folder or .tar.gz>` (on this project's "
    "machines DATA=../shared/data/cifar10-jpeg.tar.gz) and commit report/quick/")


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def report_commits(text: str) -> list[str]:
    """The commits in the report header's **Code:** line."""
    m = re.search(r"^- \*\*Code:\*\* commits? (.+)$", text, re.M)
    return re.findall(r"\b[0-9a-f]{7,40}\b", m.group(1)) if m else []


def test_report_commits_are_read_from_the_header():
    assert report_commits("- **Code:** commit 2353657a1786, a0575ec59a11\n") == [
        "2353657a1786", "a0575ec59a11"]
    assert report_commits("- **Code:** commit unknown\n") == []


def test_committed_quick_report_comes_from_the_current_training_code():
    if shutil.which("git") is None or _git("rev-parse", "HEAD").returncode != 0:
        pytest.skip("not a git checkout: the report's commit cannot be compared")
    commits = report_commits(REPORT.read_text())
    assert commits, f"{REPORT} names no commit in its header; {REGENERATE}"
    for commit in commits:
        if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
            if _git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
                pytest.skip(f"shallow clone: commit {commit} of the report is not here")
            pytest.fail(f"the report was trained at commit {commit}, which is not in this "
                        f"repository's history; {REGENERATE}")
        changed = _git("diff", "--name-only", commit, "HEAD", "--", *TRAINING_CODE)
        assert changed.returncode == 0, changed.stderr
        files = changed.stdout.split()
        assert not files, (f"the committed quick report was trained at {commit}, and the "
                           f"training code changed since: {', '.join(files)}; {REGENERATE}")
