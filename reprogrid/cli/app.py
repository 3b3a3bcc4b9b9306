"""The root ``reprogrid`` command group, its global options and shared CLI helpers."""

from __future__ import annotations

from pathlib import Path

import click

from reprogrid.config import ConfigError, Settings, database_url
from reprogrid.models import Database, DatabaseUnavailable, open_database


class BadInput(click.ClickException):
    """Bad input: a one-line ``Error: field: message`` and exit code 2."""

    exit_code = 2


class App:
    """Settings for this invocation, and the database opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            try:
                self._db = open_database(self.settings.db_url)
            except DatabaseUnavailable as exc:
                raise click.ClickException(str(exc)) from None
        return self._db


pass_app = click.make_pass_decorator(App)


def db_url(value: str | None) -> str | None:
    """Accept a SQLAlchemy URL or a plain path to a SQLite file."""
    return None if value is None else database_url(value)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--db",
    help="SQLAlchemy URL or SQLite file. [env: REPROGRID_DB; default: ./reprogrid.db]",
)
@click.option(
    "--store",
    type=click.Path(path_type=Path),
    help="Image store folder. [env: REPROGRID_STORE; default: ./reprogrid-store]",
)
@click.version_option(package_name="reprogrid")
@click.pass_context
def main(ctx: click.Context, db: str | None, store: Path | None) -> None:
    """reprogrid: deterministic, fully recorded diffusion image grids.

    \b
    Example:
      reprogrid run --model builtin:tiny --prompt "a red fox" --seeds 0-7 --steps 10
      reprogrid query --format json
    """
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    store = store or settings.store
    ctx.obj = App(settings.with_overrides(db_url=db_url(db), store=store.expanduser().resolve()))
