"""``python -m reprogrid``: the same as the ``reprogrid`` command."""

from reprogrid.cli import console

console()
