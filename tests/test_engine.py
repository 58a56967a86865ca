"""Execution paths: the static-buffer (CUDA-graph) step, torch.compile, capture-safe layers."""

import json
import math

import pandas as pd
import pytest
import torch

from cifarlab.engine import Execution, GraphSteps, compiled, train_epoch
from cifarlab.layers import BatchNorm1d, BatchNorm2d, Dropout, Dropout2d
from cifarlab.models import build_model
from cifarlab.train import make_optimizer, normalize, train_run
from test_train import make_splits, spec

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
OPT = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-3}


@pytest.fixture(scope="module")
def data():
    return make_splits()


def _setup(name, data, device="cpu", seed=0, capturable=False, **arch):
    torch.manual_seed(seed)
    model = build_model(name, **arch).to(device)
    opt = make_optimizer(OPT, model.parameters(), torch.device(device), capturable=capturable)
    x = normalize(data.train.images, torch.device(device))
    return model, opt, x, data.train.labels.to(device)


@pytest.mark.parametrize("name,arch", [("mlp", {"hidden": 32}), ("cnn", {"channels": [4, 8]})])
def test_static_step_computes_what_the_eager_loop_computes(data, name, arch):
    # GraphSteps without capture runs the very step a CUDA graph records: gathering through
    # the static index buffer and summing into static accumulators must change nothing.
    perms = [torch.randperm(300, generator=torch.Generator().manual_seed(e)) for e in range(2)]
    model_a, opt_a, x, y = _setup(name, data, **arch)
    torch.manual_seed(7)
    eager = [train_epoch(model_a, opt_a, x, y, p, 50) for p in perms]
    model_b, opt_b, _, _ = _setup(name, data, **arch)
    runner = GraphSteps(model_b, opt_b, x, y, 50, "fp32", capture=False)
    torch.manual_seed(7)
    static = [runner.epoch(p) for p in perms]
    for (la, ca), (lb, cb) in zip(eager, static, strict=True):
        torch.testing.assert_close(lb, la, rtol=0, atol=0)
        assert int(cb) == int(ca)
    for (k, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)


def test_static_step_counts_every_step_and_returns_fresh_sums(data):
    model, opt, x, y = _setup("mlp", data, hidden=16)
    runner = GraphSteps(model, opt, x, y, 50, "fp32", capture=False)
    calls = []
    loss1, correct1 = runner.epoch(torch.randperm(300), on_step=lambda: calls.append(1))
    assert len(calls) == 6  # 300 // 50
    loss2, _ = runner.epoch(torch.randperm(299))  # 5 full batches, the partial one dropped
    assert 0 < float(loss2) < float(loss1) * 5 / 6 * 1.5
    assert float(loss1) > 0 and 0 <= int(correct1) <= 300
    assert loss1 is not runner.loss_sum  # a copy: the next epoch's zeroing keeps it


def test_graph_steps_refuse_a_cpu_capture(data):
    model, opt, x, y = _setup("mlp", data, hidden=16)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device.*capture=False"):
        GraphSteps(model, opt, x, y, 50, "fp32")


def test_execution_applies_only_what_the_device_supports():
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    ex = Execution(channels_last=True, compile=True, cuda_graphs=True)
    assert ex.on(cpu, True) == Execution(channels_last=True, compile=True)
    assert ex.on(cpu, False) == Execution(compile=True)
    assert ex.on(mps, True) == Execution(compile=True)
    assert ex.on(cuda, True) == ex
    assert ex.on(cuda, False) == Execution(compile=True, cuda_graphs=True)
    assert ex.as_metrics() == {"channels_last": True, "compile": True, "cuda_graphs": True}


@pytest.mark.parametrize("cls,shape", [(BatchNorm1d, (20, 6)), (BatchNorm2d, (4, 6, 5, 5))])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_updates_its_buffers_in_place(cls, shape, momentum):
    # A CUDA graph replays writes to the addresses it captured: a buffer rebound to a new
    # tensor would silently stop updating (pytorch#70444).
    bn = cls(6, momentum=momentum)
    ref = getattr(torch.nn, cls.__name__)(6, momentum=momentum)
    ptrs = {k: b.data_ptr() for k, b in bn.named_buffers()}
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(shape, generator=gen) * 2 + 1
        bn(x)
        ref(x)
    assert {k: b.data_ptr() for k, b in bn.named_buffers()} == ptrs
    for k, b in ref.named_buffers():
        torch.testing.assert_close(getattr(bn, k), b, msg=k)


def test_dropout_reuses_its_scratch_buffer():
    do = Dropout(0.5)
    x = torch.ones(8, 100)
    do(x)
    ptr = do._bits.data_ptr()
    do(x)
    assert do._bits.data_ptr() == ptr


