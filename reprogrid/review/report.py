"""The HTML report of a job: one page that works offline, linking into the store.

``write_report`` writes ``index.html`` (inline CSS, nothing fetched from the
network) with the job summary, the grid, the failures with their error text,
the warnings (each distinct one once, with how many batches raised it), the
pipeline calls, the verification verdicts and the spec; ``reprogrid.js``, the
vanilla script that draws the grid (``review/page/reprogrid.js``); and the
grid's data in ``data/``: ``axes.js`` (the job's axes and their values),
``tiles-000.js``... (the cells in grid order, ``page_tiles`` a chunk, each
tile's picture, hashes, latest verdict, call id and recipe) and ``calls.js``.
Data files are scripts that push a record onto ``window.REPROGRID_DATA``, not
JSON files, because browsers refuse ``fetch()`` of ``file://`` URLs: the page
adds a ``<script>`` tag for each chunk its view needs. The user picks any axis
for rows, columns and pages, zooms a tile, compares two, opens a tile's details.

Tiles link to the PNGs in the store by relative paths, so the report works
offline wherever the report folder and the store are moved together. No
original is copied. An image that fits in the thumbnail size is shown from
the store itself; a larger one through a thumbnail written once into the
report's ``thumbs/<size>/``, named by the PNG's ``png_sha256`` (the same image
at the same size is never drawn twice, and a rerun into the same folder reuses
them). Where an image cannot be reached by a relative path (the store on
another drive than the report), or with ``standalone``, the report holds a
thumbnail of it and links to the original by its absolute path instead.

The report is written as it is read: the cells come ``FETCH_CELLS`` at a time in
grid order and every list is streamed to its file, so memory stays flat however
many images the job has. ``review.serve`` serves the same page live.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from html import escape
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from PIL import Image as PILImage
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from reprogrid.models import (
    Batch,
    Cell,
    Checkpoint,
    Environment,
    Image,
    Job,
    PipelineCall,
    Verification,
    utcnow,
)
from reprogrid.models.queries import CellFilter, job_progress, query_cells
from reprogrid.models.verifications import VERDICTS
from reprogrid.review.layout import (
    FETCH_CELLS,
    JobSheets,
    ReviewError,
    Tile,
    axis_label,
    coordinates,
    fetch_tiles,
    job_sheets,
    parent_label,
    thumb_size,
)

DEFAULT_MAX_THUMB = 160
DEFAULT_PAGE_TILES = 1000
STREAM_ROWS = 1000
LIBRARIES = ("python", "torch", "diffusers", "transformers", "numpy", "cuda", "cudnn", "driver")
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px 24px; color: #111; --tile: 64px; }
table { border-collapse: collapse; }
.summary th { text-align: left; padding: 2px 16px 2px 0; vertical-align: top; }
.summary td { padding: 2px 0; }
#controls { display: flex; flex-wrap: wrap; gap: 6px 16px; align-items: center; margin: 8px 0; }
#progress { font-weight: 600; margin: 8px 0; }
#grid-view { overflow: auto; max-height: 88vh; border: 1px solid #ddd; }
.grid th { font-weight: normal; text-align: left; padding: 4px 8px; font-size: 12px;
  position: sticky; background: #fff; z-index: 1; }
.grid thead th { top: 0; vertical-align: bottom; }
.grid tbody th { left: 0; max-width: 16em; vertical-align: middle; }
.grid td { vertical-align: top; padding: 2px; }
.grid img, .blank { display: block; border: 1px solid #ccc; width: var(--tile);
  height: var(--tile); object-fit: contain; cursor: zoom-in; }
.blank { display: flex; flex-direction: column; align-items: center; justify-content: center;
  background: #e1e1e1; color: #c82828; font-weight: 600; font-size: 12px; overflow: hidden;
  cursor: default; }
.blank .error { font-weight: normal; font-size: 10px; padding: 2px; overflow: hidden; }
.bar { font-size: 11px; color: #555; display: flex; gap: 4px; align-items: center;
  max-width: var(--tile); min-width: 56px; flex-wrap: wrap; }
.bar button { font-size: 11px; padding: 0 3px; }
td.picked img, td.picked .blank { outline: 3px solid #1f6fd1; }
.overlay { position: fixed; inset: 0; background: #000c; z-index: 10; display: flex;
  align-items: center; justify-content: center; cursor: zoom-out; }
.overlay[hidden], .panel[hidden] { display: none; }
.overlay img { max-width: 94vw; max-height: 88vh; min-width: 256px; image-rendering: pixelated;
  background: #fff; }
.overlay figcaption { color: #fff; text-align: center; }
.panel { position: fixed; right: 16px; top: 16px; bottom: 16px; width: min(60em, 90vw);
  overflow: auto; background: #fff; border: 1px solid #999; box-shadow: 2px 2px 8px #0004;
  padding: 8px 16px; z-index: 5; }
.panel .close { float: right; }
#compare-fields { table-layout: fixed; width: 100%; }
#compare-fields th:first-child { width: 10em; }
#compare-fields td { overflow-wrap: anywhere; }
#compare-fields img { width: 100%; max-width: 256px; height: auto; object-fit: contain;
  image-rendering: pixelated; }
#compare-fields tr.differs td, #compare-fields tr.differs th { background: #ffe8a3; }
pre { white-space: pre-wrap; word-break: break-all; font-size: 12px; max-width: 48em; }
.list th, .list td { border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: left;
  vertical-align: top; }
.identical { color: #176d17; } .close { color: #8a6d00; } .different { color: #c82828; }
.failed { color: #c82828; }
.nsfw { color: #fff; background: #c82828; padding: 0 4px; font-size: 11px; }
nav { margin: 8px 0; }
"""


