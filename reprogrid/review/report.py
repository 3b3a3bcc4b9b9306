"""The HTML report of a job: static pages that work offline, linking into the store.

``write_report`` writes ``index.html`` (inline CSS, no script, nothing fetched
from the network) with the job summary, a table of the grid's pages, the
failures with their error text, the warnings batches raised and the
verification verdicts; and the grid itself as ``grid-1.html``, ``grid-2.html``...:
each page a block of one sheet, at most ``page_tiles`` tiles (whole rows where a
row fits), with links to the index and to the pages before and after. Each tile
shows its image and links to the PNG in the store by a relative path, so the
report works offline wherever the report folder and the store are moved
together; each image's recipe and hashes are in a ``<details>`` block that
opens on click (images the safety checker flagged marked ``nsfw``).

No original is copied. An image that fits in the thumbnail size is shown
from the store itself; a larger one through a thumbnail written once into the
report's ``thumbs/<size>/``, named by the PNG's ``png_sha256`` (the same
image at the same size is never drawn twice, and a rerun into the same folder
reuses them). Where an image cannot be reached by a relative path (the store
on another drive than the report), or with ``standalone``, the report holds a
thumbnail of it and links to the original by its absolute path instead.

The report is written as it is read: the grid's cells come a few hundred at a
time in grid order (``layout.sheet_rows``) and every list is streamed to its
file, so memory stays flat however many images the job has.
"""

from __future__ import annotations

import json
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
    ReviewError,
    Sheet,
    Tile,
    job_sheets,
    sheet_rows,
    thumb_size,
)

