"""The pipeline on a real SLURM cluster, through `profiles/slurm` and the executor plugin.

A single-node SLURM (munge, slurmctld, slurmd, slurmdbd + MariaDB for sacct) is brought up
on loopback by scripts/slurm/start_local_slurm.sh and stopped by stop_local_slurm.sh when
the module is done. The node advertises 6 CPUs and 6 fake GPUs, so the profile's GPU request
(`--gpus=1` from cluster.yaml's train.gpus) is scheduled for real while training runs on the
CPU. Its partitions are "debug" (the default) and "gpu" (the profile's), so a job that
ignored the profile's partition would land in "debug".

Two controllers run at once against the cluster, both from a "login node" (this machine):
  * the smoke study with `--profile profiles/slurm` (and the auto-loaded profiles/default,
    as for a user in the repository), compared with a local run of the same config;
  * one training run with `--workflow-profile profiles/slurm` and a 1-minute time limit
    (train.runtime_minutes: 1), with as many short epochs as take ~100 s of CPU time here
    (measured first): attempt 1 is killed by SLURM, attempt 2 (2 minutes) must resume from
    the checkpoint, and so on.
A third job, outside Snakemake, ignores SIGTERM under a shell that dies of it at its
1-minute limit: it must still be killed (nothing of a job may outlive it).
The only settings that differ from the profile as shipped are the data source and small
resources (train.threads: 1, train.mem_mb: 1000), plus the runtime for the time-limit run.

Needs root and either the SLURM packages or apt-get; skipped otherwise, or with
CIFARLAB_SKIP_SLURM=1. Every subprocess runs under `timeout -k`, within an overall budget.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import make_official_archive

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HARNESS = ROOT / "scripts/slurm"
CLUSTER_DIR = Path(os.environ.get("CIFARLAB_SLURM_TEST_DIR", "/tmp/cifarlab-slurm-test"))
BUDGET_S = 15 * 60  # hard cap on everything this module runs (it takes ~7-9 minutes)

pytestmark = pytest.mark.slurm


def _skip_reason() -> str | None:
    if os.environ.get("CIFARLAB_SKIP_SLURM") == "1":
        return "CIFARLAB_SKIP_SLURM=1"
    if not sys.platform.startswith("linux"):
        return "the SLURM harness needs Linux"
    if os.geteuid() != 0:
        return ("needs root: it starts munged, slurmctld, slurmd and installs Debian "
                "packages (run as root, or set CIFARLAB_SKIP_SLURM=1)")
    have = all(shutil.which(b, path=f"/usr/sbin:{os.environ.get('PATH', '')}")
               for b in ("slurmctld", "slurmd", "slurmdbd", "munged", "sbatch", "sacct"))
    if not have and not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    if not shutil.which("timeout"):
        return "needs coreutils' timeout"
    ours = CLUSTER_DIR / "run/slurmctld.pid"
    if not ours.exists():
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", 6817)) == 0:
                return "port 6817 is taken: another slurmctld runs on this machine"
    return None


_reason = _skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self, cap: float) -> int:
        left = self.end - time.monotonic()
        if left < 5:
            raise AssertionError("the SLURM test ran out of its time budget")
        return int(min(cap, left))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    env["PATH"] = f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin:{os.environ.get('PATH', '')}"
    env["SLURM_CONF"] = str(CLUSTER_DIR / "etc/slurm.conf")
    env["SLURM_LOCAL_DIR"] = str(CLUSTER_DIR)
    return env


def _start(cmd: list[str], log: Path, timeout_s: int, cwd: Path | None = None,
           env: dict | None = None) -> subprocess.Popen:
    """Start `cmd` under `timeout -k 10 timeout_s`, its output going to `log`."""
    fh = open(log, "w")  # noqa: SIM115 - closed by _wait
    proc = subprocess.Popen(["timeout", "-k", "10", str(timeout_s), *cmd], stdout=fh,
                            stderr=subprocess.STDOUT, cwd=cwd, env=env or _env())
    proc.log_file = fh  # type: ignore[attr-defined]
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def _wait(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        rc = proc.wait()
    finally:
        proc.log_file.close()  # type: ignore[attr-defined]
    return rc, proc.log_path.read_text(errors="replace")  # type: ignore[attr-defined]


def _run(cmd: list[str], log: Path, timeout_s: int, **kw) -> tuple[int, str]:
    return _wait(_start(cmd, log, timeout_s, **kw))


def _snakemake(work: Path, *args: str) -> list[str]:
    return [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(work),
            *args]


def _tail(text: str, n: int = 4000) -> str:
    return text[-n:]


def submitted_jobs(output: str) -> dict[str, list[int]]:
    """'<rule>/<wildcards>' -> SLURM job ids, from the executor's 'submitted' lines."""
    jobs: dict[str, list[int]] = {}
    for m in re.finditer(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", output):
        log = Path(m.group(2))
        rule_dir = next(p for p in log.parents if p.name.startswith("rule_"))
        key = str(log.parent.relative_to(rule_dir.parent))
        jobs.setdefault(key.removeprefix("rule_"), []).append(int(m.group(1)))
    return jobs


def sacct(job_ids: list[int]) -> dict[int, dict[str, str]]:
    fields = ["JobID", "State", "Partition", "Timelimit", "AllocTRES", "Comment", "ExitCode"]
    proc = subprocess.run(
        ["timeout", "-k", "5", "30", "sacct", "-X", "-P", "-n", "-j",
         ",".join(map(str, job_ids)), "-o", ",".join(fields)],
        capture_output=True, text=True, env=_env(), check=True)
    out = {}
    for line in proc.stdout.splitlines():
        row = dict(zip(fields, line.split("|"), strict=False))
        if row.get("JobID", "").isdigit():
            out[int(row["JobID"])] = row
    return out


def processes_mentioning(text: str) -> dict[int, str]:
    """Processes whose command line contains `text` (this test's unique folder)."""
    found = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found[int(p.name)] = cmd[:300]
    return found


def _end(pids) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        time.sleep(2)


def _write_yaml(path: Path, obj: dict) -> Path:
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


CALIBRATE = """
import json, sys, time
from pathlib import Path
from cifarlab.cli import load_splits_for
from cifarlab.train import train_run
spec = json.loads(Path(sys.argv[1]).read_text())
spec["epochs"] = 3
data = load_splits_for(spec, Path(sys.argv[2]))
train_run(spec, data, sys.argv[3], device="cpu", threads=1, stop_after=1)
t = time.process_time()
train_run(spec, data, sys.argv[3], device="cpu", threads=1)  # resumes: epochs 2 and 3
print(json.dumps({"cpu_seconds_per_epoch": (time.process_time() - t) / 2}))
"""


def _plan(*configs: Path | str) -> dict:
    out = Path(configs[-1]).with_suffix(".plan.json")
    subprocess.run([str(BIN / "cifarlab"), "plan", str(ROOT / "config/config.yaml"),
                    *map(str, configs), "--out", str(out)],
                   check=True, capture_output=True, timeout=180)
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Start the cluster, run everything once; the tests below check what happened."""
    t0 = time.monotonic()
    deadline = Deadline(BUDGET_S)
    base = tmp_path_factory.mktemp("slurm")
    archive = base / "arch/cifar-10-python.tar.gz"
    md5 = make_official_archive(archive, per_batch=100)
    data = {"source": "url", "url": f"file://{archive}", "md5": md5}
    smoke = str(ROOT / "config/smoke.yaml")
    cluster_yaml = str(ROOT / "profiles/slurm/cluster.yaml")
    small = {"threads": 1, "mem_mb": 1000}  # the only resource overrides
    local_cfg = _write_yaml(base / "local.yaml", {"data": data})
    slurm_cfg = _write_yaml(base / "slurm.yaml", {"data": data, "train": small})
    local, work, tl = base / "local", base / "work", base / "timelimit"
    for d in (local, work, tl):
        d.mkdir()

    # 1. The cluster comes up (installing packages if needed) while the same runs train
    #    locally, for reference.
    env = {**_env(), "SLURM_LOCAL_PARTITIONS": "debug gpu", "SLURM_LOCAL_GPUS": "6",
           "SLURM_LOCAL_CPUS": str(max(6, os.cpu_count() or 1))}
    start_proc = _start(["bash", str(HARNESS / "start_local_slurm.sh"), "--accounting"],
                        base / "start.out", deadline.left(420), env=env)
    runs = sorted(_plan(smoke, local_cfg))
    local_proc = _start(_snakemake(local, *[f"results/runs/{r}/metrics.json" for r in runs],
                                   "--cores", "2", "--configfile", smoke, str(local_cfg)),
                        base / "local.out", deadline.left(480))
    procs = [start_proc, local_proc]
    try:
        # 2. The time-limit run: the CNN baseline with epochs enough for ~100 s of CPU time
        #    on this machine, so that a 1-minute limit (killed within ~90 s, after ~15 s of
        #    start-up) always stops it part-way, and 2 minutes mostly suffice to finish it.
        calib = base / "calib"
        calib.mkdir()
        subprocess.run([str(BIN / "cifarlab"), "prepare", "--source", "url", "--url",
                        data["url"], "--md5", md5, "--out", str(calib / "cifar10.npz"),
                        "--workdir", str(calib), "--no-progress"],
                       check=True, capture_output=True, timeout=deadline.left(180))
        tl_model = {"arch": {"channels": [64, 128]}}
        probe = _write_yaml(base / "probe.yaml", {"data": data, "models": {"cnn": tl_model}})
        spec = next(e["spec"] for e in _plan(smoke, probe).values()
                    if e.get("baseline") and e["spec"]["model"] == "cnn")
        (calib / "spec.json").write_text(json.dumps(spec))
        proc = subprocess.run([str(BIN / "python"), "-c", CALIBRATE, str(calib / "spec.json"),
                               str(calib / "cifar10.npz"), str(calib / "run")],
                              capture_output=True, text=True, timeout=deadline.left(240))
        assert proc.returncode == 0, proc.stderr[-3000:]
        per_epoch = json.loads(proc.stdout.strip().splitlines()[-1])["cpu_seconds_per_epoch"]
        tl_epochs = int(min(400, max(12, math.ceil(100 / max(per_epoch, 0.05)))))
        tl_cfg = _write_yaml(base / "timelimit.yaml", {
            "data": data, "train": {**small, "runtime_minutes": 1},
            "models": {"cnn": {**tl_model, "epochs": tl_epochs}}})
        tl_run = next(rid for rid, e in _plan(smoke, tl_cfg).items()
                      if e.get("baseline") and e["spec"]["model"] == "cnn")

        rc, out = _wait(start_proc)
        if rc == 3:
            pytest.skip(f"SLURM packages could not be installed:\n{_tail(out, 1500)}")
        assert rc == 0, f"the cluster did not start ({rc}):\n{_tail(out)}"
        t_cluster = time.monotonic() - t0
        # idempotent: a second start finds it running and changes nothing
        rc2, out2 = _run(["bash", str(HARNESS / "start_local_slurm.sh"), "--accounting",
                          "--no-install"], base / "start2.out", deadline.left(60), env=env)
        assert rc2 == 0 and "already running" in out2, out2
        # A job whose process ignores SIGTERM while the batch shell above it dies of it (as
        # a Snakemake job step can, busy shutting down): SIGKILL after KillWait must still
        # find it, or it outlives its job. Sleeps, so it costs no CPU.
        orphan = base / "ignore_sigterm.py"
        orphan.write_text("import signal, time\n"
                          "signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n")
        sub = subprocess.run(["timeout", "-k", "5", "30", "sbatch", "--parsable", "--time=1",
                              "--mem=50", "-o", str(base / "orphan.out"),
                              f"--wrap={sys.executable} {orphan}; true"],
                             capture_output=True, text=True, env=_env(), check=True)
        orphan_job = int(sub.stdout.strip().split(";")[0])

        # 3. Both controllers at once: the time-limit run (--workflow-profile) and the smoke
        #    study (--profile, with profiles/default loaded as for a user in the repository).
        smoke_args = ["--profile", str(ROOT / "profiles/slurm"),
                      "--configfile", smoke, cluster_yaml, str(slurm_cfg)]
        tl_args = [f"results/runs/{tl_run}/metrics.json",
                   "--workflow-profile", str(ROOT / "profiles/slurm"),
                   "--configfile", smoke, cluster_yaml, str(tl_cfg)]
        # The time-limit run starts from prepared data (the smoke run submits prepare_data).
        (tl / "results/data").mkdir(parents=True)
        shutil.copy(calib / "cifar10.npz", tl / "results/data/cifar10.npz")
        t1 = time.monotonic()
        tl_proc = _start(_snakemake(tl, *tl_args), base / "timelimit.out", deadline.left(600))
        smoke_proc = _start(_snakemake(work, *smoke_args), base / "slurm.out",
                            deadline.left(540))
        procs += [tl_proc, smoke_proc]
        rc_local, local_out = _wait(local_proc)
        t_local = time.monotonic() - t0
        rc_smoke, smoke_out = _wait(smoke_proc)
        t_smoke = time.monotonic() - t1
        rc_tl, tl_out = _wait(tl_proc)
        t_tl = time.monotonic() - t1
        assert rc_local == 0, f"the local reference run failed ({rc_local}):\n{_tail(local_out)}"

        # 4. Second invocations: nothing may be submitted.
        again_proc = _start(_snakemake(work, *smoke_args), base / "again.out",
                            deadline.left(180))
        tl_again_proc = _start(_snakemake(tl, *tl_args), base / "tl_again.out",
                               deadline.left(180))
        procs += [again_proc, tl_again_proc]
        rc_again, again_out = _wait(again_proc)
        rc_tl_again, tl_again_out = _wait(tl_again_proc)

        # every job has ended: nothing of ours may still run (no escaped job processes)
        leftovers = processes_mentioning(str(base))
        jobs = {**submitted_jobs(smoke_out),
                **{f"tl/{k}": v for k, v in submitted_jobs(tl_out).items()}}
        ids = sorted([orphan_job, *(i for v in jobs.values() for i in v)])
        accounting = sacct(ids) if ids else {}
        times = {"cluster_up_s": round(t_cluster), "local_reference_s": round(t_local),
                 "slurm_smoke_s": round(t_smoke), "slurm_timelimit_s": round(t_tl),
                 "before_asserts_s": round(time.monotonic() - t0)}
        (base / "summary.json").write_text(json.dumps(
            {"times": times, "jobs": jobs, "sacct": accounting, "tl_epochs": tl_epochs,
             "cpu_seconds_per_epoch": per_epoch}, indent=1))
        yield {
            "base": base, "local": local, "work": work, "tl": tl, "tl_run": tl_run,
            "tl_epochs": tl_epochs, "smoke": (rc_smoke, smoke_out), "timelimit": (rc_tl, tl_out),
            "again": (rc_again, again_out), "tl_again": (rc_tl_again, tl_again_out),
            "jobs": jobs, "sacct": accounting, "times": times, "t0": t0,
            "leftovers": leftovers, "orphan_job": orphan_job,
        }
    finally:
        for p in procs:  # only ours, by their pids (timeout -k ends their children)
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        subprocess.run(["timeout", "-k", "5", "120", "bash",
                        str(HARNESS / "stop_local_slurm.sh")], env=_env(), capture_output=True)
        _end(processes_mentioning(str(base)))  # only processes of this test's folder


def test_every_job_of_the_smoke_study_went_through_sbatch(study):
    rc, out = study["smoke"]
    assert rc == 0, f"snakemake --profile profiles/slurm failed ({rc}):\n{_tail(out)}"
    runs = sorted(p.name for p in (study["work"] / "results/runs").iterdir())
    assert len(runs) == 11
    jobs = study["jobs"]
    assert sorted(k.split("/", 1)[1] for k in jobs if k.startswith("train/")) == runs
    assert len(jobs["prepare_data"]) == 1
    # the light rules ran on the submitting node, the others never did
    # (profiles/default's `quiet: rules` hides Snakemake's "localrule" lines: the logs and
    # the sbatch records say where each rule ran)
    for rule in ("aggregate", "figures", "report"):
        assert rule not in jobs
        assert (study["work"] / f"logs/smoke/{rule}.log").exists()
    acct = study["sacct"]
    for key, ids in jobs.items():
        if key.startswith("tl/"):
            continue
        assert len(ids) == 1, (key, ids)  # nothing was retried
        row = acct[ids[0]]
        assert row["State"] == "COMPLETED", row
        assert row["Partition"] == "gpu", row  # the profile's partition, not the default
        if key.startswith("train/"):
            run = key.split("/", 1)[1]
            assert "gres/gpu=1" in row["AllocTRES"], row  # the profile's GPU request
            assert row["Comment"] == f"rule_train_wildcards_{run}", row
            # the SLURM log of each job is kept, named by its job id
            assert (study["work"] / f".snakemake/slurm_logs/rule_train/{run}/{ids[0]}.log"
                    ).exists()
    example = sorted(k for k in jobs if k.startswith("train/"))[0]
    print(f"\nsbatch job ids of {example}: {jobs[example]} -> {acct[jobs[example][0]]}")


def _floats_equal(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return a == b


DETERMINISTIC = ("best_epoch", "train_acc", "train_loss", "val_acc", "val_loss", "test_acc",
                 "test_loss", "best_train_acc", "best_val_acc", "epochs_completed", "diverged",
                 "n_params", "n_train", "n_val", "n_test", "device", "threads",
                 "data_checksum", "precision")


def test_cluster_outputs_equal_a_local_run(study):
    import torch

    assert study["smoke"][0] == 0
    local, work = study["local"] / "results/runs", study["work"] / "results/runs"
    runs = sorted(p.name for p in local.iterdir())
    assert runs == sorted(p.name for p in work.iterdir()) and len(runs) == 11
    for run in runs:
        a = json.loads((local / run / "metrics.json").read_text())
        b = json.loads((work / run / "metrics.json").read_text())
        for key in DETERMINISTIC:
            assert _floats_equal(a[key], b[key]), (run, key, a[key], b[key])
        with open(local / run / "history.csv") as fa, open(work / run / "history.csv") as fb:
            ha, hb = list(csv.DictReader(fa)), list(csv.DictReader(fb))
        assert len(ha) == len(hb) == 2
        for ra, rb in zip(ha, hb, strict=True):
            for col in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc"):
                assert _floats_equal(float(ra[col]), float(rb[col])), (run, col, ra, rb)
        wa = torch.load(local / run / "best.pt", map_location="cpu", weights_only=True)
        wb = torch.load(work / run / "best.pt", map_location="cpu", weights_only=True)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.allclose(wa[k].float(), wb[k].float(), rtol=1e-5, atol=1e-7), (run, k)
    for table in ("runs.csv", "points.csv"):
        assert (study["work"] / "results/smoke/tables" / table).exists()
    assert (study["work"] / "results/smoke/report/report.html").exists()


def test_second_invocation_submits_nothing(study):
    for name in ("again", "tl_again"):
        rc, out = study[name]
        assert rc == 0, f"{name} ({rc}):\n{_tail(out)}"
        assert "submitted with SLURM jobid" not in out, _tail(out)
        # no job of a SLURM rule was even scheduled: every run and the data are up to date
        assert not re.search(r"^\s*rule (train|prepare_data):", out, re.M), _tail(out)
    # the time-limit target is one finished run: nothing at all to do
    assert "Nothing to be done" in study["tl_again"][1], _tail(study["tl_again"][1])


def test_a_job_killed_at_its_time_limit_is_retried_and_resumes(study):
    rc, out = study["timelimit"]
    run, epochs = study["tl_run"], study["tl_epochs"]
    assert rc == 0, f"the time-limit run failed ({rc}):\n{_tail(out)}"
    ids = study["jobs"][f"tl/train/{run}"]
    acct = study["sacct"]
    states = [acct[i]["State"] for i in ids]
    limits = [acct[i]["Timelimit"] for i in ids]
    # attempt n asked for n minutes; every attempt but the last hit its time limit
    assert len(ids) >= 2, states
    assert states[-1] == "COMPLETED" and all(s == "TIMEOUT" for s in states[:-1]), states
    assert limits == [f"00:0{n}:00" for n in range(1, len(ids) + 1)], limits
    slurm_log = study["tl"] / f".snakemake/slurm_logs/rule_train/{run}/{ids[0]}.log"
    assert "DUE TO TIME LIMIT" in slurm_log.read_text(errors="replace")
    # The training log of every attempt: the failed ones as the controller showed them
    # (show-failed-logs), the last one from the file.
    shown = [m.group(2) for m in re.finditer(r"^Logfile (\S+):\n={80}\n(.*?)\n={80}$", out,
                                             re.S | re.M) if m.group(1) == f"logs/train/{run}.log"]
    attempts = [*shown, (study["tl"] / f"logs/train/{run}.log").read_text()]
    assert len(attempts) == len(ids), (len(attempts), ids)
    trained: list[int] = []  # the epochs completed so far, as the attempts logged them
    resumed = []
    for n, log in enumerate(attempts, 1):
        epochs_here = [int(e) for e in re.findall(rf"epoch (\d+)/{epochs}\b", log)]
        m = re.search(rf"resuming {re.escape(run)} after epoch (\d+) of {epochs}", log)
        if m:  # a retry resumes right after the last epoch the previous attempt finished
            k = int(m.group(1))
            # (k may be one less if the kill fell between an epoch's log line and its
            # checkpoint: that epoch is then trained again, from the checkpoint's state)
            assert n > 1 and k >= 1 and len(trained) - 1 <= k <= len(trained), (n, k, trained)
            trained = trained[:k]
            resumed.append(k)
        elif (f"run {run} is complete; not training it again" in log
              or f"run {run} completed earlier; restoring its outputs" in log):
            # killed after its last epoch but before the job ended: not trained again (if
            # the kill fell between the record's metrics.json and the run's, the outputs
            # are restored from the record)
            assert n > 1 and len(trained) == epochs and not epochs_here, (n, trained[-3:])
        else:  # a fresh start only while no checkpoint could exist yet
            assert len(trained) <= 1, (n, trained[-3:], log[-2000:])
            trained = []
        trained += epochs_here
        assert trained == list(range(1, len(trained) + 1)), (n, trained)
    assert resumed, "no attempt resumed from a checkpoint"
    assert trained == list(range(1, epochs + 1)), trained  # each epoch trained exactly once
    with open(study["tl"] / f"results/runs/{run}/history.csv") as fh:
        history = [int(r["epoch"]) for r in csv.DictReader(fh)]
    assert history == list(range(1, epochs + 1))  # every epoch exactly once
    metrics = json.loads((study["tl"] / f"results/runs/{run}/metrics.json").read_text())
    assert metrics["epochs_completed"] == epochs
    assert not (study["tl"] / f"results/runs/{run}/checkpoint.pt").exists()
    print(f"\ntime-limit run {run}: jobs {ids}, states {states}, limits {limits}, "
          f"resumed after epochs {resumed} of {epochs}")


def test_nothing_left_running_and_timings(study):
    # the SIGTERM-ignoring job was killed at its limit, not left behind
    assert study["sacct"][study["orphan_job"]]["State"] == "TIMEOUT", study["sacct"]
    assert not study["leftovers"], study["leftovers"]
    total = time.monotonic() - study["t0"]
    print(f"\nSLURM test timings: {study['times']}, total so far {total:.0f}s")
    assert total < BUDGET_S