@dataclass
class Written:
    """What ``write_report`` wrote: the index, and how many images it could not link
    to by a relative path (each one has a thumbnail in the report)."""

    index: Path
    absolute_links: int = 0


@dataclass(frozen=True)
class Pictures:
    """How the report shows images: thumbnail size, and links from the report folder."""

    out_dir: Path
    thumb: int
    standalone: bool

    def link(self, path: str) -> str | None:
        """A relative URL from the report to ``path``; None when there is none (another
        drive) or the report is standalone."""
        if self.standalone:
            return None
        try:
            relative = os.path.relpath(path, self.out_dir)
        except ValueError:  # Windows: another drive
            return None
        # str, not pathlib, for the names of 100,000 files: pathlib interns every part
        return quote(relative.replace(os.sep, "/"))

    def thumbnail(self, source: str, png_sha256: str, size: tuple[int, int]) -> str:
        """The relative URL of the image's thumbnail at ``size``, drawn if not there yet."""
        folder = f"thumbs/{self.thumb}/{png_sha256[:2]}"
        name = f"{folder}/{png_sha256}.png"
        target = os.path.join(self.out_dir, name)
        if not os.path.isfile(target):
            os.makedirs(os.path.join(self.out_dir, folder), exist_ok=True)
            partial = f"{target}.part"
            with PILImage.open(source) as image:
                image.convert("RGB").resize(size, PILImage.Resampling.BICUBIC).save(
                    partial, format="PNG"
                )
            os.replace(partial, target)  # a report cut short leaves no broken thumbnail
        return name


def contained(width: int, height: int, thumb: int) -> tuple[int, int]:
    """The size of an image scaled to fit a ``thumb`` square, keeping its aspect ratio."""
    scale = thumb / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def write_report(
    session: Session,
    job_id: int,
    store: Path,
    out_dir: Path,
    thumb: int | None = None,
    page_tiles: int = DEFAULT_PAGE_TILES,
    standalone: bool = False,
    on_images: Callable[[int], None] | None = None,
) -> Written:
    """Write the job's report into ``out_dir``, reading it as it goes: the tiles a
    chunk of ``page_tiles`` cells at a time, then the index.

    ``on_images`` is called after each chunk with the number of the job's images in it.
    """
    if page_tiles < 1:
        raise ReviewError(f"page-tiles: must be at least 1, got {page_tiles}")
    grid = GridData.of(session, job_id, store, page_tiles)
    pictures = Pictures(out_dir, thumb_size(thumb, grid.sheets[0], DEFAULT_MAX_THUMB), standalone)
    data = out_dir / DATA
    data.mkdir(parents=True, exist_ok=True)
    written = Written(out_dir / "index.html")
    for chunk in range(grid.chunks):
        partial = data / f"{chunk_file(chunk)}.part"
        with partial.open("w", encoding="utf-8") as out:
            images = write_chunk(out, session, grid, chunk, store, pictures, written)
        partial.replace(data / chunk_file(chunk))
        if on_images is not None:
            on_images(images)
    stale = grid.chunks
    while (data / chunk_file(stale)).is_file():  # chunks of an earlier, larger report
        (data / chunk_file(stale)).unlink()
        stale += 1
    for page in out_dir.glob("grid-*.html"):  # the static pages of earlier versions
        page.unlink()
    with (data / "axes.js").open("w", encoding="utf-8") as out:
        out.write(data_script(grid.axes_data(pictures, written)))
    with (data / "calls.js").open("w", encoding="utf-8") as out:
        write_calls_data(out, session, job_id)
    (out_dir / SCRIPT).write_text(page_script(), encoding="utf-8")
    with written.index.open("w", encoding="utf-8") as out:
        write_index(out, session, grid.job, store)
    return written


