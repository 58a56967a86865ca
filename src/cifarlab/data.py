"""CIFAR-10 sources, safe tarball reading, a uint8 cache, and the study's splits.

Three sources build the same cache (`prepare`):

* ``url``: the official ``cifar-10-python.tar.gz`` fetched over http(s):// or file://,
  MD5-checked before anything is unpacked;
* ``archive``: the same archive already on disk, or the ``cifar-10-batches-py/`` folder
  extracted from it (what ``torchvision.datasets.CIFAR10(download=True)`` leaves), read
  with the same restricted unpickler and checks and giving the same arrays;
* ``folder``: an image-folder dataset (``train/<class>/*``, ``test/<class>/*``) as a
  directory or a tarball.

The cache is an uncompressed ``.npz`` (loads in a fraction of a second, no pickle) holding
uint8 images in NCHW layout. `make_splits` turns it into torch tensors.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import http.client
import io
import json
import logging
import multiprocessing
import os
import pickle
import secrets
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
import torch

log = logging.getLogger("cifarlab.data")

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
SOURCE_KINDS = ("url", "archive", "folder")
SPLIT_METHODS = ("auto", "head_tail", "stratified")

ARCHIVE_NAME = "cifar-10-python.tar.gz"
_BATCH_DIR = "cifar-10-batches-py"
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_BATCH_FILES = (*_TRAIN_BATCHES, "test_batch", "batches.meta")
_IMAGE_SHAPE = (3, 32, 32)
_CACHE_KEYS = (
    "train_images",
    "train_labels",
    "test_images",
    "test_labels",
    "classes",
    "source_kind",
    "source_checksum",
)
_CHUNK = 1 << 20
_URL_TIMEOUT_S = 60.0
_FOLDER_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_MD5_KEYS = "data.md5 in the config, --md5 on the command line; none skips the check"


class DataError(RuntimeError):
    """A user-facing data problem; the message says what is wrong and what to do."""


# --------------------------------------------------------------------------- checksums


def _file_digests(path: Path, *algorithms: str) -> list[str]:
    hashers = [hashlib.new(a) for a in algorithms]
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            for h in hashers:
                h.update(chunk)
    return [h.hexdigest() for h in hashers]


def _normalize_md5(md5: str | None) -> str | None:
    if md5 is None:
        return None
    value = md5.strip().lower()
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise DataError(
            f"{md5!r} is not an MD5 hex digest (32 hex characters); pass the archive's MD5, "
            f"e.g. {OFFICIAL_MD5} for the official CIFAR-10 archive, or none to skip the check"
        )
    return value


def _check_md5(path: Path, actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected:
        raise DataError(
            f"MD5 of {path} is {actual}, expected {expected}: the file is corrupted or not the "
            f"expected archive; delete it and download it again, or set the right MD5 "
            f"({_MD5_KEYS})"
        )


# --------------------------------------------------------------------------- unpickling

# Only what pickled numpy arrays and plain containers need (`_codecs.encode` is how Python 3
# writes bytes at protocol 2). Anything else in a CIFAR batch file means the file is not what
# it claims to be, and unpickling it could run arbitrary code.
_NUMPY_MULTIARRAY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_SAFE_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int", "float",
     "complex", "bool"}
)


def _multiarray() -> Any:
    # Resolve directly instead of importing `numpy.core`, which is a deprecated shim in numpy 2.
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


def _resolve_allowed(module: str, name: str) -> Any:
    if module in _NUMPY_MULTIARRAY_MODULES and name in ("_reconstruct", "scalar"):
        return getattr(_multiarray(), name)
    if module == "numpy" and name == "ndarray":
        return np.ndarray
    if module == "numpy" and name == "dtype":
        return np.dtype
    if module == "_codecs" and name == "encode":
        import _codecs

        return _codecs.encode
    if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
        import builtins

        return getattr(builtins, name)
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and plain containers, and nothing else."""

    def __init__(self, file: BinaryIO, what: str) -> None:
        super().__init__(file, encoding="bytes")
        self._what = what

    def find_class(self, module: str, name: str) -> Any:
        obj = _resolve_allowed(module, name)
        if obj is None:
            raise DataError(
                f"refusing to unpickle {module}.{name} from {self._what}: a CIFAR-10 batch only "
                "holds numpy arrays and lists, so this file is not a genuine CIFAR-10 archive; "
                "download the official archive again and keep the MD5 check on"
            )
        return obj


def _unpickle(raw: bytes, what: str) -> Any:
    try:
        return _RestrictedUnpickler(io.BytesIO(raw), what).load()
    except DataError:
        raise
    except Exception as e:  # any malformed pickle: UnpicklingError, EOFError, ValueError, ...
        raise DataError(
            f"cannot unpickle {what}: {type(e).__name__}: {e}; the archive is corrupted, "
            "download it again"
        ) from e


# --------------------------------------------------------------------------- official archive


def _member_basename(name: str) -> str | None:
    """`cifar-10-batches-py/<file>` -> `<file>`; None for anything else."""
    parts = PurePosixPath(name).parts
    if len(parts) == 2 and parts[0] == _BATCH_DIR:
        return parts[1]
    return None


