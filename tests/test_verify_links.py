"""Verify checks every link between record, stored file and regeneration.

A store is damaged four ways (one PNG deleted, one truncated, one bit-flipped,
one image row's ``pixel_sha256`` edited); a full ``verify`` and ``verify
--files-only`` each name every broken link, and none of the four reads
``identical``.
"""

from __future__ import annotations

import json

import pytest
from conftest import Cli
from sqlalchemy import update
from test_verify import run_job, stored_image

from reprogrid.models import Image, open_database

INTACT = {2, 4, 6, 8}


def damage_the_store(cli: Cli) -> None:
    """Image 1's PNG deleted, 5's truncated, 7's bit-flipped; image 3's row edited."""
    stored_image(cli, 1)[0].unlink()
    truncated = stored_image(cli, 5)[0]
    truncated.write_bytes(truncated.read_bytes()[:200])
    flipped = stored_image(cli, 7)[0]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    db = open_database(cli.db_url)
    with db.sessions() as session:
        session.execute(update(Image).where(Image.id == 3).values(pixel_sha256="0" * 64))
        session.commit()
    db.dispose()


@pytest.fixture
def damaged(cli: Cli) -> Cli:
    run_job(cli)
    damage_the_store(cli)
    return cli


def broken_links(result) -> dict[int, list[str]]:
    rows = json.loads(result.output)
    return {row["image_id"]: row["details"]["broken"] for row in rows}


def verdicts(result) -> dict[int, str]:
    return {row["image_id"]: row["verdict"] for row in json.loads(result.output)}


def test_a_full_verify_names_each_broken_link_of_a_damaged_store(damaged: Cli):
    result = damaged("verify", "1", "--format", "json")
    assert result.exit_code == 1
    broken = broken_links(result)
    assert broken[1] == ["file missing"]
    assert broken[5] == ["file changed"]
    assert broken[7] == ["file changed"]
    assert broken[3] == ["record changed", "pixels differ"]
    assert all(broken[i] == [] for i in INTACT)


def test_a_damaged_store_never_reads_identical(damaged: Cli):
    for args in (("verify", "1"), ("verify", "1", "--files-only")):
        result = verdicts(damaged(*args, "--format", "json"))
        assert {i for i, verdict in result.items() if verdict == "identical"} == INTACT, args


def test_files_only_checks_the_bytes_and_the_decoded_pixels(damaged: Cli):
    result = damaged("verify", "1", "--files-only", "--format", "json")
    assert result.exit_code == 1
    assert broken_links(result) == {
        **{i: [] for i in INTACT},
        1: ["file missing"],
        3: ["record changed"],
        5: ["file changed"],
        7: ["file changed"],
    }
    assert verdicts(result)[3] == "record-changed"
    assert verdicts(result)[1] == "missing"


def test_the_table_names_the_broken_links_and_counts_what_passed(damaged: Cli):
    result = damaged("verify", "1")
    assert result.exit_code == 1
    assert "record changed, pixels differ" in result.output
    assert "file missing" in result.output
    assert result.output.rstrip().endswith("4 of 8 images identical or within 2 levels")
