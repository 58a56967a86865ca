"""Hand-written BatchNorm/Dropout against torch's own layers."""

import ast
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from cifarlab import layers

SRC = Path(layers.__file__).parent

PAIRS = [
    (layers.BatchNorm1d, nn.BatchNorm1d, (16, 7)),
    (layers.BatchNorm1d, nn.BatchNorm1d, (8, 7, 5)),
    (layers.BatchNorm2d, nn.BatchNorm2d, (6, 7, 5, 4)),
]


def test_no_torch_norm_or_dropout_in_package():
    banned = {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "batch_norm", "dropout",
              "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "alpha_dropout",
              "feature_alpha_dropout", "dropout2d", "native_batch_norm"}
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).as_posix() == "bench/layers.py":  # compares with torch's on purpose
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in banned:
                base = ast.unparse(node.value)
                assert base not in {"nn", "F", "torch.nn", "torch.nn.functional", "torch"}, (
                    f"{path.name}:{node.lineno} uses {base}.{node.attr}")


@pytest.mark.parametrize("ours_cls,theirs_cls,shape", PAIRS)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_matches_torch_train_and_eval(ours_cls, theirs_cls, shape, momentum):
    torch.manual_seed(0)
    c = shape[1]
    ours, theirs = ours_cls(c, momentum=momentum), theirs_cls(c, momentum=momentum)
    with torch.no_grad():
        w, b = torch.randn(c), torch.randn(c)
        for m in (ours, theirs):
            m.weight.copy_(w)
            m.bias.copy_(b)
    for step in range(4):  # running statistics after several steps
        x = (torch.randn(shape) * (step + 1) + step).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        dy = torch.randn(shape)
        y1, y2 = ours(x), theirs(x2)
        assert_close(y1, y2)
        y1.backward(dy)
        y2.backward(dy)
        assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
        assert_close(ours.weight.grad, theirs.weight.grad, rtol=1e-4, atol=1e-4)
        assert_close(ours.bias.grad, theirs.bias.grad)
        for m in (ours, theirs):
            m.weight.grad = m.bias.grad = None
    assert_close(ours.running_mean, theirs.running_mean)
    assert_close(ours.running_var, theirs.running_var)
    assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item() == 4

    ours.eval()
    theirs.eval()
    x = torch.randn(shape, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y1, y2 = ours(x), theirs(x2)
    assert_close(y1, y2)
    y1.sum().backward()
    y2.sum().backward()
    assert_close(x.grad, x2.grad)
    assert_close(ours.weight.grad, theirs.weight.grad, rtol=1e-4, atol=1e-4)
    # eval mode does not touch the running statistics
    assert_close(ours.running_mean, theirs.running_mean)


def test_batchnorm_float64_gradcheck():
    torch.manual_seed(1)
    for cls, shape in ((layers.BatchNorm1d, (5, 3)), (layers.BatchNorm2d, (3, 2, 3, 3))):
        m = cls(shape[1]).double()
        with torch.no_grad():
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_()
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t, m=m: m(t), (x,))


def test_batchnorm_state_dict_round_trip_with_torch():
    ours = layers.BatchNorm2d(4)
    ours(torch.randn(8, 4, 3, 3) * 3 + 1)
    theirs = nn.BatchNorm2d(4)
    theirs.load_state_dict(ours.state_dict())
    assert_close(theirs.running_var, ours.running_var)
    back = layers.BatchNorm2d(4)
    back.load_state_dict(theirs.state_dict())
    assert set(ours.state_dict()) == set(theirs.state_dict())
    assert "running_mean" in dict(ours.named_buffers())
    assert "num_batches_tracked" in dict(ours.named_buffers())
    assert "4, eps=1e-05, momentum=0.1" in repr(ours)


def test_batchnorm_eval_uses_running_stats_only():
    m = layers.BatchNorm1d(3)
    m.train()
    m(torch.randn(32, 3) * 2 + 5)
    m.eval()
    x = torch.randn(4, 3)
    expected = (x - m.running_mean) / torch.sqrt(m.running_var + m.eps) * m.weight + m.bias
    assert_close(m(x), expected)
    # the output of one sample does not depend on the rest of the batch in eval mode
    assert_close(m(x[:1]), m(x)[:1])


def test_batchnorm_bad_input():
    with pytest.raises(ValueError, match="channels"):
        layers.BatchNorm1d(3)(torch.randn(4, 5))
    with pytest.raises(ValueError, match="4D"):
        layers.BatchNorm2d(3)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="more than one value"):
        layers.BatchNorm1d(3)(torch.randn(1, 3))


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, "0.5"])
def test_dropout_rejects_bad_p(p):
    for cls in (layers.Dropout, layers.Dropout2d):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            cls(p)


