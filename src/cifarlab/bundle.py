"""A profile's results as a few size-capped files, to bring back from a remote machine.

A GPU machine lent for a session returns at most a few files of limited size (the device
tool here: 8 files of 16 MiB). ``pack`` writes one gzipped tar of the profile's report,
tables and figures, every run's spec, history, metrics and first_layer.pt (never the
weights or checkpoints: 13 MB per full-size run), the training logs and any extra paths
(a bench's results), split into numbered parts when it is larger than one file may be. ``unpack``
joins the parts and extracts them, refusing any member that would land outside the target
folder. Paths inside the bundle are relative to the working directory the pipeline ran
in, so unpacking into a checkout puts every file where the pipeline keeps it.

``restore_runs`` resumes a study elsewhere: it extracts only the completed runs' files
(spec, history, first layer, metrics) of runs not complete in the target, which is all
the pipeline needs of them (rundir.py), so the next machine trains only the runs that are
missing.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .layout import Layout
from .rundir import RunDir, atomic_write

__all__ = ["BundleError", "bundle_paths", "pack", "unpack", "read_manifest", "restore_runs",
           "MAX_FILES", "MAX_BYTES"]

MAX_FILES = 8
MAX_BYTES = 16 * 2**20
MANIFEST = "bundle.json"


class BundleError(RuntimeError):
    """A bundle cannot be written within its limits, or cannot be read."""


def bundle_paths(layout: Layout, run_ids: Iterable[str], root: Path = Path("."),
                 extra: Sequence[str | Path] = ()) -> list[Path]:
    """The files a bundle of ``layout``'s profile holds, relative to ``root``: the report
    folder, tables and figures (per-run figures included), the portable files (spec,
    history, first layer, metrics) and training logs of the runs ``run_ids`` that exist,
    the profile's logs, and ``extra`` files or folders. Missing folders are skipped; a
    missing ``extra`` path is an error."""
    paths: list[Path] = []
    for folder in (layout.report, layout.tables, layout.figures, layout.logs):
        paths += _files_under(root / folder)
    for rid in sorted(run_ids):
        paths += RunDir(root / layout.runs / rid).portable_files()
        log = root / layout.train_log.format(run=rid)
        paths += [log] if log.is_file() else []
    for item in extra:
        path = root / item
        if not path.exists():
            raise BundleError(f"{item} does not exist; give files or folders that do "
                              "(e.g. results/bench)")
        paths += _files_under(path) if path.is_dir() else [path]
    return [p.relative_to(root) for p in dict.fromkeys(paths)]


def _files_under(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix not in (".pt", ".sock"))


def pack(paths: Iterable[str | Path], out: Path, *, root: Path = Path("."),
         name: str = "results", info: dict | None = None, max_files: int = MAX_FILES,
         max_bytes: int = MAX_BYTES) -> list[Path]:
    """Write ``paths`` (relative to ``root``) as ``out/<name>.tar.gz``, or as parts
    ``<name>.tar.gz.00of03``, ``.01of03``, ... when it is larger than ``max_bytes``; returns
    the files written, after removing an earlier bundle of that name from ``out``. ``info``
    is stored as ``bundle.json`` inside (what produced it). Raises BundleError, writing
    nothing, when more than ``max_files`` parts would be needed."""
    members = [Path(p) for p in paths]
    buffer = io.BytesIO()
    manifest = {"files": [str(p) for p in members], **(info or {})}
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        data = json.dumps(manifest, indent=1).encode()
        entry = tarfile.TarInfo(MANIFEST)
        entry.size = len(data)
        tar.addfile(entry, io.BytesIO(data))
        for p in members:
            tar.add(root / p, arcname=str(p), recursive=False)
    blob = buffer.getvalue()
    n_parts = max(1, -(-len(blob) // max_bytes))
    if n_parts > max_files:
        raise BundleError(
            f"the bundle is {len(blob) / 2**20:.1f} MiB compressed, more than {max_files} "
            f"files of {max_bytes / 2**20:.0f} MiB; leave out large extra paths or raise "
            "the limits (--max-files, --max-mib) where the transport allows")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{name}.tar.gz*"):  # an earlier bundle would be unpacked instead
        old.unlink()
    if n_parts == 1:
        target = out / f"{name}.tar.gz"
        target.write_bytes(blob)
        return [target]
    written = []
    for i in range(n_parts):
        target = out / f"{name}.tar.gz.{i:02d}of{n_parts:02d}"
        target.write_bytes(blob[i * max_bytes:(i + 1) * max_bytes])
        written.append(target)
    return written


_PART = re.compile(r"(.+\.tar\.gz)\.(\d\d)of(\d\d)")


def _parts(source: Path) -> list[Path]:
    """The bundle's file, or its parts in order; every part must be there."""
    if source.is_file():
        return [source]
    whole = sorted(source.glob("*.tar.gz"))
    split = sorted(p for p in source.glob("*.tar.gz.*") if _PART.fullmatch(p.name))
    stems = {p.name for p in whole} | {_PART.fullmatch(p.name).group(1) for p in split}
    if not stems:
        raise BundleError(f"no bundle (NAME.tar.gz, or parts NAME.tar.gz.00ofNN, ...) in "
                          f"{source}")
    if len(stems) > 1:
        raise BundleError(f"{source} holds more than one bundle ({', '.join(sorted(stems))}); "
                          "give the file, or a folder holding one bundle")
    if whole:
        return whole
    (stem,) = stems
    n = int(_PART.fullmatch(split[0].name).group(3))
    missing = [f"{stem}.{i:02d}of{n:02d}" for i in range(n)
               if not (source / f"{stem}.{i:02d}of{n:02d}").is_file()]
    if missing or len(split) != n:
        raise BundleError(f"{source} lacks part(s) {', '.join(missing) or '?'} of {stem} "
                          f"({len(split)} files, {n} parts); bring every part back")
    return split


