"""How cells are stored (migration 0009): rebuilt recipes, recipe hashes on images, and
``query --prompt`` / ``--seed`` by index and grid arithmetic against plain matches.

Every search is compared with the plain query it replaces (``LIKE '%needle%'`` on
``cell.prompt``, ``cell.seed = S``) over the same rows, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from reprogrid.models import Cell, Database, JobPrompt, RecipeBase, open_database
from reprogrid.models.queries import CellFilter, prompt_search_index, query_cells
from reprogrid.models.recipes import job_recipes
from reprogrid.scheduler.grid import GridShape, cell_recipe, sha256_text
from reprogrid.scheduler.jobs import create_job
from reprogrid.scheduler.spec import validate_spec

PROMPTS = [
    "a red fox",
    "A RED FOX in snow",
    "100% cotton_shirt",
    "100 percent cotton shirt",
    'a "quoted" fox',
    "it's a fox's den",
    "Café au lait",
    "CAFÉ AU LAIT",
    "straße in Köln",
    "STRASSE in köln",
    "slash/and\\back",
    "日本の狐",
    "x",
]
NEEDLES = [
    "fox",
    "FOX",
    "red fox",
    "%",
    "0%",
    "_",
    "n_s",
    "%c",
    '"',
    '"quoted"',
    "'",
    "fox's",
    "é",
    "É",
    "café",
    "ÉE",
    "ß",
    "straße",
    "ö",
    "/",
    "\\",
    "h/a",
    "狐",
    "本の",
    "x",
    "a",
    "ox",
    "zz",
    "no such text",
    " ",
]


UNCONDITIONAL = {"model": "builtin:tiny-ddpm", "seeds": "0-5", "steps": 2}


def _spec(**fields):
    raw = {"prompts": PROMPTS, "seeds": [5, 0, 2**64 - 1], "steps": 2, "width": 64, "height": 64}
    return validate_spec(raw | fields, max_cells=100_000)


def _plain(database: Database, condition) -> list[int]:
    """Cell ids of a plain (unindexed) match, in job and grid order: the reference."""
    with database.reads() as session:
        query = select(Cell.id).where(condition).order_by(Cell.job_id, Cell.grid_index)
        return list(session.scalars(query))


def _found(database: Database, where: CellFilter) -> list[int]:
    with database.reads() as session:
        return [row["cell_id"] for row in query_cells(session, where, Path("store"))]


@pytest.fixture
def jobs(database: Database) -> list[int]:
    """A job on two axes, a plain one, a one-prompt job and one without prompts."""
    return [
        create_job(database, _spec(axes={"steps": [2, 3], "guidance_scale": [1.0, 5.0]})),
        create_job(database, _spec()),
        create_job(database, _spec(prompts=["another red fox"], seeds="0-9")),
        create_job(database, validate_spec(UNCONDITIONAL, max_cells=100)),
    ]


def test_a_rebuilt_recipe_is_the_expanded_recipe_and_hashes_to_the_stored_hash(database):
    spec = _spec(axes={"steps": [2, 3]}, negative_prompt='no "blur"')
    job_id = create_job(database, spec)
    with database.reads() as session:
        recipes = job_recipes(session, job_id)
        cells = session.scalars(select(Cell).where(Cell.job_id == job_id)).all()
        bases = session.scalars(select(RecipeBase).where(RecipeBase.job_id == job_id)).all()
    assert len(bases) == 2  # one per batch key, not per cell
    assert all(cell.recipe is None for cell in cells)
    for cell in cells:
        assert recipes[cell.id] == cell_recipe(spec, cell.prompt, cell.seed, cell.params)
        assert sha256_text(recipes[cell.id]) == cell.recipe_sha256


def test_a_stored_recipe_wins_over_the_base(database):
    job_id = create_job(database, _spec(prompts=["a fox"]))
    with database.sessions() as session:
        cell = session.scalars(select(Cell).where(Cell.job_id == job_id)).first()
        cell.recipe = '{"stored":true}'
        session.commit()
        assert job_recipes(session, job_id)[cell.id] == '{"stored":true}'


def test_each_job_lists_its_distinct_prompts_once(database):
    job_id = create_job(database, _spec(axes={"steps": [2, 3]}))
    with database.reads() as session:
        texts = session.scalars(select(JobPrompt.prompt).where(JobPrompt.job_id == job_id))
        assert sorted(texts) == sorted(PROMPTS)


@pytest.mark.parametrize("needle", NEEDLES)
def test_prompt_search_finds_what_a_plain_substring_match_finds(database, jobs, needle):
    expected = _plain(database, Cell.prompt.contains(needle, autoescape=True))
    assert _found(database, CellFilter(prompt=needle)) == expected
    in_job = [c for c in expected if c in set(_plain(database, Cell.job_id == jobs[1]))]
    assert _found(database, CellFilter(prompt=needle, job=jobs[1])) == in_job


@pytest.mark.parametrize("seed", [0, 5, 2**64 - 1, 7, 3])
def test_seed_search_finds_what_a_plain_seed_match_finds(database, jobs, seed):
    assert _found(database, CellFilter(seed=seed)) == _plain(database, Cell.seed == seed)


def test_prompt_and_seed_together_find_the_cells_with_both(database, jobs):
    both = (Cell.prompt.contains("fox", autoescape=True)) & (Cell.seed == 2**64 - 1)
    assert _found(database, CellFilter(prompt="fox", seed=2**64 - 1)) == _plain(database, both)


def test_a_grid_of_more_ranges_than_listed_is_searched_by_arithmetic(database):
    scales = [1.0 + i / 100 for i in range(2001)]  # 2001 combinations, each a range
    job_id = create_job(
        database, _spec(prompts=["a fox", "a bird"], axes={"guidance_scale": scales})
    )
    shape = GridShape(combinations=2001, prompts=2, seeds=3)
    assert shape.ranges([1], None, most=2000) is None
    bird = _plain(database, (Cell.job_id == job_id) & (Cell.prompt == "a bird"))
    assert _found(database, CellFilter(prompt="bird", job=job_id)) == bird
    seed = _plain(database, (Cell.job_id == job_id) & (Cell.seed == 0))
    assert _found(database, CellFilter(seed=0, job=job_id)) == seed


def test_grid_ranges_follow_the_documented_order():
    shape = GridShape(combinations=2, prompts=3, seeds=4)
    assert shape.ranges([1], None, most=10) == [(4, 7), (16, 19)]
    assert shape.ranges(None, 2, most=10) == [
        (2, 2),
        (6, 6),
        (10, 10),
        (14, 14),
        (18, 18),
        (22, 22),
    ]
    assert shape.ranges([0, 1, 2], None, most=10) == [(0, 23)]


def test_the_prompt_search_names_the_index_it_uses(database):
    with database.reads() as session:
        index = prompt_search_index(session)
    expected = "FTS5 trigram" if database.is_sqlite else "pg_trgm GIN"
    assert index.startswith(expected)


@pytest.fixture
def unprivileged_postgres_url(postgres_url: str) -> Iterator[str]:
    """The fresh database, as a role that may create tables but not extensions."""
    role = f"reprogrid_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        connection.execute(text(f'GRANT ALL ON SCHEMA public TO "{role}"'))
    yield make_url(postgres_url).set(username=role).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP OWNED BY "{role}"'))
        connection.execute(text(f'DROP ROLE "{role}"'))
    admin.dispose()


def test_without_pg_trgm_a_one_line_note_and_search_still_matches(
    unprivileged_postgres_url: str, capfd
):
    database = open_database(unprivileged_postgres_url)
    note = capfd.readouterr().err.strip()
    assert note.startswith("reprogrid: note: PostgreSQL extension pg_trgm could not be created")
    assert len(note.splitlines()) == 1 and "CREATE EXTENSION pg_trgm" in note
    create_job(database, _spec())
    with database.reads() as session:
        assert prompt_search_index(session).startswith("none")
    for needle in ("fox", "%", "É"):
        expected = _plain(database, Cell.prompt.contains(needle, autoescape=True))
        assert _found(database, CellFilter(prompt=needle)) == expected
    database.dispose()
