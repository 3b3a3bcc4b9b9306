"""Celery's own tools and Flower see a running fleet: real workers, scheduler, Flower and Redis.

One fleet for the module: Flower, two workers and a scheduler on a SQLite file
and the test Redis database, running a job of 24 one-image batches long
enough (100 steps each) that batches are still running and waiting while the
first tests look.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import REDIS, service_unavailable
from sqlalchemy import select

from reprogrid.models import Batch, open_database
from reprogrid.scheduler.broker import RUN_BATCH_TASK
from tests.processes import Fleet, all_done, wait_until

pytestmark = pytest.mark.redis
pytest.importorskip("flower", reason="Flower is in the test extra: pip install -e '.[test]'")

APP = "reprogrid.scheduler.broker"
WORKERS = ("tools-a", "tools-b")
CELLS = 24
HOST = socket.gethostname()
NODES = {f"{name}@{HOST}" for name in WORKERS}


class ToolsFleet(Fleet):
    """A fleet with Flower, and Celery's command line on the same settings."""

    @property
    def env(self) -> dict[str, str]:
        # A lease long enough that no waiting message is taken for lost and sent twice.
        return {**super().env, "REPROGRID_LEASE_SECONDS": "600"}

    def celery(self, *args: str) -> Any:
        """``celery -A reprogrid.scheduler.broker ARGS --json``, its output parsed."""
        result = subprocess.run(
            [sys.executable, "-m", "celery", "-A", APP, *args, "--json", "--timeout", "3"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return json.loads(result.stdout) if result.returncode == 0 else None

    def flower(self, port: int) -> None:
        log = self.tmp_path / "flower.log"
        env = {**self.env, "FLOWER_UNAUTHENTICATED_API": "true"}
        command = [sys.executable, "-m", "celery", "-A", APP, "flower"]
        with log.open("w") as stream:
            process = subprocess.Popen(
                [*command, f"--port={port}", "--address=127.0.0.1"],
                env=env,
                stdout=stream,
                stderr=subprocess.STDOUT,
            )
        self.processes.append((process, log))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


def _flower_up(port: int) -> bool:
    try:
        _get(port, "/api/workers")
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[tuple[ToolsFleet, int]]:
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=2).flushdb()
    except Exception as exc:
        service_unavailable(f"Redis at {REDIS}", exc)
    tmp_path = tmp_path_factory.mktemp("celery-tools")
    fleet = ToolsFleet(f"sqlite:///{tmp_path / 'fleet.db'}", REDIS, tmp_path)
    port = _free_port()
    try:
        fleet.flower(port)
        for name in WORKERS:
            fleet.worker(name)
        wait_until(lambda: _flower_up(port), 60, "Flower to answer", fleet)
        wait_until(lambda: len(fleet.celery("inspect", "ping") or {}) == 2, 120, "pings", fleet)
        submitted = fleet.command(
            "submit", "--prompt", "a fox", "--seeds", f"0-{CELLS - 1}", "--steps", "100",
            "--width", "64", "--height", "64", "--batch-size", "1", "--json",
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        fleet.scheduler()
        yield fleet, port
    finally:
        fleet.stop()


def test_inspect_ping_answers_for_every_worker_by_its_reprogrid_name(fleet):
    tools, _ = fleet
    replies = tools.celery("inspect", "ping")
    assert set(replies) == NODES
    assert all(reply == {"ok": "pong"} for reply in replies.values())


def _running_tasks(tools: ToolsFleet) -> list[tuple[str, int]]:
    active = tools.celery("inspect", "active") or {}
    return [(node, task["args"][0]) for node, tasks in active.items() for task in tasks]


def test_inspect_active_lists_the_batch_each_worker_is_computing(fleet):
    tools, _ = fleet
    running = wait_until(lambda: _running_tasks(tools), 120, "a task in inspect active", tools)
    node, batch_id = running[0]
    db = open_database(tools.db_url)
    with db.sessions() as session:
        batch = session.get(Batch, batch_id)
        assert f"{batch.worker}@{HOST}" == node
    db.dispose()


def _lengths(tools: ToolsFleet, port: int) -> tuple[dict[str, int], int]:
    flower = {q["name"]: q["messages"] for q in _get(port, "/api/queues/length")["active_queues"]}
    return flower, redis.Redis.from_url(tools.broker_url).llen("default")


def test_flower_counts_the_messages_waiting_in_the_reprogrid_queue(fleet):
    tools, port = fleet

    def agreeing_while_waiting() -> dict[str, int] | None:
        flower, waiting = _lengths(tools, port)
        return flower if waiting and flower.get("default") == waiting else None

    flower = wait_until(agreeing_while_waiting, 120, "queued messages in Flower", tools)
    assert set(flower) == {"default"}


def test_flower_lists_both_workers_by_their_names(fleet):
    _, port = fleet
    assert set(_get(port, "/api/workers?refresh=1")) >= NODES


def test_workers_send_task_events_and_flower_shows_a_task_per_batch(fleet):
    tools, port = fleet
    db = open_database(tools.db_url)
    wait_until(lambda: all_done(db, 1, CELLS), 300, "the job to finish", tools)
    with db.sessions() as session:
        batch_ids = set(session.scalars(select(Batch.id).where(Batch.job_id == 1)))
    db.dispose()

    def succeeded() -> list[dict[str, Any]]:
        tasks = _get(port, f"/api/tasks?taskname={RUN_BATCH_TASK}").values()
        done = [t for t in tasks if t["state"] == "SUCCESS"]
        return done if len(done) == len(batch_ids) else []

    tasks = wait_until(succeeded, 30, "Flower to hear of every task", tools)
    assert {ast.literal_eval(t["args"])[0] for t in tasks} == batch_ids
    assert {t["worker"] for t in tasks} <= NODES
    # received, started and succeeded come from the worker's events; sent from the scheduler's
    assert all(t["received"] and t["started"] and t["succeeded"] and t["sent"] for t in tasks)


def test_celery_monitoring_off_turns_remote_control_and_events_off():
    code = (
        "from reprogrid.scheduler.broker import app\n"
        "print(app.conf.worker_enable_remote_control, app.conf.worker_send_task_events)"
    )
    env = {**os.environ, "REPROGRID_CELERY_MONITORING": "false"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr
