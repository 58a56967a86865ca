"""The benchmark's pieces on tiny settings: statistics, loops that really train, output files."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cifarlab import bench, layers
from cifarlab.bench import jobs, measure, peak, run
from cifarlab.models import CNN, MLP


def test_summarize_median_and_best_on_known_inputs():
    times = bench.summarize([3.0, 1.0, 2.0, 10.0], higher_is_better=False)
    assert times == bench.Stat(median=2.5, best=1.0, n=4)
    rates = bench.summarize([3.0, 1.0, 2.0], higher_is_better=True)
    assert rates == bench.Stat(median=2.0, best=3.0, n=3)
    assert bench.summarize([7], higher_is_better=True) == bench.Stat(7.0, 7.0, 1)
    with pytest.raises(ValueError):
        bench.summarize([], higher_is_better=True)


def test_ratio_divides_medians_and_bests():
    q = bench.ratio(bench.Stat(6.0, 9.0, 5), bench.Stat(2.0, 3.0, 3))
    assert q == bench.Stat(3.0, 3.0, 3)


def test_measure_interleaved_warms_up_alternates_and_summarises():
    calls = []

    def case(name, values):
        it = iter(values)
        return lambda: calls.append(name) or {"rate": next(it), "ms": 1.0}

    cases = {"a": case("a", [0.0, 3.0, 1.0, 2.0]), "b": case("b", [0.0, 5.0, 4.0, 6.0])}
    stats = measure.measure_interleaved(cases, 3, higher_is_better=True)
    # warm-up (each case once, discarded), then rounds a b / b a / a b
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert stats["a"] == {"rate": bench.Stat(2.0, 3.0, 3), "ms": bench.Stat(1.0, 1.0, 3)}
    assert stats["b"]["rate"] == bench.Stat(5.0, 6.0, 3)
    warmed = []
    calls.clear()
    cases = {"a": case("a", [1.0]), "b": case("b", [2.0])}
    stats = measure.measure_interleaved(cases, 1, higher_is_better=False,
                                        warm_up={"b": lambda: warmed.append("b")})
    assert warmed == ["b"] and calls == ["a", "b"]
    assert stats["b"]["rate"] == bench.Stat(2.0, 2.0, 1)
    with pytest.raises(ValueError):
        measure.measure_interleaved(cases, 0, higher_is_better=True)


def test_results_targets_use_the_median():
    res = bench.Results()
    res.check("fast enough", bench.Stat(1.3, 1.5, 3), ">=", 1.25)
    res.check("small overhead", bench.Stat(12.0, 4.0, 3), "<=", 10.0)
    res.check("not measured", None, "<=", 1.0)
    assert [t["met"] for t in res.targets] == [True, False]


def test_synthetic_data_shapes_and_learnable_signal():
    x, y = bench.synthetic_data(500, seed=0)
    assert x.shape == (500, 3, 32, 32) and x.dtype == np.uint8
    assert y.shape == (500,) and y.dtype == np.int64 and set(y) <= set(range(10))
    # class means differ far more than the noise averages out: the data is learnable
    means = np.stack([x[y == k].mean(axis=(0, 2, 3)) for k in range(10)])  # (10, 3)
    assert np.ptp(means, axis=0).max() > 40
    r, _ = bench.synthetic_data(100, seed=0, learnable=False)
    assert r.shape == (100, 3, 32, 32) and r.dtype == np.uint8


@pytest.mark.parametrize("cls", [bench.CourseLoop, bench.TorchvisionLoop, bench.OursLoop])
def test_loops_really_train(cls):
    images, labels = bench.synthetic_data(1000, seed=1, noise=40.0)
    torch.manual_seed(0)
    loop = cls(MLP(hidden=32), images, labels, 50, torch.device("cpu"))
    first = loop.run(3)
    for _ in range(3):
        loop.run(10)
    last = loop.run(3)
    assert math.isfinite(first) and first > 1.5  # near ln(10) = 2.3 at the start
    assert last < 0.7 * first


def test_loops_feed_the_same_normalised_numbers():
    images, labels = bench.synthetic_data(100, seed=2, learnable=False)
    ours = bench.OursLoop(nn.Linear(1, 1), images, labels, 100, torch.device("cpu"))
    tv = bench.TorchvisionLoop(MLP(hidden=8), images, labels, 100, torch.device("cpu"))
    x_tv, y_tv = tv.loader.dataset[5]
    torch.testing.assert_close(x_tv, ours.x[5])
    assert y_tv == int(ours.y[5])
    course = (images[[5]].astype(np.float32) - 128.0) / 255.0
    torch.testing.assert_close(torch.from_numpy(course[0]), ours.x[5])


def test_torch_layer_twin_swaps_only_the_layers():
    torch.manual_seed(0)
    for model in (MLP(hidden=16), CNN(channels=(4, 8)), CNN(channels=(4, 8), dropout2d=True)):
        model(torch.randn(8, 3, 32, 32))  # move the running statistics off their defaults
        twin = bench.torch_layer_twin(model)
        ours = [m for m in model.modules() if isinstance(m, (layers._BatchNorm,
                                                             layers._DropoutBase))]
        assert ours, "the original keeps its hand-written layers"
        assert not [m for m in twin.modules() if isinstance(m, (layers._BatchNorm,
                                                                layers._DropoutBase))]
        kinds = {type(m) for m in twin.modules()}
        assert {nn.BatchNorm1d, nn.BatchNorm2d} & kinds
        assert {nn.Dropout, nn.Dropout2d} & kinds
        x = torch.randn(5, 3, 32, 32)
        model.eval()
        twin.eval()
        torch.testing.assert_close(twin(x), model(x), rtol=1e-4, atol=1e-5)


def test_run_bench_tiny_writes_every_section(tmp_path, capsys):
    out = tmp_path / "bench"
    res = bench.run_bench(out=out, settings=bench.settings_for("test"))
    with open(out / "bench.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == bench.CSV_COLUMNS
        rows = list(reader)
    assert {r["section"] for r in rows} == set(bench.SECTIONS)
    for r in rows:
        assert math.isfinite(float(r["median"])) and math.isfinite(float(r["best"]))
        assert int(r["n"]) >= 1
    cases = {(r["section"], r["case"], r["metric"]) for r in rows}
    for needed in [("loops", "mlp/ours_vs_course", "ratio"),
                   ("loops", "cnn/ours_vs_torchvision", "ratio"),
                   ("layers", "cnn/overhead", "step_pct"),
                   ("layers", "mlp/overhead", "backward_pct"),
                   ("peak", "cnn_train_step/1t", "fraction_of_gemm_peak"),
                   ("jobs", "mlp/1x1", "total_images_per_s")
                   if measure.cores() == 1 else ("jobs", f"mlp/{measure.cores()}x1_vs_1x"
                                                f"{measure.cores()}", "ratio"),
                   ("precision", "mlp/bf16_vs_fp32", "speed_ratio"),
                   ("precision", "mlp16_1ep/fast_minus_fp32", "accuracy_pp"),
                   ("engines", "mlp/b20/compile_vs_eager", "speed_ratio"),
                   ("engines", "cnn/b20/compile", "first_call_s"),
                   ("engines", "cnn/b20/eager", "us_per_step"),
                   ("engines", "cnn/b20/channels_last_vs_eager", "speed_ratio"),
                   ("engines", "cnn/eval/channels_last", "images_per_s"),
                   ("engines", "cnn/eval/channels_last_vs_eager", "speed_ratio")]:
        assert needed in cases, needed
    # channels_last is the CNN's (registered with it), not the MLP's
    assert not any(r["case"].startswith("mlp/") and "channels_last" in r["case"] for r in rows)
    data = json.loads((out / "bench.json").read_text())
    assert data["sections"] == list(bench.SECTIONS)
    assert {"cpu", "cores", "torch", "device"} <= set(data["machine"])
    assert len(data["results"]) == len(rows)
    assert {t["target"].split(":")[0] for t in data["targets"]} == {"layers", "loops", "peak"}
    assert len(res.rows) == len(rows)
    # on a CPU no engine replays CUDA graphs
    assert not any("graphs" in r["case"] for r in rows if r["section"] == "engines")
    us, ips = (res.get("engines", "mlp/b20/eager", m) for m in ("us_per_step", "images_per_s"))
    assert ips.median == pytest.approx(20 / us.median * 1e6) and ips.best >= ips.median
    printed = capsys.readouterr().out
    assert "section" in printed and "ours_vs_course" in printed and "target" in printed


def test_run_bench_one_section_and_bad_names(tmp_path):
    res = bench.run_bench(out=tmp_path, sections=["peak"], settings=bench.settings_for("test"))
    assert {r["section"] for r in res.rows} == {"peak"}
    flops = res.get("peak", "cnn", "train_mflop_per_image")
    assert flops is not None and flops.median > res.get("peak", "cnn",
                                                        "forward_mflop_per_image").median
    with pytest.raises(ValueError, match="valid: loops"):
        bench.run_bench(out=tmp_path, sections=["speed"])
    with pytest.raises(ValueError, match="mode"):
        bench.settings_for("slow")


def test_study_flops_per_image_match_the_issue():
    # Training FLOPs per image: MLP 12.6 M, CNN 2,371 M (forward 797 M).
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    fwd, total = peak.training_flops(CNN(), x, y)
    assert round(total / 2 / 1e6) == 2371 and round(fwd / 2 / 1e6) == 797
    _, total = peak.training_flops(MLP(), x, y)
    assert round(total / 2 / 1e6, 1) == 12.6


def test_gpu_sharing_measures_concurrent_runs(tmp_path):
    # The code path `cifarlab bench` takes on CUDA (run here on the CPU: same processes and
    # protocol, only the device differs).
    res = bench.Results()
    jobs._bench_gpu_sharing(bench.settings_for("test"), res, torch.device("cpu"))
    for model in ("mlp", "cnn"):
        for k in bench.GPU_SHARES:
            st = res.get("jobs", f"{model}_gpu/{k}_runs", "total_images_per_s")
            assert st is not None and st.median > 0
        assert res.get("jobs", f"{model}_gpu/4_runs_vs_1", "ratio") is not None


def test_targets_are_judged_on_cpu_runs_only():
    res = bench.Results()
    res.add("loops", "mlp/ours_vs_course", "ratio", bench.Stat(2.0, 2.1, 3))
    run._check_targets(res, torch.device("cuda"))
    assert res.targets == []
    run._check_targets(res, torch.device("cpu"))
    assert [t["met"] for t in res.targets] == [True]
