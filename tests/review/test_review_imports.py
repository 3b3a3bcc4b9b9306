"""The review part reads the database through models and never imports the worker or torch."""

from __future__ import annotations

import subprocess
import sys


def test_review_modules_import_neither_the_worker_nor_torch():
    code = (
        "import sys\n"
        "import reprogrid.cli, reprogrid.review.export, reprogrid.review.layout\n"
        "import reprogrid.review.refine, reprogrid.review.report, reprogrid.review.sheet\n"
        "print(sorted(m for m in sys.modules if m.startswith('reprogrid.worker')"
        " or m.split('.')[0] in {'torch', 'diffusers'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout == "[]\n"
