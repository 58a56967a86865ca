"""What the terminal shows while a grid trains, and `cifarlab status`.

The controller writes the plan's progress file at start (``write_plan``): every planned
run with its estimated cost (the cost model of ``pipeline.estimated_seconds``), how many
training jobs run at once, and when this invocation started. Each training job, as it
finishes, prints one line (``finished_line``): the run's result and the grid's state,
with an ETA from the runs' measured speed (seconds per unit of estimated cost, over the
runs trained since the start, as each job records in a ledger beside the progress file,
times the estimated cost left, over the parallel jobs).

``status_rows`` reads the same plan and run folders for `cifarlab status`.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .rundir import RunDir, RunFileError

__all__ = ["RunStatus", "write_plan", "finished_line", "failed_line", "status_rows",
           "status_table", "format_duration", "failure_report"]

STATES = ("done", "diverged", "running", "missing")


def write_plan(path: str | Path, costs: dict[str, float], parallel: int, runs_dir: str,
               log_pattern: str) -> None:
    """Write the progress file (run id -> estimated cost, parallel jobs, start time) and
    start a new ledger of the runs finished in this invocation."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"started": time.time(), "parallel": max(1, int(parallel)), "runs_dir": runs_dir,
               "log_pattern": log_pattern, "costs": costs}
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)
    _ledger(path).unlink(missing_ok=True)  # a new invocation measures its own speed


def _ledger(progress_file: Path) -> Path:
    # One JSON line per run finished in this invocation: id, training seconds, restored.
    # Lines are appended with O_APPEND, each in one write, so concurrent jobs don't mix.
    return progress_file.with_name(progress_file.stem + ".finished.jsonl")


def _read_ledger(progress_file: Path) -> dict[str, dict]:
    try:
        lines = _ledger(progress_file).read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        try:
            entry = json.loads(line)
            out[entry["run"]] = entry
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a killed job
    return out


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '3.4 h': what a person reads at a glance."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class RunStatus:
    """One planned run as `cifarlab status` shows it."""

    run_id: str
    state: str  # one of STATES
    epochs_done: int
    epochs: int | None
    test_acc: float | None
    seconds: float | None


def _state(run: RunDir, log: Path | None, since: float) -> tuple[str, dict | None]:
    if run.is_complete:
        try:
            metrics = run.read_metrics()
        except RunFileError:
            return "missing", None
        return ("diverged" if metrics.get("diverged") else "done"), metrics
    # A job writes its log from its first second; a checkpoint only after an epoch.
    active = [p for p in (log, run.checkpoint_path) if p is not None and p.exists()]
    if any(p.stat().st_mtime >= since for p in active):
        return "running", None
    return "missing", None


def status_rows(plan: dict, runs_dir: str | Path, log_pattern: str | None = None,
                since: float | None = None) -> list[RunStatus]:
    """The state of every run of ``plan``: done, diverged, running (its log or checkpoint
    written in the last hour, or since ``since``), missing."""
    since = time.time() - 3600 if since is None else since
    rows = []
    for rid in sorted(plan):
        run = RunDir(Path(runs_dir) / rid)
        log = Path(log_pattern.format(run=rid)) if log_pattern else None
        state, metrics = _state(run, log, since)
        epochs = plan[rid]["spec"].get("epochs") if isinstance(plan[rid], dict) else None
        done = 0
        if metrics is not None:
            done = int(metrics.get("epochs_completed") or 0)
        elif run.checkpoint_path.exists():
            try:
                loaded = run.load_state()
                done = loaded.epochs_done if loaded is not None else 0
            except RunFileError:
                done = 0
        rows.append(RunStatus(rid, state, done, epochs,
                              metrics.get("test_acc") if metrics else None,
                              metrics.get("seconds") if metrics else None))
    return rows


