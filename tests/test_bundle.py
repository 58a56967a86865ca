"""Bundles: a profile's results in a few size-capped files, without weights, and back."""

import io
import os
import subprocess
import sys
import tarfile

import pytest

from cifarlab.bundle import BundleError, bundle_paths, pack, restore_runs, unpack
from cifarlab.layout import Layout


def _results(root, runs=("r1", "r2")):
    layout = Layout(profile="full")
    files = {
        f"{layout.report}/report.md": b"# report\n",
        f"{layout.report}/figures/a.png": os.urandom(3000),  # incompressible
        f"{layout.tables}/runs.csv": b"run,test_acc\n",
        f"{layout.figures}/runs/r1_curves.png": os.urandom(2000),
        f"{layout.logs}/report.log": b"ok\n",
    }
    for rid in runs:
        for name in ("spec.yaml", "history.csv", "first_layer.pt", "metrics.json", "best.pt",
                     "checkpoint.pt"):
            files[f"{layout.runs}/{rid}/{name}"] = os.urandom(500)
        files[layout.train_log.format(run=rid)] = b"log\n"
    files[f"{layout.runs}/other/metrics.json"] = b"{}"  # another profile's run
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return layout, files


def test_a_bundle_holds_results_but_no_weights_and_comes_back_whole(tmp_path):
    src = tmp_path / "src"
    layout, files = _results(src)
    paths = bundle_paths(layout, ["r1", "r2", "missing"], root=src)
    names = {str(p) for p in paths}
    # no weights or checkpoints; the first layer's few units the figures draw
    assert not any(n.endswith(("best.pt", "checkpoint.pt")) for n in names)
    assert "results/runs/other/metrics.json" not in names
    expected = {n for n in files if not n.endswith(("best.pt", "checkpoint.pt"))
                and "/other/" not in n}
    assert names == expected
    # small parts force a split; the parts join back to the same files
    written = pack(paths, tmp_path / "out", root=src, info={"profile": "full"},
                   max_files=8, max_bytes=4096)
    assert len(written) > 1 and all(p.stat().st_size <= 4096 for p in written)
    assert written[0].name == f"results.tar.gz.00of{len(written):02d}"
    manifest = unpack(tmp_path / "out", tmp_path / "back")
    assert manifest["profile"] == "full" and set(manifest["files"]) == expected
    for n in expected:
        assert (tmp_path / "back" / n).read_bytes() == files[n], n
    assert not (tmp_path / "back" / "bundle.json").exists()


def test_a_bundle_over_its_limits_is_refused_and_nothing_is_written(tmp_path):
    src = tmp_path / "src"
    layout, _ = _results(src)
    with pytest.raises(BundleError, match=r"more than 2 files of .*--max-files"):
        pack(bundle_paths(layout, ["r1", "r2"], root=src), tmp_path / "out", root=src,
             max_files=2, max_bytes=1024)
    assert not (tmp_path / "out").exists()


def test_a_new_bundle_replaces_an_earlier_one_in_the_same_folder(tmp_path):
    src = tmp_path / "src"
    layout, _ = _results(src)
    paths = bundle_paths(layout, ["r1", "r2"], root=src)
    parts = pack(paths, tmp_path / "out", root=src, max_bytes=4096)
    assert len(parts) > 1
    (one,) = pack(paths[:2], tmp_path / "out", root=src, info={"n": 2})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [one.name]
    assert unpack(tmp_path / "out", tmp_path / "back")["n"] == 2


def test_a_missing_extra_path_is_named(tmp_path):
    with pytest.raises(BundleError, match="results/bench does not exist"):
        bundle_paths(Layout(profile="full"), [], root=tmp_path, extra=["results/bench"])


