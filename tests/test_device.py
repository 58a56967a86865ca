"""--device: auto's order (CUDA, MPS, CPU), clear errors, and what MPS needs (no float64).

No test here runs on a GPU: CUDA and MPS availability are monkeypatched, and the helpers
that choose per-device behaviour are tested directly. MPS is untested on Apple hardware.
"""

import jsonschema
import pytest
import torch
import yaml
from torch import nn

import cifarlab.train as train
from cifarlab.bench import measure
from cifarlab.study import SCHEMA
from cifarlab.system import machine_info
from cifarlab.train import (
    DEVICE_CHOICES,
    RunError,
    accumulate_dtype,
    device_name,
    evaluate,
    resolve_device,
)


@pytest.fixture
def gpus(monkeypatch):
    """Set what torch reports: gpus(cuda=..., mps=..., cuda_count=...)."""

    def set_(cuda: bool = False, mps: bool = False, cuda_count: int = 1) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda_count if cuda else 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_


@pytest.mark.parametrize(("cuda", "mps", "expected"), [
    (True, True, "cuda"),   # CUDA first, even where MPS is there too
    (True, False, "cuda"),
    (False, True, "mps"),   # then Apple's GPU
    (False, False, "cpu"),  # then the CPU
])
def test_auto_prefers_cuda_then_mps_then_cpu(gpus, cuda, mps, expected):
    gpus(cuda=cuda, mps=mps)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device() == torch.device(expected)


def test_named_devices_that_are_present(gpus):
    gpus(cuda=True, mps=True, cuda_count=2)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("mps") == torch.device("mps")


def test_mps_where_there_is_none_is_a_clear_error(gpus):
    gpus(cuda=True, mps=False)
    with pytest.raises(RunError, match=r"'mps' asked for, but torch sees no MPS device") as e:
        resolve_device("mps")
    assert "Apple silicon" in str(e.value) and DEVICE_CHOICES in str(e.value)


def test_cuda_where_there_is_none_is_a_clear_error(gpus):
    gpus(cuda=False, mps=True)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(RunError, match=f"'{name}' asked for, but torch sees no CUDA"):
            resolve_device(name)


def test_cuda_index_beyond_the_gpus_is_a_clear_error(gpus):
    gpus(cuda=True, cuda_count=2)
    with pytest.raises(RunError, match=r"'cuda:2' asked for.*2 CUDA device\(s\) "
                                       r"\(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name", ["gpu", "tpu", "cudax", "cuda:", "cuda:a", "cuda:-1",
                                  "mps:0", "MPS", "metal", ""])
def test_unknown_device_names_the_value_and_the_choices(gpus, name):
    gpus(cuda=True, mps=True)
    with pytest.raises(RunError) as e:
        resolve_device(name)
    assert f"unknown device {name!r}" in str(e.value)
    assert "valid: auto, cpu, cuda, cuda:N, mps" in str(e.value)


def test_accumulate_dtype_is_float32_on_mps_only():
    assert accumulate_dtype(torch.device("mps")) == torch.float32
    assert accumulate_dtype(torch.device("cpu")) == torch.float64
    assert accumulate_dtype(torch.device("cuda")) == torch.float64
    assert accumulate_dtype(torch.device("cuda:1")) == torch.float64


def test_evaluate_accumulates_in_the_chosen_dtype(monkeypatch):
    """On the CPU the sums stay float64; the float32 path MPS takes gives the same figures."""
    torch.manual_seed(0)
    model = nn.Linear(8, 10)
    x, y = torch.randn(2500, 8), torch.randint(0, 10, (2500,))
    seen = []
    real = train.accumulate_dtype
    monkeypatch.setattr(train, "accumulate_dtype", lambda d: seen.append(real(d)) or seen[-1])
    loss64, acc64 = evaluate(model, x, y)
    assert seen == [torch.float64]
    monkeypatch.setattr(train, "accumulate_dtype", lambda d: torch.float32)
    loss32, acc32 = evaluate(model, x, y)
    assert acc32 == acc64
    assert loss32 == pytest.approx(loss64, rel=1e-6)


def test_device_name(monkeypatch):
    assert device_name(torch.device("cpu")) == "cpu"
    assert device_name(torch.device("mps")) == "mps"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    assert device_name(torch.device("cuda:0")) == "NVIDIA H200"


def test_machine_info_knows_mps(gpus):
    gpus(cuda=False, mps=True)
    info = machine_info()
    assert info["device"] == "mps" and info["mps"] is True and info["cuda"] is False
    gpus(cuda=False, mps=False)
    assert machine_info()["device"] == "cpu"


def test_bench_waits_for_mps(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append("mps"))
    measure.sync(torch.device("mps"))
    measure.sync(torch.device("cpu"))
    assert calls == ["mps"]


@pytest.mark.parametrize(("device", "ok"), [
    ("auto", True), ("cpu", True), ("cuda", True), ("cuda:3", True), ("mps", True),
    ("gpu", False), ("mps:0", False), ("cuda:", False),
])
def test_config_schema_accepts_the_same_devices(device, ok):
    schema = yaml.safe_load(SCHEMA.read_text())
    pattern = schema["properties"]["train"]["properties"]["device"]
    valid = jsonschema.Draft202012Validator(pattern).is_valid(device)
    assert valid is ok
