"""The ``reprogrid`` program: the command line as a process of its own.

A command is over once it returns, but an ordinary exit then finalizes and
frees every module one by one: about 0.1 s once SQLAlchemy is loaded (a
quarter of ``reprogrid status``), about a second once torch, diffusers and
transformers are (as long as a short job's images on a CPU). So
:func:`console` ends the process itself: the exit handlers run, every database
is closed (SQLite folds its write-ahead log back into the file), the output is
flushed, then ``os._exit`` with the command's exit code. A process that still
has a thread of its own running, or whose exit code is a message to print,
exits the ordinary way.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn

from reprogrid.cli.app import main
from reprogrid.models.db import dispose_all


def console() -> None:
    """Run the command line on ``sys.argv``; exit with its code."""
    try:
        main()
    except SystemExit as done:
        if not only_teardown_left(done.code):
            raise
        exit_now(int(done.code or 0))


def only_teardown_left(code: object) -> bool:
    """Whether an ordinary exit with ``code`` would only tear the interpreter down: an
    integer code, no thread of ours for it to wait for."""
    waited_for = [
        thread
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and not thread.daemon
    ]
    return isinstance(code, int | None) and not waited_for


def exit_now(code: int) -> NoReturn:
    """Close what an ordinary exit closes, then leave without the interpreter's teardown."""
    dispose_all()
    atexit._run_exitfuncs()  # logging's flush, executors' joins: what Python runs first
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a pipe its reader closed
            stream.flush()
    os._exit(code)
