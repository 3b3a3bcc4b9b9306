"""The code base stays ruff clean and keeps its dependency direction."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing_to_fix():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "reprogrid", "tests", "scripts"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_scheduler_never_imports_the_worker_or_torch():
    for path in (ROOT / "reprogrid" / "scheduler").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for forbidden in ("reprogrid.worker", "import torch", "import diffusers", "from diffusers"):
            assert forbidden not in text, f"{path.name} mentions {forbidden}"


def test_importing_the_scheduler_loads_no_torch():
    code = "import sys, reprogrid.scheduler.jobs, reprogrid.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
