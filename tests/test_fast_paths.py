"""The fast paths the benchmarks led to: bulk cell inserts, hash-prefix lookups, batch forming."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from reprogrid.models import Batch, Cell, Database, Image
from reprogrid.models.queries import NotFound, find_image
from reprogrid.models.recipes import job_recipes
from reprogrid.scheduler.grid import cell_recipe, sha256_text
from reprogrid.scheduler.jobs import create_job, form_batches
from reprogrid.scheduler.spec import validate_spec
from reprogrid.worker import records
from reprogrid.worker.determinism import DeterminismSettings
from reprogrid.worker.environment import describe_environment, fingerprint

SPEC = {
    "prompts": ["a fox", 'a "quoted" ünïcode bird'],
    "seeds": [0, 7, 2**64 - 1],
    "steps": 2,
    "width": 64,
    "height": 64,
    "batch_size": 2,
    "axes": {"guidance_scale": [1.0, 5.0], "steps": [2, 3]},
}


def test_bulk_inserted_cells_read_back_as_the_spec_expands(database):
    spec = validate_spec(SPEC, max_cells=100)
    job_id = create_job(database, spec)
    with database.sessions() as session:
        cells = session.scalars(
            select(Cell).where(Cell.job_id == job_id).order_by(Cell.grid_index)
        ).all()
        recipes = job_recipes(session, job_id)
    assert len(cells) == spec.cell_count == 2 * 3 * 4
    for index, cell in enumerate(cells):
        assert cell.grid_index == index
        assert cell.status == "queued" and cell.attempts == 0 and cell.batch_id is None
        assert cell.recipe is None  # rebuilt from its recipe_base row
        assert recipes[cell.id] == cell_recipe(spec, cell.prompt, cell.seed, cell.params)
        assert cell.recipe_sha256 == sha256_text(recipes[cell.id])
        assert json.loads(recipes[cell.id])["seed"] == cell.seed
    assert {json.dumps(c.params, sort_keys=True) for c in cells} == {
        json.dumps({"guidance_scale": g, "steps": s}, sort_keys=True)
        for g in (1.0, 5.0)
        for s in (2, 3)
    }
    assert cells[2].seed == 2**64 - 1


def test_batches_are_formed_with_their_cells_pointing_back(database):
    # 4 axis combinations of 2 prompts x 3 seeds: batches of 4 and 2 cells each
    job_id = create_job(database, validate_spec({**SPEC, "batch_size": 4}, max_cells=100))
    with database.sessions() as session:
        batch_ids = form_batches(session, job_id)
        session.commit()
        batches = session.scalars(select(Batch).where(Batch.id.in_(batch_ids))).all()
        for batch in batches:
            pointing = session.scalars(select(Cell.id).where(Cell.batch_id == batch.id)).all()
            assert sorted(pointing) == sorted(batch.cell_ids)
    assert [len(b.cell_ids) for b in sorted(batches, key=lambda b: b.id)] == [4, 2] * 4


def add_image(database: Database, cell_id: int, pixel: str, png: str) -> int:
    """An image row for a cell, with chosen hashes."""
    with database.sessions() as session:
        cell = session.get(Cell, cell_id)
        batch = Batch(job_id=cell.job_id, cell_ids=[cell_id])
        session.add(batch)
        session.flush()
        info = describe_environment("cpu", "float32", DeterminismSettings(1, True))
        environment = records.environment_id(session, fingerprint(info), info)
        checkpoint = records.checkpoint_id(session, "builtin:tiny", None, "0" * 64, {})
        image = Image(
            cell_id=cell_id,
            batch_id=batch.id,
            index_in_batch=0,
            batch_size=1,
            pixel_sha256=pixel,
            png_sha256=png,
            recipe_sha256=cell.recipe_sha256,  # as records.record_images copies it
            path=f"{png[:2]}/{png}.png",
            width=64,
            height=64,
            environment_id=environment,
            checkpoint_id=checkpoint,
            generate_seconds=0.1,
        )
        session.add(image)
        session.commit()
        return image.id


def test_images_are_found_by_a_prefix_of_any_of_their_hashes(database):
    job_id = create_job(database, validate_spec(SPEC, max_cells=100))
    with database.sessions() as session:
        first, second = session.scalars(
            select(Cell).where(Cell.job_id == job_id).order_by(Cell.grid_index).limit(2)
        ).all()
    one = add_image(database, first.id, "ffa0f" + "1" * 59, "ab" + "2" * 62)
    two = add_image(database, second.id, "fe" + "3" * 62, "ffa04" + "4" * 59)
    with database.sessions() as session:
        assert find_image(session, "ffa0f").id == one  # a prefix ending in f
        assert find_image(session, "FFA0F1").id == one  # hashes are hex: any case
        assert find_image(session, "ffa04").id == two  # the PNG hash
        assert find_image(session, "fe" + "3" * 62).id == two  # a whole hash
        assert find_image(session, f"sha:{second.recipe_sha256[:12]}").id == two  # the recipe hash
        assert find_image(session, str(one)).id == one  # an id
        with pytest.raises(NotFound, match="several"):
            find_image(session, "ffa0")
        with pytest.raises(NotFound, match="no image whose"):
            find_image(session, "fff0")


def test_plain_digits_are_an_id_never_a_hash_prefix(database):
    job_id = create_job(database, validate_spec(SPEC, max_cells=100))
    with database.sessions() as session:
        cell = session.scalars(select(Cell).where(Cell.job_id == job_id)).first()
    image = add_image(database, cell.id, "6553" + "1" * 60, "ab" + "2" * 62)
    with database.sessions() as session:
        with pytest.raises(NotFound, match="no image 6553 "):
            find_image(session, "6553")
        assert find_image(session, "sha:6553").id == image
        assert find_image(session, str(image)).id == image