def status_table(rows: list[RunStatus]) -> str:
    """A plain-text table of ``rows`` and a summary line of counts per state."""
    width = max([len(r.run_id) for r in rows] + [6])
    lines = [f"{'run':<{width}}  {'state':<8}  {'epochs':>7}  {'test acc':>8}  {'time':>7}"]
    for r in rows:
        epochs = f"{r.epochs_done}/{r.epochs}" if r.epochs else str(r.epochs_done)
        acc = f"{100 * r.test_acc:.2f}%" if r.test_acc is not None else "-"
        secs = format_duration(r.seconds) if r.seconds is not None else "-"
        lines.append(f"{r.run_id:<{width}}  {r.state:<8}  {epochs:>7}  {acc:>8}  {secs:>7}")
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    lines.append(f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def finished_line(progress_file: str | Path, run_id: str, metrics: dict,
                  restored: bool = False) -> str:
    """The line a training job prints as it ends: the grid's state, ETA and its result."""
    result = _result(run_id, metrics, restored)
    try:
        info = json.loads(Path(progress_file).read_text())
    except (OSError, ValueError):
        return result  # run by hand, or the plan file is gone: the result alone
    costs: dict[str, float] = info["costs"]
    parallel = int(info["parallel"])
    runs_dir, pattern, started = info["runs_dir"], info["log_pattern"], float(info["started"])
    entry = {"run": run_id, "seconds": metrics.get("seconds"), "restored": restored}
    with open(_ledger(Path(progress_file)), "a") as fh:
        fh.write(json.dumps(entry) + "\n")
    finished = _read_ledger(Path(progress_file))
    done, running, left = [], [], []
    for rid in costs:
        if rid == run_id or RunDir(Path(runs_dir) / rid).is_complete:
            done.append(rid)
            continue
        log = Path(pattern.format(run=rid))
        if log.exists() and log.stat().st_mtime >= started:
            running.append(rid)
        else:
            left.append(rid)
    # Only runs trained in this invocation calibrate the speed (restored ones take seconds).
    trained = [e for rid, e in finished.items() if rid in costs and not e.get("restored")
               and isinstance(e.get("seconds"), (int, float)) and e["seconds"] > 0]
    trained_s = sum(float(e["seconds"]) for e in trained)
    trained_cost = sum(costs[e["run"]] for e in trained)
    head = f"[{len(done)}/{len(costs)} done, {len(running)} running, {len(left)} left"
    if trained_cost > 0 and (left or running):
        # Running jobs are counted half done: the ETA is a guide, not a promise.
        remaining = sum(costs[r] for r in left) + 0.5 * sum(costs[r] for r in running)
        eta = trained_s / trained_cost * remaining / max(1, min(parallel, len(left) +
                                                               len(running)))
        head += f", ETA {format_duration(eta)}"
    return f"{head}] {result}"


def failed_line(progress_file: str | Path | None, run_id: str, error: BaseException) -> str:
    """The line a training job prints when it fails: the error and where its log is.

    Snakemake's own error block is hidden by the profiles' ``quiet: rules``; this line is
    what the terminal shows of a failed run.
    """
    log = ""
    try:
        info = json.loads(Path(progress_file).read_text()) if progress_file else {}
        log = f" (log: {info['log_pattern'].format(run=run_id)})" if info else ""
    except (OSError, ValueError, KeyError):
        pass
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{run_id}: FAILED: {message}{log}"


def _result(run_id: str, metrics: dict, restored: bool) -> str:
    if restored:
        return f"{run_id}: already trained, outputs restored"
    if metrics.get("diverged"):
        return (f"{run_id}: DIVERGED at epoch {metrics.get('diverged_epoch')} "
                f"(train loss {metrics.get('diverged_train_loss')})")
    acc = metrics.get("test_acc")
    acc_s = f"test {100 * acc:.2f}%" if isinstance(acc, (int, float)) and math.isfinite(acc) \
        else "no test accuracy"
    epochs = metrics.get("epochs_completed")
    secs = metrics.get("seconds")
    tail = f" (best epoch {metrics.get('best_epoch')} of {epochs}" if epochs else " ("
    tail += f", {format_duration(float(secs))})" if secs else ")"
    return f"{run_id}: {acc_s}{tail}"


def _tail(path: Path, n: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def failure_report(progress_file: str | Path, extra_logs: list[str] = (),
                   lines: int = 15) -> str:
    """What the controller prints when the workflow fails: for every planned run that
    started in this invocation and did not complete, and for each of ``extra_logs``
    written in it, the last lines of its log. It does not depend on Snakemake's own
    error messages, which the profiles' ``quiet: rules`` hides (and which a cluster job's
    output never reaches)."""
    try:
        info = json.loads(Path(progress_file).read_text())
    except (OSError, ValueError):
        return ""
    started, runs_dir, pattern = float(info["started"]), info["runs_dir"], info["log_pattern"]
    out = []
    logs = [(rid, Path(pattern.format(run=rid))) for rid in info["costs"]
            if not RunDir(Path(runs_dir) / rid).is_complete]
    logs += [(None, Path(p)) for p in extra_logs]
    for rid, log in logs:
        if not log.exists() or log.stat().st_mtime < started:
            continue
        what = f"run {rid} did not complete" if rid else f"{log.stem} failed"
        out.append(f"cifarlab: {what}; the last lines of {log}:")
        out += ["    " + line for line in _tail(log, lines)]
    return "\n".join(out)
