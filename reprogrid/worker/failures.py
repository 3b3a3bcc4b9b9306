"""What a batch's error means for its next attempt: never, soon, or after a backoff.

An error is one of three kinds:

- ``permanent``: it cannot change on retry. ``TypeError`` and ``ValueError``
  (a wrong argument or value given to the pipeline) and an incomplete
  checkpoint (a component's ``config.json`` or weights missing:
  ``CheckpointIncomplete``, not the ``OSError`` diffusers would raise) fail the
  batch at once, error text kept.
- ``transient``: the world around the batch failed: I/O (``OSError``: the
  store, a network share), the database (SQLAlchemy's operational and
  connection errors), memory. The batch is retried up to
  ``max_transient_attempts`` times, each after a longer wait.
- ``other``: anything else (a ``RuntimeError`` from torch, a missing
  checkpoint another worker may have): retried up to ``max_attempts`` times,
  with the same backoff.

The wait before attempt ``n + 1`` is ``retry_delay_seconds * 2**(n - 1)``,
capped at ``retry_max_delay_seconds``: with the defaults (5 s, 300 s, 10
attempts) a batch rides out about 20 minutes of outage before it fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from reprogrid.config import Settings
from reprogrid.models import utcnow
from reprogrid.scheduler.checkpoint_refs import CheckpointIncomplete, CheckpointNotFound

PERMANENT = "permanent"
TRANSIENT = "transient"
OTHER = "other"

_TRANSIENT_ERRORS = (
    OSError,
    MemoryError,
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
)


def error_kind(exc: BaseException) -> str:
    """``permanent``, ``transient`` or ``other`` (see the module docstring)."""
    if isinstance(exc, _TRANSIENT_ERRORS) or _is_device_out_of_memory(exc):
        return TRANSIENT
    if isinstance(exc, CheckpointIncomplete):  # what is missing stays missing
        return PERMANENT
    if isinstance(exc, CheckpointNotFound):  # another worker may hold the checkpoint
        return OTHER
    if isinstance(exc, TypeError | ValueError):
        return PERMANENT
    return OTHER


def _is_device_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError"  # torch.cuda.OutOfMemoryError, any device


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts each kind of error allows, and how long to wait between them."""

    max_attempts: int = 3
    max_transient_attempts: int = 10
    delay_seconds: float = 5.0
    max_delay_seconds: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy the ``REPROGRID_*`` settings describe."""
        return cls(
            max_attempts=settings.max_attempts,
            max_transient_attempts=settings.max_transient_attempts,
            delay_seconds=settings.retry_delay_seconds,
            max_delay_seconds=settings.retry_max_delay_seconds,
        )

    def retry_at(self, exc: BaseException, attempt: int) -> datetime | None:
        """When attempt ``attempt + 1`` may start; None when the batch fails now."""
        kind = error_kind(exc)
        allowed = {PERMANENT: 1, TRANSIENT: self.max_transient_attempts}.get(
            kind, self.max_attempts
        )
        if attempt >= allowed:
            return None
        return utcnow() + timedelta(seconds=self.delay(attempt))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1, 2, ...)."""
        return min(self.delay_seconds * 2 ** (attempt - 1), self.max_delay_seconds)
