import pytest
import torch

from cifarlab.layers import BatchNorm1d, BatchNorm2d, Dropout, Dropout2d
from cifarlab.models import CNN, MLP, MODELS, build_model, count_parameters, first_layer_weights


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
