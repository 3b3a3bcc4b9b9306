"""The ``reprogrid`` command line: a thin click layer over the scheduler, worker and models.

Commands that only read the database (``status``, ``query``, ``show``) never
import torch; the worker is imported inside the commands that generate.
Each module registers its commands on the root group defined in ``app``;
``program`` runs that group as the ``reprogrid`` process.
"""

from reprogrid.cli import environments, fleet, jobs, review, serve, verify
from reprogrid.cli.app import main
from reprogrid.cli.program import console

__all__ = ["console", "environments", "fleet", "jobs", "main", "review", "serve", "verify"]
