"""The report's interactive page in headless Chromium (Selenium, Debian's chromium-driver):
opened from disk over file://, and served live by `reprogrid serve` while a job runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Cli
from services import free_port
from sqlalchemy import select, update

from reprogrid.config import Settings
from reprogrid.models import Batch, Cell, Image, PipelineCall, open_database
from reprogrid.scheduler.jobs import create_job, form_batches
from reprogrid.scheduler.spec import validate_spec

from .browser import WAIT, open_page, ready

GUIDANCE = [1.0, 4.0, 7.0]
SAMPLERS = ["DDIMScheduler", "EulerDiscreteScheduler"]
AXES_ERROR = "RuntimeError: CUDA error: an illegal memory access was encountered"
WARNING = {
    "source": "diffusers",
    "category": "FutureWarning",
    "message": "`upcast_vae` is deprecated and will be removed in version 1.0.0.",
}


@dataclass(frozen=True)
class AxesJob:
    """A finished 2 prompts x 4 seeds x 3 guidance scales x 2 samplers job on builtin:tiny
    (32x32, 2 steps, batches of 4): its first batch failed, every other batch raised
    the same warning."""

    db_url: str
    store: Path
    job_id: int
    batches_warned: int
    cli: Cli


def axes_spec(seeds: str = "0-3", batch_size: int = 4) -> dict:
    raw = {"name": "axes", "model": "builtin:tiny", "prompts": ["a red fox", "a blue bird"]}
    raw |= {"seeds": seeds, "steps": 2, "width": 32, "height": 32, "batch_size": batch_size}
    return raw | {"axes": {"guidance_scale": GUIDANCE, "sampler": SAMPLERS}}


@pytest.fixture(scope="module")
def axes_job(tmp_path_factory: pytest.TempPathFactory) -> AxesJob:
    from reprogrid.worker import records
    from reprogrid.worker.embedded import run_job
    from reprogrid.worker.execute import WorkerContext

    folder = tmp_path_factory.mktemp("axes")
    db_url, store = f"sqlite:///{folder / 'reprogrid.db'}", folder / "store"
    settings = Settings(db_url=db_url, store=store, threads=1)
    db = open_database(db_url)
    job_id = create_job(db, validate_spec(axes_spec(), settings.max_cells))
    with db.sessions() as session:
        batch_ids = form_batches(session, job_id)
        session.commit()
    with db.sessions() as session:
        claim = records.claim_batch(session, batch_ids[0], "axes-gpu-0", 600)
    with db.sessions() as session:
        records.fail_batch(session, claim, "axes-gpu-0", AXES_ERROR, retry_at=None)
    run_job(WorkerContext.start(settings, db, "cpu", "axes-cpu-0"), job_id)
    with db.sessions() as session:  # as a worker records what a batch raised
        warned = session.execute(
            update(Batch)
            .where(Batch.job_id == job_id, Batch.id != batch_ids[0])
            .values(warnings=[WARNING])
        ).rowcount
        session.commit()
    db.dispose()
    return AxesJob(db_url, store, job_id, warned, Cli(db_url, store, folder))


@pytest.fixture(scope="module")
def page(axes_job: AxesJob, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The axes job's report: its index.html."""
    folder = tmp_path_factory.mktemp("page")
    result = axes_job.cli("report", str(axes_job.job_id), "-o", str(folder))
    assert result.exit_code == 0, result.output
    return folder / "index.html"


