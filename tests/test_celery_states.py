"""Celery's task states tell what became of each batch, as Flower shows them.

The end-to-end tests share one fleet, on a Redis of its own (tests/services.py) and a
SQLite file: a worker and a scheduler, with every Celery event captured from
the start and folded into ``celery.events.state.State``, the state machine
Flower's views are built on. Three jobs of one 2-cell batch each run there:

- a good one, on ``builtin:tiny``;
- a doomed one, whose checkpoint folder is deleted after it was submitted,
  with two attempts allowed and no wait between them: its first attempt is
  retried, its second fails its cells;
- an old one, whose batch is sent as an older scheduler sent it (a bare
  ``[batch_id]``), to a worker of this version.

The first tests check, without processes, what a message carries and which
state each outcome of a batch becomes.
"""

from __future__ import annotations

import ast
import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.events.state import State
from processes import Fleet, cell_counts, wait_until
from services import OwnRedis
from sqlalchemy import select, update

from reprogrid.config import Settings
from reprogrid.models import QUEUED, Batch, open_database, utcnow
from reprogrid.models.queries import fleet_id
from reprogrid.scheduler.broker import RUN_BATCH_TASK, BatchId, celery_app, message_fields
from reprogrid.scheduler.checkpoint_refs import BUILTIN_DIR
from reprogrid.scheduler.jobs import form_batches
from reprogrid.worker.execute import BatchOutcome
from reprogrid.worker.service import Attempt, BatchFailed, BatchRetried, task_result

WORKER = "states"
CELLS = 2  # per job: one batch each


def test_a_message_names_the_batch_then_its_job_and_says_its_cells() -> None:
    args, kwargs = message_fields(BatchId(17, job_id=3, cells=8), fleet="f")
    assert (args, kwargs) == ([17, 3], {"cells": 8, "fleet": "f"})


def test_a_bare_batch_id_makes_the_message_an_older_scheduler_sent() -> None:
    assert message_fields(17, fleet="f") == ([17], {"fleet": "f"})


def _outcome(status: str, error: str | None = "RuntimeError: boom") -> BatchOutcome:
    return BatchOutcome(17, status, 0, 0.1, error)


ATTEMPT = Attempt(17, job_id=3, cells=8)


def test_a_batch_whose_cells_failed_raises_a_failure_naming_it_and_the_error() -> None:
    with pytest.raises(BatchFailed, match=r"^job 3 batch 17 \(8 cells\): cells failed: Runtime"):
        task_result(ATTEMPT, _outcome("failed"))


@pytest.mark.parametrize("status", ["retrying", "split", "lost"])
def test_an_attempt_whose_cells_run_again_raises_a_retry(status: str) -> None:
    with pytest.raises(BatchRetried, match=r"^job 3 batch 17 \(8 cells\): .*RuntimeError: boom"):
        task_result(ATTEMPT, _outcome(status))


@pytest.mark.parametrize("status", ["cancelled", "skipped"])
def test_a_cancelled_or_skipped_batch_is_a_success_saying_so(status: str) -> None:
    assert task_result(ATTEMPT, _outcome(status, None)) == f"job 3 batch 17 (8 cells): {status}"


class StatesFleet(Fleet):
    """A fleet that allows two attempts per batch, the second at once."""

    @property
    def env(self) -> dict[str, str]:
        return {
            **super().env,
            "REPROGRID_MAX_ATTEMPTS": "2",
            "REPROGRID_RETRY_DELAY_SECONDS": "0",
        }


