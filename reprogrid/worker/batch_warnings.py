"""Warnings raised while a batch computes, kept for its record.

diffusers, transformers and torch report advisory problems (a sampler
misconfiguration, an input cut short, a fallback kernel) as Python warnings or
as warning records of their loggers; either can come with pixels that are not
what the user meant. :func:`captured_warnings` collects both around the
pipeline call, once per distinct message, and keeps them off stderr: they are
stored with the batch (``batch.warnings``), shown by ``show`` and the report.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LIBRARY_LOGGERS = ("diffusers", "transformers", "torch")


class _Collector(logging.Handler):
    def __init__(self, found: list[dict[str, Any]]) -> None:
        super().__init__(logging.WARNING)
        self.found = found

    def emit(self, record: logging.LogRecord) -> None:
        _keep(self.found, record.name.split(".")[0], record.levelname, record.getMessage())


@contextmanager
def captured_warnings() -> Iterator[list[dict[str, Any]]]:
    """Collect warnings into the yielded list: ``{"source", "category", "message"}`` each.

    Python warnings count whatever module raised them; log records those of the
    diffusers, transformers and torch loggers at WARNING and above, whatever
    verbosity the process set (loading sets them to ERROR to keep logs quiet).
    """
    found: list[dict[str, Any]] = []
    collector = _Collector(found)
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    saved = [(log.level, log.handlers[:], log.propagate) for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
        log.handlers = [collector]
        log.propagate = False
    try:
        with warnings.catch_warnings(record=True) as raised:
            warnings.simplefilter("always")
            yield found
    finally:
        for log, (level, handlers, propagate) in zip(loggers, saved, strict=True):
            log.setLevel(level)
            log.handlers = handlers
            log.propagate = propagate
    for warning in raised:
        module = warning.filename.replace("\\", "/").split("site-packages/")[-1]
        _keep(found, module.split("/")[0], warning.category.__name__, str(warning.message))


def _keep(found: list[dict[str, Any]], source: str, category: str, message: str) -> None:
    entry = {"source": source, "category": category, "message": message}
    if entry not in found:
        found.append(entry)
