import pytest
import torch
from torch import nn

from cifarlab.layers import BatchNorm1d, BatchNorm2d, Dropout, Dropout2d
from cifarlab.models import (
    CNN,
    MLP,
    MODELS,
    MaxPool2d,
    build_model,
    count_parameters,
    first_layer_weights,
)


def test_study_parameter_counts():
    assert count_parameters(MLP()) == 3_159_050
    assert count_parameters(CNN()) == 3_268_874


def test_study_architectures_and_shapes():
    mlp, cnn = MLP(), CNN()
    assert isinstance(mlp.bn, BatchNorm1d) and isinstance(mlp.dropout, Dropout)
    assert mlp.dropout.p == 0.6
    blocks = list(cnn.features)
    assert [b[0].out_channels for b in blocks] == [128, 512]
    assert [b[0].kernel_size for b in blocks] == [(5, 5), (7, 7)]
    assert [b[0].padding for b in blocks] == [(2, 2), (3, 3)]
    assert [(b[4].kernel_size, b[4].stride, b[4].padding) for b in blocks] == [(5, 3, 2), (5, 4, 2)]
    assert all(isinstance(b[1], BatchNorm2d) and isinstance(b[3], Dropout) for b in blocks)
    assert cnn.fc.in_features == 4608
    x = torch.randn(4, 3, 32, 32)
    assert mlp.eval()(x).shape == (4, 10)
    assert cnn.eval()(x).shape == (4, 10)


def test_switches():
    assert isinstance(MLP(bn=False).bn, torch.nn.Identity)
    assert isinstance(MLP(dropout=0).dropout, torch.nn.Identity)
    c = CNN(dropout2d=True)
    assert isinstance(c.features[0][3], Dropout2d)
    small = CNN(channels=(16, 32))
    assert small.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert count_parameters(MLP(hidden=64)) == 3072 * 64 + 64 + 128 + 64 * 10 + 10
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        MLP(dropout=1.0)


def test_registry_errors_list_choices():
    assert set(MODELS) == {"mlp", "cnn"}
    with pytest.raises(ValueError, match="valid models: cnn, mlp"):
        build_model("resnet")
    with pytest.raises(ValueError, match="valid: hidden, bn, dropout"):
        build_model("mlp", width=3)
    assert count_parameters(build_model("mlp", hidden=32)) == count_parameters(MLP(hidden=32))


def test_first_layer_weights_shapes():
    assert first_layer_weights(MLP(hidden=8)).shape == (8, 3, 32, 32)
    assert first_layer_weights(CNN(channels=(6, 8))).shape == (6, 3, 5, 5)


def test_train_eval_switch_reaches_handwritten_layers():
    m = MLP(hidden=16)
    m.eval()
    assert not m.bn.training and not m.dropout.training
    x = torch.randn(8, 3, 32, 32)
    assert torch.equal(m(x), m(x))  # eval: deterministic
    m.train()
    torch.manual_seed(0)
    a = m(x)
    b = m(x)
    assert not torch.equal(a, b)  # train: dropout draws new masks


@pytest.mark.parametrize("shape, kwargs", [
    ((4, 8, 32, 32), {"kernel_size": 5, "stride": 3, "padding": 2}),  # the CNN's first pool
    ((3, 16, 11, 11), {"kernel_size": 5, "stride": 4, "padding": 2}),  # its second
    ((2, 5, 9, 7), {"kernel_size": (3, 2), "stride": None, "padding": (1, 0)}),
    ((2, 3, 10, 10), {"kernel_size": 3, "stride": 2, "dilation": 2, "ceil_mode": True}),
])
def test_maxpool_equals_torch_values_and_gradients(shape, kwargs):
    # Many exact ties (zeros, as after ReLU and Dropout) and distinct positives.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).relu()
    x[torch.rand(shape, generator=gen) < 0.3] = 0.0
    ours_in, ref_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, ref = MaxPool2d(**kwargs), nn.MaxPool2d(**kwargs)
    y_ours, y_ref = ours(ours_in), ref(ref_in)
    assert y_ours.is_contiguous() and y_ours.shape == y_ref.shape
    torch.testing.assert_close(y_ours, y_ref, rtol=0, atol=0)
    grad = torch.randn(y_ref.shape, generator=gen)
    y_ours.backward(grad)
    y_ref.backward(grad)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=0, atol=0)
    with torch.no_grad():  # eval path
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)

