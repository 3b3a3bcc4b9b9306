"""Services a fault test owns: a Redis of its own, on its own port, that it may kill.

Never the machine's shared Redis: a test that restarts a broker starts its own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis


def service_unavailable(what: str, error: Exception | str) -> None:
    """Skip on a laptop without the service; fail in CI."""
    message = f"{what} unreachable: {error}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set, so this is a failure, not a skip)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OwnRedis:
    """``redis-server`` without persistence: every restart comes back empty."""

    def __init__(self, folder: Path) -> None:
        if shutil.which("redis-server") is None:
            service_unavailable("a Redis of the test's own", "redis-server is not installed")
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [*command, "--dir", str(self.folder)], stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("own redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        """Kill it and start it again, empty."""
        self.stop()
        self.start()


class OwnPostgres:
    """A PostgreSQL cluster of the test's own (``initdb``/``pg_ctl`` as the postgres user).

    Its data folder is a fresh folder the postgres user can reach (a pytest
    ``tmp_path`` is private to root); ``remove`` deletes it.
    """

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not bins or shutil.which("runuser") is None:
            service_unavailable(
                "a PostgreSQL of the test's own", "its server binaries are not installed"
            )
        self.bin = bins[-1].parent
        self.folder = Path(tempfile.mkdtemp(prefix="reprogrid-pg-"))
        self.folder.chmod(0o755)
        shutil.chown(self.folder, "postgres")
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
            check=True,
            capture_output=True,
        )

    def _pg_ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.data / "log"),
            "-w",
            "-o",
            options,
            action,
            *args,
        )

    def start(self) -> None:
        self._pg_ctl("start")

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "immediate")

    def remove(self) -> None:
        """Stop the server if it runs, and delete its data."""
        pg_ctl = ["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D", str(self.data)]
        subprocess.run([*pg_ctl, "stop", "-m", "immediate"], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    def restart(self) -> None:
        """Every connection is dropped; the data stays."""
        self._pg_ctl("restart", "-m", "fast")