def choose(browser, select_id: str, value: str) -> None:
    """Pick an option of one of the page's selects, as a user does."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, select_id)).select_by_value(value)
    ready(browser)


def texts(browser, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in browser.find_elements(By.CSS_SELECTOR, css)]


def tile_cells(browser) -> list:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, "#grid-table td.tile")


def done_images(axes_job: AxesJob) -> list[dict]:
    with open_database(axes_job.db_url).sessions() as session:
        rows = session.execute(
            select(Image.id, Image.pixel_sha256, PipelineCall.call)
            .join(Cell, Cell.id == Image.cell_id)
            .join(PipelineCall, PipelineCall.id == Image.call_id)
            .where(Cell.job_id == axes_job.job_id)
            .order_by(Cell.grid_index)
        ).all()
    return [{"image_id": i, "pixel_sha256": p, "call": json.loads(c)} for i, p, c in rows]


def test_sampler_on_rows_and_guidance_on_columns(chromium, page: Path):
    open_page(chromium, page.as_uri())
    choose(chromium, "rows-axis", "sampler")
    choose(chromium, "cols-axis", "guidance_scale")
    assert texts(chromium, "#grid-table .row-label") == [f"sampler={s}" for s in SAMPLERS]
    assert texts(chromium, "#grid-table .col-label") == [f"guidance_scale={g}" for g in GUIDANCE]
    assert len(tile_cells(chromium)) == 6
    fixed = chromium.execute_script(
        "return [...document.querySelectorAll('#fixed select')].map(s => s.dataset.axis)"
    )
    assert fixed == ["prompt", "seed"]


def test_a_pages_axis_steps_through_its_values(chromium, page: Path):
    open_page(chromium, page.as_uri() + "#rows=sampler&cols=guidance_scale&pages=seed")
    from selenium.webdriver.common.by import By

    assert texts(chromium, ".page-number") == ["page 1 of 4"]
    first = chromium.find_element(By.CSS_SELECTOR, "#grid-table td.tile img").get_attribute("src")
    chromium.find_element(By.CSS_SELECTOR, ".page-next").click()
    ready(chromium)
    assert texts(chromium, ".page-number") == ["page 2 of 4"]
    second = chromium.find_element(By.CSS_SELECTOR, "#grid-table td.tile img").get_attribute("src")
    assert second != first


def test_a_tile_zooms_to_the_full_image(chromium, page: Path):
    from selenium.webdriver.common.by import By

    open_page(chromium, page.as_uri())
    tile = chromium.find_element(By.CSS_SELECTOR, "#grid-table td.has-image img")
    tile.click()
    zoom = chromium.find_element(By.ID, "zoom")
    assert zoom.is_displayed()
    image = chromium.find_element(By.ID, "zoom-image")
    assert image.get_attribute("src") == tile.get_attribute("src")  # 32 px: no thumbnail
    assert chromium.execute_script("return arguments[0].naturalWidth", image) == 32
    assert image.size["width"] >= 256  # shown larger than the tile
    zoom.click()
    assert not zoom.is_displayed()


def test_the_tile_size_slider_resizes_every_tile(chromium, page: Path):
    from selenium.webdriver.common.by import By

    open_page(chromium, page.as_uri())
    chromium.execute_script(
        "const s = document.getElementById('tile-size'); s.value = 128;"
        "s.dispatchEvent(new Event('input'))"
    )
    widths = {
        e.size["width"]
        for e in chromium.find_elements(By.CSS_SELECTOR, "#grid-table td.tile img, .blank")
    }
    assert widths == {128 + 2}  # and a 1-pixel border


def test_two_tiles_compare_with_the_fields_that_differ_highlighted(chromium, page: Path):
    from selenium.webdriver.common.by import By

    open_page(chromium, page.as_uri() + "#rows=sampler&cols=guidance_scale&at.prompt=1")
    picks = chromium.find_elements(By.CSS_SELECTOR, "#grid-table td.tile .pick")
    picks[0].click()
    picks[2].click()
    assert chromium.find_element(By.ID, "compare").is_displayed()
    differ = chromium.find_elements(By.CSS_SELECTOR, "#compare-fields tr.differs.recipe")
    assert [row.get_attribute("data-field") for row in differ] == ["guidance_scale"]
    assert [c.text for c in differ[0].find_elements(By.TAG_NAME, "td")] == ["1.0", "7.0"]
    hashes = chromium.find_elements(By.CSS_SELECTOR, "#compare-fields tr.differs:not(.recipe)")
    assert {r.get_attribute("data-field") for r in hashes} >= {"pixel_sha256", "recipe_sha256"}
    assert len(chromium.find_elements(By.CSS_SELECTOR, "#grid-table td.picked")) == 2


def test_a_tiles_details_show_its_hashes_and_its_call(chromium, axes_job, page: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(chromium, page.as_uri() + "#rows=sampler&cols=guidance_scale&at.prompt=1")
    first = chromium.find_element(By.CSS_SELECTOR, "#grid-table td.has-image")
    name = first.find_element(By.CSS_SELECTOR, ".name").text
    first.find_element(By.CSS_SELECTOR, ".info").click()
    image = next(i for i in done_images(axes_job) if f"image {i['image_id']}" == name)
    field = chromium.find_element(By.CSS_SELECTOR, '#details-fields tr[data-field="pixel_sha256"]')
    assert field.find_element(By.TAG_NAME, "td").text == image["pixel_sha256"]
    call = chromium.find_element(By.ID, "details-call")
    WebDriverWait(chromium, WAIT).until(lambda _: call.text.startswith("{"))
    assert json.loads(call.text) == image["call"]
    recipe = json.loads(chromium.find_element(By.ID, "details-recipe").text)
    assert recipe["sampler"] == SAMPLERS[0] and recipe["prompt"] == "a blue bird"


def test_a_failed_cell_shows_its_error(chromium, page: Path):
    open_page(chromium, page.as_uri())  # prompts down, seeds across: the first batch failed
    assert texts(chromium, "#grid-table td.status-failed .error") == [AXES_ERROR] * 4
    assert texts(chromium, "#grid-table td.status-failed .name")[0].startswith("cell ")


def test_an_identical_warning_of_many_batches_is_one_line_with_its_count(
    chromium, axes_job: AxesJob, page: Path
):
    open_page(chromium, page.as_uri())
    rows = texts(chromium, "table.warnings tr")[1:]
    assert len(rows) == 1
    assert WARNING["message"] in rows[0]
    assert f"({axes_job.batches_warned} batches)" in rows[0]
    assert texts(chromium, "#warnings") == ["Warnings (1)"]


def test_serve_shows_a_running_jobs_tiles_as_they_land(
    chromium, tmp_path: Path, settings: Settings
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from reprogrid.worker.embedded import run_job
    from reprogrid.worker.execute import WorkerContext

    db = open_database(settings.db_url)
    job_id = create_job(db, validate_spec(axes_spec("0", 2), settings.max_cells))
    port = free_port()
    argv = [sys.executable, "-m", "reprogrid", "--db", settings.db_url]
    argv += ["--store", str(settings.store), "serve", str(job_id), "--port", str(port)]
    server = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert server.stdout.readline() == f"serving job {job_id} at http://127.0.0.1:{port}/\n"
        open_page(chromium, f"http://127.0.0.1:{port}/#rows=sampler&cols=guidance_scale")
        progress = chromium.find_element(By.ID, "progress")
        WebDriverWait(chromium, WAIT).until(lambda _: progress.get_attribute("data-cells") == "12")
        assert progress.get_attribute("data-done") == "0"
        assert "0/12 done" in progress.text
        assert len(chromium.find_elements(By.CSS_SELECTOR, "#grid-table td.has-image")) == 0
        run_job(WorkerContext.start(settings, db, "cpu", "serve-cpu-0"), job_id)
        WebDriverWait(chromium, WAIT).until(lambda _: progress.get_attribute("data-done") == "12")
        ready(chromium)
        WebDriverWait(chromium, WAIT).until(
            lambda b: len(b.find_elements(By.CSS_SELECTOR, "#grid-table td.has-image")) == 6
        )
        assert "12/12 done" in progress.text
        image = chromium.find_element(By.CSS_SELECTOR, "#grid-table td.has-image img")
        assert image.get_attribute("src").startswith(f"http://127.0.0.1:{port}/store/")
        assert chromium.execute_script("return arguments[0].naturalWidth", image) == 32
    finally:
        server.send_signal(signal.SIGINT)
        code = server.wait(timeout=20)
        stderr = server.stderr.read()
        db.dispose()
    assert code == 0 and "Traceback" not in stderr, stderr


def test_serve_refuses_a_job_that_does_not_exist(cli: Cli):
    assert cli("run", "--prompt", "a fox", "--seeds", "0", "--steps", "1").exit_code == 0
    result = cli("serve", "99", "--port", str(free_port()))
    assert result.exit_code == 2
    assert result.output == "Error: job: no job 99\n"


def test_the_page_loads_only_the_chunks_of_its_view(chromium, axes_job: AxesJob, tmp_path: Path):
    result = axes_job.cli("report", str(axes_job.job_id), "-o", str(tmp_path), "--page-tiles", "8")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "data").glob("tiles-*.js"))) == 6
    open_page(chromium, (tmp_path / "index.html").as_uri())
    assert chromium.execute_script("return document.body.dataset.chunks") == "0"
    choose(chromium, "rows-axis", "sampler")  # 8 cells apart in grid order
    assert chromium.execute_script("return document.body.dataset.chunks") == "0 1"