class EventLog:
    """Every Celery event on the broker, captured on a thread, and Flower's view of them."""

    def __init__(self, broker_url: str) -> None:
        self.app = celery_app(Settings(broker_url=broker_url))
        self.events: list[dict[str, Any]] = []
        self.state = State()
        self.lock = threading.Lock()
        self.receiver: Any = None
        self.thread = threading.Thread(target=self._capture, daemon=True)
        self.thread.start()

    def _capture(self) -> None:
        with self.app.connection_for_read() as connection:
            self.receiver = self.app.events.Receiver(connection, handlers={"*": self._on_event})
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def _on_event(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(event)
            self.state.event(event)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [event for event in self.events if event["type"] == kind]

    def tasks_of(self, batch_id: int) -> list[Any]:
        """The tasks Flower lists for the batch (its id is the first arg), oldest first."""
        with self.lock:
            tasks = [t for t in self.state.tasks.values() if t.args and _args(t)[0] == batch_id]
        return sorted(tasks, key=lambda task: task.received or task.sent or 0)

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True  # looked at every second
        self.thread.join(timeout=5)


def _args(task_or_event: Any) -> list[Any]:
    raw = task_or_event["args"] if isinstance(task_or_event, dict) else task_or_event.args
    return list(ast.literal_eval(raw))


@dataclass
class Scenario:
    fleet: StatesFleet
    events: EventLog
    redis_url: str
    db_url: str
    jobs: dict[str, int]  # good, doomed, old -> job id
    batches: dict[str, int]  # good, doomed, old -> batch id


def _spec(tmp_path: Path, name: str, model: str) -> Path:
    spec = tmp_path / f"{name}.toml"
    spec.write_text(
        f'name = "{name}"\nmodel = "{model}"\nprompts = ["a red fox"]\nseeds = "0-{CELLS - 1}"\n'
        "steps = 2\nwidth = 64\nheight = 64\nbatch_size = 2\n",
        encoding="utf-8",
    )
    return spec


def _submit(fleet: Fleet, spec: Path) -> int:
    result = fleet.command("submit", str(spec), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["job_id"]


def _publish_as_an_old_scheduler(scenario_db: str, broker_url: str, job_id: int) -> int:
    """Form the job's batch and send it as the scheduler before job ids and cells did."""
    db = open_database(scenario_db)
    with db.sessions() as session:
        (batch_id,) = form_batches(session, job_id)
        session.execute(
            update(Batch).where(Batch.id == batch_id).values(status=QUEUED, published_at=utcnow())
        )
        fleet = fleet_id(session)
        session.commit()
    db.dispose()
    app = celery_app(Settings(broker_url=broker_url))
    app.send_task(RUN_BATCH_TASK, args=[batch_id], kwargs={"fleet": fleet}, queue="default")
    return batch_id


def _batch_of(db_url: str, job_id: int) -> int:
    db = open_database(db_url)
    with db.sessions() as session:
        (batch_id,) = session.scalars(select(Batch.id).where(Batch.job_id == job_id)).all()
    db.dispose()
    return batch_id


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tmp_path = tmp_path_factory.mktemp("celery-states")
    broker = OwnRedis(tmp_path)
    broker.start()
    db_url = f"sqlite:///{tmp_path / 'fleet.db'}"
    fleet = StatesFleet(db_url, broker.url, tmp_path)
    events = EventLog(broker.url)
    try:
        doomed_model = tmp_path / "doomed-checkpoint"
        shutil.copytree(BUILTIN_DIR / "tiny", doomed_model)
        jobs = {
            "good": _submit(fleet, _spec(tmp_path, "good", "builtin:tiny")),
            "doomed": _submit(fleet, _spec(tmp_path, "doomed", str(doomed_model))),
            "old": _submit(fleet, _spec(tmp_path, "old", "builtin:tiny")),
        }
        shutil.rmtree(doomed_model)
        fleet.worker(WORKER)
        wait_until(lambda: events.of_type("worker-online"), 180, "the worker's events", fleet)
        old_batch = _publish_as_an_old_scheduler(db_url, broker.url, jobs["old"])
        fleet.scheduler()
        db = open_database(db_url)
        expected = {"good": {"done": CELLS}, "doomed": {"failed": CELLS}, "old": {"done": CELLS}}
        wait_until(
            lambda: all(cell_counts(db, jobs[k]) == v for k, v in expected.items()),
            240,
            "the three jobs to end",
            fleet,
        )
        db.dispose()
        batches = {k: _batch_of(db_url, jobs[k]) for k in ("good", "doomed")} | {"old": old_batch}
        yield Scenario(fleet, events, broker.url, db_url, jobs, batches)
    finally:
        fleet.stop()
        events.stop()
        broker.stop()


def _settled(scenario: Scenario, name: str, states: list[str]) -> list[Any]:
    """The batch's tasks once Flower's view of them reaches ``states``, oldest first."""
    batch_id = scenario.batches[name]

    def reached() -> list[Any]:
        tasks = scenario.events.tasks_of(batch_id)
        return tasks if [task.state for task in tasks] == states else []

    return wait_until(reached, 30, f"the {name} batch's tasks to be {states}", scenario.fleet)


def test_a_batch_whose_cells_failed_is_a_failure_task_with_the_error(scenario):
    _, last = _settled(scenario, "doomed", ["RETRY", "FAILURE"])
    title = f"job {scenario.jobs['doomed']} batch {scenario.batches['doomed']} (2 cells)"
    assert last.exception.startswith("BatchFailed(")
    assert f"{title}: cells failed: CheckpointNotFound: no such directory" in last.exception


def test_a_failed_attempt_that_will_run_again_is_a_retried_task_with_the_error(scenario):
    first, _ = _settled(scenario, "doomed", ["RETRY", "FAILURE"])
    retried = [e for e in scenario.events.of_type("task-retried") if e["uuid"] == first.uuid]
    (event,) = retried
    assert event["exception"].startswith("BatchRetried(")
    title = f"job {scenario.jobs['doomed']} batch {scenario.batches['doomed']} (2 cells)"
    assert f"{title}: failed, to be retried: CheckpointNotFound: no such" in event["exception"]


def test_a_computed_batch_is_a_succeeded_task_saying_so(scenario):
    (task,) = _settled(scenario, "good", ["SUCCESS"])
    title = f"job {scenario.jobs['good']} batch {scenario.batches['good']} (2 cells)"
    assert task.result == repr(f"{title}: computed, recorded in the background")


def test_task_args_name_the_batch_and_its_job_and_kwargs_its_cells(scenario):
    (task,) = _settled(scenario, "good", ["SUCCESS"])
    assert task.name == RUN_BATCH_TASK  # one task type for Flower's filters and metrics
    assert _args(task) == [scenario.batches["good"], scenario.jobs["good"]]
    kwargs = ast.literal_eval(task.kwargs)
    assert kwargs["cells"] == CELLS
    assert set(kwargs) == {"cells", "fleet"}


def test_the_scheduler_sends_the_same_readable_args(scenario):
    sent = [
        e for e in scenario.events.of_type("task-sent") if _args(e)[0] == scenario.batches["good"]
    ]
    assert [_args(e) for e in sent] == [[scenario.batches["good"], scenario.jobs["good"]]]
    assert sent[0]["name"] == RUN_BATCH_TASK


def test_a_message_of_an_older_scheduler_runs_on_a_worker_of_this_version(scenario):
    (task,) = _settled(scenario, "old", ["SUCCESS"])
    assert _args(task) == [scenario.batches["old"]]
    title = f"job {scenario.jobs['old']} batch {scenario.batches['old']} (2 cells)"
    assert task.result == repr(f"{title}: computed, recorded in the background")


def test_the_database_records_the_failure_whatever_celery_says(scenario):
    _settled(scenario, "doomed", ["RETRY", "FAILURE"])
    db = open_database(scenario.db_url)
    with db.sessions() as session:
        batch = session.get(Batch, scenario.batches["doomed"])
        assert (batch.status, batch.attempts) == ("failed", 2)
        assert "no such directory" in batch.error
    db.dispose()


def test_failed_and_retried_tasks_leave_no_message_to_redeliver(scenario):
    _settled(scenario, "doomed", ["RETRY", "FAILURE"])
    client = redis.Redis.from_url(scenario.redis_url)
    assert client.llen("default") == 0  # nothing requeued
    assert client.hlen("unacked") == 0  # every message acknowledged: none comes back
    # one task per attempt the database counted: Celery sent no retry of its own
    assert len(scenario.events.tasks_of(scenario.batches["doomed"])) == 2