def _parse_batch(obj: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A batch dict -> (images uint8 (N,3,32,32), labels uint8 (N,))."""
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        raise DataError(
            f"{what} is not a CIFAR-10 batch (expected a dict with b'data' and b'labels'); "
            "download the official archive again"
        )
    data, labels = obj[b"data"], np.asarray(obj[b"labels"])
    n_pixels = int(np.prod(_IMAGE_SHAPE))
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != n_pixels
        or labels.shape != (data.shape[0],)
        or (labels.size and labels.dtype.kind not in "iu")
        or (labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)))
    ):
        raise DataError(
            f"{what} has an unexpected layout (data {getattr(data, 'shape', None)}, "
            f"labels {labels.shape}); expected uint8 (N, 3072) and N labels in 0..9; "
            "download the official archive again"
        )
    # Rows are row-major CHW (1024 red, 1024 green, 1024 blue), so a reshape is the layout.
    return data.reshape(-1, *_IMAGE_SHAPE), labels.astype(np.uint8)


def _official_arrays(raw: dict[str, Any], where: str, sep: str) -> dict[str, np.ndarray]:
    """The unpickled batches (``{"data_batch_1": obj, ..., "batches.meta": obj}``) of the
    official archive or its extracted folder -> the cache's arrays; a batch is named
    ``where + sep + name`` in messages."""
    meta = raw["batches.meta"]
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    decoded = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names or ())
    if decoded != CLASSES:
        raise DataError(
            f"{where}: batches.meta label_names are {list(decoded)}, expected {list(CLASSES)}; "
            "this is not CIFAR-10 (perhaps CIFAR-100?); use the CIFAR-10 python archive"
        )
    train = [_parse_batch(raw[b], f"{where}{sep}{b}") for b in _TRAIN_BATCHES]
    test_images, test_labels = _parse_batch(raw["test_batch"], f"{where}{sep}test_batch")
    return {
        "train_images": np.concatenate([t[0] for t in train]),
        "train_labels": np.concatenate([t[1] for t in train]),
        "test_images": test_images,
        "test_labels": test_labels,
    }


def _read_official(path: Path) -> dict[str, np.ndarray]:
    raw: dict[str, Any] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            # One sequential pass: seeking backwards in a .gz means decompressing again.
            for member in tar:
                base = _member_basename(member.name)
                if base not in _BATCH_FILES:
                    continue
                if not member.isreg():
                    raise DataError(
                        f"{path}: member {member.name} is not a regular file; this is not the "
                        "official CIFAR-10 archive, download it again"
                    )
                f = tar.extractfile(member)
                assert f is not None  # regular files always have a file object
                raw[base] = _unpickle(f.read(), f"{path}:{member.name}")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
        raise DataError(
            f"cannot read {path} as a tar archive ({type(e).__name__}: {e}): it is truncated or "
            "corrupted; delete it and download it again"
        ) from e
    missing = [m for m in _BATCH_FILES if m not in raw]
    if missing:
        raise DataError(
            f"{path} lacks {', '.join(f'{_BATCH_DIR}/{m}' for m in missing)}: it is not the "
            "official CIFAR-10 python archive; download cifar-10-python.tar.gz again"
        )
    return _official_arrays(raw, str(path), ":")


# --------------------------------------------------------------------------- extracted archive

# The MD5 of each file of the official archive, as torchvision's CIFAR10 checks them
# (torchvision/datasets/cifar.py): an extracted folder whose files all match holds exactly
# the official archive's data, so it gets the archive's checksum (OFFICIAL_MD5) and runs
# trained on either are the same runs.
_OFFICIAL_FILE_MD5S = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


def _batch_dir(location: Path) -> Path:
    """The folder holding the batch files: `location` itself (``.../cifar-10-batches-py``),
    or its ``cifar-10-batches-py/`` (the `root` torchvision was given). DataError, naming
    the missing files and the fix, unless every batch file is there."""
    direct = [n for n in _BATCH_FILES if (location / n).exists()]
    nested = location / _BATCH_DIR
    folder = location if direct or not nested.is_dir() else nested
    missing = [n for n in _BATCH_FILES if not (folder / n).is_file()]
    if not missing:
        return folder
    if folder is location and not direct:
        what = f"{location} holds neither the CIFAR-10 batch files nor a {_BATCH_DIR}/ folder"
    else:
        what = f"{folder} lacks {', '.join(missing)}"
    extract = f"tar xzf {ARCHIVE_NAME} makes {_BATCH_DIR}/"
    if (location / ARCHIVE_NAME).is_file():
        hints = [f"{location / ARCHIVE_NAME} is there: point data.path (--path) at it, or "
                 f"extract it again ({extract})"]
    else:
        hints = [f"extract {ARCHIVE_NAME} again ({extract}), or point data.path (--path) at "
                 "the .tar.gz itself"]
    if (location / "train").is_dir() and (location / "test").is_dir():
        hints.append("an image folder (train/<class>/*) is read by data.source 'folder'")
    raise DataError(
        f"{what}: an extracted CIFAR-10 python archive needs all of "
        f"{', '.join(_BATCH_FILES)}; {'; '.join(hints)}"
    )


def _read_batch_dir(location: Path, md5: str | None) -> tuple[dict[str, np.ndarray], str]:
    """Read an extracted official archive with the archive's checks; return (arrays,
    checksum).

    With the official MD5 (the default), every file is checked against the official
    archive's per-file MD5s, before anything is unpickled; without one (md5 None) only the
    restricted unpickler and the layout checks guard. The checksum is OFFICIAL_MD5 when all
    files are the official ones, otherwise a sha256 over the files' names and MD5s.
    """
    if md5 is not None and md5 != OFFICIAL_MD5:
        raise DataError(
            f"{location} is an extracted folder, and an MD5 ({md5}) can only check an archive; "
            "point data.path (--path) at the .tar.gz to check it, or set data.md5 (--md5) to "
            "none: the files are still read with the restricted unpickler and checked"
        )
    folder = _batch_dir(location)
    raw_bytes: dict[str, bytes] = {}
    digests: dict[str, str] = {}
    for name in _BATCH_FILES:
        path = folder / name
        try:
            raw_bytes[name] = path.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read {path} ({e}); check its permissions") from e
        digests[name] = hashlib.md5(raw_bytes[name]).hexdigest()
    official = all(digests[n] == _OFFICIAL_FILE_MD5S[n] for n in _BATCH_FILES)
    if md5 is not None and not official:
        bad = [n for n in _BATCH_FILES if digests[n] != _OFFICIAL_FILE_MD5S[n]]
        details = "; ".join(
            f"{folder / n} is {digests[n]}, expected {_OFFICIAL_FILE_MD5S[n]}" for n in bad
        )
        raise DataError(
            f"MD5 mismatch in the extracted CIFAR-10 folder {folder}: {details}. The files are "
            f"corrupted or not the official ones; extract {ARCHIVE_NAME} again (or use the "
            "'url' source), or set data.md5 (--md5) to none to read them unchecked"
        )
    raw = {}
    for name in _BATCH_FILES:
        raw[name] = _unpickle(raw_bytes.pop(name), str(folder / name))
    if official:
        checksum = OFFICIAL_MD5
    else:
        listing = "".join(f"{digests[n]}  {n}\n" for n in _BATCH_FILES)
        checksum = hashlib.sha256(listing.encode()).hexdigest()
    return _official_arrays(raw, str(folder), "/"), checksum


# --------------------------------------------------------------------------- progress

# A log line per tenth of the work, or per 30 s when that takes longer (or the size is
# unknown), whichever comes first.
_LOG_STEPS = 10
_LOG_INTERVAL_S = 30.0
_MIB = float(1 << 20)


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class _Progress:
    """Progress of a download (unit "B") or of decoding (any other unit) on stderr.

    On a terminal: a tqdm bar. Otherwise (a log: the pipeline runs ``cifarlab prepare ... >
    log 2>&1``) plain lines, one per 10 % or per 30 s, whichever comes first, and a last one
    with the total and the mean rate, e.g. ``cifar-10-python.tar.gz: 34.0 of 162.6 MiB
    (21%), 5.1 MiB/s, 25 s left``, instead of a carriage-return update every 0.1 s. Disabled:
    silent. Use as a context manager; the last line is written only when the work completes.
    """

    def __init__(self, total: int | None, desc: str, unit: str, enabled: bool = True,
                 stream: Any = None) -> None:
        self.total = total if total else None  # 0 or unknown: no percentages
        self.desc, self.unit, self.enabled = desc, unit, enabled
        self.stream = sys.stderr if stream is None else stream
        self.done = 0
        self._bar: Any = None
        self._start = self._last_time = time.monotonic()
        self._next_step = 1  # the next line at done / total >= _next_step / _LOG_STEPS
        if enabled and _is_tty(self.stream):
            from tqdm import tqdm

            if unit == "B":
                self._bar = tqdm(total=self.total, desc=desc, unit="B", unit_scale=True,
                                 unit_divisor=1024, file=self.stream)
            else:
                self._bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream,
                                 mininterval=1.0)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        self.close(completed=exc_type is None)

    def _amount(self, n: float) -> str:
        return f"{n / _MIB:.1f}" if self.unit == "B" else f"{n:.0f}"

    def _unit(self) -> str:
        return "MiB" if self.unit == "B" else self.unit

    def _rate(self, elapsed: float) -> str:
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return f"{self._amount(rate)} {self._unit()}/s"

    def _write(self, text: str) -> None:
        self.stream.write(f"{self.desc}: {text}\n")
        self.stream.flush()

    def update(self, n: int) -> None:
        """Count `n` more units done."""
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        total = self.total
        # In integers: 0.1 + 0.1 + 0.1 > 0.3. 100 % is said by close()'s summary line.
        by_step = total is not None and self.done * _LOG_STEPS >= self._next_step * total
        if total is not None and self.done >= total:
            return
        if not (by_step or now - self._last_time >= _LOG_INTERVAL_S):
            return
        elapsed = now - self._start
        rate = self._rate(elapsed)
        if total is None:
            self._write(f"{self._amount(self.done)} {self._unit()} so far, {rate}")
        else:
            fraction = self.done / total
            left = elapsed * (1 - fraction) / fraction if fraction else 0.0
            self._write(f"{self._amount(self.done)} of {self._amount(total)} "
                        f"{self._unit()} ({fraction:.0%}), {rate}, {left:.0f} s left")
            while self.done * _LOG_STEPS >= self._next_step * total:
                self._next_step += 1
        self._last_time = now

    def close(self, completed: bool = True) -> None:
        """End the bar; in a log, write the summary line if the work `completed`."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and completed:
            elapsed = time.monotonic() - self._start
            self._write(f"{self._amount(self.done)} {self._unit()} in {elapsed:.1f} s "
                        f"({self._rate(elapsed)})")
        self.enabled = False  # closing twice writes nothing more


