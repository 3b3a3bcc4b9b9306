"""Start-up costs a user feels on every command: what a process imports and reads before work.

Each check runs in a new Python process, the way a user's shell starts one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory

from reprogrid.models import open_database
from reprogrid.models.db import alembic_config, head_revision


def imported_after(code: str, cwd: Path) -> set[str]:
    """The top-level packages a new interpreter has imported after running ``code``."""
    listing = "print(' '.join({m.split('.')[0] for m in sys.modules}))"
    script = f"{code}\nimport sys\n{listing}"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_head_revision_read_from_file_names_is_alembics_head():
    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_opening_an_up_to_date_database_does_not_import_alembic(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    open_database(url).dispose()
    code = f"from reprogrid.models import open_database\nopen_database({url!r}).dispose()"
    assert "alembic" not in imported_after(code, tmp_path)


def test_opening_a_new_database_still_migrates_it(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    code = (
        "from reprogrid.models import open_database\n"
        "from reprogrid.models.db import current_revision, head_revision\n"
        f"db = open_database({url!r})\n"
        "with db.engine.connect() as c:\n"
        "    assert current_revision(c) == head_revision()"
    )
    assert "alembic" in imported_after(code, tmp_path)


def test_a_run_whose_progress_goes_to_a_pipe_does_not_import_rich(tmp_path: Path):
    code = (
        "from reprogrid.cli import main\n"
        f"main(['--db', 'sqlite:///{tmp_path / 'r.db'}', '--store', '{tmp_path / 'store'}',"
        " 'run', '--prompt', 'a fox', '--seeds', '0', '--steps', '1', '--width', '64',"
        " '--height', '64'], standalone_mode=False)"
    )
    imported = imported_after(code, tmp_path)
    assert "torch" in imported  # it did run the job
    assert "rich" not in imported
