"""The ``cifarlab`` command line: thin wrappers that unpack arguments and call the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
from pathlib import Path

import yaml

from . import __version__

log = logging.getLogger("cifarlab")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")


def _load_spec(value: str) -> dict:
    """A spec given inline as JSON, or as the path of a YAML/JSON file."""
    text = value.strip()
    if text.startswith("{"):
        return json.loads(text)
    path = Path(value)
    if not path.exists():
        raise SystemExit(f"error: --spec {value!r} is neither inline JSON nor an existing file")
    if path.suffix.lower() == ".json":
        return json.loads(path.read_text())
    from .study import coerce_mapping

    # YAML 1.1 reads 1e-05 (as json.dumps writes it) as a string: type it as a number.
    # The data section (names, checksums) stays as written.
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict):
        raise SystemExit(f"error: --spec file {value!r} does not hold a mapping")
    return coerce_mapping(spec)


def _positive_int(value: str) -> int:
    """argparse type: a whole number >= 1, else an error that names the value."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return n


def cmd_prepare(args: argparse.Namespace) -> int:
    from .data import OFFICIAL_MD5, OFFICIAL_URL, prepare
    from .study import check_sizes, data_identity

    if args.request_file:  # the pipeline's planned arguments (pipeline.data_state)
        request = Path(args.request_file).read_text()
        planned = build_parser().parse_args(["prepare", *shlex.split(request),
                                             "--out", args.out])
        for key in ("source", "url", "path", "md5", "identity", "split"):
            setattr(args, key, getattr(planned, key))
        args.request = request

    location = (args.url or OFFICIAL_URL) if args.source == "url" else args.path
    if args.source != "url" and not location:
        raise SystemExit(f"error: --source {args.source} needs --path (the archive or folder)")
    if args.md5 is None:  # the official archive is always verified unless told otherwise
        md5 = OFFICIAL_MD5 if args.source in ("url", "archive") else None
    else:
        md5 = None if args.md5.lower() in ("", "none", "null") else args.md5
    identity = args.identity or data_identity(
        {"source": args.source, "path": location, "md5": md5 or "none"})
    meta = prepare(args.source, location, Path(args.out), md5=md5,
                   workdir=Path(args.workdir) if args.workdir else None,
                   progress=not args.no_progress, identity=identity,
                   request=getattr(args, "request", ""), workers=args.workers)
    print(json.dumps({k: v for k, v in meta.items() if k != "classes"}, default=str))
    if args.split:  # the config's sizes against the counts just prepared
        check_sizes(json.loads(args.split), meta["n_train"], meta["n_test"])
    return 0


def load_splits_for(spec: dict, cache: Path):
    from .data import make_splits

    split = {k: v for k, v in spec["data"].items() if k != "source"}
    return make_splits(cache, **split)


def cmd_train(args: argparse.Namespace) -> int:
    from .engine import Execution
    from .rundir import RunDir
    from .train import resolve_device, train_run

    spec = _load_spec(args.spec)
    # A completed run's record: if train_run returns exactly it, the run was restored.
    recorded = None if args.force else RunDir(args.out).recorded_metrics(spec)
    try:
        device = resolve_device(args.device)
        log.info("device: %s", f"CPU ({args.threads} threads)" if device.type == "cpu"
                 else device)
        data = load_splits_for(spec, Path(args.data)) if args.data else None
        metrics = train_run(spec, data, args.out, device=args.device, threads=args.threads,
                            force=args.force, checkpoint_seconds=args.checkpoint_seconds,
                            execution=Execution(channels_last=args.channels_last,
                                                compile=args.compile,
                                                cuda_graphs=args.cuda_graphs))
    except Exception as exc:
        if args.progress:
            from .progress import failed_line

            _to_terminal(args, failed_line(args.progress, Path(args.out).name, exc))
        raise
    if metrics is not None:
        keys = ("best_epoch", "train_acc", "val_acc", "test_acc", "diverged", "seconds")
        print(json.dumps({k: metrics.get(k) for k in keys}))
        _announce(args, metrics, restored=metrics == recorded)
    return 0


