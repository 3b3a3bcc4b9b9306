"""Shared fixtures: real SQLite files, the real PostgreSQL and Redis of this machine.

A test that needs PostgreSQL or Redis skips with the reason when the server is
unreachable, and fails instead when the ``CI`` variable is set: CI must never
pass by skipping. Servers: ``REPROGRID_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``) and ``REPROGRID_TEST_REDIS``
(default ``redis://127.0.0.1:6379/15``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from services import OwnRedis, service_unavailable
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from reprogrid.config import Settings
from reprogrid.models import Database, open_database

POSTGRES = os.environ.get("REPROGRID_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("REPROGRID_TEST_REDIS", "redis://127.0.0.1:6379/15")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'reprogrid.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    admin_url = make_url(POSTGRES).set(drivername="postgresql+psycopg")
    name = f"reprogrid_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        service_unavailable(f"PostgreSQL at {POSTGRES}", exc)
    yield admin_url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def redis_url() -> str:
    """The test Redis database, emptied before the test."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS, socket_connect_timeout=2)
        client.flushdb()
    except Exception as exc:
        service_unavailable(f"Redis at {REDIS}", exc)
    return REDIS


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path: Path) -> Iterator[Database]:
    """The same test on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'r.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    db = open_database(url)
    yield db
    db.dispose()


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    database = open_database(sqlite_url)
    yield database
    database.dispose()


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return Settings(db_url=sqlite_url, store=tmp_path / "store", threads=1)


class Cli:
    """Invoke ``reprogrid`` in this process against one database and store."""

    def __init__(self, db_url: str, store: Path, cwd: Path) -> None:
        self.db_url, self.store, self.cwd = db_url, store, cwd
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        from reprogrid.cli import main

        old = Path.cwd()
        os.chdir(self.cwd)
        try:
            env = {"REPROGRID_THREADS": "1"}
            argv = ["--db", self.db_url, "--store", str(self.store), *args]
            return self.runner.invoke(main, argv, env=env, catch_exceptions=False)
        finally:
            os.chdir(old)


@pytest.fixture
def cli(sqlite_url: str, tmp_path: Path) -> Cli:
    return Cli(sqlite_url, tmp_path / "store", tmp_path)


TINY_SPEC = """
name = "foxes"
model = "builtin:tiny"
prompts = ["a red fox", "a blue bird"]
seeds = "0-7"
steps = 3
width = 64
height = 64
batch_size = 4
"""


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Path:
    """A 2 prompts x 8 seeds spec on the built-in checkpoint."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SPEC, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A function giving the folder of a tiny random checkpoint of a family, built once.

    Names are tests/tiny_families.py's FAMILIES keys; ``seed`` gives a second,
    different checkpoint of the same family.
    """
    import tiny_families

    root = tmp_path_factory.mktemp("checkpoints")
    built: dict[tuple[str, int], Path] = {}

    def get(name: str, seed: int = 0) -> Path:
        if (name, seed) not in built:
            built[name, seed] = tiny_families.build(name, root / f"{name}-{seed}", seed)
        return built[name, seed]

    return get


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A Redis server of the test's own (its own port and folder): a fault test may kill it."""
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()
