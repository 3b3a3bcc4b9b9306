"""reprogrid: deterministic, fully recorded diffusion image grids, embedded or on a fleet.

The public API (:mod:`reprogrid.api`) is importable from here: ``reprogrid.connect``,
``reprogrid.Reprogrid``, ``reprogrid.JobResult``. It loads on first use, so
``import reprogrid`` stays cheap for the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from reprogrid.api import JobResult, Reprogrid, connect

__all__ = ["JobResult", "Reprogrid", "__version__", "connect"]


def __getattr__(name: str) -> Any:
    if name in {"JobResult", "Reprogrid", "connect"}:
        from reprogrid import api

        return getattr(api, name)
    raise AttributeError(f"module 'reprogrid' has no attribute {name!r}")