def _open(source: Path) -> tuple[tarfile.TarFile, list[tarfile.TarInfo], dict]:
    """The bundle's tar (open), its members and its manifest; a damaged bundle is a
    BundleError that says so."""
    blob = b"".join(p.read_bytes() for p in _parts(Path(source)))
    manifest: dict = {}
    try:
        tar = tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz")  # noqa: SIM115 (closed by callers)
        members = tar.getmembers()
        for m in members:
            if m.name == MANIFEST:
                manifest = json.loads(tar.extractfile(m).read())
    except (tarfile.TarError, EOFError, OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{source} is not a readable bundle ({exc}): a part cut short or "
                          "damaged in transfer?") from None
    return tar, members, manifest


def read_manifest(source: Path) -> dict:
    """The manifest (``bundle.json``) of the bundle at ``source``: its files and what
    produced it."""
    tar, _, manifest = _open(source)
    tar.close()
    return manifest


def unpack(source: Path, into: Path = Path("."),
           select: Callable[[str], bool] | None = None) -> dict:
    """Extract the bundle at ``source`` (its file, or a folder with its file or parts)
    into ``into``; returns its manifest (``bundle.json``, which is not extracted).
    Members outside ``into`` (absolute paths, ``..``) or of other kinds than files and
    folders are refused before anything is written. ``select(name)``, when given,
    chooses the members to extract (in the bundle's order)."""
    tar, members, manifest = _open(source)
    into = Path(into).resolve()
    with tar:
        for m in members:
            target = (into / m.name).resolve()
            if m.name != MANIFEST and (not (m.isfile() or m.isdir())
                                       or not target.is_relative_to(into)):
                raise BundleError(f"{source} holds {m.name!r}, which is not a file inside "
                                  "the target folder; nothing was extracted")
        for m in members:
            if m.name == MANIFEST or (select is not None and not select(m.name)):
                continue
            target = into / m.name
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            # Whole files only, each replacing the old one (a temporary file renamed): a
            # killed extraction leaves no truncated metrics.json that would count as a
            # completed run, and a file that is a hard link into a run's record/ is
            # replaced, not written through.
            data = tar.extractfile(m).read()
            atomic_write(target, lambda p, d=data: p.write_bytes(d))
            os.utime(target, (m.mtime, m.mtime))
    return manifest


def restore_runs(source: Path, into: Path = Path(".")) -> dict[str, list[str]]:
    """Extract from the bundle at ``source`` the files of each run it holds complete
    (its metrics.json is in the bundle) that is not complete in ``into``: the pipeline
    there then trains only the runs still missing. Returns the run ids by what happened:
    ``restored``, ``present`` (complete in ``into`` already: left as they are) and
    ``unfinished`` (in the bundle without metrics.json: not restored, trained again)."""
    manifest = read_manifest(source)
    runs_dir = Path(manifest.get("runs_dir", "results/runs"))
    files: dict[str, set[str]] = {}
    for name in manifest.get("files", []):
        rel = Path(name)
        if rel.parent.parent == runs_dir:  # <runs_dir>/<run id>/<file>; not its record/
            files.setdefault(rel.parent.name, set()).add(rel.name)
    marker = RunDir(runs_dir).metrics_path.name  # RunDir owns the file names
    finished = {rid for rid, names in files.items() if marker in names}
    # Complete there, or recorded there (Snakemake deleted its outputs to rerun its job,
    # which restores them from the record): the local run stands.
    present = {rid for rid in finished
               if (run := RunDir(Path(into) / runs_dir / rid)).is_complete
               or run.record.is_complete}
    restore = finished - present
    # Within a run, metrics.json (the completion marker) comes last in the bundle.
    unpack(source, into, select=lambda name: Path(name).parent.parent == runs_dir
           and Path(name).parent.name in restore)
    return {"restored": sorted(restore), "present": sorted(present),
            "unfinished": sorted(set(files) - finished)}