@pytest.mark.parametrize("cls,shape", [(Dropout, (64, 512)), (Dropout2d, (64, 32, 4, 4))])
def test_dropout_under_compile_keeps_the_rate_and_scale(cls, shape):
    layer = cls(0.3)
    torch.manual_seed(0)
    y = torch.compile(layer, fullgraph=True)(torch.ones(shape))
    kept = y != 0
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    frac = kept.float().mean().item()
    n = y.numel() if cls is Dropout else shape[0] * shape[1]
    assert abs(frac - 0.7) < 4 * (0.21 / n) ** 0.5
    if cls is Dropout2d:  # whole channels
        assert torch.all(kept.flatten(2).all(2) | ~kept.flatten(2).any(2))


@pytest.mark.parametrize("cls,shape", [(BatchNorm1d, (32, 6)), (BatchNorm2d, (8, 6, 5, 5))])
def test_batchnorm_under_compile_matches_torch(cls, shape):
    # Under torch.compile the layer switches to its traceable formulation: the same outputs,
    # gradients and running statistics as torch's layer.
    torch.manual_seed(0)
    ours, ref = cls(6), getattr(torch.nn, cls.__name__)(6)
    with torch.no_grad():
        for m in (ours, ref):
            m.weight.copy_(torch.linspace(0.5, 2, 6))
            m.bias.copy_(torch.linspace(-1, 1, 6))
    x = torch.randn(shape) * 3 + 2
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya = torch.compile(ours, fullgraph=True)(xa)
    yb = ref(xb)
    torch.testing.assert_close(ya, yb)
    g = torch.randn(shape)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    for k, b in ref.named_buffers():
        torch.testing.assert_close(getattr(ours, k), b, msg=k)


def test_compiled_model_has_no_graph_break():
    model = build_model("cnn", channels=[4, 8]).train()
    explained = torch._dynamo.explain(model)(torch.randn(10, 3, 32, 32))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert compiled(model)(torch.randn(10, 3, 32, 32)).shape == (10, 10)


def test_a_compiled_run_learns_and_records_how_it_ran(tmp_path, data):
    m = train_run(spec(epochs=6), data, tmp_path / "run", threads=1,
                  execution=Execution(channels_last=True, compile=True, cuda_graphs=True))
    # On a CPU: compiled; CUDA graphs do not apply, nor channels_last to the MLP, and
    # they are recorded so.
    assert (m["compile"], m["channels_last"], m["cuda_graphs"]) == (True, False, False)
    assert m["cuda_graphs_failed"] is None
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["compile"] is True
    # Other dropout masks than eager's, the same learning: the training loss falls as far.
    eager = train_run(spec(epochs=6), data, tmp_path / "eager", threads=1)
    assert eager["compile"] is False
    loss = [pd.read_csv(tmp_path / r / "history.csv")["train_loss"] for r in ("run", "eager")]
    assert loss[0].iloc[-1] < loss[0].iloc[0] - 0.3
    assert abs(loss[0].iloc[-1] - loss[1].iloc[-1]) < 0.15
    assert m["test_acc"] > 0.3


@CUDA
@pytest.mark.parametrize("name,arch", [("mlp", {"hidden": 64}), ("cnn", {"channels": [8, 16]})])
def test_cuda_graph_steps_train_like_eager_steps(data, name, arch):
    # On CUDA the graph's dropout masks come from other random offsets than eager's, so the
    # check is statistical: the same number of steps, finite losses, BatchNorm statistics
    # that kept moving through the replays, and a loss that falls like eager's.
    perms = [torch.randperm(300, generator=torch.Generator().manual_seed(e)).cuda()
             for e in range(6)]
    model, opt, x, y = _setup(name, data, "cuda", capturable=True, **arch)
    runner = GraphSteps(model, opt, x, y, 20, "fp32")
    bn = next(m for m in model.modules() if isinstance(m, (BatchNorm1d, BatchNorm2d)))
    losses = []
    for p in perms:
        before = bn.running_mean.clone()
        loss, _ = runner.epoch(p)
        losses.append(float(loss) / 15)
        assert not torch.equal(bn.running_mean, before)  # replays update the buffers
    assert runner.graph is not None and int(bn.num_batches_tracked) == 6 * 15
    model_e, opt_e, _, _ = _setup(name, data, "cuda", **arch)
    eager = [float(train_epoch(model_e, opt_e, x, y, p, 20)[0]) / 15 for p in perms]
    assert losses[-1] < losses[0] and abs(losses[-1] - eager[-1]) < 0.5 * eager[0]


