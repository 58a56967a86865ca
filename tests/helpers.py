"""Test fixtures that need no network and no ../shared: a tiny CIFAR-10 in the official
format (learnable: each class has its own colour pattern) and a local HTTP server."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import pickle
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3072) uint8 rows (CHW order) and labels; class k has a distinct mean colour."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    base = np.linspace(30, 225, 10)
    imgs = rng.normal(0, 40, size=(n, 3, 32, 32))
    imgs[:, 0] += base[labels][:, None, None]
    imgs[:, 1] += base[::-1][labels][:, None, None]
    imgs[:, 2, :16] += 60 * (labels % 2)[:, None, None]
    return np.clip(imgs, 0, 255).astype(np.uint8).reshape(n, -1), labels


def make_official_archive(path: Path, per_batch: int = 60, seed: int = 0) -> str:
    """Write a cifar-10-python.tar.gz look-alike; returns its MD5.

    Byte for byte the same every time (no timestamps), so its MD5, and the ids of the runs
    trained on it, do not change when `make smoke` builds it again.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, \
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        def add(name: str, obj: dict) -> None:
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))

        for i in range(1, 6):
            data, labels = synthetic_images(per_batch, seed + i)
            add(f"data_batch_{i}", {b"batch_label": f"training batch {i} of 5".encode(),
                                    b"labels": labels.tolist(), b"data": data,
                                    b"filenames": [b"x.png"] * per_batch})
        data, labels = synthetic_images(per_batch, seed + 99)
        add("test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": labels.tolist(),
                           b"data": data, b"filenames": [b"x.png"] * per_batch})
        add("batches.meta", {b"label_names": [c.encode() for c in (
            "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
            "truck")], b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    return hashlib.md5(path.read_bytes()).hexdigest()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@contextlib.contextmanager
def serve_directory(directory: Path):
    """Serve ``directory`` on http://127.0.0.1:<port>/ for the duration of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler,
                                                           directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":  # `make smoke`: build the tiny archive, print its MD5
    import sys

    print(make_official_archive(Path(sys.argv[1]), per_batch=100))
