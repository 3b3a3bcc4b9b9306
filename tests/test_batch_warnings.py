"""captured_warnings: library log records inside a batch are kept, outside they stay quiet."""

from __future__ import annotations

import logging

from reprogrid.worker.batch_warnings import captured_warnings


def test_a_library_warning_is_kept_inside_a_batch_and_quiet_again_after_it(caplog):
    parent, child = logging.getLogger("diffusers"), logging.getLogger("diffusers.some.module")
    parent.setLevel(logging.ERROR)  # as loading a checkpoint leaves it
    assert not child.isEnabledFor(logging.WARNING)  # the child caches this answer
    with captured_warnings() as found:
        child.warning("scheduler config ignored")
    assert found == [
        {"source": "diffusers", "category": "WARNING", "message": "scheduler config ignored"}
    ]
    assert parent.level == logging.ERROR
    assert not child.isEnabledFor(logging.WARNING)
