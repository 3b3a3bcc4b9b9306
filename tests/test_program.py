"""The ``reprogrid`` process: a command ends without the interpreter's teardown, and with
everything an ordinary exit gives: its code, its output, its databases closed."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from reprogrid.cli.program import only_teardown_left


def reprogrid(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m reprogrid ARGS`` in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "reprogrid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_run_exits_zero_with_its_summary_printed_and_its_sqlite_log_folded_in(
    tmp_path: Path, tiny_spec: Path
):
    db = tmp_path / "r.db"
    result = reprogrid("--db", f"sqlite:///{db}", "run", str(tiny_spec), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "16 of 16 images" in result.stdout
    assert db.exists()
    assert not Path(f"{db}-wal").exists()  # the last connection closed: checkpointed


def test_an_error_keeps_its_exit_code_and_its_message(tmp_path: Path):
    result = reprogrid("--db", str(tmp_path / "missing.db"), "status", cwd=tmp_path)
    assert result.returncode == 2
    assert "no database at" in result.stderr


def test_a_thread_still_running_is_waited_for_by_an_ordinary_exit():
    release = threading.Event()
    worker = threading.Thread(target=release.wait)
    worker.start()
    try:
        assert not only_teardown_left(0)
    finally:
        release.set()
        worker.join()
    assert only_teardown_left(0)


def test_a_message_as_exit_code_is_left_to_python_to_print():
    assert not only_teardown_left("stopped: see the log")
