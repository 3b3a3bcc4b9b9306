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
    _set_levels(loggers, [logging.WARNING] * len(loggers))
    for log in loggers:
        log.handlers = [collector]
        log.propagate = False
    try:
        with warnings.catch_warnings(record=True) as raised:
            warnings.simplefilter("always")
            yield found
    finally:
        for log, (_, handlers, propagate) in zip(loggers, saved, strict=True):
            log.handlers = handlers
            log.propagate = propagate
        _set_levels(loggers, [level for level, _, _ in saved])
    for warning in raised:
        module = warning.filename.replace("\\", "/").split("site-packages/")[-1]
        _keep(found, module.split("/")[0], warning.category.__name__, str(warning.message))


def _set_levels(loggers: list[logging.Logger], levels: list[int]) -> None:
    """``Logger.setLevel`` for each, forgetting the cached answers of these loggers and
    their children only: ``setLevel`` forgets those of every logger in the process
    (hundreds once transformers is imported), about 0.3 ms a call, between two
    pipeline calls."""
    if all(log.level == level for log, level in zip(loggers, levels, strict=True)):
        return
    for log, level in zip(loggers, levels, strict=True):
        log.level = level
    for cache in _LIBRARY_CACHES.current():
        cache.clear()


class _LibraryCaches:
    """The answer caches (``Logger._cache``) of the library loggers and their children,
    listed again only when the process's loggers changed: a logger is added (its
    name is new) or a placeholder becomes one (its name is not)."""

    def __init__(self) -> None:
        self.known = -1  # how many names the caches were listed from
        self.caches: list[dict[int, bool]] = []
        self.placeholders: list[str] = []

    def current(self) -> list[dict[int, bool]]:
        loggers = logging.root.manager.loggerDict
        if self.known != len(loggers) or any(
            isinstance(loggers[name], logging.Logger) for name in self.placeholders
        ):
            prefixes = tuple(f"{name}." for name in LIBRARY_LOGGERS)
            named = [
                (name, logger)
                for name, logger in list(loggers.items())
                if name in LIBRARY_LOGGERS or name.startswith(prefixes)
            ]
            self.known = len(loggers)
            self.caches = [log._cache for _, log in named if isinstance(log, logging.Logger)]
            self.placeholders = [name for name, log in named if not isinstance(log, logging.Logger)]
        return self.caches


_LIBRARY_CACHES = _LibraryCaches()


def _keep(found: list[dict[str, Any]], source: str, category: str, message: str) -> None:
    entry = {"source": source, "category": category, "message": message}
    if entry not in found:
        found.append(entry)