def test_dropout_identity_in_eval_and_p0():
    x = torch.randn(10, 4, 3, 3)
    for cls in (layers.Dropout, layers.Dropout2d):
        assert cls(0.5).eval()(x) is x
        assert cls(0.0).train()(x) is x


@pytest.mark.parametrize("p", [0.1, 0.4, 0.6, 0.9])
def test_dropout_rate_and_scaling(p):
    torch.manual_seed(123)
    x = torch.ones(200, 1000)
    y = layers.Dropout(p).train()(x)
    kept = y != 0
    rate = 1 - kept.float().mean().item()
    sigma = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(rate - p) < 5 * sigma
    assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    assert abs(y.mean().item() - 1.0) < 0.02  # unbiased in expectation


def test_dropout_gradient_uses_the_same_mask():
    torch.manual_seed(0)
    x = torch.randn(50, 40, requires_grad=True)
    y = layers.Dropout(0.3).train()(x)
    y.sum().backward()
    mask = (y != 0).float() / 0.7
    assert_close(x.grad, mask)


def test_dropout2d_zeroes_whole_channels():
    torch.manual_seed(7)
    p = 0.4
    x = torch.randn(400, 32, 5, 5).abs() + 0.1
    y = layers.Dropout2d(p).train()(x)
    per_channel = (y == 0).flatten(2)
    # each (sample, channel) is either entirely zero or entirely kept
    assert bool((per_channel.all(-1) | (~per_channel).all(-1)).all())
    rate = per_channel.all(-1).float().mean().item()
    assert abs(rate - p) < 5 * (p * (1 - p) / (400 * 32)) ** 0.5
    kept = ~per_channel.all(-1)
    assert_close(y.flatten(2)[kept], x.flatten(2)[kept] / (1 - p))


def test_dropout_seeded_is_reproducible():
    torch.manual_seed(3)
    a = layers.Dropout(0.5)(torch.ones(100))
    torch.manual_seed(3)
    b = layers.Dropout(0.5)(torch.ones(100))
    assert torch.equal(a, b)


# --- the fast mask and statistics (issue 6) ---------------------------------------------

@pytest.mark.parametrize("p", [1e-12, 0.001, 0.1, 0.25, 0.4, 0.5, 0.6, 0.9, 0.999, 1 - 1e-12])
def test_dropout_rate_quantisation_is_documented_bound(p):
    bits = layers._lane_bits(p)
    t = layers._keep_threshold(p, bits)
    assert -(2 ** (bits - 1)) <= t < 2 ** (bits - 1)  # fits the lane dtype
    p_used = 1 - (t + 2 ** (bits - 1)) / 2**bits
    # 16-bit lanes: |error| <= 2**-17; 32-bit lanes (rates near 0 or 1): <= 2**-32
    assert abs(p_used - p) <= (2.0**-17 if bits == 16 else 2.0**-32)
    assert bits == 16 or min(p, 1 - p) < 2.0**-8


@pytest.mark.parametrize("p", [0.25, 0.5, 0.6])
def test_dropout_every_16bit_lane_is_uniform(p):
    # The mask is read from int64 draws split into 4 lanes; each lane position (including
    # the one holding the int64's sign bit) must drop at rate p.
    torch.manual_seed(11)
    n = 100_000
    y = layers.Dropout(p).train()(torch.ones(n, 4))
    rates = (y == 0).float().mean(0)
    sigma = (p * (1 - p) / n) ** 0.5
    assert (rates - p).abs().max().item() < 5 * sigma


@pytest.mark.parametrize("p", [0.002, 0.998])
def test_dropout_extreme_rates_use_wide_lanes(p):
    torch.manual_seed(5)
    n = 2_000_000
    y = layers.Dropout(p).train()(torch.ones(n))
    rate = (y == 0).float().mean().item()
    assert abs(rate - p) < 5 * (p * (1 - p) / n) ** 0.5