DEFAULT_MAX_THUMB = 160
DEFAULT_PAGE_TILES = 1000
STREAM_ROWS = 1000
LIBRARIES = ("python", "torch", "diffusers", "transformers", "numpy", "cuda", "cudnn", "driver")
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px 24px; color: #111; }
table { border-collapse: collapse; }
.summary th { text-align: left; padding: 2px 16px 2px 0; vertical-align: top; }
.summary td { padding: 2px 0; }
.grid th { font-weight: normal; text-align: left; padding: 4px 8px; }
.grid tbody th { max-width: 24em; vertical-align: middle; }
.grid td { vertical-align: top; padding: 2px; position: relative; }
.grid img, .blank { display: block; border: 1px solid #ccc; }
.blank { display: flex; align-items: center; justify-content: center; background: #e1e1e1;
  color: #c82828; font-weight: 600; font-size: 12px; }
.grid summary { font-size: 12px; color: #555; cursor: pointer; }
.grid details[open] > pre { position: absolute; z-index: 1; width: 44em; background: #fff;
  border: 1px solid #999; padding: 8px; box-shadow: 2px 2px 6px #0003; }
pre { white-space: pre-wrap; word-break: break-all; font-size: 12px; max-width: 48em; }
.list th, .list td { border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: left;
  vertical-align: top; }
.identical { color: #176d17; } .close { color: #8a6d00; } .different { color: #c82828; }
.failed { color: #c82828; }
.nsfw { color: #fff; background: #c82828; padding: 0 4px; font-size: 11px; }
nav { margin: 8px 0; }
"""


@dataclass(frozen=True)
class Page:
    """One page of the grid: a block of rows and columns of one sheet."""

    number: int  # from 1, across the whole report
    sheet: Sheet
    rows: range
    cols: range

    @property
    def file(self) -> str:
        """The page's file name inside the report folder."""
        return page_file(self.number)


def page_file(number: int) -> str:
    """The file name of the grid's page ``number``."""
    return f"grid-{number}.html"


def grid_pages(sheets: Iterable[Sheet], page_tiles: int) -> Iterator[Page]:
    """The pages of the sheets, in order: whole rows per page where a row fits in
    ``page_tiles`` tiles, else each row cut into blocks of ``page_tiles`` columns."""
    number = 0
    for sheet in sheets:
        width = min(len(sheet.col_labels), page_tiles)
        height = max(1, page_tiles // width)
        for top in range(0, len(sheet.row_labels), height):
            for left in range(0, len(sheet.col_labels), width):
                number += 1
                rows = range(top, min(top + height, len(sheet.row_labels)))
                cols = range(left, min(left + width, len(sheet.col_labels)))
                yield Page(number, sheet, rows, cols)


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
    """Write the job's report into ``out_dir``, reading it as it goes.

    ``on_images`` is called after each page with the number of the job's images on it.
    """
    if page_tiles < 1:
        raise ReviewError(f"page-tiles: must be at least 1, got {page_tiles}")
    sheets = job_sheets(session, job_id, store)
    job = sheets.job
    pictures = Pictures(out_dir, thumb_size(thumb, sheets[0], DEFAULT_MAX_THUMB), standalone)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = Written(out_dir / "index.html")
    total = sum(1 for _ in grid_pages(sheets, page_tiles))
    for page in grid_pages(sheets, page_tiles):
        with (out_dir / page.file).open("w", encoding="utf-8") as out:
            images = write_page(out, session, page, total, store, pictures, written)
        if on_images is not None:
            on_images(images)
    stale = total + 1
    while (out_dir / page_file(stale)).is_file():  # pages of an earlier, longer report
        (out_dir / page_file(stale)).unlink()
        stale += 1
    with written.index.open("w", encoding="utf-8") as out:
        out.write(_head(f"reprogrid: job {job.id} {job.name}"))
        out.write(summary_html(job, job_summary(session, job_id)) + "\n")
        write_pages_table(out, grid_pages(sheets, page_tiles))
        write_failures(out, session, job_id, store)
        write_calls(out, session, job_id)
        write_warnings(out, session, job_id)
        write_verifications(out, session, job_id)
        out.write(spec_html(job) + "\n</body></html>\n")
    return written


def _head(title: str) -> str:
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
    )


def write_page(
    out: TextIO,
    session: Session,
    page: Page,
    total: int,
    store: Path,
    pictures: Pictures,
    written: Written,
) -> int:
    """Write one page of the grid; return how many of the job's images it shows."""
    sheet = page.sheet
    nav = nav_html(page.number, total)
    out.write(_head(f"reprogrid: job {sheet.job_id} {sheet.job_name}, page {page.number}"))
    out.write(f"<h1>job {sheet.job_id} {escape(sheet.job_name)}</h1>\n{nav}\n")
    if sheet.fixed:
        out.write(f"<h3>{escape(sheet.fixed_label)}</h3>\n")
    out.write(f"<p>{escape(page_extent(page))}</p>\n" if _is_cut(page) else "")
    header = "".join(f"<th>{escape(sheet.col_labels[c])}</th>" for c in page.cols)
    out.write(f'<table class="grid"><thead><tr><th></th>{header}</tr></thead><tbody>\n')
    images = 0
    rows = sheet_rows(session, sheet, store, page.rows, page.cols)
    for row, tiles in zip(page.rows, rows, strict=True):
        cells = "".join(f"<td>{tile_html(t, pictures, written)}</td>" for t in tiles)
        out.write(f"<tr><th>{escape(sheet.row_labels[row])}</th>{cells}</tr>\n")
        images += sum(1 for t in tiles if t and t["image_id"] and t is not sheet.parent)
    out.write(f"</tbody></table>\n{nav}\n</body></html>\n")
    return images


def _is_cut(page: Page) -> bool:
    sheet = page.sheet
    return len(page.rows) < len(sheet.row_labels) or len(page.cols) < len(sheet.col_labels)


def page_extent(page: Page) -> str:
    """Which rows and columns of its sheet a page shows, counted from 1."""
    rows, cols = page.rows, page.cols
    return (
        f"rows {rows[0] + 1}-{rows[-1] + 1} of {len(page.sheet.row_labels)},"
        f" columns {cols[0] + 1}-{cols[-1] + 1} of {len(page.sheet.col_labels)}"
    )


def nav_html(number: int, total: int) -> str:
    """Links to the index and to the pages before and after."""
    links = ['<a href="index.html">index</a>']
    if number > 1:
        links.append(f'<a href="{page_file(number - 1)}" rel="prev">previous</a>')
    links.append(f"page {number} of {total}")
    if number < total:
        links.append(f'<a href="{page_file(number + 1)}" rel="next">next</a>')
    return f"<nav>{' | '.join(links)}</nav>"


def write_pages_table(out: TextIO, pages: Iterable[Page]) -> None:
    """The index's table of the grid's pages: each one's sheet, rows and columns."""
    head = "<tr><th>page</th><th>sheet</th><th>rows and columns</th></tr>"
    out.write(f'<h2 id="grid">Grid</h2>\n<table class="list pages">{head}\n')
    for page in pages:
        out.write(
            f'<tr><td><a href="{page.file}">page {page.number}</a></td>'
            f"<td>{escape(page.sheet.fixed_label)}</td><td>{escape(page_extent(page))}</td></tr>\n"
        )
    out.write("</table>\n")


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


def tile_html(tile: Tile | None, pictures: Pictures, written: Written) -> str:
    """A picture linking to the full image, or a marked blank; details open on click."""
    if tile is None:
        return ""
    picture = picture_html(tile, pictures, written)
    last = escape(tile["verdict"]) if tile.get("verdict") else ""
    verdict = f' <span class="{last}">{last}</span>' if last else ""
    if tile.get("nsfw"):
        verdict += ' <span class="nsfw">nsfw</span>'
    name = f"image {tile['image_id']}" if tile["image_id"] else f"cell {tile['cell_id']}"
    return (
        f"{picture}<details><summary>{name}{verdict}</summary>"
        f"<pre>{escape(_tile_details(tile))}</pre></details>"
    )


def picture_html(tile: Tile, pictures: Pictures, written: Written) -> str:
    """The image, from the store or as a thumbnail, linking to the PNG in the store;
    a grey box with the reason where there is no image file."""
    path, png_sha256 = tile["path"], tile["png_sha256"]
    if path is None or not os.path.isfile(path):
        reason = tile["status"] if tile["status"] != "done" else "no file"
        style = f"width:{pictures.thumb}px;height:{pictures.thumb}px"
        hover = escape(tile["error"] or reason)
        return f'<div class="blank" style="{style}" title="{hover}">{reason}</div>'
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
    alt = escape(f"{tile['prompt'] or ''} seed {tile['seed']}".strip())
    return (
        f'<a href="{escape(href)}"><img src="{escape(src)}" width="{size[0]}"'
        f' height="{size[1]}" alt="{alt}" title="{alt}"></a>'
    )


def _tile_details(tile: Tile) -> str:
    """The tile's hashes and fields, then its recipe as recorded."""
    recipe = tile["recipe"]
    fields = ["status", "pixel_sha256", "png_sha256", "recipe_sha256", "checkpoint_sha256"]
    fields += ["call_id", "environment_id", "device", "nsfw", "truncated", "error"]
    lines = [f"{k}: {tile[k]}" for k in fields if tile.get(k)]
    # a field a line; json.dumps(indent=...) would take the pure-Python encoder, whose
    # closures leave a reference cycle per call for the garbage collector
    fields_json = (
        f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in recipe.items()
    )
    return "\n".join([*lines, "recipe:", "{", ",\n".join(fields_json), "}"])


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
    used = select(Image.call_id).join(Cell, Cell.id == Image.cell_id).where(Cell.job_id == job_id)
    calls = session.execute(
        select(PipelineCall.id, PipelineCall.call)
        .where(PipelineCall.id.in_(used.distinct()))
        .order_by(PipelineCall.id)
    ).all()
    out.write(f'<h2 id="calls">Pipeline calls ({len(calls)})</h2>\n')
    if not calls:
        out.write("<p>No image of this job has a recorded call.</p>\n")
    for call_id, call in calls:
        shown = json.dumps(json.loads(call), indent=1, ensure_ascii=False)
        out.write(f"<details><summary>call_id {call_id}</summary><pre>{escape(shown)}</pre>")
        out.write("</details>\n")


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
    """The warnings diffusers, transformers and torch raised, batch by batch, streamed
    (read twice: once to count them for the heading)."""
    count = sum(1 for _ in _batch_warnings(session, job_id))
    if not count:
        out.write('<h2 id="warnings">Warnings</h2>\n<p>No batch raised a warning.</p>\n')
        return
    head = "<tr><th>batch</th><th>source</th><th>category</th><th>message</th></tr>"
    out.write(f'<h2 id="warnings">Warnings ({count})</h2>\n<table class="list">{head}\n')
    for batch_id, w in _batch_warnings(session, job_id):
        out.write(
            f"<tr><td>{batch_id}</td><td>{escape(w['source'])}</td>"
            f"<td>{escape(w['category'])}</td><td><pre>{escape(w['message'])}</pre></td></tr>\n"
        )
    out.write("</table>\n")


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