def test_a_restored_optimizer_takes_this_process_capturable_flag(data):
    # A checkpoint written without CUDA graphs, resumed with them (and back): the groups'
    # flag follows this process, whatever load_state_dict brought back.
    from cifarlab.train import _set_capturable

    model, opt, x, y = _setup("mlp", data, hidden=16)
    train_epoch(model, opt, x, y, torch.randperm(300), 50)
    saved = opt.state_dict()
    assert saved["param_groups"][0]["capturable"] is False
    _, opt2, _, _ = _setup("mlp", data, hidden=16, capturable=True)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["capturable"] is False  # what torch restores
    _set_capturable(opt2, True)
    assert all(g["capturable"] for g in opt2.param_groups)
    steps = [s["step"] for s in opt2.state.values()]
    assert steps and all(t.dtype == torch.float32 and float(t) == 6 for t in steps)
    _set_capturable(opt2, False)
    assert not any(g["capturable"] for g in opt2.param_groups)


def test_a_failed_capture_trains_on_eagerly_and_says_why(data, monkeypatch, caplog):
    # A capture that raises (an operation CUDA graphs refuse) must not cost the run: the
    # step being captured executed nothing, so it and every later step run eagerly, and
    # the whole epoch is exactly the eager loop's. On the CPU the warm-up steps stand in
    # for the side-stream ones and the capture is made to fail.
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(3))
    model_a, opt_a, x, y = _setup("mlp", data, hidden=32)
    torch.manual_seed(7)
    eager = train_epoch(model_a, opt_a, x, y, perm, 50)
    model_b, opt_b, _, _ = _setup("mlp", data, hidden=32)
    runner = GraphSteps(model_b, opt_b, x, y, 50, "fp32", capture=False)
    runner.capture = True  # as on CUDA
    monkeypatch.setattr(runner, "_warm_step", runner._step)

    def refuse():
        # as on CUDA: the operation fails inside the capture, then leaving the capture fails
        try:
            raise RuntimeError("operation not permitted when stream is capturing\nmore text")
        finally:
            raise RuntimeError("operation failed due to a previous error during capture")

    monkeypatch.setattr(runner, "_capture", refuse)
    torch.manual_seed(7)
    with caplog.at_level("WARNING", logger="cifarlab.engine"):
        loss, correct = runner.epoch(perm)
    torch.testing.assert_close(loss, eager[0], rtol=0, atol=0)
    assert int(correct) == int(eager[1]) and runner.eager_steps == GraphSteps.WARM_UP
    for (k, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)
    assert runner.graphs_failed == ("RuntimeError: operation not permitted when stream is "
                                    "capturing")
    assert runner.graph is None and runner.capture is False  # no second attempt
    assert "CUDA graph capture failed" in caplog.text and "training on without" in caplog.text


def test_a_run_whose_capture_failed_records_it(tmp_path, data, monkeypatch):
    # metrics.json says the steps ran without CUDA graphs, and why.
    import cifarlab.train as train_mod
    from cifarlab.engine import step_runner

    def failing_runner(*args, **kwargs):
        runner = step_runner(*args, **kwargs)
        runner.graphs_failed = "RuntimeError: operation not permitted when stream is capturing"
        return runner

    monkeypatch.setattr(train_mod, "step_runner", failing_runner)
    m = train_run(spec(epochs=1), data, tmp_path / "run", threads=1,
                  execution=Execution(cuda_graphs=True))
    assert m["cuda_graphs"] is False
    assert m["cuda_graphs_failed"].endswith("not permitted when stream is capturing")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["cuda_graphs_failed"]


@CUDA
def test_a_real_capture_failure_on_cuda_trains_on_eagerly(data, monkeypatch):
    # A host sync inside the captured step (what a graph refuses), in a model with Dropout:
    # the run goes on eagerly, its random numbers still drawn, and says why.
    model, opt, x, y = _setup("mlp", data, "cuda", capturable=True, hidden=64, dropout=0.5)
    runner = GraphSteps(model, opt, x, y, 20, "fp32")
    step = runner._step

    def syncing_step():
        step()
        if torch.cuda.is_current_stream_capturing():
            runner.loss_sum.item()  # not allowed while capturing

    monkeypatch.setattr(runner, "_step", syncing_step)
    losses = [float(runner.epoch(torch.randperm(300, device="cuda"))[0]) / 15
              for _ in range(4)]
    assert runner.graph is None and runner.graphs_failed, runner.graphs_failed
    assert "not permitted when stream is capturing" in runner.graphs_failed  # the cause
    assert torch.cuda.current_stream() == torch.cuda.default_stream()  # restored
    torch.rand(3, device="cuda")  # the generator left capture mode
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
