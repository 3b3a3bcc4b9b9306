"""image_view.seed is a number (migration 0011), on a real SQLite file and the real PostgreSQL.

``WHERE seed = 3`` and ``ORDER BY seed`` answer as they read; ``seed_text``
keeps the exact unsigned decimal text, also past 2**63, where SQLite's
``seed`` is a REAL (docs/schema.md, "The flat view: image_view").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

import reprogrid
from reprogrid.models import Database, open_database
from reprogrid.models.db import alembic_config

SPEC = {"prompts": ["a red fox", "a blue bird"], "steps": 2, "width": 64, "height": 64}
TOP_SEED = 2**64 - 1


def _url(database: Database) -> str:
    return database.engine.url.render_as_string(hide_password=False)


def _run(url: str, store: Path, seeds: str) -> None:
    """Run a job of SPEC's two prompts over ``seeds`` into the database at ``url``."""
    grid = reprogrid.connect(db=url, store=store, threads=1)
    try:
        assert grid.run(SPEC | {"seeds": seeds}).status == "done"
    finally:
        grid.close()


def _scalars(database: Database, sql: str) -> list:
    with database.engine.connect() as connection:
        return list(connection.execute(text(sql)).scalars())


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request, tmp_path: Path) -> str:
    """The URL of an empty database, a SQLite file or a fresh PostgreSQL one."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'r.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def at_0010(empty_url: str) -> Iterator[Database]:
    """A database migrated up to 0010 only (image_view's seed still text)."""
    old = open_database(empty_url, migrate=False)
    config = alembic_config()
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0010")
    yield old
    old.dispose()


def test_where_seed_equals_3_counts_the_images_of_seed_3(database: Database, tmp_path: Path):
    _run(_url(database), tmp_path / "store", "0-12")
    assert _scalars(database, "SELECT count(*) FROM image_view WHERE seed = 3") == [2]


def test_order_by_seed_sorts_numerically(database: Database, tmp_path: Path):
    _run(_url(database), tmp_path / "store", "0-12")
    seeds = _scalars(database, "SELECT seed FROM image_view ORDER BY seed, image_id")
    assert seeds == [seed for seed in range(13) for _prompt in range(2)]  # not 0, 1, 10, 11, 12, 2
    assert all(int(seed) == seed for seed in seeds)  # numbers, not text


def test_a_seed_of_2_to_the_64_minus_1_keeps_its_exact_text_and_sorts_last(
    database: Database, tmp_path: Path
):
    _run(_url(database), tmp_path / "store", f"0-2,{TOP_SEED},9")
    rows = _scalars(database, "SELECT seed_text FROM image_view ORDER BY seed, image_id")
    assert rows == ["0", "0", "1", "1", "2", "2", "9", "9", str(TOP_SEED), str(TOP_SEED)]
    top = _scalars(database, "SELECT seed FROM image_view WHERE seed > 9223372036854775807")
    if database.engine.dialect.name == "postgresql":
        assert top == [TOP_SEED, TOP_SEED]  # numeric(20,0): exact
    else:
        assert top == [float(TOP_SEED), float(TOP_SEED)]  # SQLite: the nearest REAL


def test_seeds_below_2_to_the_63_are_integers_in_sqlite_and_numeric_in_postgresql(
    database: Database, tmp_path: Path
):
    _run(_url(database), tmp_path / "store", f"{2**63 - 1}")
    if database.engine.dialect.name == "postgresql":
        kinds = _scalars(database, "SELECT DISTINCT pg_typeof(seed)::text FROM image_view")
        assert kinds == ["numeric"]
        column = _scalars(
            database,
            "SELECT numeric_precision || ',' || numeric_scale FROM information_schema.columns"
            " WHERE table_name = 'image_view' AND column_name = 'seed'",
        )
        assert column == ["20,0"]
    else:
        assert _scalars(database, "SELECT DISTINCT typeof(seed) FROM image_view") == ["integer"]
    assert _scalars(database, "SELECT DISTINCT seed FROM image_view") == [2**63 - 1]


def test_migration_0011_makes_the_seed_of_a_database_at_0010_a_number(
    at_0010: Database, empty_url: str, tmp_path: Path
):
    _run(empty_url, tmp_path / "store", "0-12")  # opening it migrates it
    assert _scalars(at_0010, "SELECT version_num FROM alembic_version") == ["0011"]
    assert _scalars(at_0010, "SELECT count(*) FROM image_view WHERE seed = 3") == [2]
    assert _scalars(at_0010, "SELECT seed_text FROM image_view WHERE seed = 12") == ["12", "12"]


def test_migration_0011_downgrades_to_the_text_seed_of_0009(database: Database, tmp_path: Path):
    _run(_url(database), tmp_path / "store", "0-12")
    config = alembic_config()
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0010")
    columns = [c["name"] for c in inspect(database.engine).get_columns("image_view")]
    assert "seed" in columns and "seed_text" not in columns
    assert _scalars(database, "SELECT count(*) FROM image_view WHERE seed = '3'") == [2]


def test_the_dataframe_has_integer_seeds_and_datetime_created_at(
    database: Database, tmp_path: Path
):
    pandas = pytest.importorskip("pandas")
    grid = reprogrid.connect(db=_url(database), store=tmp_path / "store", threads=1)
    small = grid.run(SPEC | {"seeds": "0-2"}).job_id
    big = grid.run(SPEC | {"seeds": f"0,{TOP_SEED}"}).job_id
    frames = (grid.dataframe(small), grid.dataframe(big))
    grid.close()
    assert [frame["seed"].dtype.name for frame in frames] == ["int64", "uint64"]
    assert frames[1]["seed"].tolist() == [0, TOP_SEED, 0, TOP_SEED]
    for frame in frames:
        assert isinstance(frame["created_at"].dtype, pandas.DatetimeTZDtype)
        assert str(frame["created_at"].dt.tz) == "UTC"


def test_image_view_read_with_pandas_as_documented_has_integer_seeds_and_datetimes(
    database: Database, tmp_path: Path
):
    pandas = pytest.importorskip("pandas")
    _run(_url(database), tmp_path / "store", f"0-2,{TOP_SEED}")
    # docs/schema.md's recipe for pandas
    frame = pandas.read_sql(
        "SELECT * FROM image_view ORDER BY seed, image_id",
        database.engine,
        parse_dates={"created_at": {"utc": True}},
    )
    frame["seed"] = frame["seed_text"].astype("uint64")
    assert frame["seed"].tolist() == [0, 0, 1, 1, 2, 2, TOP_SEED, TOP_SEED]
    assert frame["seed"].dtype.name == "uint64"
    assert str(frame["created_at"].dt.tz) == "UTC"
