"""The recording process: requests run there, in order; errors come back; it survives its
own death, ignores Ctrl-C, exits when closed, and idles without a database connection."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from reprogrid.config import Settings
from reprogrid.models import Database, open_database
from reprogrid.worker.execute import RecordingContext, claim_preferred
from reprogrid.worker.failures import RetryPolicy
from reprogrid.worker.recorder import IDLE_SECONDS, Recorder


def where(_ctx: RecordingContext, value: object) -> tuple[int, object]:
    """Run in the recording process: its pid, and the value sent."""
    return os.getpid(), value


def refuse(_ctx: RecordingContext) -> None:
    raise ValueError("refused in the recording process")


def start_recorder(db: Database, settings: Settings, monkeypatch) -> Recorder:
    # the recording process imports this module's functions by name
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    return Recorder(RecordingContext(db, settings.store, "w1", 600, RetryPolicy()))


@pytest.fixture
def recorder(db: Database, settings: Settings, monkeypatch) -> Iterator[Recorder]:
    recorder = start_recorder(db, settings, monkeypatch)
    yield recorder
    recorder.close()


def running(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_request_runs_in_the_recording_process_and_returns_its_result(recorder: Recorder):
    pid, value = recorder.call(where, {"seeds": [1, 2]})
    assert pid == recorder.pid != os.getpid()
    assert value == {"seeds": [1, 2]}


def test_an_error_raised_there_is_raised_to_the_caller_and_the_process_serves_on(
    recorder: Recorder,
):
    with pytest.raises(ValueError, match="refused in the recording process"):
        recorder.call(refuse)
    assert recorder.call(where, 1)[1] == 1


def test_a_recording_process_that_died_is_replaced_and_the_request_sent_again(
    recorder: Recorder,
):
    first, _ = recorder.call(where, 0)
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not running(first))
    second, value = recorder.call(where, 1)
    assert second != first and value == 1


def test_ctrl_c_and_sigterm_do_not_stop_the_recording_process(recorder: Recorder):
    pid, _ = recorder.call(where, 0)
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)
    assert recorder.call(where, 1) == (pid, 1)


def test_the_recording_process_exits_when_closed_and_a_later_request_starts_another(
    recorder: Recorder,
):
    first, _ = recorder.call(where, 0)
    recorder.close()
    wait_until(lambda: not running(first))
    assert recorder.pid is None
    assert recorder.call(where, 1)[0] not in (first, os.getpid())


def test_an_idle_recording_process_gives_its_database_connection_back(
    postgres_url: str, settings: Settings, monkeypatch
):
    db = open_database(postgres_url)
    recorder = start_recorder(db, settings, monkeypatch)
    try:
        assert recorder.call(claim_preferred, 999, []) is None  # no such batch: one query
        busy = connections(db)
        time.sleep(IDLE_SECONDS + 1.0)
        idle = connections(db)
    finally:
        recorder.close()
        db.dispose()
    assert idle == busy - 1


def connections(db: Database) -> int:
    """Client connections to this database, besides the one asking."""
    with db.engine.connect() as connection:
        return connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )


def test_a_folder_named_reprogrid_where_the_user_stands_does_not_replace_the_package(
    db: Database, settings: Settings, monkeypatch, tmp_path: Path
):
    (tmp_path / "reprogrid" / "worker").mkdir(parents=True)  # e.g. an output folder
    monkeypatch.chdir(tmp_path)
    recorder = start_recorder(db, settings, monkeypatch)
    try:
        assert recorder.call(where, 1)[1] == 1
    finally:
        recorder.close()
