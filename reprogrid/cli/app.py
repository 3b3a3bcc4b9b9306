"""The root ``reprogrid`` command group, its global options and shared CLI helpers.

``--db`` and ``--store`` are accepted before the subcommand and after it
(``reprogrid query --db other.db``): the group adds both to every command.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError as SQLAlchemyDatabaseError

from reprogrid.api import Reprogrid
from reprogrid.config import ConfigError, Settings, database_url
from reprogrid.models import Database, DatabaseUnavailable
from reprogrid.models.queries import NotFound


class BadInput(click.ClickException):
    """Bad input: a one-line ``Error: field: message`` and exit code 2."""

    exit_code = 2


class App:
    """This invocation's :class:`~reprogrid.api.Reprogrid`, its settings and database."""

    def __init__(self, settings: Settings) -> None:
        self.api = Reprogrid(settings)

    @property
    def settings(self) -> Settings:
        return self.api.settings

    @property
    def db(self) -> Database:
        return self.api.db

    def override(self, **values: Any) -> None:
        """Replace settings given after the subcommand (before the database is opened)."""
        self.api = Reprogrid(self.settings.with_overrides(**values))

    def require_database(self) -> None:
        """Refuse (exit 2) a SQLite file that does not exist rather than create an empty one."""
        url = make_url(self.settings.db_url)
        path = url.database
        on_disk = url.get_backend_name() == "sqlite" and path and path != ":memory:"
        if on_disk and not Path(path).exists():
            where = Path(path).absolute()
            raise BadInput(f"db: no database at {where} (give --db or set REPROGRID_DB)")


pass_app = click.make_pass_decorator(App)


def pass_reader(command: Callable[..., Any]) -> Callable[..., Any]:
    """Like ``pass_app``, for commands that read, or change what exists (cancel, retry):
    a missing database is an error, never created empty."""

    @functools.wraps(command)
    def checked(app: App, *args: Any, **kwargs: Any) -> Any:
        app.require_database()
        return command(app, *args, **kwargs)

    return pass_app(checked)


def db_url(value: str | None) -> str | None:
    """Accept a SQLAlchemy URL or a plain path to a SQLite file."""
    return None if value is None else database_url(value)


def _store_path(value: Path | None) -> Path | None:
    return None if value is None else value.expanduser().resolve()


def _override(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is None:
        return
    app = ctx.find_object(App)
    if param.name == "db":
        app.override(db_url=db_url(value))
    else:
        app.override(store=_store_path(value))


DB_HELP = "SQLAlchemy URL or SQLite file. [env: REPROGRID_DB; default: ./reprogrid.db]"
STORE_HELP = "Image store folder. [env: REPROGRID_STORE; default: ./reprogrid-store]"


def _location_options() -> list[click.Option]:
    """``--db`` and ``--store`` as options of a subcommand, applied over the group's."""
    return [
        click.Option(["--db"], help=DB_HELP, expose_value=False, callback=_override),
        click.Option(
            ["--store"],
            type=click.Path(path_type=Path),
            help=STORE_HELP,
            expose_value=False,
            callback=_override,
        ),
    ]


class ReprogridGroup(click.Group):
    """A group whose commands all take ``--db`` and ``--store`` too."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.params.extend(_location_options())
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command. An unknown job or image is one line, exit 2; a database that
        cannot be opened or fails midway (a damaged page, a lost server) is one line, exit 1."""
        try:
            return super().invoke(ctx)
        except NotFound as exc:
            raise BadInput(str(exc)) from None
        except DatabaseUnavailable as exc:
            raise click.ClickException(str(exc)) from None
        except SQLAlchemyDatabaseError as exc:
            raise click.ClickException(_database_failure(ctx, exc)) from None


def _database_failure(ctx: click.Context, exc: SQLAlchemyDatabaseError) -> str:
    """``database URL: what the driver said``, the password hidden, its first line only."""
    url = make_url(ctx.find_object(App).settings.db_url).render_as_string(hide_password=True)
    said = str(exc.orig or exc).strip().splitlines() or [type(exc).__name__]
    return f"database {url}: {said[0]}"


@click.group(
    cls=ReprogridGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("--db", help=DB_HELP)
@click.option("--store", type=click.Path(path_type=Path), help=STORE_HELP)
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