def test_unpack_refuses_members_outside_the_target_and_missing_parts(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(BundleError, match="not a file inside the target folder"):
        unpack(evil, tmp_path / "into")
    assert not (tmp_path / "escaped.txt").exists()
    # a split bundle with a part left behind
    src = tmp_path / "src"
    layout, _ = _results(src)
    written = pack(bundle_paths(layout, ["r1", "r2"], root=src), tmp_path / "out", root=src,
                   max_bytes=4096)
    written[1].unlink()
    with pytest.raises(BundleError, match=f"lacks part.*results.tar.gz.01of{len(written):02d}"):
        unpack(tmp_path / "out", tmp_path / "back")
    written[0].write_bytes(written[0].read_bytes()[:100])  # cut short
    with pytest.raises(BundleError, match="not a readable bundle"):
        unpack(written[0], tmp_path / "back")
    with pytest.raises(BundleError, match="no bundle"):
        unpack(tmp_path / "src", tmp_path / "back")


def test_the_cli_bundles_a_configured_profile(tmp_path):
    # `cifarlab bundle` takes the config as snakemake does; runs not trained are counted.
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    (tmp_path / "results/smoke/report").mkdir(parents=True)
    (tmp_path / "results/smoke/report/report.md").write_text("# r\n")
    out = subprocess.run(
        [sys.executable, "-m", "cifarlab", "bundle", str(repo / "config/smoke.yaml"),
         "--config", "data={url: http://127.0.0.1:9/x.tar.gz, md5: none}", "--out", str(tmp_path / "b")],
        cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "0 of" in out.stdout and "runs complete" in out.stdout
    manifest = unpack(tmp_path / "b", tmp_path / "x")
    assert manifest["profile"] == "smoke" and manifest["runs_complete"] == 0
    assert (tmp_path / "x/results/smoke/report/report.md").read_text() == "# r\n"


def test_restoring_runs_brings_completed_runs_not_complete_here(tmp_path):
    # The next machine of a study stopped by its time: completed runs come back (whole,
    # metrics.json last), a run complete there already is left alone, an unfinished one
    # (history without metrics) is not restored, and nothing but runs is extracted.
    src = tmp_path / "src"
    layout, files = _results(src, runs=("done1", "done2", "here", "recorded"))
    (src / layout.runs / "half").mkdir()
    (src / layout.runs / "half" / "history.csv").write_text("epoch\n1\n")
    ids = ["done1", "done2", "here", "recorded", "half"]
    pack(bundle_paths(layout, ids, root=src), tmp_path / "out", root=src,
         info={"runs_dir": str(layout.runs)})
    into = tmp_path / "next"
    runs = into / layout.runs
    (runs / "here").mkdir(parents=True)
    (runs / "here" / "metrics.json").write_text('{"mine": 1}')
    # complete here in its record only (Snakemake deleted its outputs to rerun its job)
    (runs / "recorded" / "record").mkdir(parents=True)
    (runs / "recorded" / "record" / "metrics.json").write_text('{"mine": 2}')
    # an unfinished local copy whose spec is a hard link into its (incomplete) record:
    # restoring replaces the file, never writes through the link
    (runs / "done2" / "record").mkdir(parents=True)
    (runs / "done2" / "record" / "spec.yaml").write_text("local: spec\n")
    os.link(runs / "done2" / "record" / "spec.yaml", runs / "done2" / "spec.yaml")
    done = restore_runs(tmp_path / "out", into)
    assert done == {"restored": ["done1", "done2"], "present": ["here", "recorded"],
                    "unfinished": ["half"]}
    assert (runs / "done2" / "record" / "spec.yaml").read_text() == "local: spec\n"
    assert not (runs / "recorded" / "metrics.json").exists()
    for rid in ("done1", "done2"):
        for name in ("spec.yaml", "history.csv", "first_layer.pt", "metrics.json"):
            rel = f"{layout.runs}/{rid}/{name}"
            assert (into / rel).read_bytes() == files[rel], rel
        assert not (into / layout.runs / rid / "best.pt").exists()
    assert (into / layout.runs / "here" / "metrics.json").read_text() == '{"mine": 1}'
    assert not (into / layout.runs / "half").exists()
    assert sorted(p.name for p in into.iterdir()) == ["results"]
    assert sorted(p.name for p in (into / "results").iterdir()) == ["runs"]
    # the CLI says what it did; a damaged bundle is an error that says so, not a traceback
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    out = subprocess.run([sys.executable, "-m", "cifarlab", "unbundle", str(tmp_path / "out"),
                          "--into", str(tmp_path / "cli"), "--runs-only"],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "restored 4 completed run(s)" in out.stdout and "1 unfinished" in out.stdout
    (tmp_path / "out" / "results.tar.gz").write_bytes(b"not a tar")
    out = subprocess.run([sys.executable, "-m", "cifarlab", "unbundle", str(tmp_path / "out"),
                          "--into", str(tmp_path / "cli"), "--runs-only"],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "is not a readable bundle" in out.stderr
    assert "Traceback" not in out.stderr
