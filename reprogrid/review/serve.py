"""The report's page served live: ``reprogrid serve`` on the standard library's HTTP server.

The page is the report's (``review.report``), its data made on each request from
the database, so a running job's new tiles show as its cells finish: the index
with ``window.REPROGRID_LIVE`` set, ``data/axes.js``, ``data/tiles-NNN.js`` (a
chunk of ``chunk_tiles`` cells, read when the page asks for it), ``data/calls.js``
and ``progress.json`` (the job's status and cell counts, which the page polls).
Images come from the store under ``/store/``, and thumbnails of images larger
than the thumbnail size from a cache folder under ``/thumbs/``. Every request
reads in a session of its own (``Database.reads``), on a thread of its own.
"""

from __future__ import annotations

import io
import json
import mimetypes
import os
import re
import shutil
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from reprogrid.models import Database, Job
from reprogrid.models.queries import NotFound, job_progress
from reprogrid.review.layout import thumb_size
from reprogrid.review.report import (
    DEFAULT_MAX_THUMB,
    DEFAULT_PAGE_TILES,
    GridData,
    Pictures,
    Written,
    data_script,
    page_script,
    write_calls_data,
    write_chunk,
    write_index,
)

CHUNK = re.compile(r"/data/tiles-(\d+)\.js")


@dataclass(frozen=True)
class ServedPictures(Pictures):
    """Pictures of a served page: the store's images under ``store/``, thumbnails drawn
    into the cache folder (``out_dir``) under ``thumbs/``."""

    store: Path = Path()

    def link(self, path: str) -> str | None:
        """``store/`` and the image's path in the store; None outside the store."""
        relative = os.path.relpath(path, self.store)
        if relative.startswith(".."):
            return None
        return "store/" + quote(relative.replace(os.sep, "/"))


@dataclass(frozen=True)
class LivePage:
    """What the server serves: a job's page, read from the database on each request."""

    db: Database
    store: Path
    job_id: int
    cache: Path  # thumbnails
    thumb: int | None = None
    chunk_tiles: int = DEFAULT_PAGE_TILES

    def respond(self, path: str) -> tuple[bytes, str] | Path | None:
        """The body and type of a page or data file, a file to send, or None (not found)."""
        if path in ("/", "/index.html"):
            return self._text(self._index, "text/html")
        if path == "/reprogrid.js":
            return page_script().encode(), "text/javascript"
        if path == "/progress.json":
            return self._text(self._progress, "application/json")
        if path == "/data/axes.js":
            return self._text(self._axes, "text/javascript")
        if path == "/data/calls.js":
            return self._text(lambda out: self._calls(out), "text/javascript")
        chunk = CHUNK.fullmatch(path)
        if chunk:
            return self._text(lambda out: self._chunk(out, int(chunk.group(1))), "text/javascript")
        for prefix, root in (("/store/", self.store), ("/thumbs/", self.cache / "thumbs")):
            if path.startswith(prefix):
                return _inside(root, unquote(path.removeprefix(prefix)))
        return None

    def _text(self, write: Any, kind: str) -> tuple[bytes, str]:
        out = io.StringIO()
        write(out)
        return out.getvalue().encode(), f"{kind}; charset=utf-8"

    def _index(self, out: io.StringIO) -> None:
        with self.db.reads() as session:
            job = session.get(Job, self.job_id)
            if job is None:
                raise NotFound(f"no job {self.job_id}")
            write_index(out, session, job, self.store, live=True)

    def _progress(self, out: io.StringIO) -> None:
        with self.db.reads() as session:
            (row,) = job_progress(session, self.job_id)
        keys = ("job_id", "status", "cells", "queued", "running", "done", "failed", "cancelled")
        json.dump({k: row[k] for k in keys}, out)

    def _grid(self, session: Any) -> tuple[GridData, Pictures]:
        grid = GridData.of(session, self.job_id, self.store, self.chunk_tiles)
        size = thumb_size(self.thumb, grid.sheets[0], DEFAULT_MAX_THUMB)
        return grid, ServedPictures(self.cache, size, False, store=self.store)

    def _axes(self, out: io.StringIO) -> None:
        with self.db.reads() as session:
            grid, pictures = self._grid(session)
            out.write(data_script(grid.axes_data(pictures, Written(self.cache))))

    def _chunk(self, out: io.StringIO, chunk: int) -> None:
        with self.db.reads() as session:
            grid, pictures = self._grid(session)
            if chunk < grid.chunks:
                write_chunk(out, session, grid, chunk, self.store, pictures, Written(self.cache))

    def _calls(self, out: io.StringIO) -> None:
        with self.db.reads() as session:
            write_calls_data(out, session, self.job_id)


def _inside(root: Path, relative: str) -> Path | None:
    """The file at ``relative`` under ``root``; None for a path that leaves it."""
    base = root.resolve()
    target = (base / relative).resolve()
    return target if target.is_relative_to(base) and target.is_file() else None


def make_server(page: LivePage, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server of the page on ``host:port`` (port 0: any free port); call
    ``serve_forever``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                found = page.respond(urlsplit(self.path).path)
            except NotFound as exc:
                self.send_error(HTTPStatus.NOT_FOUND, str(exc))
                return
            if found is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            if isinstance(found, Path):
                kind = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
                self._head(kind, found.stat().st_size)
                with found.open("rb") as source:
                    shutil.copyfileobj(source, self.wfile)
                return
            body, kind = found
            self._head(kind, len(body))
            self.wfile.write(body)

        def _head(self, kind: str, length: int) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(length))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the command prints where it serves, not every request

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
