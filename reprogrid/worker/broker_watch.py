"""Noticing a broker that restarted under a running worker, so the worker never stalls.

After Redis restarts (empty or not), a Celery consumer may stay alive,
heartbeating, yet never consume again (its last log line ``Couldn't ack``).
Reconnecting such a consumer in place is not reliable, so the worker watches
the broker's identity instead: Redis's ``run_id`` changes on every restart.
When it changes, the worker says so in its heartbeat row and exits with
``EXIT_BROKER_RESTARTED`` (non-zero), for its supervisor (systemd, Docker's
``restart: unless-stopped``) to start it afresh. While the broker cannot be
reached at all, the row says that too, and the scheduler sends nothing to a
worker that is not consuming.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import redis

log = logging.getLogger(__name__)

EXIT_BROKER_RESTARTED = 3
WATCH_SECONDS = 2.0
# A warm shutdown that hangs on a dead connection is cut short after this long.
SHUTDOWN_GRACE_SECONDS = 60.0
UNREACHABLE = "not consuming: the broker cannot be reached"
RESTARTED = "not consuming: the broker restarted; exiting to be restarted"


class BrokerWatch:
    """Compares the broker's ``run_id`` with the one seen when the worker started."""

    def __init__(self, broker_url: str) -> None:
        redis_url = broker_url.startswith(("redis://", "rediss://", "unix://"))
        self.client = (
            redis.Redis.from_url(
                broker_url, socket_timeout=WATCH_SECONDS, socket_connect_timeout=WATCH_SECONDS
            )
            if redis_url
            else None  # another transport: nothing to watch
        )
        self.run_id: str | None = None

    def check(self) -> str | None:
        """None while the broker is the one this worker started with; else why not."""
        if self.client is None:
            return None
        try:
            run_id = self.client.info("server")["run_id"]
        except redis.RedisError:
            return UNREACHABLE
        if self.run_id is None:
            self.run_id = run_id
        return None if run_id == self.run_id else RESTARTED


class BrokerWatcher:
    """A thread that keeps a state (for the heartbeat row) and stops the worker on restart."""

    def __init__(self, watch: BrokerWatch, on_state, interval: float = WATCH_SECONDS) -> None:
        self.watch = watch
        self.on_state = on_state  # called with the new state (None: consuming)
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

    def _run(self) -> None:
        state = None
        while not self._stop.wait(self.interval):
            new = self.watch.check()
            if new != state:
                state = new
                self.on_state(new)
            if new == RESTARTED:
                self._shut_down()
                return

    def _shut_down(self) -> None:
        log.error("the broker restarted: stopping so that the supervisor restarts this worker")
        self.restarted.set()
        os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown: the batch finishes
        timer = threading.Timer(SHUTDOWN_GRACE_SECONDS, os._exit, args=(EXIT_BROKER_RESTARTED,))
        timer.daemon = True
        timer.start()
