"""A local training worker: torch imported once, one forked child per run.

A training job spends about 4 s of every run's CPU time before its first step: starting
Python and importing torch (~1.9 s), and torch.optim importing torch._dynamo on first use
(~1.9 s). For the quick profile's 87 runs of a few seconds each, that is most of the
budget. On a local CPU run the pipeline starts one worker (``serve``), which pays these once;
each training job (`cifarlab train --worker SOCKET`) then connects, hands over its command
line, working directory, environment and its open stdin/stdout/stderr (and fd 3, the
terminal's progress line), and the worker forks a child that runs exactly that command, as
`cifarlab train` would, writing to the job's own log. The job waits for the child's exit
status and exits with it, so Snakemake sees an ordinary job. A job that cannot reach a
worker (none started, a stale socket, a cluster node) trains in its own process.

Lifetimes: a child dies with its job (the job's end of the connection closing is its
signal, e.g. Snakemake killing the job on Ctrl-C), the worker exits when told to
(``shutdown``), when the process that started it is gone, or after ``idle_timeout``
seconds without a job. Nothing here imports torch at module level: the job's side stays a
light process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

__all__ = ["serve", "run_via_worker", "shutdown", "warm_up"]

_MAX_MESSAGE = 1 << 20
_FDS = (0, 1, 2, 3)  # stdin, stdout, stderr, the progress line's descriptor


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def run_via_worker(socket_path: str | Path, argv: list[str]) -> int | None:
    """Run `cifarlab <argv>` in the worker at ``socket_path``; its exit status, or None
    when no worker answers (the caller then runs the command itself)."""
    # Which of the job's descriptors are open, before the socket takes the lowest free one.
    fds = [fd for fd in _FDS if _fd_open(fd)]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(socket_path))
    except OSError:
        sock.close()
        return None
    with sock:
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "fds": fds}
        try:
            socket.send_fds(sock, [json.dumps(request).encode()], fds)
            reply = _read_line(sock)
        except OSError:
            reply = b""
        if not reply:
            # The worker accepted the job but its child died without a word (killed, or
            # the worker went away): a failure of this job, never a silent retry.
            print(f"error: the training worker at {socket_path} ended this run without an "
                  "exit status; see the run's log, or run without the worker "
                  "(train.worker: false)", file=sys.stderr)
            return 1
        return int(json.loads(reply)["rc"])


def shutdown(socket_path: str | Path) -> bool:
    """Ask the worker at ``socket_path`` to exit once its running children are done."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(socket_path))
        socket.send_fds(sock, [json.dumps({"shutdown": True}).encode()], [])
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            return b""
        data += chunk
    return data


def warm_up() -> None:
    """Import what every training run needs, and let torch.optim import torch._dynamo,
    in the worker, before any child is forked. Single-threaded: a process that forks must
    not have started OpenMP threads."""
    import torch

    from . import cli, data, rundir, train  # noqa: F401 (imported for the children)

    torch.set_num_threads(1)
    w = torch.zeros(2, requires_grad=True)
    opt = torch.optim.AdamW([w], lr=1e-3)
    (w * 2).sum().backward()
    opt.step()


def _child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the job (its fds, cwd, environment), run the command,
    send the exit status, exit. Never returns."""
    rc = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        # Move the job's descriptors out of the way first: one of them may have arrived
        # with the number of a descriptor it is about to replace.
        import fcntl

        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 16) for fd in fds]
        for fd in fds:
            os.close(fd)
        for target, fd in zip(request["fds"], high, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.stdin = os.fdopen(0, "r", closefd=False) if 0 in request["fds"] else sys.stdin
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)

        def watch() -> None:
            # The job's end closing before we answered means the job was killed: so is the run.
            with contextlib.suppress(OSError):
                conn.recv(1)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()
        import logging

        logging.getLogger().handlers.clear()  # cli.main configures logging to this stderr
        from .cli import main

        rc = main(request["argv"])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the job's log gets the traceback, the job rc 1
        import traceback

        traceback.print_exc()
        rc = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"rc": rc}).encode() + b"\n")
        os._exit(rc if isinstance(rc, int) else 1)


def _preload_data(request: dict) -> None:
    """Load the job's data cache (`--data PATH`) here, once, before forking: every child
    inherits the arrays instead of reading the file again. A cache that cannot be read
    is left to the child, whose error then goes to the run's log."""
    from .cli import build_parser
    from .data import preload_cache

    # The CLI's own reading of the command; a command it rejects fails in the child, which
    # says why in the run's log (here its usage message would only repeat it).
    with contextlib.suppress(Exception, SystemExit), \
            contextlib.redirect_stderr(io.StringIO()):
        args, _ = build_parser().parse_known_args(request.get("argv", []))
        if getattr(args, "data", None):
            preload_cache(Path(request.get("cwd", ".")) / args.data)


def serve(socket_path: str | Path, idle_timeout: float = 120.0,
          parent_pid: int | None = None) -> int:
    """Serve training jobs on ``socket_path`` until shut down, orphaned or idle."""
    path = Path(socket_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    warm_up()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale socket of a worker that was killed
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(64)
    server.settimeout(1.0)
    children: set[int] = set()
    last = time.monotonic()
    stopping = False
    print(f"cifarlab worker {os.getpid()}: serving {path}", file=sys.stderr, flush=True)
    served = 0
    try:
        while True:
            for pid in list(children):  # reap finished children
                with contextlib.suppress(ChildProcessError):
                    done, _ = os.waitpid(pid, os.WNOHANG)
                    if done == 0:
                        continue
                children.discard(pid)
                last = time.monotonic()
            orphaned = parent_pid is not None and not _alive(parent_pid)
            idle = time.monotonic() - last > idle_timeout
            if not children and (stopping or orphaned or idle):
                break
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            last = time.monotonic()
            try:
                msg, fds, _, _ = socket.recv_fds(conn, _MAX_MESSAGE, len(_FDS))
                request = json.loads(msg)
            except (OSError, ValueError):
                conn.close()
                continue
            if request.get("shutdown"):
                stopping = True
                conn.close()
                continue
            if stopping or len(fds) != len(request.get("fds", [])):
                for fd in fds:
                    os.close(fd)
                conn.close()  # the job sees no exit status and reports a failure
                continue
            _preload_data(request)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                server.close()
                _child(conn, request, fds)
            served += 1
            for fd in fds:
                os.close(fd)
            conn.close()
            children.add(pid)
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        print(f"cifarlab worker {os.getpid()}: served {served} runs; exiting",
              file=sys.stderr, flush=True)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
