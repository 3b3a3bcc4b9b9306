"""The ``environment`` command: one recorded environment, or its packages as a requirements file.

Reads the database only; never imports torch.
"""

from __future__ import annotations

import click

from reprogrid.cli.app import App, BadInput, main, pass_app
from reprogrid.cli.output import json_text, text_lines
from reprogrid.models.queries import NotFound


@main.command()
@click.argument("environment_id", metavar="ID", type=int)
@click.option(
    "--requirements",
    "as_requirements",
    is_flag=True,
    help="Print its packages as a requirements file that rebuilds it (pip install -r).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@pass_app
def environment(app: App, environment_id: int, as_requirements: bool, fmt: str) -> None:
    """Show recorded environment ID (see `reprogrid show` for an image's) with every package.

    \b
    Example:
      reprogrid environment 1
      reprogrid environment 1 --requirements > requirements.txt
    """
    try:
        info = app.api.environment(environment_id)
    except NotFound as exc:
        raise BadInput(f"environment: {exc}") from None
    if as_requirements:
        try:
            click.echo(app.api.requirements(environment_id), nl=False)
        except NotFound as exc:  # recorded before package inventories were kept
            raise BadInput(f"requirements: {exc}") from None
    elif fmt == "json":
        click.echo(json_text(info))
    else:
        for line in text_lines(info):
            click.echo(line)
