"""Settings read from the environment, in one place.

Every part of reprogrid takes a :class:`Settings` instead of reading
``os.environ`` itself; the CLI builds one from flags over the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_DB = "sqlite:///reprogrid.db"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_STORE = "reprogrid-store"
DEFAULT_MAX_CELLS = 1_000_000


class ConfigError(ValueError):
    """A setting has a value reprogrid cannot use."""


@dataclass(frozen=True)
class Settings:
    """Where reprogrid keeps its records, files and messages, and its limits."""

    db_url: str = DEFAULT_DB
    broker_url: str = DEFAULT_BROKER
    store: Path = Path(DEFAULT_STORE)
    max_cells: int = DEFAULT_MAX_CELLS
    threads: int | None = None
    full_determinism: bool = True
    lease_seconds: int = 600
    max_attempts: int = 3
    celery_monitoring: bool = True  # remote control and task events, for Celery's tools
    max_transient_attempts: int = 10
    retry_delay_seconds: int = 5
    retry_max_delay_seconds: int = 300
    max_steps: int = 10_000
    max_image_side: int = 4096
    max_batch_size: int = 64

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read ``REPROGRID_*`` variables; unset ones keep their defaults."""
        env = os.environ if environ is None else environ
        return cls(
            db_url=database_url(env.get("REPROGRID_DB") or DEFAULT_DB),
            broker_url=env.get("REPROGRID_BROKER", DEFAULT_BROKER),
            store=Path(env.get("REPROGRID_STORE", DEFAULT_STORE)),
            max_cells=_int(env, "REPROGRID_MAX_CELLS", DEFAULT_MAX_CELLS, minimum=1),
            threads=_int(env, "REPROGRID_THREADS", None, minimum=1),
            full_determinism=_bool(env, "REPROGRID_FULL_DETERMINISM", True),
            lease_seconds=_int(env, "REPROGRID_LEASE_SECONDS", 600, minimum=10),
            max_attempts=_int(env, "REPROGRID_MAX_ATTEMPTS", 3, minimum=1),
            celery_monitoring=_bool(env, "REPROGRID_CELERY_MONITORING", True),
            max_transient_attempts=_int(env, "REPROGRID_MAX_TRANSIENT_ATTEMPTS", 10, minimum=1),
            retry_delay_seconds=_int(env, "REPROGRID_RETRY_DELAY_SECONDS", 5, minimum=0),
            retry_max_delay_seconds=_int(env, "REPROGRID_RETRY_MAX_DELAY_SECONDS", 300, minimum=0),
            max_steps=_int(env, "REPROGRID_MAX_STEPS", 10_000, minimum=1),
            max_image_side=_int(env, "REPROGRID_MAX_IMAGE_SIDE", 4096, minimum=8),
            max_batch_size=_int(env, "REPROGRID_MAX_BATCH_SIZE", 64, minimum=1),
        )

    def with_overrides(self, **values: object) -> Settings:
        """A copy with the given fields replaced; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def database_url(value: str) -> str:
    """A SQLAlchemy URL as given, or a plain path to a SQLite file as its URL."""
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def _int(env: os._Environ[str] | dict[str, str], name: str, default, minimum: int):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


def _bool(env: os._Environ[str] | dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")
