"""RunDir owns a run folder: round trips, clear errors on damaged files, sole owner of names."""

import ast
import errno
import os
import re
from pathlib import Path

import pytest
import torch

from cifarlab.models import build_model
from cifarlab.rundir import FILES, HISTORY_COLUMNS, RunDir, RunFileError, RunState

ROOT = Path(__file__).resolve().parents[1]


def _history(n: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 2.0 / e, "train_acc": 0.1 * e, "val_loss": 1.0 / 3 * e,
             "val_acc": 0.05 * e, "seconds": 1.25} for e in range(1, n + 1)]


def test_files_roundtrip(tmp_path):
    run = RunDir(tmp_path / "r")
    spec = {"model": "mlp", "arch": {"hidden": 8}, "lr": 1e-3, "zeta": 1}
    run.write_spec(spec)
    assert run.read_spec() == spec
    assert list(run.read_spec()) == list(spec)  # key order kept
    run.write_history(_history(3))
    h = run.read_history()
    assert tuple(h.columns) == HISTORY_COLUMNS and len(h) == 3
    # Floats round-trip exactly (resume compares histories bit for bit).
    assert list(h["val_loss"]) == [r["val_loss"] for r in _history(3)]
    assert not run.is_complete
    run.write_metrics({"test_acc": 0.5})
    assert run.is_complete and run.read_metrics() == {"test_acc": 0.5}
    model = build_model("mlp", hidden=8)
    run.save_best(model.state_dict())
    loaded = run.load_model()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)
    run.clear()
    assert not any((run.path / name).exists() for name in FILES.values())


@pytest.mark.parametrize("name,arch,units,shown", [("mlp", {"hidden": 40}, 40, 32),
                                                    ("cnn", {"channels": [16, 8]}, 16, 16)])
def test_first_layer_keeps_the_units_the_figure_draws(tmp_path, name, arch, units, shown):
    run = RunDir(tmp_path / "r")
    spec = {"model": name, "arch": arch}
    run.write_spec(spec)
    model = build_model(name, **arch)
    run.save_best(model.state_dict())
    from cifarlab.models import first_layer_weights

    expected = first_layer_weights(model)[:shown]
    # Before first_layer.pt exists (a run trained before it did), it comes from best.pt.
    derived, n = run.load_first_layer(spec)
    torch.testing.assert_close(derived, expected, rtol=1e-3, atol=1e-4)  # float16 kept
    assert n == units
    assert run.save_first_layer(spec) and run.first_layer_path in run.portable_files()
    run.best_path.unlink()  # a run brought back without weights
    w, n = run.load_first_layer(spec)
    assert w.dtype == torch.float32 and n == units
    torch.testing.assert_close(w, derived, rtol=0, atol=0)
    # only the drawn units are stored: ~200 KB for the study's MLP, not its 13 MB of weights
    assert run.first_layer_path.stat().st_size < shown * expected[0].numel() * 2 + 2000
    run.first_layer_path.unlink()
    with pytest.raises(RunFileError, match="first_layer.pt is missing.*neither"):
        run.load_first_layer(spec)


def test_a_run_trained_before_first_layer_pt_is_made_portable(tmp_path):
    run = RunDir(tmp_path / "r")
    spec = {"model": "mlp", "arch": {"hidden": 8}}
    run.write_spec(spec)
    run.save_best(build_model("mlp", hidden=8).state_dict())
    run.make_portable(spec)
    assert not run.first_layer_path.exists()  # not complete: nothing to carry yet
    run.write_history(_history(1))
    run.write_metrics({"test_acc": 0.5})
    run.make_portable(spec)
    assert run.first_layer_path in run.portable_files()
    torch.save({"something": torch.ones(1)}, run.first_layer_path)  # not ours
    with pytest.raises(RunFileError, match=r"first_layer.pt is not a first-layer file"):
        run.load_first_layer(spec)


def test_a_model_without_a_first_layer_writes_none(tmp_path, monkeypatch):
    from cifarlab.models import MODELS

    run = RunDir(tmp_path / "r")
    import dataclasses

    monkeypatch.setitem(MODELS, "mlp", dataclasses.replace(MODELS["mlp"], first_layer=None))
    assert run.save_first_layer({"model": "mlp", "arch": {}}) is False
    assert not run.first_layer_path.exists()


def test_history_of_a_run_without_epochs_is_empty(tmp_path):
    run = RunDir(tmp_path / "r")
    run.write_history([])
    h = run.read_history()
    assert h.empty and tuple(h.columns) == HISTORY_COLUMNS


