"""One training run: outputs, resume == uninterrupted, divergence, no retraining."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cifarlab.data import Split, Splits
from cifarlab.engine import Execution
from cifarlab.study import canonical_spec
from cifarlab.train import HISTORY_COLUMNS, RunError, train_run
from helpers import synthetic_images


def make_splits(n_train=300, n_val=100, n_test=100) -> Splits:
    def split(n, seed):
        x, y = synthetic_images(n, seed)
        return Split(torch.from_numpy(x.reshape(n, 3, 32, 32)), torch.from_numpy(y).long())

    return Splits(split(n_train, 1), split(n_val, 2), split(n_test, 3), [str(i) for i in range(10)],
                  "deadbeef", "folder")


SPLIT = {"n_train": 300, "n_val": 100, "method": "auto", "seed": 0, "train_subset": None,
         "val_subset": None, "test_subset": None}


def spec(model="mlp", epochs=4, lr=1e-3, **arch):
    settings = {"arch": {"hidden": 32, **arch} if model == "mlp" else {"channels": [4, 8], **arch},
                "optimizer": "adamw", "lr": lr, "weight_decay": 1e-3, "batch_size": 50,
                "epochs": epochs}
    return canonical_spec(model, settings, seed=0, split=SPLIT, data="folder:test")


@pytest.fixture(scope="module")
def data():
    return make_splits()


def test_run_writes_outputs_and_learns(tmp_path, data):
    m = train_run(spec(epochs=4), data, tmp_path / "run", threads=1)
    out = tmp_path / "run"
    for name in ("spec.yaml", "history.csv", "metrics.json", "best.pt", "first_layer.pt"):
        assert (out / name).exists(), name
    assert not (out / "checkpoint.pt").exists()
    h = pd.read_csv(out / "history.csv")
    assert tuple(h.columns) == HISTORY_COLUMNS and list(h["epoch"]) == [1, 2, 3, 4]
    assert h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == m
    best = int(h["val_acc"].idxmax()) + 1
    assert m["best_epoch"] == best and m["val_acc"] == h["val_acc"].max()
    assert m["best_val_acc"] == h["val_acc"].max() and m["best_train_acc"] == h["train_acc"].max()
    assert m["train_acc"] == h["train_acc"].iloc[best - 1]
    assert m["test_acc"] > 0.3  # synthetic classes are easy; chance is 0.1
    assert m["n_params"] == 3072 * 32 + 32 + 64 + 330 and m["diverged"] is False
    assert yaml.safe_load((out / "spec.yaml").read_text()) == spec(epochs=4)
    # best.pt holds the best epoch's weights: evaluating it reproduces val accuracy
    from cifarlab.models import build_model
    from cifarlab.train import evaluate, normalize

    model = build_model("mlp", **spec()["arch"])
    model.load_state_dict(torch.load(out / "best.pt", weights_only=True))
    _, val_acc = evaluate(model, normalize(data.val.images, torch.device("cpu")), data.val.labels)
    assert val_acc == pytest.approx(m["val_acc"])
    # the diagnostic: the same weights with BatchNorm's statistics re-estimated
    from cifarlab.layers import reestimated_copy

    x_train = normalize(data.train.images, torch.device("cpu"))
    twin = reestimated_copy(model, x_train)
    _, again = evaluate(twin, normalize(data.val.images, torch.device("cpu")), data.val.labels)
    assert m["val_acc_bn_reestimated"] == pytest.approx(again)


def test_a_run_without_batchnorm_has_no_bn_diagnostic(tmp_path, data):
    m = train_run(spec(model="cnn", epochs=1, bn=False), data, tmp_path / "run", threads=1)
    assert m["val_acc_bn_reestimated"] is None and m["val_acc"] is not None


@pytest.mark.parametrize("model,layout", [("mlp", "nchw"), ("cnn", "nchw"),
                                          ("cnn", "channels_last")])
def test_resume_equals_uninterrupted(tmp_path, data, model, layout):
    s = spec(model=model, epochs=4)
    ex = Execution(channels_last=layout == "channels_last")
    full = train_run(s, data, tmp_path / "full", threads=1, execution=ex)
    assert full["channels_last"] is ex.channels_last
    assert train_run(s, data, tmp_path / "cut", threads=1, stop_after=2, execution=ex) is None
    assert (tmp_path / "cut" / "checkpoint.pt").exists()
    assert not (tmp_path / "cut" / "metrics.json").exists()
    assert len(pd.read_csv(tmp_path / "cut" / "history.csv")) == 2
    resumed = train_run(s, data, tmp_path / "cut", threads=1, execution=ex)
    h1 = pd.read_csv(tmp_path / "full" / "history.csv").drop(columns="seconds")
    h2 = pd.read_csv(tmp_path / "cut" / "history.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(h1, h2, check_exact=True)
    timing = {"seconds", "images_per_second", "started", "finished"}
    assert {k: v for k, v in full.items() if k not in timing} == \
        {k: v for k, v in resumed.items() if k not in timing}
    w1 = torch.load(tmp_path / "full" / "best.pt", weights_only=True)
    w2 = torch.load(tmp_path / "cut" / "best.pt", weights_only=True)
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k


def test_completed_run_is_not_retrained(tmp_path, data):
    s = spec(epochs=1)
    train_run(s, data, tmp_path / "r", threads=1)
    before = (tmp_path / "r" / "metrics.json").stat().st_mtime_ns
    train_run(s, data, tmp_path / "r", threads=1)
    assert (tmp_path / "r" / "metrics.json").stat().st_mtime_ns == before
    train_run(s, data, tmp_path / "r", threads=1, force=True)
    assert (tmp_path / "r" / "metrics.json").stat().st_mtime_ns != before


def test_folder_of_another_spec_is_refused(tmp_path, data):
    train_run(spec(epochs=1), data, tmp_path / "r", threads=1)
    with pytest.raises(RunError, match="different spec"):
        train_run(spec(epochs=2), data, tmp_path / "r", threads=1)


def test_divergence_stops_cleanly(tmp_path, data):
    s = spec(epochs=5, lr=1e30, bn=False, dropout=0.0)
    m = train_run(s, data, tmp_path / "d", threads=1)
    assert m["diverged"] is True
    assert 1 <= m["diverged_epoch"] <= 5
    assert m["epochs_completed"] == m["diverged_epoch"] - 1
    h = pd.read_csv(tmp_path / "d" / "history.csv")
    assert len(h) == m["epochs_completed"]
    if m["best_epoch"] is None:
        assert m["test_acc"] is None
    else:
        assert math.isfinite(m["test_acc"])


def test_deterministic_under_seed(tmp_path, data):
    a = train_run(spec(epochs=2), data, tmp_path / "a", threads=1)
    b = train_run(spec(epochs=2), data, tmp_path / "b", threads=1)
    assert a["test_acc"] == b["test_acc"] and a["val_acc"] == b["val_acc"]


def test_wrong_data_checksum_is_refused(tmp_path, data):
    s = spec(epochs=1)
    s["data"]["source"] = "official:0123456789abcdef0123456789abcdef"
    with pytest.raises(RunError, match="checksum"):
        train_run(s, data, tmp_path / "x", threads=1)


def test_batch_larger_than_split_is_refused(tmp_path, data):
    s = spec(epochs=1)
    s["batch_size"] = 1000
    with pytest.raises(RunError, match="larger than the training split"):
        train_run(s, data, tmp_path / "x", threads=1)


def test_corrupt_checkpoint_is_named_and_nothing_is_overwritten(tmp_path, data):
    from cifarlab.rundir import RunFileError

    s = spec(epochs=4)
    assert train_run(s, data, tmp_path / "r", threads=1, stop_after=2) is None
    ckpt = tmp_path / "r" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    history = (tmp_path / "r" / "history.csv").read_text()
    with pytest.raises(RunFileError, match=r"checkpoint\.pt is truncated or corrupt.*delete it"):
        train_run(s, data, tmp_path / "r", threads=1)
    assert (tmp_path / "r" / "history.csv").read_text() == history
    ckpt.unlink()  # the fix the message gives: the run trains again from epoch 1
    assert train_run(s, data, tmp_path / "r", threads=1)["epochs_completed"] == 4


def test_retraining_without_usable_data_deletes_nothing(tmp_path, data):
    s = spec(epochs=1)
    first = train_run(s, data, tmp_path / "r", threads=1)
    from cifarlab.rundir import RunDir

    run = RunDir(tmp_path / "r")
    with pytest.raises(RunError, match="needs the data cache.*nothing was changed"):
        train_run(s, None, tmp_path / "r", threads=1, force=True)
    assert run.recorded_metrics(s) == first and run.read_metrics() == first
    other = make_splits()
    other.checksum, other.identity = "feedface", "folder:another"
    run.metrics_path.unlink()
    with pytest.raises(RunError, match="prepared from folder:another"):
        train_run(s, other, tmp_path / "r", threads=1)
    assert run.recorded_metrics(s) == first  # the record survived the refusal


def test_a_checkpoint_of_other_data_is_not_resumed(tmp_path, data, caplog):
    s = spec(epochs=3)
    assert train_run(s, data, tmp_path / "r", threads=1, stop_after=2) is None
    other = make_splits(n_train=300, n_val=100, n_test=100)
    other.train.images[:] = 255 - other.train.images  # another data set, same shapes
    other.checksum = "feedface"
    with caplog.at_level("WARNING"):
        resumed = train_run(s, other, tmp_path / "r", threads=1)
    assert "starting again from epoch 1" in caplog.text
    fresh = train_run(s, other, tmp_path / "fresh", threads=1)
    timing = {"seconds", "images_per_second", "started", "finished"}
    assert {k: v for k, v in resumed.items() if k not in timing} == \
        {k: v for k, v in fresh.items() if k not in timing}


@pytest.mark.parametrize("seconds,saves", [(0.0, 4), (1e9, 0)])
def test_checkpoints_are_spaced_by_checkpoint_seconds(tmp_path, data, monkeypatch, seconds,
                                                      saves):
    from cifarlab.rundir import RunDir

    calls = []
    original = RunDir.save_state
    monkeypatch.setattr(RunDir, "save_state",
                        lambda self, state: (calls.append(state.epochs_done),
                                             original(self, state)))
    m = train_run(spec(epochs=4), data, tmp_path / "run", threads=1, checkpoint_seconds=seconds)
    assert len(calls) == saves and m["epochs_completed"] == 4
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_spaced_checkpoint_still_resumes_exactly(tmp_path, data):
    # stop_after writes its checkpoint whatever the interval; the resumed run equals one
    # trained without interruption.
    assert train_run(spec(epochs=4), data, tmp_path / "a", threads=1, stop_after=2,
                     checkpoint_seconds=1e9) is None
    assert (tmp_path / "a" / "checkpoint.pt").exists()
    resumed = train_run(spec(epochs=4), data, tmp_path / "a", threads=1, checkpoint_seconds=1e9)
    whole = train_run(spec(epochs=4), data, tmp_path / "b", threads=1)
    for k in ("train_acc", "val_acc", "test_acc", "train_loss", "val_acc_bn_reestimated"):
        assert resumed[k] == whole[k], k


def test_a_run_brought_back_without_weights_is_complete(tmp_path, data, caplog):
    # A completed run's portable files (spec, history, first layer, metrics) copied to
    # another machine, as `cifarlab unbundle --runs-only` does: not trained again, even
    # without data; it gets a record, from which the outputs Snakemake deletes before
    # rerunning its job (after the data there is prepared) are restored.
    import shutil

    from cifarlab.rundir import RunDir

    s = spec(epochs=2)
    m = train_run(s, data, tmp_path / "run", threads=1)
    back = RunDir(tmp_path / "back")
    back.path.mkdir()
    for f in RunDir(tmp_path / "run").portable_files():
        shutil.copy2(f, back.path / f.name)
    before = {f.name: f.read_bytes() for f in back.path.iterdir()}
    assert set(before) == {"spec.yaml", "history.csv", "first_layer.pt", "metrics.json"}
    # restored over a half-trained copy of the run: its checkpoint is obsolete
    back.checkpoint_path.write_bytes(b"an unfinished run's checkpoint")
    with caplog.at_level("INFO", logger="cifarlab.train"):
        assert train_run(s, None, back.path, threads=1) == m
    assert "(its results came without weights); not training it again" in caplog.text
    assert {f.name: f.read_bytes() for f in back.path.iterdir() if f.is_file()} == before
    assert sorted(f.name for f in back.record.path.iterdir()) == sorted(before)
    back.metrics_path.unlink()
    back.history_path.unlink()
    caplog.clear()
    with caplog.at_level("INFO", logger="cifarlab.train"):
        assert train_run(s, None, back.path, threads=1) == m
    assert "restoring its outputs" in caplog.text
    assert {f.name: f.read_bytes() for f in back.path.iterdir() if f.is_file()} == before
    # another spec in that folder is still refused, as for any completed run
    with pytest.raises(RunError, match="different spec"):
        train_run(spec(epochs=3), None, back.path, threads=1)


def test_a_channels_last_cnn_trains_like_an_nchw_one(tmp_path, data):
    # The same arithmetic in another memory order: the same dropout masks (drawn in the
    # tensors' logical order), sums rounded differently. After two epochs the histories
    # agree to float32 rounding, not bit for bit.
    s = spec(model="cnn", epochs=2)
    runs = {cl: train_run(s, data, tmp_path / str(cl), threads=1,
                          execution=Execution(channels_last=cl)) for cl in (False, True)}
    assert runs[True]["channels_last"] and not runs[False]["channels_last"]
    h = {cl: pd.read_csv(tmp_path / str(cl) / "history.csv") for cl in runs}
    for col in ("train_loss", "val_loss"):
        np.testing.assert_allclose(h[True][col], h[False][col], rtol=1e-3, err_msg=col)
    # the weights of the best epoch load into a model of either layout
    w = torch.load(tmp_path / "True" / "best.pt", weights_only=True)
    from cifarlab.models import build_model

    build_model("cnn", **s["arch"]).load_state_dict(w)


def test_normalize_in_channels_last_equals_normalize_then_convert(data):
    from cifarlab.train import normalize

    cpu = torch.device("cpu")
    plain = normalize(data.test.images, cpu)
    assert plain.is_contiguous() and plain.dtype == torch.float32
    assert torch.equal(plain[0, :, 0, 0], (data.test.images[0, :, 0, 0].float() - 128) / 255)
    cl = normalize(data.test.images, cpu, channels_last=True)
    assert cl.is_contiguous(memory_format=torch.channels_last) and not cl.is_contiguous()
    assert torch.equal(cl, plain)


@pytest.mark.parametrize("channels_last", [False, True])
def test_evaluate_normalising_batch_by_batch_equals_normalising_first(data, channels_last):
    """The test set is scored from uint8 images normalised per batch (final_metrics): the
    same loss and accuracy as normalising all of it first."""
    from cifarlab.models import build_model
    from cifarlab.train import evaluate, normalize

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = build_model("cnn", channels=[4, 8])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    whole = evaluate(model, normalize(data.test.images, cpu, channels_last), data.test.labels,
                     batch=30)
    seen = []

    def transform(batch):
        seen.append(len(batch))
        return normalize(batch, cpu, channels_last)

    by_batch = evaluate(model, data.test.images, data.test.labels, batch=30, transform=transform)
    assert by_batch == whole
    assert seen == [30, 30, 30, 10]
