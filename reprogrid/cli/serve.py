"""``reprogrid serve``: a job's report page served live while the job runs."""

from __future__ import annotations

import signal
import tempfile
import threading
from pathlib import Path

import click

from reprogrid.cli.app import App, BadInput, main, pass_reader
from reprogrid.cli.review import page_tiles_option, thumb_option
from reprogrid.models import Job


@main.command()
@click.argument("job", type=int)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on (0.0.0.0: every interface, for other machines).",
)
@thumb_option
@page_tiles_option
@pass_reader
def serve(app: App, job: int, port: int, host: str, thumb: int | None, page_tiles: int) -> None:
    """Serve a job's report page live, for a job that is still running, until Ctrl-C.

    The page is `reprogrid report`'s (axes on rows, columns and pages, zoom,
    compare, each tile's recipe, call and hashes), read from the database on each
    request; it polls the job's progress every 2 s and shows new tiles as cells
    finish. Images are served from the store. Prints the page's URL; Ctrl-C (or
    SIGTERM) stops it, exit 0.

    \b
    Example:
      reprogrid serve 1 --port 8000     # then open http://127.0.0.1:8000/
    """
    from reprogrid.review.layout import MAX_THUMB, MIN_THUMB
    from reprogrid.review.serve import LivePage, make_server

    with app.db.reads() as session:
        if session.get(Job, job) is None:
            raise BadInput(f"job: no job {job}")
    if page_tiles < 1:
        raise BadInput(f"page-tiles: must be at least 1, got {page_tiles}")
    if thumb is not None and not MIN_THUMB <= thumb <= MAX_THUMB:
        raise BadInput(f"thumb: must be between {MIN_THUMB} and {MAX_THUMB} pixels, got {thumb}")
    with tempfile.TemporaryDirectory(prefix="reprogrid-serve-") as cache:
        page = LivePage(app.db, app.settings.store, job, Path(cache), thumb, page_tiles)
        try:
            server = make_server(page, host, port)
        except OSError as exc:
            raise click.ClickException(
                f"port: cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"serving job {job} at http://{shown}:{server.server_address[1]}/")

        def stop(*_: object) -> None:
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