def _head(title: str) -> str:
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
    )


DATA = "data"  # the folder of the page's data, next to index.html
SCRIPT = "reprogrid.js"  # the page's script, next to index.html


def chunk_file(chunk: int) -> str:
    """The file name of a chunk of tiles inside ``data/``: ``tiles-000.js``..."""
    return f"tiles-{chunk:03d}.js"


def page_script() -> str:
    """The page's JavaScript (``review/page/reprogrid.js``, shipped with the package)."""
    return (Path(__file__).parent / "page" / SCRIPT).read_text(encoding="utf-8")


def data_script(record: dict[str, Any]) -> str:
    """A data file: a script that hands ``record`` to the page. Scripts, not JSON files,
    because browsers refuse ``fetch()`` of ``file://`` URLs but load ``<script>`` tags."""
    return f"{DATA_PUSH}({_json(record)});\n"


DATA_PUSH = "(window.REPROGRID_DATA = window.REPROGRID_DATA || []).push"


def _json(value: object) -> str:
    """Compact JSON that is safe inside a script (no ``</script>``)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


@dataclass(frozen=True)
class GridData:
    """The job's grid as the page reads it: its axes, and its cells in grid order cut
    into chunks of ``chunk_tiles`` (chunk ``k`` holds grid indices ``k * chunk_tiles``
    onwards), so the page loads only the chunks of the tiles it shows."""

    sheets: JobSheets
    chunk_tiles: int
    cells: int

    @classmethod
    def of(cls, session: Session, job_id: int, store: Path, chunk_tiles: int) -> GridData:
        """The job's grid (NotFound without it)."""
        sheets = job_sheets(session, job_id, store)
        cells = math.prod(len(values) for values in sheets.axes.values())
        return cls(sheets, chunk_tiles, cells)

    @property
    def job(self) -> Job:
        """The job."""
        return self.sheets.job

    @property
    def chunks(self) -> int:
        """How many chunks of tiles the grid has."""
        return -(-self.cells // self.chunk_tiles)

    def axes_data(self, pictures: Pictures, written: Written) -> dict[str, Any]:
        """``data/axes.js``: the job, its axes (each value's label and its step in grid
        index), the default rows and columns, the chunking and a refine job's parent."""
        sheets, job = self.sheets, self.job
        parent = sheets.parent
        where = coordinates(parent) if parent is not None else {}
        return {
            "kind": "axes",
            "job": {"id": job.id, "name": job.name, "status": job.status},
            "axes": [
                {
                    "name": name,
                    "labels": [axis_label(name, value) for value in values],
                    "step": sheets.steps[name],
                    "parent": values.index(where[name]) if where.get(name) in values else None,
                }
                for name, values in sheets.axes.items()
            ],
            "rows": sheets.row_axis,
            "cols": sheets.col_axis,
            "cells": self.cells,
            "chunk_tiles": self.chunk_tiles,
            "chunks": self.chunks,
            "thumb": pictures.thumb,
            "parent": None if parent is None else tile_record(parent, pictures, written),
            "parent_label": None if parent is None else parent_label(parent),
        }


def write_chunk(
    out: TextIO,
    session: Session,
    grid: GridData,
    chunk: int,
    store: Path,
    pictures: Pictures,
    written: Written,
) -> int:
    """Write a chunk of tiles as a data file, a tile a line, read ``FETCH_CELLS`` at a
    time; return how many of the job's images it holds."""
    first = chunk * grid.chunk_tiles
    last = min(first + grid.chunk_tiles, grid.cells)
    out.write(f'{DATA_PUSH}({{"kind":"tiles","chunk":{chunk},"first":{first},"tiles":[\n')
    images, separator = 0, ""
    for start in range(first, last, FETCH_CELLS):
        found = fetch_tiles(
            session, grid.job.id, list(range(start, min(start + FETCH_CELLS, last))), store
        )
        for index in sorted(found):
            tile = found[index]
            out.write(f"{separator}{_json(tile_record(tile, pictures, written))}")
            separator = ",\n"
            images += 1 if tile["image_id"] else 0
        found = {}  # let these tiles go before the next fetch
    out.write("\n]});\n")
    return images


TILE_FIELDS = ("pixel_sha256", "png_sha256", "recipe_sha256", "checkpoint_sha256")
TILE_FIELDS += ("call_id", "environment_id", "device", "verdict", "nsfw", "truncated", "error")


def tile_record(tile: Tile, pictures: Pictures, written: Written) -> dict[str, Any]:
    """What the page knows of a tile: where it sits, its status, its picture (``src``
    to show, ``href`` of the full image), hashes, latest verdict, call and recipe (each
    field's JSON text, so a seed above 2**53 stays exact in JavaScript)."""
    record: dict[str, Any] = {
        "i": tile.get("grid_index"),
        "cell": tile.get("cell_id"),
        "image": tile["image_id"],
        "status": tile["status"],
        "seed": str(tile["seed"]),
        "alt": f"{tile['prompt'] or ''} seed {tile['seed']}".strip(),
    }
    record.update((k, tile[k]) for k in TILE_FIELDS if tile.get(k) is not None)
    record["recipe"] = [
        [k, json.dumps(v, ensure_ascii=False)] for k, v in (tile.get("recipe") or {}).items()
    ]
    record.update(picture_record(tile, pictures, written))
    return record


def picture_record(tile: Tile, pictures: Pictures, written: Written) -> dict[str, Any]:
    """The image, from the store or as a thumbnail (``src``, ``tw`` x ``th``), and the PNG
    in the store (``href``, ``w`` x ``h``); nothing where there is no image file."""
    path, png_sha256 = tile["path"], tile["png_sha256"]
    if path is None or not os.path.isfile(path):
        return {"missing": tile["status"] if tile["status"] != "done" else "no file"}
    width, height = tile["width"], tile["height"]
    size = contained(width, height, pictures.thumb)
    link = pictures.link(path)
    if link is None:
        written.absolute_links += 1
        href, src = Path(path).resolve().as_uri(), pictures.thumbnail(path, png_sha256, size)
    elif max(width, height) <= pictures.thumb:
        href = src = link
    else:
        href, src = link, pictures.thumbnail(path, png_sha256, size)
    return {"src": src, "href": href, "w": width, "h": height, "tw": size[0], "th": size[1]}


def write_calls_data(out: TextIO, session: Session, job_id: int) -> None:
    """``data/calls.js``: each distinct pipeline call of the job's images by its id, as
    JSON text (a tile names its ``call_id``); loaded when a tile's details open."""
    out.write(f'{DATA_PUSH}({{"kind":"calls","calls":{{\n')
    separator = ""
    for call_id, call in session.execute(_calls_query(job_id)):
        shown = json.dumps(json.loads(call), indent=1, ensure_ascii=False)
        out.write(f'{separator}"{call_id}":{_json(shown)}')
        separator = ",\n"
    out.write("\n}});\n")


def write_index(out: TextIO, session: Session, job: Job, store: Path, live: bool = False) -> None:
    """``index.html``: the summary, the grid (drawn by the script from ``data/``), the
    failures, the calls, the warnings, the verifications and the spec. ``live``: the
    page is served by ``reprogrid serve`` and polls ``progress.json``."""
    out.write(_head(f"reprogrid: job {job.id} {job.name}"))
    out.write(summary_html(job, job_summary(session, job.id)) + "\n")
    out.write(GRID_HTML)
    if live:
        out.write("<script>window.REPROGRID_LIVE = true;</script>\n")
    out.write(f'<script src="{DATA}/axes.js"></script>\n<script src="{SCRIPT}"></script>\n')
    write_failures(out, session, job.id, store)
    write_calls(out, session, job.id)
    write_warnings(out, session, job.id)
    write_verifications(out, session, job.id)
    out.write(spec_html(job) + "\n</body></html>\n")


GRID_HTML = """<h2 id="grid">Grid</h2>
<noscript><p>The grid is drawn by reprogrid.js: allow JavaScript for this page.</p></noscript>
<div id="progress" hidden></div>
<form id="controls" onsubmit="return false">
<label>rows <select id="rows-axis"></select></label>
<label>columns <select id="cols-axis"></select></label>
<label>pages <select id="pages-axis"></select></label>
<span id="fixed"></span>
<label>tile size <input type="range" id="tile-size" min="16" max="512" step="8"></label>
<span id="picked"></span>
</form>
<nav id="view-nav"></nav>
<div id="grid-view"><table class="grid" id="grid-table"></table></div>
<div id="zoom" class="overlay" hidden><figure><img id="zoom-image" alt="">
<figcaption id="zoom-caption"></figcaption></figure></div>
<div id="details" class="panel" hidden><button type="button" class="shut">close</button>
<h3 id="details-title"></h3><table class="list" id="details-fields"></table>
<h4>recipe</h4><pre id="details-recipe"></pre>
<h4>pipeline call</h4><pre id="details-call"></pre></div>
<div id="compare" class="panel" hidden><button type="button" class="shut">close</button>
<h3>compare</h3><table class="list" id="compare-fields"></table></div>
"""


def job_summary(session: Session, job_id: int) -> dict[str, Any]:
    """Counts, times, speed, workers, devices, checkpoints and libraries of a job."""
    (counts,) = job_progress(session, job_id)
    job = session.get(Job, job_id)
    image_rows = (
        select(Image).join(Cell, Cell.id == Image.cell_id).where(Cell.job_id == job_id).subquery()
    )
    wall = (job.finished_at or utcnow()) - job.started_at if job.started_at else None
    return {
        "counts": counts,
        "wall": wall,
        "images_per_second": counts["done"] / wall.total_seconds() if wall else None,
        "workers": sorted(
            w for w in session.scalars(select(image_rows.c.worker).distinct()) if w is not None
        ),
        "environments": session.scalars(
            select(Environment)
            .where(Environment.id.in_(select(image_rows.c.environment_id)))
            .order_by(Environment.id)
        ).all(),
        "checkpoints": session.scalars(
            select(Checkpoint)
            .where(Checkpoint.id.in_(select(image_rows.c.checkpoint_id)))
            .order_by(Checkpoint.id)
        ).all(),
        "nsfw": session.scalar(select(func.count()).where(image_rows.c.nsfw.is_(True))),
        "truncated": session.scalar(
            select(func.count()).where(Cell.job_id == job_id, Cell.truncated.is_(True))
        ),
    }


def summary_html(job: Job, summary: dict[str, Any]) -> str:
    """The heading and the summary table."""
    counts, wall = summary["counts"], summary["wall"]
    rate = summary["images_per_second"]
    cells = ", ".join(
        f"{counts[s]} {s}" for s in ("done", "failed", "cancelled", "queued", "running")
    )
    rows = [
        ("status", job.status),
        ("model", job.model),
        ("cells", f"{counts['cells']}: {cells}"),
        ("created", job.created_at.isoformat(timespec="seconds")),
        ("wall time", _duration(wall) if wall else "not started"),
        ("images/s", f"{rate:.3f}" if rate is not None else "-"),
        ("workers", ", ".join(summary["workers"]) or "-"),
        ("devices", ", ".join(_devices(summary["environments"])) or "-"),
        ("flagged by the safety checker", f"{summary['nsfw']} images (blacked out)"),
        ("prompts cut by a text encoder", f"{summary['truncated']} cells"),
        *(
            (f"checkpoint {c.id}", f"{c.model} {c.revision or ''} sha256 {c.sha256}")
            for c in summary["checkpoints"]
        ),
        *((f"environment {e.id}", _libraries(e.details)) for e in summary["environments"]),
    ]
    if job.parent_image_id is not None:
        rows.append(("refines", f"image {job.parent_image_id} (first row of the grid)"))
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return (
        f"<h1>job {job.id} {escape(job.name)}</h1>\n"
        f'<table class="summary" id="summary">{table}</table>'
    )


def _duration(wall: timedelta) -> str:
    seconds = wall.total_seconds()
    hours, rest = divmod(int(seconds), 3600)
    return f"{seconds:.1f} s" if seconds < 60 else f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _devices(environments: Iterable[Environment]) -> list[str]:
    return sorted({f"{e.device_type} ({e.device_name})" for e in environments})


def _libraries(details: dict[str, Any]) -> str:
    found = [f"{name} {details[name]}" for name in LIBRARIES if details.get(name)]
    switches = (
        f"threads {details.get('threads')}, full determinism {details.get('full_determinism')}"
    )
    return f"{details.get('hostname', '')}: {', '.join(found)}; {details.get('dtype')}, {switches}"


def write_failures(out: TextIO, session: Session, job_id: int, store: Path) -> None:
    """The failed cells with their error text, streamed."""
    where = CellFilter(job=job_id, status="failed")
    count = session.scalar(
        select(func.count()).where(Cell.job_id == job_id, Cell.status == "failed")
    )
    if not count:
        out.write('<h2 id="failures">Failures</h2>\n<p>No cell failed.</p>\n')
        return
    head = "<tr><th>cell</th><th>grid index</th><th>prompt</th><th>seed</th><th>axes</th>"
    out.write(f'<h2 id="failures">Failures ({count})</h2>\n<table class="list">')
    out.write(f"{head}<th>error</th></tr>\n")
    for t in query_cells(session, where, store):
        out.write(
            f"<tr><td>{t['cell_id']}</td><td>{t['grid_index']}</td>"
            f"<td>{escape(t['prompt'] or '')}</td><td>{t['seed']}</td>"
            f"<td>{escape(json.dumps(t['params']))}</td>"
            f'<td class="failed"><pre>{escape(t["error"] or "")}</pre></td></tr>\n'
        )
    out.write("</table>\n")


def write_calls(out: TextIO, session: Session, job_id: int) -> None:
    """Each distinct pipeline call the job's images were made by, as the pipeline received
    it (a tile's details name its ``call_id``); the per-image arguments are in the tiles."""
    calls = session.execute(_calls_query(job_id)).all()
    out.write(f'<h2 id="calls">Pipeline calls ({len(calls)})</h2>\n')
    if not calls:
        out.write("<p>No image of this job has a recorded call.</p>\n")
    for call_id, call in calls:
        shown = json.dumps(json.loads(call), indent=1, ensure_ascii=False)
        out.write(f"<details><summary>call_id {call_id}</summary><pre>{escape(shown)}</pre>")
        out.write("</details>\n")


def _calls_query(job_id: int) -> Select:
    used = select(Image.call_id).join(Cell, Cell.id == Image.cell_id).where(Cell.job_id == job_id)
    return (
        select(PipelineCall.id, PipelineCall.call)
        .where(PipelineCall.id.in_(used.distinct()))
        .order_by(PipelineCall.id)
    )


def _batch_warnings(session: Session, job_id: int) -> Iterator[tuple[int, dict[str, Any]]]:
    query = (
        select(Batch.id, Batch.warnings)
        .where(Batch.job_id == job_id, Batch.warnings.is_not(None))
        .order_by(Batch.id)
        .execution_options(yield_per=STREAM_ROWS)
    )
    for batch_id, found in session.execute(query):
        for warning in found:
            yield batch_id, warning


def write_warnings(out: TextIO, session: Session, job_id: int) -> None:
    """The warnings diffusers, transformers and torch raised, grouped: each distinct
    warning once, with how many batches raised it and which (read as a stream; memory
    follows the distinct warnings, not the batches)."""
    grouped: dict[tuple[str, str, str], list[int]] = {}
    for batch_id, w in _batch_warnings(session, job_id):
        batches = grouped.setdefault((w["source"], w["category"], w["message"]), [])
        if not batches or batches[-1] != batch_id:
            batches.append(batch_id)
    if not grouped:
        out.write('<h2 id="warnings">Warnings</h2>\n<p>No batch raised a warning.</p>\n')
        return
    head = "<tr><th>source</th><th>category</th><th>message</th><th>batches</th></tr>"
    out.write(f'<h2 id="warnings">Warnings ({len(grouped)})</h2>\n')
    out.write(f'<table class="list warnings">{head}\n')
    for (source, category, message), batches in grouped.items():
        count = f"({len(batches)} batch{'es' if len(batches) > 1 else ''})"
        shown = ", ".join(map(str, batches[:WARNING_BATCHES]))
        shown += ", ..." if len(batches) > WARNING_BATCHES else ""
        out.write(
            f"<tr><td>{escape(source)}</td><td>{escape(category)}</td>"
            f"<td><pre>{escape(message)}</pre></td>"
            f'<td><span class="count">{count}</span> <small>{shown}</small></td></tr>\n'
        )
    out.write("</table>\n")


WARNING_BATCHES = 10  # batch ids listed beside a warning


def _job_verifications(job_id: int) -> Select:
    return (
        select(Verification)
        .join(Image, Image.id == Verification.image_id)
        .join(Cell, Cell.id == Image.cell_id)
        .where(Cell.job_id == job_id)
    )


VERIFICATION_COLUMNS = ("image_id", "mode", "verdict", "max_abs_diff", "mean_abs_diff", "psnr")


def write_verifications(out: TextIO, session: Session, job_id: int) -> None:
    """The verdicts summed, then every verification of the job's images with its
    measurements, oldest first, streamed."""
    checks = _job_verifications(job_id).subquery()
    per_verdict = dict(
        session.execute(select(checks.c.verdict, func.count()).group_by(checks.c.verdict)).all()
    )
    if not per_verdict:
        out.write(
            '<h2 id="verifications">Verifications</h2>\n<p>No image of this job is verified.</p>\n'
        )
        return
    latest_ids = select(func.max(checks.c.id)).group_by(checks.c.image_id)
    latest = dict(
        session.execute(
            select(Verification.verdict, func.count())
            .where(Verification.id.in_(latest_ids))
            .group_by(Verification.verdict)
        ).all()
    )
    out.write(f'<h2 id="verifications">Verifications ({sum(per_verdict.values())})</h2>\n')
    out.write(verdict_counts_html(per_verdict, latest) + "\n")
    columns = (*VERIFICATION_COLUMNS, "environment_id", "created_at")
    head = "".join(f"<th>{c}</th>" for c in columns)
    out.write(f'<table class="list"><tr>{head}</tr>\n')
    rows = session.execute(
        _job_verifications(job_id)
        .with_only_columns(*(getattr(Verification, c) for c in columns))
        .order_by(Verification.id)
        .execution_options(yield_per=STREAM_ROWS)
    )
    for row in rows:
        *values, created_at = row
        cells = "".join(f"<td>{_cell(v)}</td>" for v in values)
        out.write(f"<tr>{cells}<td>{created_at.isoformat(timespec='seconds')}</td></tr>\n")
    out.write("</table>\n")


def verdict_counts_html(checks: dict[str, int], latest: dict[str, int]) -> str:
    """Per verdict: how many verifications found it, and how many images it is the latest of."""
    rows = "".join(
        f"<tr><td>{escape(verdict)}</td><td>{checks[verdict]}</td>"
        f"<td>{latest.get(verdict, 0)}</td></tr>"
        for verdict in sorted(checks, key=_verdict_order)
    )
    head = "<tr><th>verdict</th><th>verifications</th><th>images (latest verdict)</th></tr>"
    return f'<table class="list verdicts">{head}{rows}</table>'


def _verdict_order(verdict: str) -> tuple[int, str]:
    return (VERDICTS.index(verdict) if verdict in VERDICTS else len(VERDICTS), verdict)


def _cell(value: object) -> str:
    """A table cell's text: floats rounded, nothing for a missing value."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def spec_html(job: Job) -> str:
    """The job's spec, folded."""
    spec = escape(json.dumps(job.spec, indent=1, ensure_ascii=False))
    return f"<h2>Spec</h2>\n<details><summary>the job's spec</summary><pre>{spec}</pre></details>"