def test_dropout_odd_sizes_dtypes_and_scratch_reuse():
    torch.manual_seed(2)
    d = layers.Dropout(0.3).train()
    for shape in [(3, 5, 7), (1,), (64, 33), (2, 3)]:  # numel not a multiple of 4 included
        x = torch.randn(shape)
        y = d(x)
        kept = y != 0
        assert y.shape == x.shape and y.dtype == x.dtype
        assert_close(y[kept], x[kept] / 0.7)
    assert d._bits is not None and d._bits.numel() == 64 * 33 // 4  # grown, then reused
    for dtype in (torch.float64, torch.bfloat16):
        x = torch.randn(50, 40, dtype=dtype)
        y = d(x)
        assert y.dtype == dtype
        assert_close(y[y != 0], (x / 0.7)[y != 0], rtol=1e-2, atol=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = nn.Linear(8, 8)(torch.randn(4, 8))
        assert d(h).dtype == torch.bfloat16


def test_dropout_scratch_buffer_is_not_state():
    import copy
    import pickle

    d = layers.Dropout(0.5)
    d(torch.ones(100))
    assert d._bits is not None
    assert copy.deepcopy(d)._bits is None
    assert pickle.loads(pickle.dumps(d))._bits is None
    assert dict(d.state_dict()) == {} == dict(nn.Dropout(0.5).state_dict())


def test_dropout2d_gradient_uses_the_channel_mask():
    torch.manual_seed(4)
    x = torch.randn(20, 6, 3, 3, requires_grad=True)
    y = layers.Dropout2d(0.5).train()(x)
    y.sum().backward()
    mask = (y.detach().flatten(2) != 0).any(-1).float()[:, :, None, None] / 0.5  # (20, 6, 1, 1)
    assert_close(x.grad, mask.expand_as(x))


@pytest.mark.parametrize("cls,theirs_cls,shape", [
    (layers.BatchNorm1d, nn.BatchNorm1d, (64, 5)),
    (layers.BatchNorm2d, nn.BatchNorm2d, (16, 3, 6, 6)),
])
def test_batchnorm_large_mean_small_spread_is_exact(cls, theirs_cls, shape):
    # A naive one-pass variance (E[x^2] - mean^2 in float32) loses ~all digits here.
    torch.manual_seed(9)
    ours, theirs = cls(shape[1]), theirs_cls(shape[1])
    x = torch.randn(shape) * 0.05 + 300.0
    y1, y2 = ours(x), theirs(x)
    assert_close(y1, y2, rtol=1e-3, atol=2e-3)
    assert_close(ours.running_var, theirs.running_var, rtol=1e-3, atol=1e-7)
    assert_close(y1.std(), y2.std(), rtol=1e-3, atol=1e-4)


def test_batchnorm_weight_grads_without_input_grad():
    torch.manual_seed(8)
    ours, theirs = layers.BatchNorm2d(3), nn.BatchNorm2d(3)
    x, dy = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    ours(x).backward(dy)
    theirs(x).backward(dy)
    assert_close(ours.weight.grad, theirs.weight.grad, rtol=1e-4, atol=1e-4)
    assert_close(ours.bias.grad, theirs.bias.grad, rtol=1e-4, atol=1e-4)


def test_batchnorm_bfloat16_input_matches_float_reference():
    torch.manual_seed(6)
    ours = layers.BatchNorm2d(4)
    x = torch.randn(8, 4, 5, 5, dtype=torch.bfloat16, requires_grad=True)
    y = ours(x)
    assert y.dtype == torch.bfloat16
    ref = nn.BatchNorm2d(4)(x.detach().float())
    assert_close(y.float(), ref, rtol=2e-2, atol=2e-2)
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16


def test_layers_accept_channels_last_inputs():
    torch.manual_seed(12)
    x = torch.randn(6, 4, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    ours, theirs = layers.BatchNorm2d(4), nn.BatchNorm2d(4)
    y1, y2 = ours(x), theirs(x2)
    assert_close(y1, y2)
    dy = torch.randn(6, 4, 5, 5)
    y1.backward(dy)
    y2.backward(dy)
    assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
    for cls in (layers.Dropout, layers.Dropout2d):
        z = x.detach().abs().add(0.1).contiguous(memory_format=torch.channels_last)
        out = cls(0.5).train()(z)
        kept = out != 0
        assert_close(out[kept], z[kept] / 0.5)


def test_reestimated_copy_takes_batchnorm_statistics_with_dropout_off():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), layers.BatchNorm1d(4), nn.ReLU(),
                          layers.Dropout(0.5), nn.Linear(4, 3), layers.BatchNorm1d(3))
    model.train()
    x = torch.randn(64, 6)
    for _ in range(3):  # running statistics gathered with dropout on
        model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    twin = layers.reestimated_copy(model, x, batch=100)  # one batch: exact statistics
    assert not twin.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
    with torch.no_grad():
        h = model[0](x)
        assert_close(twin[1].running_mean, h.mean(0))
        assert_close(twin[1].running_var, h.var(0, unbiased=True))
        # the second BatchNorm sees the first block's output without dropout (the first
        # BatchNorm normalizing with the batch's own statistics, as in training)
        bn1 = torch.nn.functional.batch_norm(h, None, None, model[1].weight, model[1].bias,
                                             training=True)
        z = model[4](torch.relu(bn1))
        assert_close(twin[5].running_mean, z.mean(0))
        assert_close(twin[5].running_var, z.var(0, unbiased=True))
    assert twin[3].p == 0.5  # dropout kept as it was, only switched off for the pass
    # batches of 1000 over 1001 images: the leftover single image is skipped, not an error
    assert layers.reestimated_copy(model, torch.randn(1001, 6)) is not None
    assert layers.reestimated_copy(nn.Linear(6, 3), x) is None  # no BatchNorm: no copy
