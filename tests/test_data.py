"""Tests for cifarlab.data, on tiny fixtures built here (no network, no ../shared)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import socket
import struct
import tarfile
import threading
import warnings
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifarlab import data
from cifarlab.data import CLASSES, DataError, load_cache, make_splits, prepare

N_PER_BATCH = 20  # 5 train batches -> 100 train images, plus 20 test images


# --------------------------------------------------------------------------- official archive


def _batch(rng: np.random.Generator, name: str) -> dict:
    """A batch dict exactly like the original's keys and types (bytes keys, uint8 rows)."""
    return {
        b"batch_label": name.encode(),
        b"labels": [int(x) for x in rng.integers(0, 10, N_PER_BATCH)],
        b"data": rng.integers(0, 256, (N_PER_BATCH, 3072), dtype=np.uint8),
        b"filenames": [f"img_{name}_{i}.png".encode() for i in range(N_PER_BATCH)],
    }


def _add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _write_archive(path: Path, pickles: dict[str, bytes]) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name, payload in pickles.items():
            _add_bytes(tar, f"cifar-10-batches-py/{name}", payload)
    return path.read_bytes()


@dataclass
class Official:
    path: Path
    md5: str
    batches: dict[str, dict]

    @property
    def train_data(self) -> np.ndarray:
        return np.concatenate([self.batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])

    @property
    def train_labels(self) -> np.ndarray:
        return np.concatenate([self.batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes as Python 2 str opcodes (BINSTRING), like the archive's Python 2 pickles."""

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]
    dispatch[bytes] = save_bytes


def _py2_dumps(obj: object) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1.x, which wrote the archive, lived in numpy.core; GLOBAL names are plain lines.
    raw = buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"_codecs" not in raw and b"numpy._core" not in raw
    return raw


def _official_pickles(
    rng: np.random.Generator, py2: bool = True
) -> tuple[dict[str, bytes], dict[str, dict]]:
    dumps = _py2_dumps if py2 else lambda obj: pickle.dumps(obj, protocol=2)
    batches = {f"data_batch_{i}": _batch(rng, f"training batch {i} of 5") for i in range(1, 6)}
    batches["test_batch"] = _batch(rng, "testing batch 1 of 1")
    meta = {
        b"label_names": [c.encode() for c in CLASSES],
        b"num_cases_per_batch": N_PER_BATCH,
        b"num_vis": 3072,
    }
    pickles = {k: dumps(v) for k, v in batches.items()}
    pickles["batches.meta"] = dumps(meta)
    return pickles, batches


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> Official:
    pickles, batches = _official_pickles(np.random.default_rng(123))
    path = tmp_path_factory.mktemp("official") / "cifar-10-python.tar.gz"
    raw = _write_archive(path, pickles)
    return Official(path=path, md5=hashlib.md5(raw).hexdigest(), batches=batches)


def _assert_matches_official(cache: dict[str, np.ndarray], off: Official) -> None:
    train = cache["train_images"]
    assert train.dtype == np.uint8 and train.shape == (5 * N_PER_BATCH, 3, 32, 32)
    # Row layout is CHW: pixel (c, y, x) of image i is data[i, c*1024 + y*32 + x].
    rows = off.train_data
    assert train[7, 2, 5, 9] == rows[7, 2 * 1024 + 5 * 32 + 9]
    np.testing.assert_array_equal(train.reshape(len(train), -1), rows)
    np.testing.assert_array_equal(cache["train_labels"], off.train_labels)
    assert cache["train_labels"].dtype == np.uint8
    test = off.batches["test_batch"]
    np.testing.assert_array_equal(cache["test_images"].reshape(N_PER_BATCH, -1), test[b"data"])
    np.testing.assert_array_equal(cache["test_labels"], test[b"labels"])
    assert list(cache["classes"]) == list(CLASSES)
    assert str(cache["source_kind"]) == "official"
    assert str(cache["source_checksum"]) == off.md5


def _dir_entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


# --------------------------------------------------------------------------- local http server


@dataclass
class Server:
    base: str
    routes: dict[str, tuple[int, bytes, int | None]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Server:
    """A 127.0.0.1 server; routes: path -> (status, body, Content-Length override)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    state = Server(base="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            if self.path not in state.routes:
                self.send_error(404, "not here")
                return
            status, body, length = state.routes[self.path]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body)  # HTTP/1.0: the connection closes after this

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


# --------------------------------------------------------------------------- url source


def test_download_from_http_and_reuse(official: Official, server: Server, tmp_path: Path) -> None:
    server.routes["/cifar.tar.gz"] = (200, official.path.read_bytes(), None)
    out, work = tmp_path / "cache" / "cifar10.npz", tmp_path / "work"
    url = server.base + "/cifar.tar.gz"

    meta = prepare("url", url, out, md5=official.md5, workdir=work, progress=False)

    assert meta == {
        "path": str(out),
        "source_kind": "official",
        "source_checksum": official.md5,
        "n_train": 100,
        "n_test": 20,
        "classes": list(CLASSES),
        "identity": "",
    }
    _assert_matches_official(load_cache(out), official)
    assert _dir_entries(work) == ["cifar-10-python.tar.gz"]  # no .part left
    assert len(server.requests) == 1

    out.unlink()
    prepare("url", url, out, md5=official.md5, workdir=work, progress=False)
    assert len(server.requests) == 1, "the verified archive in workdir must be reused"
    _assert_matches_official(load_cache(out), official)


def test_file_url(official: Official, tmp_path: Path) -> None:
    out = tmp_path / "c.npz"
    prepare("url", official.path.as_uri(), out, md5=official.md5, progress=False)
    _assert_matches_official(load_cache(out), official)
    assert (tmp_path / "cifar-10-python.tar.gz").is_file()  # workdir defaults to out's dir


def test_http_404(server: Server, tmp_path: Path) -> None:
    url = server.base + "/missing.tar.gz"
    with pytest.raises(DataError, match="404") as err:
        prepare("url", url, tmp_path / "c.npz", progress=False)
    assert url in str(err.value) and "archive" in str(err.value)
    assert _dir_entries(tmp_path) == []


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar.tar.gz"
    with pytest.raises(DataError) as err:
        prepare("url", url, tmp_path / "c.npz", progress=False)
    assert url in str(err.value)
    assert _dir_entries(tmp_path) == []


def test_truncated_download(official: Official, server: Server, tmp_path: Path) -> None:
    body = official.path.read_bytes()
    server.routes["/short"] = (200, body[: len(body) // 2], len(body))
    url = server.base + "/short"
    with pytest.raises(DataError, match="stopped early") as err:
        prepare("url", url, tmp_path / "c.npz", md5=official.md5, progress=False)
    assert url in str(err.value)
    assert _dir_entries(tmp_path) == []  # no cache, no archive, no temp file


def test_download_wrong_md5(official: Official, server: Server, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    server.routes["/cifar.tar.gz"] = (200, official.path.read_bytes(), None)
    monkeypatch.setattr(data, "_unpickle", _must_not_unpickle)
    url = server.base + "/cifar.tar.gz"
    with pytest.raises(DataError, match="MD5") as err:
        prepare("url", url, tmp_path / "c.npz", md5="0" * 32, progress=False)
    msg = str(err.value)
    # Names the URL, the actual and the expected MD5, and the fixes (config key, flag, none).
    assert f"MD5 of the download from {url} is {official.md5}, expected {'0' * 32}" in msg
    assert "data.md5" in msg and "--md5" in msg and "none skips the check" in msg
    assert "mirror" in msg and "'archive' source" in msg
    assert _dir_entries(tmp_path) == []  # no archive, no .part


def _progress_lines(err: str, desc: str = "cifar-10-python.tar.gz") -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"{desc}: ")]


def test_download_progress_in_a_log(official: Official, server: Server, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """stderr is not a terminal (as in `prepare ... > log 2>&1`): a plain line per 10 %."""
    body = official.path.read_bytes()
    server.routes["/cifar.tar.gz"] = (200, body, None)
    monkeypatch.setattr(data, "_CHUNK", 4096)  # ~90 chunks of the ~370 kB test archive
    capsys.readouterr()
    prepare("url", server.base + "/cifar.tar.gz", tmp_path / "c.npz", md5=official.md5,
            progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err  # no carriage-return bar updates
    lines = _progress_lines(err)
    assert len(lines) == 10, err  # 10 % ... 90 %, then the summary
    total = f"{len(body) / 2**20:.1f}"
    percents = []
    for line in lines[:-1]:
        match = re.fullmatch(rf"cifar-10-python\.tar\.gz: [0-9.]+ of {re.escape(total)} MiB "
                             r"\((\d+)%\), [0-9.]+ MiB/s, \d+ s left", line)
        assert match, line
        percents.append(int(match[1]))
    assert [p // 10 for p in percents] == list(range(1, 10))
    assert re.fullmatch(rf"cifar-10-python\.tar\.gz: {re.escape(total)} MiB in [0-9.]+ s "
                        r"\([0-9.]+ MiB/s\)", lines[-1])


def test_progress_every_interval_when_size_unknown_and_bar_on_a_tty(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_LOG_INTERVAL_S", 0.0)  # a line at every update
    log = io.StringIO()
    with data._Progress(None, "x.tar.gz", "B", stream=log) as bar:  # no Content-Length
        for _ in range(3):
            bar.update(2**20)
    lines = log.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines[:3]] == [
        "x.tar.gz: 1.0 MiB so far", "x.tar.gz: 2.0 MiB so far", "x.tar.gz: 3.0 MiB so far"]
    assert re.fullmatch(r"x\.tar\.gz: 3\.0 MiB in [0-9.]+ s \([0-9.]+ MiB/s\)", lines[3])
    assert len(lines) == 4

    failed = io.StringIO()
    with pytest.raises(RuntimeError), data._Progress(None, "f", "B", stream=failed) as bar:
        bar.update(5)
        raise RuntimeError("stopped")
    assert " in " not in failed.getvalue()  # no summary for work that did not complete

    quiet = io.StringIO()
    with data._Progress(10, "q", "B", enabled=False, stream=quiet) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    with data._Progress(10, "decoding images", "images", stream=tty) as bar:
        bar.update(10)
    assert "decoding images" in tty.getvalue() and "100%" in tty.getvalue()  # a tqdm bar


def test_cli_no_progress(official: Official, server: Server, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    from cifarlab.cli import main

    server.routes["/cifar.tar.gz"] = (200, official.path.read_bytes(), None)
    monkeypatch.setattr(data, "_CHUNK", 4096)
    args = ["prepare", "--url", server.base + "/cifar.tar.gz", "--md5", official.md5,
            "--out", str(tmp_path / "c.npz")]
    capsys.readouterr()
    assert main([*args, "--workdir", str(tmp_path / "quiet"), "--no-progress"]) == 0
    assert _progress_lines(capsys.readouterr().err) == []
    assert main([*args, "--workdir", str(tmp_path / "log")]) == 0
    assert len(_progress_lines(capsys.readouterr().err)) == 10


def test_interrupted_download_leaves_nothing_that_looks_complete(
        official: Official, server: Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    body = official.path.read_bytes()
    # Ctrl-C while the download runs, after its first chunk is written: raised where a real
    # SIGINT lands, in the download loop (a signal sent from another thread raced the
    # connection's close on a loaded machine).
    from cifarlab import data as data_module

    def interrupt(self: object, n: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(data_module._Progress, "update", interrupt)
    server.routes["/cifar.tar.gz"] = (200, body, None)
    work = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        prepare("url", server.base + "/cifar.tar.gz", tmp_path / "c.npz", md5=None,
                workdir=work, progress=False)
    monkeypatch.undo()
    server.requests.clear()
    assert _dir_entries(work) == []  # nothing under the archive's name, no .part

    # A .part that a killed (SIGKILL) download left behind is never taken for the archive.
    (work / ".cifar-10-python.tar.gz.dead.part").write_bytes(body)
    server.routes["/cifar.tar.gz"] = (200, body, None)
    meta = prepare("url", server.base + "/cifar.tar.gz", tmp_path / "c.npz", md5=None,
                   workdir=work, progress=False)
    assert meta["source_checksum"] == official.md5
    assert len(server.requests) == 1
    _assert_matches_official(load_cache(tmp_path / "c.npz"), official)
    assert "cifar-10-python.tar.gz" in _dir_entries(work)


# --------------------------------------------------------------------------- archive source


def _must_not_unpickle(raw: bytes, what: str) -> None:
    raise AssertionError(f"unpickled {what} before the MD5 check")


def test_archive_source(official: Official, tmp_path: Path) -> None:
    out = tmp_path / "c.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. numpy 2's DeprecationWarning for numpy.core
        meta = prepare("archive", str(official.path), out, md5=official.md5, progress=False)
    assert meta["source_checksum"] == official.md5
    _assert_matches_official(load_cache(out), official)
    assert _dir_entries(tmp_path) == ["c.json", "c.npz"]  # the cache and its manifest


def test_archive_python3_pickles_no_numpy_warning(tmp_path: Path) -> None:
    """Python 3 protocol-2 pickles (numpy._core, _codecs.encode) work too, without warnings."""
    pickles, batches = _official_pickles(np.random.default_rng(9), py2=False)
    archive = tmp_path / "a.tar.gz"
    off = Official(archive, hashlib.md5(_write_archive(archive, pickles)).hexdigest(), batches)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. numpy 2's DeprecationWarning for numpy.core
        prepare("archive", str(archive), tmp_path / "c.npz", md5=off.md5, progress=False)
    _assert_matches_official(load_cache(tmp_path / "c.npz"), off)


def test_archive_wrong_md5_unpickles_nothing(official: Official, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_unpickle", _must_not_unpickle)
    with pytest.raises(DataError, match=f"MD5 of .* is {official.md5}, expected c58f") as err:
        prepare("archive", str(official.path), tmp_path / "c.npz", progress=False)
    assert "data.md5 in the config, --md5 on the command line; none skips" in str(err.value)
    assert _dir_entries(tmp_path) == []


def test_archive_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        prepare("archive", str(tmp_path / "nope.tar.gz"), tmp_path / "c.npz", progress=False)


def test_truncated_archive(official: Official, tmp_path: Path) -> None:
    raw = official.path.read_bytes()
    bad = tmp_path / "cut.tar.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupted"):
        prepare("archive", str(bad), tmp_path / "c.npz", md5=None, progress=False)
    bad.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(DataError, match="truncated or corrupted"):
        prepare("archive", str(bad), tmp_path / "c.npz", md5=None, progress=False)
    assert not (tmp_path / "c.npz").exists()


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    pickles, _ = _official_pickles(np.random.default_rng(0))
    pickles["data_batch_1"] = pickle.dumps({b"data": _Evil(marker), b"labels": []}, protocol=2)
    archive = tmp_path / "evil.tar.gz"
    _write_archive(archive, pickles)
    with pytest.raises(DataError, match=r"refusing to unpickle .*system"):
        prepare("archive", str(archive), tmp_path / "c.npz", md5=None, progress=False)
    assert not marker.exists()
    assert not (tmp_path / "c.npz").exists()


def test_not_cifar10_label_names(tmp_path: Path) -> None:
    pickles, _ = _official_pickles(np.random.default_rng(0))
    pickles["batches.meta"] = pickle.dumps({b"label_names": [b"apple"] * 10}, protocol=2)
    archive = tmp_path / "a.tar.gz"
    _write_archive(archive, pickles)
    with pytest.raises(DataError, match="label_names"):
        prepare("archive", str(archive), tmp_path / "c.npz", md5=None, progress=False)


def test_unknown_kind_and_bad_md5(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="url, archive, folder"):
        prepare("ftp", "x", tmp_path / "c.npz")
    with pytest.raises(DataError, match="not an MD5"):
        prepare("archive", "x", tmp_path / "c.npz", md5="xyz")


# --------------------------------------------------------------------------- extracted archive


def _extract(archive: Path, root: Path) -> Path:
    """What torchvision.datasets.CIFAR10(root, download=True) leaves: root/ with the
    archive and the extracted cifar-10-batches-py/; returns root."""
    root.mkdir(parents=True)
    (root / "cifar-10-python.tar.gz").write_bytes(archive.read_bytes())
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root


_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels", "classes")


def test_extracted_archive_gives_the_archives_arrays(official: Official, tmp_path: Path) -> None:
    root = _extract(official.path, tmp_path / "torchvision")
    from_archive = tmp_path / "a.npz"
    prepare("archive", str(official.path), from_archive, md5=official.md5, progress=False)
    want = load_cache(from_archive)
    checksums = set()
    # The folder itself, or the folder torchvision was given (it also holds the .tar.gz).
    for i, path in enumerate((root / "cifar-10-batches-py", root)):
        out = tmp_path / f"d{i}.npz"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            meta = prepare("archive", str(path), out, md5=None, progress=False)
        got = load_cache(out)
        for key in _ARRAYS:
            assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape
            np.testing.assert_array_equal(got[key], want[key])
        assert str(got["source_kind"]) == "official" == meta["source_kind"]
        assert (meta["n_train"], meta["n_test"]) == (100, 20)
        checksums.add(meta["source_checksum"])
    # Not the official files: a checksum of the files' names and MD5s, the same either way.
    (checksum,) = checksums
    assert len(checksum) == 64 and checksum != official.md5


def test_extracted_archive_reads_as_torchvision_does(official: Official, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's own CIFAR10 reader, on the same folder, sees the same images."""
    from torchvision.datasets import cifar

    root = _extract(official.path, tmp_path / "tv")
    # Its per-file MD5 checks know only the real files; these are a stand-in.
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    out = tmp_path / "c.npz"
    prepare("archive", str(root), out, md5=None, progress=False)
    cache = load_cache(out)
    for train, prefix in ((True, "train"), (False, "test")):
        ds = cifar.CIFAR10(str(root), train=train, download=False)
        np.testing.assert_array_equal(ds.data, cache[f"{prefix}_images"].transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(ds.targets, cache[f"{prefix}_labels"])
        assert ds.classes == list(CLASSES)


def test_extracted_official_files_checked_one_by_one(official: Official, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = _extract(official.path, tmp_path / "tv")
    folder = root / "cifar-10-batches-py"
    # Pretend these are the official files: the table holds the real archive's MD5s.
    file_md5s = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    monkeypatch.setattr(data, "_OFFICIAL_FILE_MD5S", file_md5s)
    out = tmp_path / "c.npz"
    meta = prepare("archive", str(root), out, progress=False)  # default md5: the official one
    # The official files hold the official archive's data: the same checksum, the same runs.
    assert meta["source_checksum"] == data.OFFICIAL_MD5
    assert prepare("archive", str(root), out, md5=None, progress=False)["source_checksum"] \
        == data.OFFICIAL_MD5
    good = out.read_bytes()

    raw = bytearray((folder / "test_batch").read_bytes())
    raw[-10] ^= 0xFF
    (folder / "test_batch").write_bytes(raw)
    actual = hashlib.md5(raw).hexdigest()
    monkeypatch.setattr(data, "_unpickle", _must_not_unpickle)  # checked before unpickling
    with pytest.raises(DataError) as err:
        prepare("archive", str(root), out, progress=False)
    msg = str(err.value)
    assert f"{folder / 'test_batch'} is {actual}, expected {file_md5s['test_batch']}" in msg
    assert "data_batch_1" not in msg  # only the files that differ
    assert "extract cifar-10-python.tar.gz again" in msg and "none" in msg
    assert out.read_bytes() == good  # the cache is left as it was

    with pytest.raises(DataError, match="can only check an archive"):
        prepare("archive", str(root), out, md5="1" * 32, progress=False)


def test_extracted_archive_missing_files(official: Official, tmp_path: Path) -> None:
    root = _extract(official.path, tmp_path / "tv")
    folder = root / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    (folder / "batches.meta").unlink()
    for path in (folder, root):
        with pytest.raises(DataError) as err:
            prepare("archive", str(path), tmp_path / "c.npz", md5=None, progress=False)
        msg = str(err.value)
        assert f"{folder} lacks data_batch_3, batches.meta" in msg
        assert "data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, " \
            "test_batch, batches.meta" in msg
        assert "tar xzf cifar-10-python.tar.gz" in msg
    assert f"{root / 'cifar-10-python.tar.gz'} is there: point data.path (--path) at it" in msg
    assert not (tmp_path / "c.npz").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds neither the CIFAR-10 batch files nor a "
                       "cifar-10-batches-py/ folder"):
        prepare("archive", str(empty), tmp_path / "c.npz", md5=None, progress=False)
    with pytest.raises(DataError, match="does not exist.*extracted from it"):
        prepare("archive", str(tmp_path / "nope"), tmp_path / "c.npz", progress=False)


def test_source_files(official: Official, tmp_path: Path) -> None:
    root = _extract(official.path, tmp_path / "tv")
    batches = [root / "cifar-10-batches-py" / n for n in (
        "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
        "test_batch", "batches.meta")]
    assert data.source_files("archive", root) == batches
    assert data.source_files("archive", root / "cifar-10-batches-py") == batches
    assert data.source_files("archive", official.path) == [official.path]
    assert data.source_files("folder", str(root)) == [root]
    assert data.source_files("url", "https://example.org/x.tar.gz") == []
    batches[2].unlink()
    assert data.source_files("archive", root) == [root]  # prepare says what is missing


def test_extracted_archive_restricted_unpickler(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    pickles, _ = _official_pickles(np.random.default_rng(0))
    pickles["data_batch_2"] = pickle.dumps({b"data": _Evil(marker), b"labels": []}, protocol=2)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, payload in pickles.items():
        (folder / name).write_bytes(payload)
    with pytest.raises(DataError, match=r"refusing to unpickle .*system"):
        prepare("archive", str(folder), tmp_path / "c.npz", md5=None, progress=False)
    assert not marker.exists() and not (tmp_path / "c.npz").exists()


def test_folder_source_points_an_extracted_archive_to_archive(official: Official,
                                                               tmp_path: Path) -> None:
    root = _extract(official.path, tmp_path / "tv")
    for path in (root / "cifar-10-batches-py", official.path):
        with pytest.raises(DataError, match="use data.source 'archive'"):
            prepare("folder", str(path), tmp_path / "c.npz", progress=False)


# --------------------------------------------------------------------------- folder source


def _image(label: int, index: int) -> np.ndarray:
    """A smooth 32x32 RGB image (JPEG-friendly) unique per (label, index), HWC uint8."""
    y, x = np.mgrid[0:32, 0:32]
    r = x * 4 + label * 10
    g = y * 4 + (index % 25) * 5
    b = (x + y) * 2 + (30 if index < 100 else 90)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def _make_folder(root: Path, n_train: int = 5, n_test: int = 2, classes=CLASSES) -> Path:
    """train/<class>/<i>.png (last train image of each class as JPEG), test/<class>/<i>.png."""
    for split, n in (("train", n_train), ("test", n_test)):
        for label, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                img = Image.fromarray(_image(label, i + (100 if split == "test" else 0)))
                if split == "train" and i == n - 1:
                    img.save(d / f"{i:03d}.jpg", quality=95, subsampling=0)
                else:
                    img.save(d / f"{i:03d}.png")
    return root


def _tar_dir(src: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        for name in ("train", "test"):
            tar.add(src / name, arcname=name)
    return dest


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_folder(tmp_path_factory.mktemp("folder") / "cifar")


def _check_folder_cache(cache: dict[str, np.ndarray], n_train: int = 5, n_test: int = 2) -> None:
    assert cache["train_images"].shape == (10 * n_train, 3, 32, 32)
    assert cache["test_images"].shape == (10 * n_test, 3, 32, 32)
    np.testing.assert_array_equal(cache["train_labels"], np.repeat(np.arange(10), n_train))
    np.testing.assert_array_equal(cache["test_labels"], np.repeat(np.arange(10), n_test))
    # Files are read in sorted order within a class: image i of class c is at c*n + i.
    for label in (0, 3, 9):
        for i in range(n_train - 1):  # PNGs round-trip exactly
            got = cache["train_images"][label * n_train + i].transpose(1, 2, 0)
            np.testing.assert_array_equal(got, _image(label, i))
        jpeg = cache["train_images"][label * n_train + n_train - 1].transpose(1, 2, 0)
        err = np.abs(jpeg.astype(int) - _image(label, n_train - 1).astype(int)).mean()
        assert err < 3  # lossy, but the same picture
        got = cache["test_images"][label * n_test + 1].transpose(1, 2, 0)
        np.testing.assert_array_equal(got, _image(label, 101))
    assert str(cache["source_kind"]) == "folder"
    assert len(str(cache["source_checksum"])) == 64


def test_folder_directory(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.npz"
    meta = prepare("folder", str(folder), out, progress=False)
    cache = load_cache(out)
    _check_folder_cache(cache)
    assert meta["source_kind"] == "folder" and meta["n_train"] == 50 and meta["n_test"] == 20
    # The checksum is stable and changes with the content.
    again = prepare("folder", str(folder), tmp_path / "d.npz", progress=False)
    assert again["source_checksum"] == meta["source_checksum"]


def test_folder_decoding_progress_in_a_log(folder: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    prepare("folder", str(folder), tmp_path / "c.npz", progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = _progress_lines(err, "decoding images")
    assert [line.split(" (")[0] for line in lines[:-1]] == [
        f"decoding images: {n} of 70 images" for n in (7, 14, 21, 28, 35, 42, 49, 56, 63)]
    assert re.fullmatch(r"decoding images: 70 images in [0-9.]+ s \([0-9]+ images/s\)",
                        lines[-1])


def test_folder_checksum_tracks_content(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "f", n_train=1, n_test=1)
    first = prepare("folder", str(root), tmp_path / "c.npz", progress=False)["source_checksum"]
    Image.fromarray(_image(7, 7)).save(root / "test" / "cat" / "000.png")
    second = prepare("folder", str(root), tmp_path / "c.npz", progress=False)["source_checksum"]
    assert first != second


def test_folder_tarball(folder: Path, tmp_path: Path) -> None:
    tarball = _tar_dir(folder, tmp_path / "cifar.tar.gz")
    work = tmp_path / "work"
    out = tmp_path / "c.npz"
    meta = prepare("folder", str(tarball), out, workdir=work, progress=False)
    _check_folder_cache(load_cache(out))
    assert meta["source_checksum"] == hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert not work.exists()  # decoded from memory: no extraction directory
    md5 = hashlib.md5(tarball.read_bytes()).hexdigest()
    prepare("folder", str(tarball), out, md5=md5, workdir=work, progress=False)
    with pytest.raises(DataError, match="MD5"):
        prepare("folder", str(tarball), out, md5="1" * 32, workdir=work, progress=False)


def test_folder_tarball_with_wrapping_dir_and_hidden_files(folder: Path, tmp_path: Path) -> None:
    tarball = tmp_path / "wrapped.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(folder, arcname="./cifar10-jpeg")
        _add_bytes(tar, "cifar10-jpeg/train/cat/._000.png", b"macOS resource fork, not an image")
    prepare("folder", str(tarball), tmp_path / "c.npz", progress=False)
    _check_folder_cache(load_cache(tmp_path / "c.npz"))


def test_folder_wrong_classes(tmp_path: Path) -> None:
    classes = (*CLASSES[:-1], "lorry")  # "truck" missing, "lorry" extra
    root = _make_folder(tmp_path / "f", n_train=1, n_test=1, classes=classes)
    with pytest.raises(DataError, match=r"missing \['truck'\], extra \['lorry'\]"):
        prepare("folder", str(root), tmp_path / "c.npz", progress=False)
    assert not (tmp_path / "c.npz").exists()


def test_folder_wrong_size(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "f", n_train=1, n_test=1)
    bad = root / "train" / "dog" / "big.png"
    Image.new("RGB", (33, 32)).save(bad)
    with pytest.raises(DataError, match="33x32") as err:
        prepare("folder", str(root), tmp_path / "c.npz", progress=False)
    assert str(bad) in str(err.value)
    tarball = _tar_dir(root, tmp_path / "f.tgz")
    with pytest.raises(DataError, match="33x32") as err:
        prepare("folder", str(tarball), tmp_path / "c.npz", progress=False)
    assert f"{tarball}:train/dog/big.png" in str(err.value)
    assert not (tmp_path / "c.npz").exists()


def test_folder_grayscale_converted(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "f", n_train=2, n_test=1)
    Image.new("L", (32, 32), 77).save(root / "train" / "cat" / "000.png")
    prepare("folder", str(root), tmp_path / "c.npz", progress=False)
    assert (load_cache(tmp_path / "c.npz")["train_images"][3 * 2] == 77).all()


def _evil_tar(path: Path, folder: Path, evil: tarfile.TarInfo, payload: bytes = b"x") -> Path:
    """A valid image-folder tarball with one hostile member appended."""
    with tarfile.open(path, "w:gz") as tar:
        for name in ("train", "test"):
            tar.add(folder / name, arcname=name)
        if evil.isreg():
            evil.size = len(payload)
            tar.addfile(evil, io.BytesIO(payload))
        else:
            tar.addfile(evil)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (_member("../evil.png"), r"'\.\.'"),
        (_member("train/../../evil.png"), r"'\.\.'"),
        (_member("/ABSOLUTE/evil.png"), "absolute"),
        (_member("train/cat/link.png", tarfile.SYMTYPE, "../../../evil.png"), "links"),
        (_member("train/cat/hard.png", tarfile.LNKTYPE, "train/cat/000.png"), "links"),
        (_member("train/cat/fifo", tarfile.FIFOTYPE), "special"),
        (_member("train/cat/dev", tarfile.CHRTYPE), "special"),
    ],
)
def test_folder_tarball_unsafe_members(folder: Path, tmp_path: Path, member: tarfile.TarInfo,
                                       why: str) -> None:
    if member.name.startswith("/ABSOLUTE"):
        member.name = str(tmp_path / "evil.png")
    tarball = _evil_tar(tmp_path / "evil.tar.gz", folder, member)
    work = tmp_path / "a" / "b" / "work"
    with pytest.raises(DataError, match=why):
        prepare("folder", str(tarball), tmp_path / "c.npz", workdir=work, progress=False)
    # Nothing written anywhere: no evil.png, no extraction directory, no cache.
    assert [p.name for p in tmp_path.rglob("*")] == ["evil.tar.gz"]


def test_folder_bad_location(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"")
    with pytest.raises(DataError, match="neither a directory nor"):
        prepare("folder", str(tmp_path / "x.zip"), tmp_path / "c.npz", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no train/ and test/"):
        prepare("folder", str(tmp_path / "empty"), tmp_path / "c.npz", progress=False)
    with pytest.raises(DataError, match=r"nope\.tar\.gz does not exist.*data\.path"):
        prepare("folder", str(tmp_path / "nope.tar.gz"), tmp_path / "c.npz", progress=False)


def test_non_image_file_is_named(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "f", n_train=1, n_test=1)
    bad = root / "train" / "dog" / "notes.png"
    bad.write_bytes(b"these are my notes, not a picture")
    with pytest.raises(DataError) as err:
        prepare("folder", str(root), tmp_path / "c.npz", progress=False)
    msg = str(err.value)
    assert str(bad) in msg and "not an image" in msg and "BytesIO" not in msg


def test_manifest_identity_and_a_failed_prepare_keeps_the_cache(folder: Path,
                                                               tmp_path: Path) -> None:
    from cifarlab.data import manifest_path, read_manifest

    out = tmp_path / "c.npz"
    prepare("folder", str(folder), out, progress=False, identity="folder:f", request="--a")
    meta = read_manifest(out)
    assert meta["identity"] == "folder:f" and meta["request"] == "--a"
    assert meta["n_train"] == len(load_cache(out)["train_labels"])
    assert json.loads(manifest_path(out).read_text())["checksum"] == meta["checksum"]
    assert make_splits(out, n_train=10, n_val=10).identity == "folder:f"
    good = out.read_bytes()
    with pytest.raises(DataError):  # a wrong MD5 of a tarball: nothing replaced
        tarball = tmp_path / "f.tar"
        with tarfile.open(tarball, "w") as tar:
            tar.add(folder, arcname="cifar10-jpeg")
        prepare("folder", str(tarball), out, md5="1" * 32, progress=False, identity="x")
    assert out.read_bytes() == good and read_manifest(out)["identity"] == "folder:f"


# --------------------------------------------------------------------------- cache


def test_atomic_write(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_write(f: io.BufferedWriter, **arrays: np.ndarray) -> None:
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", half_write)
    with pytest.raises(OSError, match="disk full"):
        prepare("folder", str(folder), tmp_path / "c.npz", progress=False)
    assert _dir_entries(tmp_path) == []


def test_failed_prepare_keeps_old_cache(folder: Path, official: Official, tmp_path: Path) -> None:
    out = tmp_path / "c.npz"
    prepare("folder", str(folder), out, progress=False)
    before = out.read_bytes()
    with pytest.raises(DataError):
        prepare("archive", str(official.path), out, md5="0" * 32, progress=False)
    assert out.read_bytes() == before


def test_load_cache_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifarlab prepare"):
        load_cache(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="delete it"):
        load_cache(tmp_path / "bad.npz")


# --------------------------------------------------------------------------- splits


@pytest.fixture(scope="module")
def folder_cache(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fcache") / "c.npz"
    prepare("folder", str(folder), out, progress=False)
    return out


@pytest.fixture(scope="module")
def official_cache(official: Official, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ocache") / "c.npz"
    prepare("archive", str(official.path), out, md5=official.md5, progress=False)
    return out


def _image_keys(split: data.Split) -> set[bytes]:
    return {bytes(x) for x in split.images.reshape(len(split), -1).numpy()}


def test_head_tail_on_official(official_cache: Path) -> None:
    cache = load_cache(official_cache)
    s = make_splits(official_cache, n_train=60, n_val=30)  # auto -> head_tail for official
    assert s.source_kind == "official" and s.classes == list(CLASSES)
    assert s.checksum == str(cache["source_checksum"])
    np.testing.assert_array_equal(s.train.images.numpy(), cache["train_images"][:60])
    np.testing.assert_array_equal(s.val.images.numpy(), cache["train_images"][70:])
    np.testing.assert_array_equal(s.val.labels.numpy(), cache["train_labels"][70:])
    np.testing.assert_array_equal(s.test.images.numpy(), cache["test_images"])
    for split in (s.train, s.val, s.test):
        assert split.images.dtype == torch.uint8 and split.images.is_contiguous()
        assert split.labels.dtype == torch.int64
        assert split.images.shape[1:] == (3, 32, 32)


def test_stratified_vs_head_tail_on_folder(folder_cache: Path) -> None:
    head_tail = make_splits(folder_cache, n_train=40, n_val=10, method="head_tail")
    assert len(set(head_tail.val.labels.tolist())) <= 2  # class-ordered files: val = 2 classes

    s = make_splits(folder_cache, n_train=40, n_val=10)  # auto -> stratified for folders
    assert s.source_kind == "folder"
    assert np.bincount(s.val.labels.numpy(), minlength=10).tolist() == [1] * 10
    assert np.bincount(s.train.labels.numpy(), minlength=10).tolist() == [4] * 10
    assert len(s.test) == 20


def test_stratified_proportional_at_full_scale() -> None:
    """10 x 5000 shuffled labels, 40000/10000 -> exactly 4000/1000 per class."""
    rng = np.random.default_rng(5)
    labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), 5000))
    cache = {
        "train_images": np.zeros((50000, 3, 32, 32), np.uint8),
        "train_labels": labels,
        "test_images": np.zeros((10, 3, 32, 32), np.uint8),
        "test_labels": np.arange(10, dtype=np.uint8),
        "classes": np.array(CLASSES),
        "source_kind": np.array("folder"),
        "source_checksum": np.array("x"),
    }
    s = make_splits(cache, train_subset=8000, val_subset=2000)
    assert np.bincount(s.train.labels.numpy()).tolist() == [800] * 10
    assert np.bincount(s.val.labels.numpy()).tolist() == [200] * 10
    full = make_splits(cache, method="stratified")
    assert np.bincount(full.train.labels.numpy()).tolist() == [4000] * 10
    assert np.bincount(full.val.labels.numpy()).tolist() == [1000] * 10


def test_stratified_seeds_and_disjointness(folder_cache: Path) -> None:
    pool = _image_keys(make_splits(folder_cache, n_train=50, n_val=0, method="head_tail").train)
    a = make_splits(folder_cache, n_train=30, n_val=20, seed=1)
    b = make_splits(folder_cache, n_train=30, n_val=20, seed=1)
    c = make_splits(folder_cache, n_train=30, n_val=20, seed=2)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert not torch.equal(a.val.images, c.val.images)
    train, val = _image_keys(a.train), _image_keys(a.val)
    assert len(train) == 30 and len(val) == 20
    assert not train & val
    assert train | val <= pool
    assert np.bincount(a.val.labels.numpy(), minlength=10).tolist() == [2] * 10


def test_subsets_are_stratified(folder_cache: Path) -> None:
    s = make_splits(folder_cache, n_train=40, n_val=10, train_subset=20, val_subset=10,
                    test_subset=10)
    assert np.bincount(s.train.labels.numpy(), minlength=10).tolist() == [2] * 10
    assert np.bincount(s.val.labels.numpy(), minlength=10).tolist() == [1] * 10
    assert np.bincount(s.test.labels.numpy(), minlength=10).tolist() == [1] * 10
    full = make_splits(folder_cache, n_train=40, n_val=10)
    assert _image_keys(s.train) <= _image_keys(full.train)
    assert _image_keys(s.test) <= _image_keys(full.test)
    again = make_splits(folder_cache, n_train=40, n_val=10, train_subset=20, test_subset=10)
    assert torch.equal(again.train.images, s.train.images)  # val_subset does not move others
    assert torch.equal(again.test.images, s.test.images)


def test_split_errors(folder_cache: Path) -> None:
    with pytest.raises(DataError, match="n_train=45 \\+ n_val=10 = 55 .* 50"):
        make_splits(folder_cache, n_train=45, n_val=10)
    with pytest.raises(DataError, match="train_subset=41"):
        make_splits(folder_cache, n_train=40, n_val=10, train_subset=41)
    with pytest.raises(DataError, match="test_subset=21"):
        make_splits(folder_cache, n_train=40, n_val=10, test_subset=21)
    with pytest.raises(ValueError, match="head_tail, stratified"):
        make_splits(folder_cache, method="random")
    with pytest.raises(DataError, match="cifarlab prepare"):
        make_splits(folder_cache.parent / "nope.npz")


def test_a_preloaded_cache_is_read_once_and_again_when_the_file_changes(
        folder_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    cache = tmp_path / "c.npz"
    cache.write_bytes(folder_cache.read_bytes())
    data.preload_cache(cache)
    reads: list[object] = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: reads.append(a) or real_load(*a, **k))
    got = load_cache(cache)
    assert not reads  # served from memory: the worker's forked runs read no file
    want = load_cache(folder_cache)  # another path: read from its file
    assert len(reads) == 1
    assert all(np.array_equal(got[k], want[k]) for k in want)
    got["train_images"] = None  # a caller's dict is its own: the kept one is untouched
    assert load_cache(cache)["train_images"] is not None and len(reads) == 1
    st = cache.stat()  # the file re-prepared (a new mtime): read again, not the old arrays
    os.utime(cache, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    load_cache(cache)
    assert len(reads) == 2


_DECODE_CHUNK = data._decode_chunk


def _decode_chunk_noting_pid(lo: int, hi: int) -> np.ndarray:
    # Runs where prepare's pool runs it: each process leaves its pid as a file name.
    (Path(os.environ["TEST_DECODE_PIDS"]) / str(os.getpid())).touch()
    return _DECODE_CHUNK(lo, hi)


@pytest.mark.parametrize("as_tarball", [False, True])
def test_folder_decoded_in_parallel_gives_the_same_cache(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_tarball: bool) -> None:
    """Forked decoding processes (chunks of 7 images here) write the same arrays and
    checksum as decoding in-process."""
    source = _tar_dir(folder, tmp_path / "f.tgz") if as_tarball else folder
    one = prepare("folder", str(source), tmp_path / "one.npz", progress=False, workers=1)
    monkeypatch.setattr(data, "_PARALLEL_DECODE_MIN", 1)
    monkeypatch.setattr(data, "_DECODE_CHUNK", 7)
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setenv("TEST_DECODE_PIDS", str(pids))
    monkeypatch.setattr(data, "_decode_chunk", _decode_chunk_noting_pid)
    two = prepare("folder", str(source), tmp_path / "two.npz", progress=False, workers=2)
    decoders = {int(f.name) for f in pids.iterdir()}
    assert decoders and os.getpid() not in decoders  # 10 chunks, all in forked processes
    assert two["source_checksum"] == one["source_checksum"]
    a, b = load_cache(tmp_path / "one.npz"), load_cache(tmp_path / "two.npz")
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(a[key], b[key])
    _check_folder_cache(b)
    assert data._DECODING is None  # the processes' view of the tree is not kept


def test_folder_bad_image_in_a_forked_chunk(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A file no process can decode stops prepare with the same error, naming the file,
    and writes no cache."""
    root = _make_folder(tmp_path / "f", n_train=3, n_test=1)
    bad = root / "train" / "truck" / "zzz.png"  # sorted last of train/: in the last chunks
    bad.write_bytes(b"not an image at all")
    monkeypatch.setattr(data, "_PARALLEL_DECODE_MIN", 1)
    monkeypatch.setattr(data, "_DECODE_CHUNK", 4)
    with pytest.raises(DataError, match="not an image PIL can read") as err:
        prepare("folder", str(root), tmp_path / "c.npz", progress=False, workers=2)
    assert str(bad) in str(err.value)
    assert not (tmp_path / "c.npz").exists()
    assert data._DECODING is None


def test_decode_workers_default() -> None:
    assert 1 <= data.decode_workers() <= 8
