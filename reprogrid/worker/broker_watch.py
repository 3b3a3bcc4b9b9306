"""Noticing a broker that restarted under a running worker, and starting the worker afresh.

After Redis restarts (empty or not), a Celery consumer may stay alive,
heartbeating, yet never consume again (its last log line ``Couldn't ack``).
Reconnecting such a consumer in place is not reliable, so the worker watches
the broker's identity instead (``scheduler.broker.BrokerWatch``: Redis's
``run_id`` changes on every restart). When it changes, the worker says so in
its heartbeat row and stops its consumer with Celery's warm shutdown (the
batch it computes is finished and recorded). Then, by default,
``restart_in_place`` replaces the process by a fresh one running the same
command (so does a Celery consumer that died on the lost connection first:
``lost_broker``), with the same pid, after a backoff and with one log line each time
(Celery restarts a worker on ``SIGHUP`` the same way). With
``--exit-on-broker-loss`` the worker exits with ``EXIT_BROKER_RESTARTED``
instead, for a supervisor (systemd, Docker's ``restart: unless-stopped``) to
start it again. While the broker cannot be reached at all, the row says so,
and the scheduler sends nothing to a worker that is not consuming.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import NoReturn

from reprogrid.scheduler.broker import RESTARTED, UNREACHABLE, BrokerWatch

log = logging.getLogger(__name__)

EXIT_BROKER_RESTARTED = 3
WATCH_SECONDS = 2.0
# A warm shutdown that hangs on a dead connection is cut short after this long.
SHUTDOWN_GRACE_SECONDS = 60.0
# Restarts in place wait 1 s, 2 s, 4 s ... at most a minute; ten calm minutes reset that.
RESTARTS_ENV = "REPROGRID_WORKER_RESTARTS"  # "NUMBER UNIX_TIME" of the last restart
FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 60.0
CALM_SECONDS = 600.0


class BrokerWatcher:
    """A thread that keeps a state (for the heartbeat row) and stops the worker on restart.

    ``give_up`` is called if the warm shutdown has not ended the worker
    ``SHUTDOWN_GRACE_SECONDS`` later (it must end the process one way or another).
    """

    def __init__(
        self,
        watch: BrokerWatch,
        on_state: Callable[[str | None], None],
        give_up: Callable[[], object],
        interval: float = WATCH_SECONDS,
    ) -> None:
        self.watch = watch
        self.on_state = on_state  # called with the new state (None: consuming)
        self.give_up = give_up
        self.interval = interval
        self.restarted = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reprogrid-broker", daemon=True)

    def start(self) -> None:
        """Learn the broker's identity now, then watch it."""
        self.on_state(self.watch.check())
        self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()

    def lost_broker(self) -> bool:
        """Whether the broker restarted under this worker, or cannot be reached now.

        Asked when Celery stopped on an error: a connection lost while the
        broker restarts can end Celery's consumer (kombu's reconnection fails
        with an ``AttributeError``) before this thread's next look.
        """
        return self.restarted.is_set() or self.watch.check() is not None

    def _run(self) -> None:
        state = None
        while not self._stop.wait(self.interval):
            new = self.watch.check()
            if new != state:
                state = new
                self._say(new)
                self.on_state(new)
            if new == RESTARTED:
                self._shut_down()
                return

    def _say(self, state: str | None) -> None:
        if state == UNREACHABLE:
            log.warning("the broker cannot be reached (%s); waiting for it", self.watch.error)
        elif state is None:
            log.info("the broker is back")

    def _shut_down(self) -> None:
        log.warning("the broker restarted: stopping this worker's consumer to start it afresh")
        self.restarted.set()
        os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown: the batch finishes
        timer = threading.Timer(SHUTDOWN_GRACE_SECONDS, self._hung)
        timer.daemon = True
        timer.start()

    def _hung(self) -> None:
        log.error("the worker did not stop within %.0f s of the restart", SHUTDOWN_GRACE_SECONDS)
        self.give_up()


def exit_for_supervisor() -> NoReturn:
    """End the process now with ``EXIT_BROKER_RESTARTED`` (``--exit-on-broker-loss``)."""
    os._exit(EXIT_BROKER_RESTARTED)


def restart_delay(environ: Mapping[str, str], now: float) -> tuple[int, float]:
    """(this restart's number, seconds to wait before it), from the previous restart's."""
    number, last = _previous_restart(environ.get(RESTARTS_ENV, ""))
    if now - last > CALM_SECONDS:
        number = 0
    return number + 1, min(FIRST_RESTART_DELAY * 2**number, MAX_RESTART_DELAY)


def _previous_restart(text: str) -> tuple[int, float]:
    try:
        number, when = text.split()
        return int(number), float(when)
    except ValueError:
        return 0, 0.0


def restart_in_place(stop: threading.Event) -> int:
    """After the backoff, replace this process by the same command started afresh.

    Returns (0) only when ``stop`` is set while waiting: SIGTERM or Ctrl-C then.
    """
    number, delay = restart_delay(os.environ, time.time())
    log.warning("restarting this worker in %.0f s (restart %d)", delay, number)
    if stop.wait(delay):
        log.info("stopped while waiting to restart")
        return 0
    restart_now()


def restart_now() -> NoReturn:
    """Replace this process by the command that started it (same pid, fresh interpreter)."""
    number, _ = restart_delay(os.environ, time.time())
    os.environ[RESTARTS_ENV] = f"{number} {time.time()}"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)
