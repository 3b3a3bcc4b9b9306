"""The public Python API: the README's examples run as written, and what they promise holds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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