# --------------------------------------------------------------------------- download

# Why not torchvision.datasets.utils.download_url (torchvision 0.29.1)? It cannot keep what
# this downloader guarantees:
# * it writes straight to the final name: an interrupted or short download is left there,
#   and with no MD5 (`none`) check_integrity() then takes it as complete; a failed MD5 check
#   leaves the bad file in place too;
# * a body shorter than its Content-Length passes silently (http.client does not raise);
# * file:// URLs fail (AttributeError: the file response has no `.length`) after creating
#   an empty file under the final name;
# * its errors carry no hint: a bare URLError, or "File not found or corrupted." with no
#   expected or actual MD5; a failed https download is retried over plain http;
# * _get_redirect_url sends a full GET (a "Method: HEAD" header, not a HEAD request) before
#   the real one: each download is requested twice, and 4 times after one redirect;
# * progress is tqdm with no switch and no choice of stream: carriage-return updates every
#   0.1 s in a log file; and urlopen has no timeout, so a stalled server hangs the job.
# urllib here follows redirects itself (one GET per hop), reads file:// and http:// alike,
# and check_integrity/calculate_md5 would only hash the file a second time.


def _download(url: str, dest: Path, md5: str | None, workdir: Path, progress: bool) -> str:
    """Stream `url` into `dest`, check its MD5, return the MD5.

    The bytes go to a hidden ``.cifar-10-python.tar.gz.*.part`` file in `workdir` that is
    renamed to `dest` only once the download is whole and its MD5 matches, and removed on
    any failure or interruption: a partial download never looks complete.
    """
    hint = (
        f"check the address and your connection, use a mirror (data.url, --url; file:// "
        f"works), or download {ARCHIVE_NAME} yourself and use the 'archive' source "
        "(data.path: the .tar.gz or its extracted cifar-10-batches-py/), or an image folder "
        "('folder')"
    )
    fd, tmp_name = tempfile.mkstemp(dir=workdir, prefix=f".{ARCHIVE_NAME}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        received, total = 0, None
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=_URL_TIMEOUT_S) as resp:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    size = f"{total / _MIB:.1f} MiB" if total is not None else "size unknown"
                    log.info("downloading %s (%s) to %s", url, size, dest)
                    with _Progress(total, ARCHIVE_NAME, "B", progress) as bar:
                        while chunk := resp.read(_CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            received += len(chunk)
                            bar.update(len(chunk))
            except urllib.error.HTTPError as e:
                raise DataError(
                    f"downloading {url} failed: HTTP {e.code} {e.reason}; {hint}"
                ) from e
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
                reason = getattr(e, "reason", e)
                raise DataError(f"downloading {url} failed: {reason}; {hint}") from e
        if total is not None and received != total:
            raise DataError(
                f"downloading {url} stopped early: got {received} of {total} bytes; "
                f"retry, or {hint}"
            )
        actual = digest.hexdigest()
        if md5 is not None and actual != md5:
            raise DataError(
                f"MD5 of the download from {url} is {actual}, expected {md5}: the server sent a "
                "corrupted or different file (nothing was kept or unpacked); retry, set the "
                f"right MD5 ({_MD5_KEYS}), or {hint}"
            )
        os.replace(tmp, dest)
        return actual
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- image folders


def _check_tar_member(member: tarfile.TarInfo, tar_path: Path) -> str:
    """The member's normalized relative path; DataError if the member is unsafe."""
    name = member.name
    refuse = f"{tar_path}: refusing member {name!r}"
    todo = "; the tarball is unsafe or not an image-folder dataset, rebuild it from plain files"
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or ":" in name[:3]:
        raise DataError(f"{refuse}: absolute path{todo}")
    parts = PurePosixPath(name).parts
    if ".." in parts or "\\" in name:
        raise DataError(f"{refuse}: path with '..' or backslashes{todo}")
    if member.issym() or member.islnk():
        raise DataError(f"{refuse}: links are not allowed (-> {member.linkname!r}){todo}")
    if not (member.isreg() or member.isdir()):
        raise DataError(f"{refuse}: device, fifo or other special file{todo}")
    return "/".join(parts)  # PurePosixPath already dropped "." and empty components


class _DirTree:
    """An image-folder dataset in a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def is_dir(self, rel: str) -> bool:
        return (self.root / rel).is_dir()

    def is_file(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def listdir(self, rel: str) -> list[str]:
        return os.listdir(self.root / rel)

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def where(self, rel: str) -> str:
        return str(self.root / rel)


class _TarTree:
    """An image-folder tarball, vetted member by member and held in memory (~60 MB for
    CIFAR-10) instead of extracted: nothing is ever written to disk, so no member can land
    outside a target, and 60,000 file creations (slow on many filesystems) are avoided."""

    def __init__(self, tar_path: Path) -> None:
        self.tar_path = tar_path
        self.files: dict[str, bytes] = {}
        self.children: dict[str, set[str]] = {"": set()}
        try:
            with tarfile.open(tar_path, "r:*") as tar:
                for member in tar:  # one sequential pass over the (gzip) stream
                    rel = _check_tar_member(member, tar_path)
                    if not rel:
                        continue
                    if member.isreg():
                        f = tar.extractfile(member)
                        assert f is not None  # regular files always have a file object
                        self.files[rel] = f.read()
                    else:
                        self.children.setdefault(rel, set())
                    self._link_parents(rel)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
            raise DataError(
                f"cannot read {tar_path} ({type(e).__name__}: {e}): it is truncated or "
                "corrupted; download or build it again"
            ) from e

    def _link_parents(self, rel: str) -> None:
        parent, _, name = rel.rpartition("/")
        while True:
            siblings = self.children.setdefault(parent, set())
            if name in siblings:
                return
            siblings.add(name)
            if not parent:
                return
            parent, _, name = parent.rpartition("/")

    def is_dir(self, rel: str) -> bool:
        return rel in self.children and rel not in self.files

    def is_file(self, rel: str) -> bool:
        return rel in self.files

    def listdir(self, rel: str) -> list[str]:
        return list(self.children[rel])

    def read(self, rel: str) -> bytes:
        return self.files[rel]

    def where(self, rel: str) -> str:
        return f"{self.tar_path}:{rel}"


_Tree = _DirTree | _TarTree


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _visible(names: list[str]) -> list[str]:
    # Hidden entries (.DS_Store, macOS "._x.jpg" resource forks) are never images.
    return sorted(n for n in names if not n.startswith("."))


def _folder_root(tree: _Tree) -> str:
    """The relative directory holding train/ and test/ (allowing one wrapping directory)."""

    def has_splits(rel: str) -> bool:
        return tree.is_dir(_join(rel, "train")) and tree.is_dir(_join(rel, "test"))

    if has_splits(""):
        return ""
    subdirs = [n for n in _visible(tree.listdir("")) if tree.is_dir(n)]
    if len(subdirs) == 1 and has_splits(subdirs[0]):
        return subdirs[0]
    hint = ""
    if tree.is_dir(_BATCH_DIR) or tree.is_file("data_batch_1"):
        hint = ("; this is the official python archive or its extracted "
                f"{_BATCH_DIR}/ folder: use data.source 'archive' (--source archive)")
    raise DataError(
        f"{tree.where('')} has no train/ and test/ directories: an image-folder dataset needs "
        f"train/<class>/*.png|jpg and test/<class>/*.png|jpg{hint}"
    )


def _list_folder(tree: _Tree, root: str) -> dict[str, list[tuple[str, int]]]:
    """{'train'|'test': [(path relative to root, label)]} in class order, sorted filenames."""
    listing: dict[str, list[tuple[str, int]]] = {}
    for split in ("train", "test"):
        split_dir = _join(root, split)
        found = {n for n in _visible(tree.listdir(split_dir)) if tree.is_dir(_join(split_dir, n))}
        missing, extra = sorted(set(CLASSES) - found), sorted(found - set(CLASSES))
        if missing or extra:
            raise DataError(
                f"{tree.where(split_dir)}: class folders must be exactly {list(CLASSES)}; "
                f"missing {missing}, extra {extra}; rename or remove folders to match"
            )
        entries = []
        for label, cls in enumerate(CLASSES):
            for name in _visible(tree.listdir(_join(split_dir, cls))):
                rel = f"{split}/{cls}/{name}"
                if not tree.is_file(_join(root, rel)):
                    raise DataError(
                        f"{tree.where(_join(root, rel))} is not a file: class folders must hold "
                        "only images; move it out"
                    )
                entries.append((rel, label))
        if not entries:
            raise DataError(
                f"{tree.where(split_dir)} holds no images; add images under {split}/<class>/"
            )
        listing[split] = entries
    return listing


def _decode(raw: bytes, where: str) -> np.ndarray:
    """Encoded PNG/JPEG bytes -> uint8 (32, 32, 3) RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.format not in ("PNG", "JPEG"):
                raise DataError(f"{where} is {im.format}, not PNG or JPEG; convert or remove it")
            if im.size != (32, 32):
                raise DataError(
                    f"{where} is {im.size[0]}x{im.size[1]}, expected 32x32: CIFAR-10 images "
                    "are 32x32; resize it or remove it"
                )
            # convert() copies even when the mode is already RGB: skip it for speed.
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except UnidentifiedImageError:
        # PIL's own message names an anonymous BytesIO object, not the file.
        raise DataError(f"{where} is not an image PIL can read (not a PNG or JPEG); replace "
                        "or remove the file") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode {where} ({e}); replace or remove the file") from e


# What the forked decoding processes read (inherited, never pickled): the tree, its root
# and the sorted jobs. Set only while a pool of them runs.
_DECODING: tuple[Any, str, list[tuple[str, str, int]]] | None = None
# Fewer images than this are decoded in-process: forking would cost more than it saves.
_PARALLEL_DECODE_MIN = 4096
_DECODE_CHUNK = 2000  # images per task: ~0.3 s of decoding, 30 progress updates for 60,000


def _decode_jobs(tree: Any, root: str, jobs: list[tuple[str, str, int]],
                 bar: Any = None) -> np.ndarray:
    """Decode ``jobs`` in order into a uint8 (len(jobs), 32, 32, 3) array (``bar``, when
    given, counts each image)."""
    out = np.empty((len(jobs), 32, 32, 3), np.uint8)
    for k, (rel, _, _) in enumerate(jobs):
        out[k] = _decode(tree.read(_join(root, rel)), tree.where(_join(root, rel)))
        if bar is not None:
            bar.update(1)
    return out


def _decode_chunk(lo: int, hi: int) -> np.ndarray:
    # In a forked process: the tree and jobs are the parent's (_DECODING), read-only.
    assert _DECODING is not None, "set by _read_folder before the processes fork"
    tree, root, jobs = _DECODING
    return _decode_jobs(tree, root, jobs[lo:hi])


def decode_workers() -> int:
    """The processes `prepare` decodes an image folder with by default: the CPUs this
    process may use (its affinity), at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _decoded_chunks(tree: Any, root: str, jobs: list[tuple[str, str, int]], workers: int,
                    bar: Any) -> Iterator[tuple[int, np.ndarray]]:
    """(start, images) for consecutive chunks of ``jobs``, in order. With ``workers`` > 1
    (and fork available: Linux) the chunks are decoded by that many forked processes (the
    real 60,000 JPEGs on 2 cores: 7.2 s with 2 processes, 10.2 s in one); a bad image
    raises the same DataError either way, the first in sorted order."""
    global _DECODING
    parallel = (workers > 1 and len(jobs) >= _PARALLEL_DECODE_MIN and sys.platform == "linux"
                and "fork" in multiprocessing.get_all_start_methods())
    if not parallel:
        for lo in range(0, len(jobs), _DECODE_CHUNK):
            yield lo, _decode_jobs(tree, root, jobs[lo:lo + _DECODE_CHUNK], bar)
        return
    _DECODING = (tree, root, jobs)
    try:
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            starts = range(0, len(jobs), _DECODE_CHUNK)
            futures = [pool.submit(_decode_chunk, lo, min(lo + _DECODE_CHUNK, len(jobs)))
                       for lo in starts]
            try:
                for lo, future in zip(starts, futures, strict=True):
                    part = future.result()  # a DataError in the process is raised here
                    yield lo, part
                    bar.update(len(part))
            finally:
                for future in futures:
                    future.cancel()
    finally:
        _DECODING = None


def _read_folder(
    tree: _Tree, hash_files: bool, progress: bool, workers: int = 1
) -> tuple[dict[str, np.ndarray], str]:
    """Decode an image-folder tree (in ``workers`` processes); also return a sha256 over
    sorted relative paths + bytes."""
    root = _folder_root(tree)
    listing = _list_folder(tree, root)
    # NHWC while decoding (what PIL gives), transposed to NCHW once at the end.
    images = {s: np.empty((len(e), 32, 32, 3), np.uint8) for s, e in listing.items()}
    labels = {s: np.array([lab for _, lab in e], np.uint8) for s, e in listing.items()}
    jobs = [(rel, split, i) for split, e in listing.items() for i, (rel, _) in enumerate(e)]
    jobs.sort()  # sorted relative paths: the order the checksum is defined over
    digest = hashlib.sha256()
    if hash_files:  # in this process, in sorted order, before the chunks decode
        for rel, _, _ in jobs:
            raw = tree.read(_join(root, rel))
            digest.update(rel.encode() + b"\0" + len(raw).to_bytes(8, "little"))
            digest.update(raw)
    with _Progress(len(jobs), "decoding images", "images", progress) as bar:
        for lo, part in _decoded_chunks(tree, root, jobs, workers, bar):
            for (_, split, i), image in zip(jobs[lo:lo + len(part)], part, strict=True):
                images[split][i] = image
    arrays = {}
    for split in ("train", "test"):
        arrays[f"{split}_images"] = np.ascontiguousarray(images[split].transpose(0, 3, 1, 2))
        arrays[f"{split}_labels"] = labels[split]
    return arrays, digest.hexdigest()


def _prepare_folder(
    location: Path, md5: str | None, progress: bool, workers: int = 1
) -> tuple[dict[str, np.ndarray], str]:
    if location.is_dir():
        if md5 is not None and md5 != OFFICIAL_MD5:
            raise DataError(
                f"an MD5 was given but {location} is a directory; an MD5 can only check a "
                "tarball, so drop --md5 or point at the .tar.gz"
            )
        return _read_folder(_DirTree(location), hash_files=True, progress=progress,
                            workers=workers)
    if not location.exists():
        raise DataError(
            f"{location} does not exist; point the 'folder' source (config key data.path) at "
            "an image-folder directory or its .tar.gz"
        )
    if not (location.is_file() and location.name.lower().endswith(_FOLDER_TAR_SUFFIXES)):
        raise DataError(
            f"{location} is neither a directory nor a .tar.gz/.tgz/.tar file; point the 'folder' "
            "source at an image-folder directory or its tarball"
        )
    sha256, actual_md5 = _file_digests(location, "sha256", "md5")
    # The default md5 is the official archive's, which no image-folder tarball can have.
    if md5 is not None and md5 != OFFICIAL_MD5:
        _check_md5(location, actual_md5, md5)
    arrays, _ = _read_folder(_TarTree(location), hash_files=False, progress=progress,
                             workers=workers)
    return arrays, sha256


# --------------------------------------------------------------------------- cache


def _write_cache(out: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an uncompressed .npz atomically: a reader sees the old file or the whole new one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}-{secrets.token_hex(4)}")
    try:
        # A file object, because np.savez appends ".npz" to a path that lacks it.
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def manifest_path(cache: str | Path) -> Path:
    """The manifest beside a cache: ``cifar10.npz`` -> ``cifar10.json``."""
    return Path(cache).with_suffix(".json")


def read_manifest(cache: str | Path) -> dict | None:
    """What the cache holds, without loading its images: identity, checksum, counts, and
    the arguments it was prepared with.

    The facts are read from the cache itself (a few small arrays of the .npz), so a
    manifest that Snakemake deleted after a failed prepare, or one left beside another
    cache, cannot mislead. None when there is no readable cache, or it predates
    identities (prepare it again).
    """
    cache = Path(cache)
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            if "source_identity" not in z.files:
                return None
            meta = {"cache": cache.name, "identity": str(z["source_identity"]),
                    "source_kind": str(z["source_kind"]),
                    "checksum": str(z["source_checksum"]),
                    "n_train": int(z["train_labels"].shape[0]),
                    "n_test": int(z["test_labels"].shape[0]),
                    "request": str(z["source_request"]) if "source_request" in z.files
                    else ""}
    except Exception:  # an unreadable cache: prepare it again (load_cache says why)
        return None
    return meta


def write_manifest(cache: Path, meta: dict) -> None:
    """Write the manifest beside ``cache`` atomically."""
    path = manifest_path(cache)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, path)


def prepare(
    kind: str,
    location: str,
    out: Path,
    md5: str | None = OFFICIAL_MD5,
    workdir: Path | None = None,
    progress: bool = True,
    identity: str = "",
    request: str = "",
    workers: int | None = None,
) -> dict:
    """Build the uint8 cache `out` from a CIFAR-10 source and return its metadata.

    kind: "url" (http://, https://, file:// of the official archive), "archive" (the
    official archive on disk, or the folder extracted from it: ``cifar-10-batches-py/``
    itself or the folder holding it, as ``torchvision.datasets.CIFAR10(root,
    download=True)`` leaves ``root``) or "folder" (image-folder directory or tarball).
    md5: expected MD5 of the archive/tarball; None skips the check (pickles are still only
    read with a restricted unpickler). For "folder" the default (official) MD5 is ignored.
    An extracted archive is checked file by file against the official archive's files when
    md5 is the official MD5 (then its checksum is the official MD5 too); another MD5 is
    refused there, since only an archive can be checked against it.
    workdir: where the "url" source downloads to (default: out's directory); the verified
    download is kept there as cifar-10-python.tar.gz so that a rerun does not download again.
    Folder tarballs are vetted member by member (no absolute paths, "..", links or special
    files) and decoded from memory, so they write nothing to disk.
    identity: what the runs' specs call this data (``study.data_identity``); kept in the
    cache and its manifest so that a cache of another source is never trained on.
    request: the arguments this was prepared with, kept in the manifest so the planner
    sees when the configured ones differ.
    workers: processes that decode an image folder's files (None: ``decode_workers()``,
    the CPUs this process may use); the cache is the same for any number.

    The cache is replaced only once the new one is whole, so a failed prepare leaves a
    good cache as it was. Its manifest (``manifest_path(out)``) is written last.

    Returns {"path", "source_kind", "source_checksum", "n_train", "n_test", "classes",
    "identity"}.
    """
    if kind not in SOURCE_KINDS:
        raise DataError(f"unknown source kind {kind!r}; use one of {', '.join(SOURCE_KINDS)}")
    md5 = _normalize_md5(md5)
    out = Path(out).expanduser()
    workdir = Path(workdir).expanduser() if workdir is not None else out.parent

    if kind == "folder":
        arrays, checksum = _prepare_folder(Path(location).expanduser(), md5, progress,
                                           decode_workers() if workers is None else workers)
        source_kind = "folder"
    else:
        if kind == "url":
            workdir.mkdir(parents=True, exist_ok=True)
            archive = workdir / ARCHIVE_NAME
            checksum = None
            if archive.is_file() and md5 is not None:
                (existing,) = _file_digests(archive, "md5")
                checksum = existing if existing == md5 else None
            if checksum is None:
                checksum = _download(location, archive, md5, workdir, progress)
        else:
            archive = Path(location).expanduser()
            if not archive.exists():
                raise DataError(
                    f"{archive} does not exist; point the 'archive' source (config key "
                    f"data.path, --path) at {ARCHIVE_NAME} or at the {_BATCH_DIR}/ folder "
                    f"extracted from it, download {OFFICIAL_URL} there, or use the 'url' source "
                    "to download it"
                )
            if not archive.is_dir():
                (checksum,) = _file_digests(archive, "md5")
                _check_md5(archive, checksum, md5)
        if kind == "archive" and archive.is_dir():  # extracted, as torchvision leaves it
            arrays, checksum = _read_batch_dir(archive, md5)
        else:
            arrays = _read_official(archive)
        source_kind = "official"

    arrays["classes"] = np.array(CLASSES)
    arrays["source_kind"] = np.array(source_kind)
    arrays["source_checksum"] = np.array(checksum)
    arrays["source_identity"] = np.array(identity)
    arrays["source_request"] = np.array(request)
    before = read_manifest(out)
    if before is not None and before.get("checksum") != checksum:
        log.warning("the data changed: the cache held checksum %s, the source now has %s; "
                    "runs trained on the old data are trained again when next run",
                    before.get("checksum"), checksum)
    _write_cache(out, arrays)
    meta = {"cache": out.name, "identity": identity, "source_kind": source_kind,
            "checksum": checksum, "n_train": len(arrays["train_labels"]),
            "n_test": len(arrays["test_labels"]), "request": request}
    write_manifest(out, meta)
    return {
        "path": str(out),
        "source_kind": source_kind,
        "source_checksum": checksum,
        "n_train": meta["n_train"],
        "n_test": meta["n_test"],
        "classes": list(CLASSES),
        "identity": identity,
    }


def source_files(kind: str, location: str | Path) -> list[Path]:
    """The local files `prepare` reads for a source, to track changes (Snakemake inputs,
    modification times): the batch files of an extracted archive (overwriting one in place
    leaves its folder's time alone), otherwise `location` itself; none for "url".

    An extracted folder that lacks files gives `location`: `prepare` says what is missing.
    """
    if kind == "url":
        return []
    path = Path(location).expanduser()
    if kind == "archive" and path.is_dir():
        try:
            folder = _batch_dir(path)
        except DataError:
            return [path]
        return [folder / name for name in _BATCH_FILES]
    return [path]


# A cache kept in memory by preload_cache: (resolved path, mtime_ns, size) -> arrays.
_PRELOADED: dict[tuple[str, int, int], dict[str, np.ndarray]] = {}


def _cache_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def preload_cache(path: str | Path) -> None:
    """Keep the cache at ``path`` in memory: later ``load_cache`` calls for the same,
    unchanged file in this process, and in the children it forks, read no file.

    The training worker calls it before forking each run, so a run's start-up does not
    read and decompress ~180 MB (about 0.9 s of a 2-core laptop's time per run).
    """
    path = Path(path).expanduser()
    cache = load_cache(path)
    _PRELOADED.clear()  # one cache at a time: a re-prepared file replaces the old one
    _PRELOADED[_cache_key(path)] = cache


def load_cache(path: Path) -> dict[str, np.ndarray]:
    """Read a cache written by `prepare` into a dict of numpy arrays (no pickle)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"no data cache at {path}; run `cifarlab prepare` first")
    kept = _PRELOADED.get(_cache_key(path))
    if kept is not None:  # preloaded and unchanged since (same mtime and size)
        return dict(kept)
    try:
        with np.load(path, allow_pickle=False) as z:
            cache = {k: z[k] for k in z.files}
    except Exception as e:  # BadZipFile, ValueError, OSError: all mean an unusable file
        raise DataError(
            f"cannot read the data cache {path} ({type(e).__name__}: {e}); delete it and run "
            "`cifarlab prepare` again"
        ) from e
    missing = [k for k in _CACHE_KEYS if k not in cache]
    if missing:
        raise DataError(
            f"the data cache {path} lacks {missing}; it was written by another version, "
            "delete it and run `cifarlab prepare` again"
        )
    return cache


# --------------------------------------------------------------------------- splits


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, 3, 32, 32)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
    classes: list[str]
    checksum: str
    source_kind: str
    identity: str = ""  # the data's name in the runs' specs (study.data_identity)


def _quotas(counts: np.ndarray, total: int, caps: np.ndarray) -> np.ndarray:
    """Split `total` over classes in proportion to `counts` (largest remainder), each <= cap."""
    n = int(counts.sum())
    ideal = total * counts / n if n else np.zeros(len(counts))
    quota = np.minimum(np.floor(ideal).astype(np.int64), caps)
    # Hand out what rounding left, largest fractional part first (ties: lower class index);
    # repeat because caps can block a class. Loops over classes, never samples.
    while (left := total - int(quota.sum())) > 0:
        open_ = np.flatnonzero(quota < caps)
        assert open_.size, "callers keep total <= caps.sum()"
        order = open_[np.argsort(-(ideal[open_] - quota[open_]), kind="stable")]
        quota[order[:left]] += 1
    return quota


def _stratified_pick(
    labels: np.ndarray, sizes: list[int], rng: np.random.Generator
) -> list[np.ndarray]:
    """Disjoint class-stratified random index sets of the given sizes, each sorted."""
    classes = np.arange(len(CLASSES))
    counts = np.bincount(labels, minlength=len(classes))
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    used = np.zeros(len(classes), np.int64)
    picks = []
    for size in sizes:
        quota = _quotas(counts, size, counts - used)
        picks.append(
            np.sort(np.concatenate(
                [per_class[c][used[c]:used[c] + quota[c]] for c in classes]
            ).astype(np.int64))
        )
        used += quota
    return picks


def _to_split(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> Split:
    return Split(
        images=torch.from_numpy(np.ascontiguousarray(images[idx])),
        labels=torch.from_numpy(labels[idx].astype(np.int64)),
    )


def _subset_index(labels: np.ndarray, idx: np.ndarray, size: int | None, name: str,
                  seed: int, stream: int) -> np.ndarray:
    """The positions (into the pool) of a split's seeded class-stratified subset of
    ``size`` images; ``idx`` (the split's positions) itself when ``size`` is None.

    Only indices are subset: the images are copied once, by ``_to_split``, so a run on
    3,000 of the 40,000 training images copies 3,000 (copying the whole pool first made
    ``make_splits`` take 0.5-0.7 s here for the quick profile's splits, 0.02 s now).
    """
    if size is None:
        return idx
    if not 0 <= size <= len(idx):
        raise DataError(
            f"{name}_subset={size} is not possible: the {name} split has {len(idx)} images; "
            f"use a value between 0 and {len(idx)}"
        )
    # A separate stream per subset so that asking for one subset does not move the others.
    (pick,) = _stratified_pick(labels[idx].astype(np.int64), [size],
                               np.random.default_rng([seed, stream]))
    return idx[pick]


def make_splits(
    cache: Path | dict,
    n_train: int = 40000,
    n_val: int = 10000,
    method: str = "auto",
    seed: int = 0,
    train_subset: int | None = None,
    val_subset: int | None = None,
    test_subset: int | None = None,
) -> Splits:
    """Train/val from the cache's training pool, test from its test set.

    method: "head_tail" (train = first n_train, val = last n_val: the study's split of the
    official archive), "stratified" (seeded, each class proportionally in train and val), or
    "auto" (head_tail for the official source, stratified for image folders, whose files are
    ordered class by class). *_subset: optional seeded class-stratified subsets of each split.
    """
    if method not in SPLIT_METHODS:
        raise ValueError(f"unknown split method {method!r}; valid: {', '.join(SPLIT_METHODS)}")
    data = load_cache(cache) if isinstance(cache, (str, Path)) else cache
    images, labels = data["train_images"], data["train_labels"]
    source_kind = str(data["source_kind"])
    pool = len(labels)
    if n_train < 0 or n_val < 0 or n_train + n_val > pool:
        raise DataError(
            f"n_train={n_train} + n_val={n_val} = {n_train + n_val} does not fit the "
            f"{pool} training images of the cache; choose sizes that sum to at most {pool}"
        )
    if method == "auto":
        method = "head_tail" if source_kind == "official" else "stratified"
    if method == "head_tail":
        train_idx = np.arange(n_train)
        val_idx = np.arange(pool - n_val, pool)
    else:
        train_idx, val_idx = _stratified_pick(
            labels.astype(np.int64), [n_train, n_val], np.random.default_rng(seed)
        )
    test_labels = data["test_labels"]
    test_idx = _subset_index(test_labels, np.arange(len(test_labels)), test_subset, "test",
                             seed, 3)
    return Splits(
        train=_to_split(images, labels,
                        _subset_index(labels, train_idx, train_subset, "train", seed, 1)),
        val=_to_split(images, labels,
                      _subset_index(labels, val_idx, val_subset, "val", seed, 2)),
        test=_to_split(data["test_images"], test_labels, test_idx),
        classes=[str(c) for c in data["classes"]],
        checksum=str(data["source_checksum"]),
        source_kind=source_kind,
        identity=str(data["source_identity"]) if "source_identity" in data else "",
    )


__all__ = [
    "CLASSES",
    "OFFICIAL_MD5",
    "OFFICIAL_URL",
    "SOURCE_KINDS",
    "SPLIT_METHODS",
    "DataError",
    "Split",
    "Splits",
    "decode_workers",
    "load_cache",
    "preload_cache",
    "make_splits",
    "manifest_path",
    "prepare",
    "read_manifest",
    "source_files",
    "write_manifest",
]
