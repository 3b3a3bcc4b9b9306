"""The public Python API: the README's examples run as written, and what they promise holds."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import reprogrid

SPEC = {"prompts": ["a red fox"], "seeds": "0-1", "steps": 2, "width": 64, "height": 64}
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_examples() -> list[str]:
    """The ``python`` blocks of the README."""
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("example", readme_python_examples())
def test_the_readme_python_examples_run_as_written(example: str, tmp_path: Path):
    env = {**os.environ, "REPROGRID_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "notebook.db").exists()


def test_the_readme_has_python_examples():
    assert readme_python_examples()


@pytest.fixture
def grid(tmp_path: Path) -> reprogrid.Reprogrid:
    api = reprogrid.connect(db=tmp_path / "api.db", store=tmp_path / "store", threads=1)
    yield api
    api.close()


def test_run_takes_a_dict_and_images_reads_its_rows_back(grid):
    job = grid.run(SPEC)
    assert (job.status, job.done, job.failed) == ("done", 2, 0)
    rows = list(grid.images(job.job_id))
    assert [(r["prompt"], r["seed"]) for r in rows] == [("a red fox", 0), ("a red fox", 1)]
    assert all(Path(r["path"]).is_file() for r in rows)


def test_a_toml_spec_and_field_overrides_give_the_spec_fields(grid, tmp_path):
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text('prompts = ["a cat"]\nseeds = "0-9"\nsteps = 4\n', encoding="utf-8")
    spec = grid.spec(spec_file, steps=2, prompts=["a dog"])
    assert spec.prompts == ("a dog",) and spec.steps == 2 and spec.cell_count == 10


def test_a_bad_spec_raises_spec_error_naming_the_field(grid):
    with pytest.raises(reprogrid.api.SpecError, match="steps"):
        grid.spec({**SPEC, "steps": 0})


def test_submit_and_wait_times_out_on_a_job_no_worker_runs(grid):
    job_id = grid.submit(SPEC, queue="nobody")
    with pytest.raises(TimeoutError, match=f"job {job_id}"):
        grid.wait(job_id, timeout=0.2, poll_seconds=0.05)


def test_wait_returns_at_once_for_a_finished_job(grid):
    job = grid.run(SPEC)
    assert grid.wait(job.job_id, timeout=0)["done"] == 2


def test_dataframe_has_one_row_per_image_with_the_export_columns(grid):
    pytest.importorskip("pandas")
    from reprogrid.review.export import EXPORT_COLUMNS

    job = grid.run(SPEC)
    frame = grid.dataframe(job.job_id)
    assert list(frame.columns) == list(EXPORT_COLUMNS) and len(frame) == 2
    assert frame["seed"].tolist() == [0, 1]


def test_images_of_an_unknown_job_raise_not_found(grid):
    with pytest.raises(reprogrid.api.NotFound, match="no job 7"):
        list(grid.images(7))


def test_importing_reprogrid_and_reading_loads_no_torch(tmp_path):
    code = (
        "import sys, reprogrid\n"
        f"grid = reprogrid.connect(db={str(tmp_path / 'r.db')!r})\n"
        "grid.progress(); list(grid.query())\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_refine_makes_a_job_of_the_image_with_the_appended_prompt(grid):
    (first, _) = grid.images(grid.run(SPEC).job_id)
    refined = grid.refine(first["image_id"], appends=[", at night"])
    assert refined.parent_image_id == first["image_id"]
    assert refined.spec.prompts == ("a red fox, at night",)
    assert list(refined.spec.seeds) == [first["seed"]]


def test_cancel_of_an_unknown_job_raises_not_found(grid):
    grid.progress()
    with pytest.raises(reprogrid.api.NotFound):
        grid.cancel(99)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[reprogrid.Reprogrid, int, Path]:
    """A 2 prompts x 2 seeds job run through the API, and its folder."""
    folder = tmp_path_factory.mktemp("api-review")
    api = reprogrid.connect(db=folder / "api.db", store=folder / "store", threads=1)
    job = api.run({**SPEC, "prompts": ["a red fox", "a blue bird"], "width": 32, "height": 32})
    assert job.status == "done"
    yield api, job.job_id, folder
    api.close()


def test_image_rows_and_progress_carry_utc_datetimes(ran):
    api, job_id, _ = ran
    (row, *_) = api.images(job_id)
    (progress,) = api.progress(job_id)
    for value in (row["created_at"], progress["created_at"], progress["finished_at"]):
        assert isinstance(value, datetime) and value.utcoffset() == timedelta(0)


def test_grid_writes_the_sheets_and_returns_their_paths(ran):
    api, job_id, folder = ran
    (path,) = api.grid(job_id, folder / "sheet.png", rows="seed", cols="prompt", thumb=32)
    assert path == folder / "sheet.png" and path.stat().st_size > 0


def test_sheets_are_the_pixels_grid_writes_held_in_memory(ran):
    from PIL import Image

    api, job_id, folder = ran
    (path,) = api.grid(job_id, folder / "same.png", thumb=32)
    (sheet,) = api.sheets(job_id, thumb=32)
    with Image.open(path) as written:
        assert sheet.size == written.size and sheet.tobytes() == written.tobytes()


def test_report_writes_the_folder_and_returns_its_index_page(ran):
    api, job_id, folder = ran
    heard = []
    written = api.report(job_id, folder / "report", on_images=heard.append)
    assert written.index == folder / "report" / "index.html" and written.index.is_file()
    assert sum(heard) == 4


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_writes_every_row_to_a_path_or_a_stream(ran, fmt):
    api, job_id, folder = ran
    path = folder / f"images.{fmt}"
    assert api.export(path, job_id, fmt=fmt) == 4
    stream = io.StringIO(newline="")
    assert api.export(stream, job_id, fmt=fmt) == 4
    assert stream.getvalue() == path.read_bytes().decode("utf-8")
    assert str(next(api.images(job_id))["created_at"].isoformat()) in stream.getvalue()


def test_export_of_an_unknown_job_raises_not_found_and_writes_nothing(ran):
    api, _, folder = ran
    with pytest.raises(reprogrid.api.NotFound, match="no job 99"):
        api.export(folder / "none.csv", 99)
    assert not (folder / "none.csv").exists()


def test_verify_takes_the_options_of_its_command_as_keywords(ran):
    api, job_id, _ = ran
    rows = api.verify(job_id, alone=True, tolerance=0)
    assert {row["mode"] for row in rows} == {"alone"}
    assert {row["details"]["batch_size"] for row in rows} == {1}
    assert {row["details"]["tolerance"] for row in rows} == {0}
    # Alone, an image of a batch is identical or off by a level, as the CPU's kernels
    # go (README, "What you can expect"); with no tolerance a level is "different".
    for row in rows:
        assert (row["verdict"], row["max_abs_diff"]) in (("identical", 0), ("different", 1))
    (summary,) = api.verifications(job_id)
    assert summary["mode"] == "alone" and summary["identical"] + summary["different"] == 4
    assert summary["differences"] == {}  # the same environment ran and verified


def test_environment_and_requirements_are_the_recorded_ones(ran):
    api, job_id, _ = ran
    environment_id = next(api.images(job_id))["environment_id"]
    environment = api.environment(environment_id)
    assert environment["environment_id"] == environment_id
    assert f"torch=={environment['packages']['torch']}" in api.requirements(environment_id)
    with pytest.raises(reprogrid.api.NotFound, match="no environment 99"):
        api.environment(99)


def test_run_draws_a_progress_bar_of_images_when_asked(grid, capsys):
    grid.run(SPEC, progress=True)
    assert "job 1: 100%" in capsys.readouterr().err


def test_on_batch_hears_each_batch_once_its_images_are_recorded(grid):
    heard = []
    job = grid.run({**SPEC, "batch_size": 1}, on_batch=heard.append)
    assert sorted((o.status, o.images) for o in heard) == [("done", 1), ("done", 1)]
    assert {row["batch_id"] for row in grid.images(job.job_id)} == {o.batch_id for o in heard}


@pytest.mark.parametrize("module", ["review", "verify", "environments"])
def test_the_review_commands_go_through_the_api(module):
    source = (Path(reprogrid.__file__).parent / "cli" / f"{module}.py").read_text()
    for internal in ("write_report", "write_sheets", "image_rows", "verification_summary"):
        assert internal not in source, f"cli/{module}.py calls {internal} itself"
