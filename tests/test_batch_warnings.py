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


def test_a_library_logger_created_after_a_batch_has_its_warnings_kept_in_the_next():
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    with captured_warnings():
        pass
    late = logging.getLogger("diffusers.imported.later")
    assert not late.isEnabledFor(logging.WARNING)  # cached while quiet
    with captured_warnings() as found:
        late.warning("a late module's warning")
    assert [entry["message"] for entry in found] == ["a late module's warning"]
    assert not late.isEnabledFor(logging.WARNING)


def test_a_placeholder_that_becomes_a_logger_has_its_warnings_kept():
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    logging.getLogger("diffusers.parent_later.child")  # leaves a placeholder for its parent
    with captured_warnings():
        pass
    parent = logging.getLogger("diffusers.parent_later")  # same name: no new entry
    assert not parent.isEnabledFor(logging.WARNING)
    with captured_warnings() as found:
        parent.warning("the parent's warning")
    assert [entry["message"] for entry in found] == ["the parent's warning"]