def test_state_roundtrip_and_missing_checkpoint(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.load_state() is None
    state = RunState(model={"w": torch.ones(2)}, optimizer={"state": {}, "param_groups": []},
                     history=_history(2), seconds=3.5, train_seconds=3.0, started="t0",
                     rng={"torch": torch.get_rng_state()})
    state.best = {"epoch": 2, "val_acc": 0.1, "state": {"w": torch.ones(2)}}
    run.save_state(state)
    back = run.load_state()
    assert back.epochs_done == 2 and back.seconds == 3.5 and back.started == "t0"
    assert torch.equal(back.model["w"], torch.ones(2)) and back.best["epoch"] == 2
    run.remove_checkpoint()
    assert run.load_state() is None


def test_truncated_best_names_file_and_fix(tmp_path):
    run = RunDir(tmp_path / "r")
    run.save_best(build_model("mlp", hidden=8).state_dict())
    data = run.best_path.read_bytes()
    run.best_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunFileError, match=r"best\.pt is truncated or corrupt.*delete the run"):
        run.load_best()


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cifarlab-pwned",))


def test_code_in_a_checkpoint_is_refused_without_dangerous_advice(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    with open(run.checkpoint_path, "wb") as fh:
        torch.save({"model": _Payload()}, fh)
    with pytest.raises(RunFileError) as info:
        run.load_state()
    msg = str(info.value)
    assert "checkpoint.pt" in msg and "refused unread" in msg
    assert "will likely succeed" not in msg and "Do not load it with weights_only=False" in msg


def test_checkpoint_of_another_shape_is_named(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    torch.save({"model": {}}, run.checkpoint_path)
    with pytest.raises(RunFileError, match="not a cifarlab checkpoint.*missing optimizer"):
        run.load_state()


def test_full_disk_keeps_previous_file(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "r")
    run.write_metrics({"test_acc": 0.5})

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(RunFileError, match="no space left on device.*previous version"):
        run.write_metrics({"test_acc": 0.9})
    monkeypatch.undo()
    assert run.read_metrics() == {"test_acc": 0.5}
    assert [p.name for p in run.path.iterdir()] == ["metrics.json"]  # no temporary left


def test_damaged_text_files_name_the_file(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.metrics_path.write_text("{not json")
    with pytest.raises(RunFileError, match=r"metrics\.json is not valid JSON"):
        run.read_metrics()
    run.spec_path.write_text("- a list\n")
    with pytest.raises(RunFileError, match=r"spec\.yaml does not hold a mapping"):
        run.read_spec()
    run.history_path.write_text("a,b\n1,2\n")
    with pytest.raises(RunFileError, match=r"history\.csv lacks the columns"):
        run.read_history()


def test_no_other_module_names_a_run_file():
    """RunDir is the one owner of the run folder's file names (Python string literals and
    Snakemake rule files are searched; comments and docstrings may mention them)."""
    names = re.compile("|".join(re.escape(n) for n in FILES.values()))
    offenders = []
    for path in sorted((ROOT / "src" / "cifarlab").rglob("*.py")):
        if path.name == "rundir.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
                      and n.body and isinstance(n.body[0], ast.Expr)}
        offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and isinstance(node.value, str)
                      and id(node) not in docstrings and names.search(node.value)]
    for path in [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if names.search(code):
                offenders.append(f"{path.relative_to(ROOT)}:{i}")
    assert not offenders, f"run file names outside rundir.py: {offenders}"


def test_full_disk_during_torch_save_says_so(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "r")
    run.save_best({"w": torch.zeros(2)})
    good = run.best_path.read_bytes()

    def full(*_args, **_kwargs):
        # what torch.save raises when the disk fills mid-write
        raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RunFileError, match=r"no space left on device while writing .*best\.pt"):
        run.save_best({"w": torch.ones(2)})
    assert run.best_path.read_bytes() == good


def test_finishing_twice_leaves_no_temporary_files(tmp_path):
    run = RunDir(tmp_path / "r")
    run.write_spec({"model": "mlp"})
    run.write_history(_history(1))
    run.save_best({"w": torch.zeros(1)})
    run.finish({"test_acc": 0.5})
    run.finish({"test_acc": 0.5})  # e.g. a job killed after the links, run again
    run.write_record()
    assert sorted(p.name for p in run.record.path.iterdir()) == sorted(
        FILES[r] for r in ("spec", "history", "best", "metrics"))