def _announce(args: argparse.Namespace, metrics: dict, restored: bool) -> None:
    """One line for the terminal: the run's result and the grid's progress (the pipeline
    passes --progress-fd 3, a copy of its stderr, while the job's output goes to its log)."""
    from .progress import finished_line

    if args.progress:
        _to_terminal(args, finished_line(args.progress, Path(args.out).name, metrics,
                                         restored=restored))


def _to_terminal(args: argparse.Namespace, line: str) -> None:
    """Write ``line`` to --progress-fd (the terminal, under the pipeline)."""
    try:
        with os.fdopen(os.dup(args.progress_fd), "w") as out:
            out.write(line + "\n")
    except OSError:  # the descriptor is not open: the log gets the line
        print(line, file=sys.stderr)


def _config_of(args: argparse.Namespace) -> dict:
    """The config `snakemake` sees with the same --configfile / --config arguments."""
    from .study import load_config

    return load_config([*args.config, *args.configfile], args.set)


def cmd_plan(args: argparse.Namespace) -> int:
    from .study import build_plan

    plan = build_plan(_config_of(args))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(plan, indent=1) + "\n")
    for rid, entry in plan.items():
        members = ", ".join(f"{m['experiment']}[{m['label']}]" for m in entry["members"])
        print(f"{rid}  {members}")
    print(f"{len(plan)} runs", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .layout import Layout
    from .progress import status_rows, status_table
    from .study import build_plan

    config = _config_of(args)
    layout = Layout.from_config(config)
    rows = status_rows(build_plan(config), layout.runs, layout.train_log)
    print(f"profile {layout.profile}: runs in {layout.runs}/, tables in {layout.tables}/, "
          f"report in {layout.report}/")
    print(status_table(rows))
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from .bundle import bundle_paths, pack
    from .layout import Layout
    from .rundir import RunDir
    from .study import build_plan

    config = _config_of(args)
    layout = Layout.from_config(config)
    plan = build_plan(config)
    for rid, entry in plan.items():  # runs trained before first_layer.pt existed
        RunDir(Path(layout.runs) / rid).make_portable(entry["spec"])
    paths = bundle_paths(layout, plan, extra=args.extra)
    done = sum(RunDir(Path(layout.runs) / rid).is_complete for rid in plan)
    info = {"profile": layout.profile, "runs_planned": len(plan), "runs_complete": done,
            "runs_dir": str(layout.runs)}
    written = pack(paths, Path(args.out), name=args.name, info=info,
                   max_files=args.max_files, max_bytes=int(args.max_mib * 2**20))
    size = sum(p.stat().st_size for p in written) / 2**20
    print(f"bundle of profile {layout.profile}: {len(paths)} files ({done} of {len(plan)} "
          f"runs complete) in {len(written)} file(s), {size:.1f} MiB: "
          + ", ".join(str(p) for p in written))
    return 0


def cmd_unbundle(args: argparse.Namespace) -> int:
    from .bundle import restore_runs, unpack

    if args.runs_only:
        done = restore_runs(Path(args.source), Path(args.into))
        print(f"restored {len(done['restored'])} completed run(s) into {args.into} "
              f"({len(done['present'])} complete there already, left as they are; "
              f"{len(done['unfinished'])} unfinished in the bundle, to train there)")
        for rid in done["restored"]:
            print(f"  {rid}")
        return 0
    manifest = unpack(Path(args.source), Path(args.into))
    print(f"unpacked {len(manifest.get('files', []))} files of profile "
          f"{manifest.get('profile', '?')} ({manifest.get('runs_complete', '?')} of "
          f"{manifest.get('runs_planned', '?')} runs complete) into {args.into}")
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from .aggregate import aggregate

    aggregate(Path(args.plan), Path(args.runs), Path(args.out), profile=args.profile)
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from .plots import make_figures

    made = make_figures(Path(args.tables), Path(args.runs), Path(args.out), jobs=args.jobs)
    for p in made:
        print(p)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .reporting import render_report

    render_report(Path(args.notebook), Path(args.executed), Path(args.tables),
                  Path(args.figures), Path(args.runs), Path(args.out), profile=args.profile,
                  config_files=args.config_files, notes=args.notes)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .worker import serve

    return serve(args.socket, idle_timeout=args.idle_timeout, parent_pid=args.parent)


def cmd_info(args: argparse.Namespace) -> int:
    from .system import machine_info

    print(json.dumps(machine_info(), indent=2))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench
    from .bench.settings import settings_for

    settings = settings_for("quick" if args.quick else "full")
    if args.cnn_channels:
        settings = dataclasses.replace(settings, cnn={**settings.cnn,
                                                      "channels": args.cnn_channels})
    run_bench(out=Path(args.out), sections=args.only, settings=settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .data import SOURCE_KINDS

    p = argparse.ArgumentParser(prog="cifarlab", description=__doc__)
    p.add_argument("--version", action="version", version=f"cifarlab {__version__}")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare", help="download/verify/unpack CIFAR-10 into a uint8 cache")
    s.add_argument("--source", choices=SOURCE_KINDS, default="url")
    s.add_argument("--url", help="archive URL (default: the official one)")
    s.add_argument("--path", help="local cifar-10-python.tar.gz, or an image folder / .tar.gz")
    s.add_argument("--md5", default=None,
                   help="expected MD5 of the archive (default: the official archive's; "
                   "'none' skips the check)")
    s.add_argument("--out", required=True, help="cache file to write (.npz)")
    s.add_argument("--workdir", help="where downloads and temporary files go")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--identity", help="the data's name in the runs' specs (default: "
                   "derived from the source, as the pipeline does)")
    s.add_argument("--split", help="the config's split as JSON: its sizes are checked "
                   "against the prepared counts")
    s.add_argument("--request-file", help="a file holding the other arguments, as the "
                   "pipeline plans them (kept in the cache, to see when they change)")
    s.add_argument("--workers", type=_positive_int, default=None,
                   help="processes that decode an image folder (default: the CPUs this "
                   "process may use, at most 8); the cache is the same for any number")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("train", help="train one run (resumes an interrupted one)")
    s.add_argument("--spec", required=True, help="run spec: inline JSON or a YAML/JSON file")
    s.add_argument("--data", help="the cache written by `cifarlab prepare` (not needed to "
                   "restore a completed run's outputs from its record)")
    s.add_argument("--out", required=True, help="the run's folder")
    s.add_argument("--device", default="auto",
                   help="auto (default: CUDA, else MPS, else CPU), cpu, cuda, cuda:N, mps")
    s.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    s.add_argument("--channels-last", action="store_true", help="channels_last CNN (CUDA and CPU)")
    s.add_argument("--compile", action="store_true",
                   help="train through torch.compile (any device; compiles per shape first)")
    s.add_argument("--cuda-graphs", action="store_true", help="on CUDA, replay each "
                   "training step from one captured CUDA graph (ignored on other devices)")
    s.add_argument("--checkpoint-seconds", type=float, default=0.0, metavar="S",
                   help="write the resumable checkpoint after an epoch only once S seconds "
                   "have passed since the last one (default 0: after every epoch)")
    s.add_argument("--force", action="store_true", help="retrain a completed run")
    s.add_argument("--progress", help="the pipeline's progress file: print the grid's "
                   "progress with the run's result when it ends")
    s.add_argument("--progress-fd", type=int, default=2,
                   help="file descriptor for that line (default 2, stderr)")
    s.add_argument("--worker", metavar="SOCKET", help="hand the run to the training worker "
                   "at SOCKET (`cifarlab worker`); trains here when none answers")
    s.set_defaults(func=cmd_train)

    for name, help_text, func in (
            ("plan", "list the runs a configuration asks for", cmd_plan),
            ("status", "every planned run: done, running, missing or diverged, with its "
             "test accuracy and epochs done", cmd_status),
            ("bundle", "pack the profile's report, tables, figures, logs and its runs' "
             "specs, histories, metrics and first-layer units (no weights) into a few "
             "size-capped files, to bring back from a remote machine (and to resume from: "
             "unbundle --runs-only)", cmd_bundle)):
        s = sub.add_parser(name, help=help_text, description=(
            f"{help_text}. Give the same --configfile and --config arguments as to "
            "snakemake (config/config.yaml is always read first, as the Snakefile does)."))
        s.add_argument("config", nargs="*", help="more config YAML files (like --configfile)")
        s.add_argument("--configfile", nargs="+", default=[], metavar="FILE",
                       help="config files layered over config/config.yaml, in order")
        s.add_argument("--config", dest="set", nargs="+", default=[], metavar="KEY=VALUE",
                       help="overrides, exactly as snakemake --config takes them")
        if name == "plan":
            s.add_argument("--out", help="write the plan as JSON")
        if name == "bundle":
            s.add_argument("--out", required=True, help="folder the bundle's files go to")
            s.add_argument("--name", default="results", help="file name stem (default results)")
            s.add_argument("--extra", nargs="+", default=[], metavar="PATH",
                           help="more files or folders to include (e.g. results/bench)")
            s.add_argument("--max-files", type=int, default=8,
                           help="at most this many files (default 8)")
            s.add_argument("--max-mib", type=float, default=16.0,
                           help="at most this many MiB per file (default 16)")
        s.set_defaults(func=func)

    s = sub.add_parser("unbundle", help="extract a bundle written by `cifarlab bundle`")
    s.add_argument("source", help="the bundle's .tar.gz, or the folder holding it or its parts")
    s.add_argument("--into", required=True, help="folder to extract into (its paths are "
                   "relative to where the pipeline ran, e.g. results/<profile>/report)")
    s.add_argument("--runs-only", action="store_true",
                   help="resume the study in --into (the folder the pipeline runs in): "
                   "extract only the completed runs' results, of runs not complete there; "
                   "the pipeline there trains only the missing runs")
    s.set_defaults(func=cmd_unbundle)

    s = sub.add_parser("aggregate", help="collect run metrics into tables")
    s.add_argument("--plan", required=True)
    s.add_argument("--runs", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--profile", default="", help="label of the profile that produced the runs")
    s.set_defaults(func=cmd_aggregate)

    s = sub.add_parser("figures", help="draw every figure from the tables and histories")
    s.add_argument("--tables", required=True)
    s.add_argument("--runs", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--jobs", type=_positive_int, default=1,
                   help="processes drawing the per-run figures (default 1)")
    s.set_defaults(func=cmd_figures)

    s = sub.add_parser("report", help="execute the report notebook and render HTML/Markdown")
    s.add_argument("--notebook", required=True)
    s.add_argument("--executed", required=True, help="where the executed notebook goes")
    s.add_argument("--tables", required=True)
    s.add_argument("--figures", required=True)
    s.add_argument("--runs", required=True)
    s.add_argument("--out", required=True, help="report folder (report.html, report.md)")
    s.add_argument("--profile", default="")
    s.add_argument("--config-files", default="")
    s.add_argument("--notes", default="", help="the config's profile_notes, for the report")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("worker", help="serve training jobs from one process with torch "
                       "imported (the pipeline starts it for local CPU runs)")
    s.add_argument("--socket", required=True, help="the Unix socket to serve on")
    s.add_argument("--idle-timeout", type=float, default=120.0,
                   help="exit after this many seconds without a job")
    s.add_argument("--parent", type=int, default=None,
                   help="exit when this process (the Snakemake controller) is gone")
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("info", help="the device, threads and machine cifarlab sees")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("bench", help="benchmark training speed against common loops")
    s.add_argument("--quick", action="store_true", help="finish in under 2 minutes")
    s.add_argument("--out", default="results/bench", help="folder for bench.csv / bench.json")
    s.add_argument("--only", nargs="*", default=None,
                   help="sections to run: loops layers peak jobs precision engines")
    s.add_argument("--cnn-channels", nargs=2, type=_positive_int, metavar=("C1", "C2"),
                   help="measure a CNN with these channels instead of the study's 128 512 "
                        "(e.g. 16 32, the quick profile's)")
    s.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"] and "--worker" in argv[:-1]:
        # Handed to the pipeline's worker (cifarlab.worker) before anything heavy is
        # imported; without a worker, trained here.
        from .worker import run_via_worker

        at = argv.index("--worker")
        socket_path, argv = argv[at + 1], argv[:at] + argv[at + 2:]
        rc = run_via_worker(socket_path, argv)
        if rc is not None:
            return rc
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    from .bundle import BundleError
    from .data import DataError
    from .rundir import RunFileError
    from .study import ConfigError
    from .train import RunError

    try:
        return args.func(args)
    except (BundleError, DataError, ConfigError, RunError, RunFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
