"""README "From Python" run as a Jupyter notebook: a real kernel, one cell per paragraph.

What a notebook user sees: the contact sheet drawn inline (a PNG display of the
cell whose last line is the sheet), the report written, a progress bar of the
run, and no warning from the progress bar's widget machinery.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_api import readme_python_examples


def notebook_of(example: str):
    """A notebook with one code cell per blank-line-separated paragraph of ``example``."""
    import nbformat

    paragraphs = [p.strip("\n") for p in example.split("\n\n") if p.strip()]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(p) for p in paragraphs])


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory):
    """The README's first Python example, executed in a fresh kernel in its own folder."""
    nbclient = pytest.importorskip("nbclient")
    folder = tmp_path_factory.mktemp("notebook")
    notebook = notebook_of(readme_python_examples()[0])
    os.environ["REPROGRID_THREADS"] = "1"  # the kernel inherits it
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": folder}}
    )
    client.execute()
    return notebook, folder


def outputs(notebook, kind: str) -> list[dict]:
    return [o for cell in notebook.cells for o in cell.outputs if o.output_type == kind]


def test_the_sheet_is_drawn_inline(executed):
    notebook, _ = executed
    (cell,) = [c for c in notebook.cells if c.source.splitlines()[-1].startswith("sheet ")]
    (shown,) = [o for o in cell.outputs if o.output_type == "execute_result"]
    assert "image/png" in shown.data


def test_the_report_is_written_through_the_api(executed):
    _, folder = executed
    assert (Path(folder) / "report-1" / "index.html").is_file()
    assert (Path(folder) / "images.csv").read_text().count("\n") == 1 + 8


def test_the_run_draws_a_progress_bar_without_the_widget_warning(executed):
    notebook, _ = executed
    text = "".join(o.text for o in outputs(notebook, "stream"))
    assert "job 1: 100%" in text and "8/8" in text
    assert "IProgress" not in text
