"""Regenerate the README's contact sheets: the first command's job, drawn by ``reprogrid grid``.

Runs ``reprogrid run examples/shapes.toml`` in a scratch folder (its own
database and store), then ``reprogrid grid 1`` into ``docs/``, one sheet per
guidance scale (prompts down, seeds across):

    python scripts/make_readme_sheet.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHEET = ROOT / "docs" / "shapes-sheet.png"


def reprogrid(*args: str, cwd: Path) -> str:
    """Run the reprogrid command line in ``cwd`` and return its output; fail loudly."""
    result = subprocess.run(
        [sys.executable, "-m", "reprogrid", *args], cwd=cwd, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(f"reprogrid {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        print(reprogrid("run", str(ROOT / "examples" / "shapes.toml"), cwd=scratch).strip())
        sheet = str(scratch / SHEET.name)
        drawn = reprogrid("grid", "1", "-o", sheet, "--thumb", "96", cwd=scratch)
        for path in map(Path, drawn.split()):
            target = SHEET.parent / path.name
            shutil.copyfile(path, target)
            print(target.relative_to(ROOT))


if __name__ == "__main__":
    main()
