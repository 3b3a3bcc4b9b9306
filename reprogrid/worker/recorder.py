"""The recording process: a worker's claims and records, run off the pipeline's interpreter.

A diffusers pipeline spends much of its call in Python, so Python work on
another thread of its process (SQLAlchemy statements, JSON, PNG chunks) takes
the interpreter lock from it and slows the call down. A process that runs
batches (``reprogrid run``, a fleet worker) therefore has a recording process
of its own, ``python -m reprogrid.worker.recorder``, started with it
(``WorkerContext.start``): batches are claimed there, and computed batches
stored (PNG files) and recorded (rows) there, while the parent's pipeline
computes the next one.

The two talk over a socket pair. The parent sends a module-level function and
its arguments, pickled; the recording process runs ``function(ctx, *args)``
with its ``RecordingContext`` and answers with the result, or the exception
it raised. One request at a time, in the order sent. ``InProcess`` runs the
same functions in the calling process (``execute_batch``).

The recording process lives for its parent: it runs in a session of its own
and ignores Ctrl-C and SIGTERM (the parent decides what stops), and exits when
the parent closes the socket (``close``, which reaps it, or the parent's
death), after the request in hand, if any. It closes its database connections after ``IDLE_SECONDS``
without a request: an idle worker holds its heartbeat's connection only. If it
dies, the parent starts another and sends the request once more (claims and
records are idempotent); if that one dies too, the call raises
``RecorderGone``.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from reprogrid.worker.execute import RecordingContext
    from reprogrid.worker.failures import RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")
IDLE_SECONDS = 2.0  # without a request, the recording process closes its connections
EXIT_SECONDS = 5.0  # for the recording process to exit once closed, before it is killed
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding this reprogrid


class RecorderGone(RuntimeError):
    """The recording process died twice on one request."""


class InProcess:
    """Runs recording functions in this process, with its own context."""

    def __init__(self, ctx: RecordingContext) -> None:
        self.ctx = ctx

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(ctx, *args)``, here."""
        return function(self.ctx, *args)

    def start(self) -> None:
        """Nothing to start."""

    def close(self) -> None:
        """Nothing to stop."""


class Recorder:
    """The parent's side of a recording process: started on demand, restarted if it died."""

    def __init__(self, ctx: RecordingContext) -> None:
        url = ctx.db.engine.url.render_as_string(hide_password=False)
        self._config = (url, ctx.store, ctx.name, ctx.lease_seconds, ctx.retry)
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None

    @property
    def pid(self) -> int | None:
        """The recording process's id; None before it starts and after it stops."""
        process = self._process
        return None if process is None else process.pid

    def start(self) -> None:
        """Start the process now (it imports while the caller goes on), unless it runs."""
        with self._lock:
            self._start()

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(ctx, *args)`` in the recording process; raises what it raised there."""
        with self._lock:
            for tries_left in (1, 0):
                connection = self._start()
                try:
                    connection.send((function, args))
                    ok, value = connection.recv()
                except (EOFError, OSError) as exc:
                    self._stop(0)
                    if not tries_left:
                        raise RecorderGone(f"the recording process died twice: {exc}") from exc
                    log.error("the recording process died (%s): starting another", exc)
                    continue
                if not ok:
                    raise value
                return value
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Let the process exit, and reap it (a later call starts another)."""
        with self._lock:
            self._stop(EXIT_SECONDS)

    def _start(self) -> Connection:
        if self._connection is not None and self._process is not None:
            if self._process.poll() is None:
                return self._connection
            self._stop(0)
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-P", "-m", __name__, str(theirs.fileno())],
                env=_same_code_environment(),
                pass_fds=[theirs.fileno()],
                start_new_session=True,
            )
            self._connection = Connection(ours.detach())
        self._connection.send((*self._config, logging.getLogger().getEffectiveLevel()))
        return self._connection

    def _stop(self, wait: float) -> None:
        """Close the connection (the process's next read ends, and it exits) and reap the
        process, killed if it has not exited ``wait`` seconds later."""
        connection, self._connection = self._connection, None
        process, self._process = self._process, None
        if connection is not None:
            connection.close()
        if process is None:
            return
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _same_code_environment() -> dict[str, str]:
    """This process's environment, with the folder this ``reprogrid`` was imported from
    first on the path. The recording process starts with ``-P``: a folder named
    ``reprogrid`` where the user stands (an output folder, say) would otherwise be
    imported instead of the package, and every batch would fail there."""
    paths = [str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def serve(connection: Connection, ctx: RecordingContext) -> None:
    """Answer the parent's requests until it closes the connection."""
    while True:
        if not connection.poll(IDLE_SECONDS):
            ctx.db.dispose()  # idle: give the connections back
        try:
            function, args = connection.recv()
        except EOFError:
            return
        except Exception as exc:  # read whole, but not understood (another reprogrid's?)
            connection.send((False, RuntimeError(f"the recording process cannot read: {exc}")))
            continue
        try:
            reply = (True, function(ctx, *args))
        except Exception as exc:
            reply = (False, exc)
        try:
            connection.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            # an exception that cannot be pickled: its type and message are enough
            failed = reply[1] if not reply[0] else exc
            connection.send((False, RuntimeError(f"{type(failed).__name__}: {failed}")))


def _context(url: str, store: Path, name: str, lease_seconds: int, retry: RetryPolicy):
    from reprogrid.models import open_database
    from reprogrid.worker.execute import RecordingContext

    return RecordingContext(open_database(url, migrate=False), store, name, lease_seconds, retry)


def main(fd: int) -> None:
    """The recording process: read its configuration, then serve its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    connection = Connection(fd)
    try:
        *config, level = connection.recv()
    except EOFError:
        return
    logging.basicConfig(level=level, stream=sys.stderr, format=LOG_FORMAT)
    ctx = _context(*config)
    try:
        serve(connection, ctx)
    finally:
        ctx.db.dispose()


if __name__ == "__main__":
    main(int(sys.argv[1]))
    logging.shutdown()
    os._exit(0)  # without the interpreter's teardown: its parent waits for this exit
