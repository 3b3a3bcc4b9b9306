"""`reprogrid query --since/--sort/--limit` on the night job."""

from __future__ import annotations

import json

from sqlalchemy import select

from reprogrid.models import Cell, Image, open_database

from .night import FAILED_SEEDS, NightJob


def _query(night: NightJob, *options: str) -> list[dict]:
    result = night.cli("query", "--job", str(night.job_id), "--format", "json", *options)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_sort_by_seed_puts_seeds_above_2_63_last(night: NightJob):
    seeds = [row["seed"] for row in _query(night, "--sort", "seed")]
    assert seeds == sorted(seeds) and seeds[-1] == 2**64 - 1


def test_a_descending_sort_with_a_limit_gives_the_top_rows(night: NightJob):
    rows = _query(night, "--sort", "-seed", "--limit", "4")
    assert [row["seed"] for row in rows] == [2**64 - 1] * 4
    assert [row["grid_index"] for row in rows] == [7, 15, 23, 31]  # ties in grid order


def test_since_keeps_the_cells_whose_image_was_made_then_or_later(night: NightJob):
    with open_database(night.db_url).sessions() as session:
        made = dict(session.execute(select(Image.id, Image.created_at).join(Cell)).all())
    middle = sorted(made.values())[len(made) // 2]
    rows = _query(night, "--since", middle.isoformat())
    assert {row["image_id"] for row in rows} == {i for i, at in made.items() if at >= middle}
    assert len(_query(night, "--since", "1h")) == 32  # the failed cells count from submission


def test_sort_by_time_lists_cells_without_an_image_by_their_job_s_submission(night: NightJob):
    rows = _query(night, "--sort", "time")
    assert [row["seed"] for row in rows[:4]] == list(FAILED_SEEDS)
    assert all(row["image_id"] is not None for row in rows[4:])


def test_a_malformed_since_is_bad_input(night: NightJob):
    result = night.cli("query", "--since", "yesterday")
    assert result.exit_code == 2
    assert result.output == (
        "Error: since: expected a duration like 2h or a date/time like 2025-05-01T06:00,"
        " got 'yesterday'\n"
    )
