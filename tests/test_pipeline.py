"""The Snakemake workflow end to end on the smoke profile, with a real HTTP download.

The archive is built by the test in the official format, served from 127.0.0.1, and the
smoke config's URL and MD5 point at it, so the real download path runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import make_official_archive, serve_directory

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    # The profiles' `quiet` hides the job stats; a dry run here asks for them (job_counts).
    quiet = ["--quiet", "host"] if "-n" in args else []
    cmd = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           *args, *quiet]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run."""
    counts = {}
    block = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    for line in block.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def smoke_args(url: str, md5: str) -> list[str]:
    """The smoke profile's arguments with its archive served at ``url``."""
    return ["--cores", "2", "--configfile", str(ROOT / "config/smoke.yaml"), "--config",
            f"data={{source: url, url: '{url}/cifar-10-python.tar.gz', md5: {md5}}}"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work = tmp_path_factory.mktemp("smoke")
    served = tmp_path_factory.mktemp("served")
    md5 = make_official_archive(served / "cifar-10-python.tar.gz", per_batch=100)
    with serve_directory(served) as url:
        common = smoke_args(url, md5)
        first = snakemake(work, *common)
        yield {"work": work, "common": common, "first": first, "url": url}


def test_lint_is_clean(tmp_path):
    proc = snakemake(ROOT, "--lint")
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_default_config_dry_run_schedules_29_training_jobs(tmp_path):
    proc = snakemake(tmp_path, "-n", "--cores", "2")
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["train"] == 29
    assert counts["prepare_data"] == 1 and counts["report"] == 1
    proc = snakemake(tmp_path, "-n", "--cores", "2", "--config", "seeds=[0, 1, 2]")
    assert job_counts(proc.stdout + proc.stderr)["train"] == 87


def test_bad_config_stops_with_a_clear_message(tmp_path):
    proc = snakemake(tmp_path, "-n", "--cores", "1", "--config",
                     "models={mlp: {arch: {dropout: 1.5}}}", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "dropout" in out and ("1.5" in out)
    proc = snakemake(tmp_path, "-n", "--cores", "1", "--config",
                     "experiments={batch_size: {sweep: {values: [100, 90000]}}}", check=False)
    assert proc.returncode != 0
    assert "batch size 90000 is larger than the training split (40000 images)" in \
        proc.stdout + proc.stderr


def test_smoke_pipeline_outputs(smoke):
    work = smoke["work"]
    # Before training, the device notice estimates the CPU time and points to the GPU and
    # cluster profiles.
    notice = smoke["first"].stdout + smoke["first"].stderr
    assert "11 runs in the plan, 11 to train; training will use the CPU" in notice
    assert "profiles/slurm" in notice
    assert re.search(r"The whole plan is estimated at \d+ (s|min) of CPU time, about \d+ "
                     r"(s|min) here\.", notice)
    runs = pd.read_csv(work / "results/smoke/tables/runs.csv")
    assert len(runs) == 11
    assert runs["test_acc"].notna().all()
    assert (runs["test_acc"] > 15).mean() > 0.5  # learnable synthetic data; chance is 10%
    points = pd.read_csv(work / "results/smoke/tables/points.csv")
    assert len(points) == 3 * 2 + 3 * 2 + 2 * 2 + 2
    for name, rows in (("ablation", 6), ("dropout_rate", 6), ("batch_size", 4),
                       ("dropout2d", 2)):
        assert len(pd.read_csv(work / f"results/smoke/tables/experiment_{name}.csv")) == rows
    published = pd.read_csv(work / "results/smoke/tables/published.csv")
    assert {"mlp", "cnn"} <= set(published["model"])
    assert published["profile"].eq("smoke").all()
    long = pd.read_parquet(work / "results/smoke/tables/history_long.parquet")
    assert set(long["split"]) == {"train", "val"} and set(long["metric"]) == {"loss", "acc"}
    assert len(long) == 11 * 2 * 4
    html = (work / "results/smoke/report/report.html").read_text()
    md = (work / "results/smoke/report/report.md").read_text()
    for text in (html, md):
        assert "Findings" in text and "BatchNorm" in text and "smoke" in text
    # The HTML stands alone: figures embedded, no script, no address to fetch, a title.
    assert "<title>CIFAR-10 with MLPs and CNNs: the smoke profile</title>" in html
    assert html.count('src="data:image/png;base64,') >= 10 and 'src="figures/' not in html
    assert "<script" not in html and not re.search(r"(src|href)=\"https?://", html)
    assert (work / "results/smoke/report.ipynb").exists()
    for fig in ("curves_mlp", "ablation_cnn", "dropout_rate_summary", "first_layer_mlp",
                "first_layer_cnn", "dropout2d_cnn", "batch_size_summary"):
        assert (work / f"results/smoke/figures/{fig}.png").stat().st_size > 5000
        assert (work / f"results/smoke/figures/{fig}.svg").exists()
        assert (work / f"results/smoke/report/figures/{fig}.png").exists()
    for rid in runs["run_id"]:
        metrics = json.loads((work / "results/runs" / rid / "metrics.json").read_text())
        assert metrics["epochs_completed"] == 2
        assert (work / "logs/train" / f"{rid}.log").read_text().count("epoch 2/2") == 1


def test_the_terminal_shows_one_line_per_run_and_the_grid(smoke):
    """No rule blocks or reasons; each run's result with the grid's progress and ETA."""
    out = smoke["first"].stdout + smoke["first"].stderr
    assert "reason:" not in out and "rule train:" not in out
    finished = re.findall(r"^\[(\d+)/11 done, \d+ running, \d+ left(?:, ETA [^\]]+)?\] "
                          r"(\S+): test \d+\.\d\d% \(best epoch \d of 2, .+\)$", out, re.M)
    assert len(finished) == 11, out
    # Two jobs ending together may both count the other as done: counts rise to 11.
    counts = sorted(int(n) for n, _ in finished)
    assert counts[-1] == 11 and all(1 <= n <= 11 for n in counts), counts
    assert len({rid for _, rid in finished}) == 11
    assert len(out.splitlines()) < 80, out
    # The download's progress is in its log.
    (log,) = (smoke["work"] / "logs/data").glob("*.log")
    assert re.search(r"cifar-10-python.tar.gz: .* MiB in .* s", log.read_text())


def test_status_lists_every_run_for_the_same_arguments(smoke):
    proc = subprocess.run([str(BIN / "cifarlab"), "status", *smoke["common"][2:]],
                          cwd=smoke["work"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "profile smoke: runs in results/runs/, tables in results/smoke/tables/" in proc.stdout
    assert "11 runs: 11 done, 0 diverged, 0 running, 0 missing" in proc.stdout
    assert re.search(r"^mlp-bn-p0.6-bs50-s0-\w+ +done +2/2 +\d+\.\d\d% ", proc.stdout, re.M)


def test_another_profile_shares_the_runs_and_writes_its_own_tree(smoke):
    """A second profile over the same runs trains nothing and plans only its own tables,
    figures and report; the smoke profile's outputs are not its outputs."""
    proc = snakemake(smoke["work"], *smoke["common"], "profile=other", "-n")
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts == {"aggregate": 1, "figures": 1, "report": 1, "all": 1}, counts
    assert "results/other/tables/runs.csv" in proc.stdout + proc.stderr


def test_the_html_report_shows_every_figure_offline(smoke):
    """Opened alone (no figures folder beside it) in headless Chromium with no network."""
    from browser import check_offline, chromium

    if chromium() is None:
        pytest.skip("headless Chromium not installed: apt-get install chromium")
    result = check_offline(smoke["work"] / "results/smoke/report/report.html")
    assert result["images"] >= 10 and result["loaded"] == result["images"], result
    assert result["resources"] == [] and result["external"] == [], result
    assert result["title"] == "CIFAR-10 with MLPs and CNNs: the smoke profile"


def test_second_invocation_does_nothing(smoke):
    proc = snakemake(smoke["work"], *smoke["common"])
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changed_grid_point_trains_exactly_one_new_run(smoke):
    work = smoke["work"]
    common = list(smoke["common"])
    before = set(os.listdir(work / "results/runs"))
    change = ["experiments={dropout2d: {points: {dropout2d: {arch: {dropout: 0.5, "
              "dropout2d: true}}}}}"]
    proc = snakemake(work, *common, *change, "-n")
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts == {"train": 1, "aggregate": 1, "figures": 1, "report": 1, "all": 1}, counts
    snakemake(work, *common, *change)
    after = set(os.listdir(work / "results/runs"))
    new = after - before
    assert len(new) == 1 and next(iter(new)).startswith("cnn-bn-d20.5-")
    assert "-d20.5-" in pd.read_csv(work / "results/smoke/tables/runs.csv")["run_id"].str.cat()


def test_a_study_resumed_elsewhere_trains_only_the_missing_runs(smoke, tmp_path):
    """Another machine gets the completed runs' results without weights (a bundle, as a
    GPU machine stopped by its time limit brings back) and trains only what is missing:
    the data is prepared there, so Snakemake reruns every train job, and each restored
    run's job restores its outputs from the record the planner gave it, in seconds; their
    first layers come from first_layer.pt."""
    from cifarlab.bundle import bundle_paths, pack, restore_runs
    from cifarlab.layout import Layout

    work = smoke["work"]
    proc = subprocess.run([str(BIN / "cifarlab"), "plan", *smoke["common"][2:], "--out",
                           str(tmp_path / "plan.json")], cwd=work, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ids = sorted(json.loads((tmp_path / "plan.json").read_text()))
    assert len(ids) == 11
    layout = Layout.from_config({"profile": "smoke"})
    kept = ids[2:]  # two runs "did not finish in time"
    pack(bundle_paths(layout, kept, root=work), tmp_path / "bundle", root=work,
         info={"runs_dir": str(layout.runs)})
    other = tmp_path / "other"
    assert restore_runs(tmp_path / "bundle", other)["restored"] == kept
    assert not list((other / "results/runs").glob("*/best.pt"))
    before = {rid: (other / "results/runs" / rid / "metrics.json").read_bytes() for rid in kept}
    snakemake(other, *smoke["common"])
    for rid, data in before.items():
        assert (other / "results/runs" / rid / "metrics.json").read_bytes() == data, rid
        log = (other / "logs/train" / f"{rid}.log").read_text()
        assert "restoring its outputs" in log and "epoch 1/2" not in log, log
    for rid in ids[:2]:
        assert "epoch 2/2" in (other / "logs/train" / f"{rid}.log").read_text()
    assert sorted(p.parent.name for p in (other / "results/runs").glob("*/best.pt")) == ids[:2]
    runs = pd.read_csv(other / "results/smoke/tables/runs.csv")
    assert sorted(runs["run_id"]) == ids and runs["test_acc"].notna().all()
    for fig in ("first_layer_mlp", "first_layer_cnn"):
        assert (other / f"results/smoke/figures/{fig}.png").stat().st_size > 5000
    assert "Nothing to be done" in snakemake(other, *smoke["common"]).stderr


def test_changing_how_steps_execute_reruns_no_run(smoke):
    # device, execution switches and checkpoint interval are not part of a run: no rerun
    proc = snakemake(smoke["work"], *smoke["common"],
                     "train={device: cpu, compile: true, cuda_graphs: true, "
                     "checkpoint_seconds: 5}", "-n")
    assert job_counts(proc.stdout).get("train", 0) == 0, proc.stdout[-2000:]


def test_adding_a_seed_trains_only_the_new_runs(smoke):
    proc = snakemake(smoke["work"], *smoke["common"], "seeds=[0, 1]", "-n")
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["train"] == 11  # the 11 grid points of seed 1; seed 0 is cached
    assert "prepare_data" not in counts


def test_snakemake_report(smoke):
    out = smoke["work"] / "snakemake-report.zip"
    snakemake(smoke["work"], *smoke["common"], "--report", str(out))
    assert out.stat().st_size > 10_000


def test_gpu_profile_gives_each_run_one_gpu_slot(tmp_path):
    # profiles/gpu: four runs share the GPU (budget gpu=4, each training job asks gpu=1).
    proc = snakemake(tmp_path, "-n", "--profile", str(ROOT / "profiles/gpu"), "--cores", "2",
                     "--printshellcmds")
    out = proc.stdout + proc.stderr
    assert job_counts(out)["train"] == 29
    train_blocks = [b for b in out.split("rule ")[1:] if b.startswith("train:")]
    assert len(train_blocks) == 29
    assert all(re.search(r"resources:.*\bgpu=1\b", b) for b in train_blocks)
    assert all("--threads 2" in b for b in train_blocks)


TOY_MODEL = '''\
"""A toy third model: one file, registered on import."""
from torch import nn

from cifarlab.models import register_model


@register_model("toy", "Toy")
class Toy(nn.Module):
    def __init__(self, width: int = 4, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3072, width), nn.ReLU(),
                                 nn.Linear(width, num_classes))

    def forward(self, x):
        return self.net(x)
'''

EXTENSION = """
models:
  toy:
    arch: {width: 4}
    optimizer: adamw
    lr: 1.0e-3
    weight_decay: 1.0e-2
    batch_size: 50
    epochs: 2
experiments:
  weight_decay:
    models: [mlp, toy]
    sweep:
      key: weight_decay
      values: [1.0e-4, 1.0e-2]
      scale: log
      axis: weight decay
"""


def test_new_model_file_and_config_only_sweep(smoke, tmp_path):
    # A copy of the checkout with one new file in cifarlab/zoo/ and one config file: no
    # other change. It reuses the smoke runs (same ids) and trains the new ones.
    import shutil

    repo = tmp_path / "repo"
    repo.mkdir()
    for part in ("Snakefile", "workflow", "src", "config", "profiles"):
        src = ROOT / part
        (shutil.copytree if src.is_dir() else shutil.copy2)(
            src, repo / part, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                 if src.is_dir() else {}))
    (repo / "src/cifarlab/zoo/toy.py").write_text(TOY_MODEL)
    (tmp_path / "extension.yaml").write_text(EXTENSION)
    work = smoke["work"]
    before = set(os.listdir(work / "results/runs"))
    args = []
    for a in smoke["common"]:  # --configfile takes both files
        args += [a, str(tmp_path / "extension.yaml")] if a.endswith("smoke.yaml") else [a]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run([str(BIN / "snakemake"), "-s", str(repo / "Snakefile"),
                           "--directory", str(work), *args], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    new = set(os.listdir(work / "results/runs")) - before
    # toy at 1e-4 and 1e-2 (its baseline), mlp at 1e-4 and 1e-2; nothing else retrained
    assert sorted(r.split("-")[0] for r in new) == ["mlp", "mlp", "toy", "toy"], new
    effects = pd.read_csv(work / "results/smoke/tables/effects.csv")
    wd = effects[effects["experiment"] == "weight_decay"]
    assert set(wd["model"]) == {"mlp", "toy"}
    runs = pd.read_csv(work / "results/smoke/tables/runs.csv")
    assert "toy" in set(runs["model"])
    for fig in ("weight_decay_summary", "weight_decay_toy", "curves_toy"):
        assert (work / f"results/smoke/figures/{fig}.png").stat().st_size > 5000
    md = (work / "results/smoke/report/report.md").read_text()
    assert "## Weight decay\n" in md
    assert re.search(r"^\| Toy +\|", md, re.M)
    assert "none (the study has no numbers for this model)" in md
