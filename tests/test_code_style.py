"""The code base stays ruff clean and keeps its dependency direction."""

import ast
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


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


# Tokenization at validation loads transformers' tokenizer classes, which run on the
# tokenizers package without torch (tests/test_record.py checks that no torch is loaded).
ALLOWED_IMPORTS = {"tokenization.py": ("transformers",)}


def test_the_scheduler_never_imports_the_worker_or_torch():
    forbidden = ("reprogrid.worker", "torch", "diffusers", "transformers")
    for path in (ROOT / "reprogrid" / "scheduler").rglob("*.py"):
        allowed = ALLOWED_IMPORTS.get(path.name, ())
        for name in imported_modules(path):
            if name not in allowed:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"


def test_importing_the_scheduler_loads_no_torch():
    code = "import sys, reprogrid.scheduler.jobs, reprogrid.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
