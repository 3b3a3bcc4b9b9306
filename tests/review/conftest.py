"""Fixtures of the review tests: the night job (see ``night.py``), run once per session,
and headless Chromium (``browser.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Cli

from .browser import start_chromium
from .night import NIGHT_PROMPTS, NightJob, make_night_job


@pytest.fixture(scope="session")
def night(tmp_path_factory: pytest.TempPathFactory) -> NightJob:
    """The finished night job in a SQLite file (do not change it: tests share it)."""
    folder = tmp_path_factory.mktemp("night")
    db_url, store = f"sqlite:///{folder / 'reprogrid.db'}", folder / "store"
    job_id, image_id, refine_job_id = make_night_job(db_url, store, NIGHT_PROMPTS)
    return NightJob(db_url, store, job_id, image_id, refine_job_id, Cli(db_url, store, folder))


@pytest.fixture(scope="session")
def chromium() -> Iterator:
    """Headless Chromium driven by Selenium through Debian's chromium-driver."""
    yield from start_chromium()
