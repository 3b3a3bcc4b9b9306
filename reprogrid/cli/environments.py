"""The ``environment`` command: one recorded environment, or its packages as a requirements file.

Reads the database only; never imports torch.
"""

from __future__ import annotations

import json

import click

from reprogrid.cli.app import App, BadInput, main, pass_app
from reprogrid.cli.output import text_lines
from reprogrid.models import Environment


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
    from reprogrid.worker.environment import requirements

    with app.db.reads() as session:
        row = session.get(Environment, environment_id)
        if row is None:
            raise BadInput(f"environment: no environment {environment_id}")
        info = {"environment_id": row.id, "fingerprint": row.fingerprint, **row.details}
    if as_requirements:
        if "packages" not in info:
            raise BadInput(
                f"requirements: environment {environment_id} was recorded before"
                " package inventories were kept"
            )
        click.echo(requirements(info), nl=False)
    elif fmt == "json":
        click.echo(json.dumps(info, indent=2))
    else:
        for line in text_lines(info):
            click.echo(line)
