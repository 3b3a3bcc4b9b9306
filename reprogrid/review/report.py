"""The HTML report of a job: one static page that works offline, its images beside it.

``write_report`` writes ``index.html`` (inline CSS, no script, nothing fetched
from the network) with the job summary, the grid as thumbnails linking to the
full images, each image's recipe and hashes in a ``<details>`` block that opens
on click (images the safety checker flagged marked ``nsfw``), the failures
with their error text, the warnings batches raised and the verification verdicts.
``images/`` holds copies of the job's PNGs and ``thumbs/`` their thumbnails,
both named by ``png_sha256``, so the folder can be copied or archived whole.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from html import escape
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from PIL import ImageOps
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reprogrid.models import (
    Batch,
    Cell,
    Checkpoint,
    Environment,
    Image,
    Job,
    Verification,
    utcnow,
)
from reprogrid.models.queries import CellFilter, job_progress, query_cells
from reprogrid.models.verifications import VERDICTS
from reprogrid.review.layout import Sheet, Tile, job_sheets, thumb_size

DEFAULT_MAX_THUMB = 160
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
"""


@dataclass(frozen=True)
class ReportData:
    """Everything a report shows, read from the database in one go."""

    job: Job
    summary: dict[str, Any]
    sheets: list[Sheet]
    images: dict[str, Path]  # png_sha256 -> file in the store, parent image included
    recipes: dict[int, str]  # cell id -> recipe JSON
    failed: list[Tile]
    verdicts: dict[int, list[Verification]]  # image id -> its verifications, oldest first
    warnings: dict[int, list[dict[str, Any]]]  # batch id -> warnings it raised, if any


def load_report(session: Session, job_id: int, store: Path) -> ReportData:
    """Read what the job's report shows."""
    sheets = job_sheets(session, job_id, store)
    tiles = [tile for sheet in sheets for row in sheet.tiles for tile in row if tile]
    return ReportData(
        job=session.get(Job, job_id),
        summary=job_summary(session, job_id),
        sheets=sheets,
        images={t["png_sha256"]: Path(t["path"]) for t in tiles if t["path"]},
        recipes=dict(
            session.execute(select(Cell.id, Cell.recipe).where(Cell.job_id == job_id)).all()
        ),
        failed=list(query_cells(session, CellFilter(job=job_id, status="failed"), store)),
        verdicts=verifications(session, job_id),
        warnings=dict(
            session.execute(
                select(Batch.id, Batch.warnings)
                .where(Batch.job_id == job_id, Batch.warnings.is_not(None))
                .order_by(Batch.id)
            ).all()
        ),
    )


def write_report(
    report: ReportData,
    out_dir: Path,
    thumb: int | None = None,
    on_image: Callable[[], None] | None = None,
) -> Path:
    """Write the report into ``out_dir``; return the path of its ``index.html``.

    ``on_image`` is called after each image is copied, for progress.
    """
    thumb = thumb_size(thumb, report.sheets[0], DEFAULT_MAX_THUMB)
    sizes = {}
    for png_sha256, source in report.images.items():
        sizes[png_sha256] = copy_image(source, png_sha256, out_dir, thumb)
        if on_image is not None:
            on_image()
    job = report.job
    body = [
        summary_html(job, report.summary),
        "<h2>Grid</h2>",
        *(sheet_html(s, sizes, report.recipes, report.verdicts, thumb) for s in report.sheets),
        failures_html(report.failed),
        warnings_html(report.warnings),
        verifications_html(report.verdicts),
        spec_html(job),
    ]
    page = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(f'reprogrid: job {job.id} {job.name}')}</title>"
        f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def copy_image(source: Path, png_sha256: str, out_dir: Path, thumb: int) -> tuple[int, int] | None:
    """Copy a PNG beside the report and write its thumbnail; the thumbnail's size, or
    None when the store has lost the file."""
    if not source.is_file():
        return None
    target = out_dir / "images" / f"{png_sha256}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.stat().st_size != source.stat().st_size:
        shutil.copyfile(source, target)
    thumbnail = out_dir / "thumbs" / f"{png_sha256}.png"
    thumbnail.parent.mkdir(parents=True, exist_ok=True)
    with PILImage.open(source) as image:
        small = ImageOps.contain(image.convert("RGB"), (thumb, thumb))
    small.save(thumbnail)
    return small.size


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


def verifications(session: Session, job_id: int) -> dict[int, list[Verification]]:
    """The verifications of the job's images, oldest first, by image id."""
    rows = session.scalars(
        select(Verification)
        .join(Image, Image.id == Verification.image_id)
        .join(Cell, Cell.id == Image.cell_id)
        .where(Cell.job_id == job_id)
        .order_by(Verification.id)
    )
    found: dict[int, list[Verification]] = {}
    for row in rows:
        found.setdefault(row.image_id, []).append(row)
    return found


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


def sheet_html(
    sheet: Sheet,
    sizes: dict[str, tuple[int, int] | None],
    recipes: dict[int, str],
    verdicts: dict[int, list[Verification]],
    thumb: int,
) -> str:
    """One sheet as a table: labels on the first row and column, a thumbnail per cell."""
    heading = f"<h3>{escape(sheet.fixed_label)}</h3>\n" if sheet.fixed else ""
    header = "".join(f"<th>{escape(label)}</th>" for label in sheet.col_labels)
    body = []
    for label, row in zip(sheet.row_labels, sheet.tiles, strict=True):
        cells = "".join(
            f"<td>{tile_html(tile, sizes, recipes, verdicts, thumb)}</td>" for tile in row
        )
        body.append(f"<tr><th>{escape(label)}</th>{cells}</tr>")
    return (
        f'{heading}<table class="grid"><thead><tr><th></th>{header}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def tile_html(
    tile: Tile | None,
    sizes: dict[str, tuple[int, int] | None],
    recipes: dict[int, str],
    verdicts: dict[int, list[Verification]],
    thumb: int,
) -> str:
    """A thumbnail linking to the full image, or a marked blank; details open on click."""
    if tile is None:
        return ""
    size = sizes.get(tile["png_sha256"]) if tile["png_sha256"] else None
    if size is not None:
        name = f"{tile['png_sha256']}.png"
        alt = escape(f"{tile['prompt'] or ''} seed {tile['seed']}".strip())
        picture = (
            f'<a href="images/{name}"><img src="thumbs/{name}" width="{size[0]}"'
            f' height="{size[1]}" alt="{alt}" title="{alt}"></a>'
        )
    else:
        reason = tile["status"] if tile["status"] != "done" else "no file"
        style = f"width:{thumb}px;height:{thumb}px"
        hover = escape(tile["error"] or reason)
        picture = f'<div class="blank" style="{style}" title="{hover}">{reason}</div>'
    checks = verdicts.get(tile["image_id"], []) if tile["image_id"] else []
    last = escape(checks[-1].verdict) if checks else ""
    verdict = f' <span class="{last}">{last}</span>' if checks else ""
    if tile.get("nsfw"):
        verdict += ' <span class="nsfw">nsfw</span>'
    name = f"image {tile['image_id']}" if tile["image_id"] else f"cell {tile['cell_id']}"
    return (
        f"{picture}<details><summary>{name}{verdict}</summary>"
        f"<pre>{escape(_tile_details(tile, recipes))}</pre></details>"
    )


def _tile_details(tile: Tile, recipes: dict[int, str]) -> str:
    recipe = tile.get("recipe") or json.loads(recipes.get(tile["cell_id"], "{}"))
    fields = ["status", "pixel_sha256", "png_sha256", "recipe_sha256", "checkpoint_sha256"]
    fields += ["environment_id", "device", "nsfw", "truncated", "error"]
    lines = [f"{k}: {tile[k]}" for k in fields if tile.get(k)]
    return "\n".join([*lines, "recipe:", json.dumps(recipe, indent=1, ensure_ascii=False)])


def failures_html(failed: Iterable[Tile]) -> str:
    """The failed cells with their error text."""
    rows = [
        f"<tr><td>{t['cell_id']}</td><td>{t['grid_index']}</td><td>{escape(t['prompt'] or '')}"
        f"</td><td>{t['seed']}</td><td>{escape(json.dumps(t['params']))}</td>"
        f'<td class="failed"><pre>{escape(t["error"] or "")}</pre></td></tr>'
        for t in failed
    ]
    if not rows:
        return '<h2 id="failures">Failures</h2>\n<p>No cell failed.</p>'
    head = "<tr><th>cell</th><th>grid index</th><th>prompt</th><th>seed</th><th>axes</th>"
    return (
        f'<h2 id="failures">Failures ({len(rows)})</h2>\n<table class="list">'
        f"{head}<th>error</th></tr>{''.join(rows)}</table>"
    )


def warnings_html(warnings: dict[int, list[dict[str, Any]]]) -> str:
    """The warnings diffusers, transformers and torch raised, batch by batch."""
    rows = [
        f"<tr><td>{batch_id}</td><td>{escape(w['source'])}</td><td>{escape(w['category'])}</td>"
        f"<td><pre>{escape(w['message'])}</pre></td></tr>"
        for batch_id, found in warnings.items()
        for w in found
    ]
    if not rows:
        return '<h2 id="warnings">Warnings</h2>\n<p>No batch raised a warning.</p>'
    head = "<tr><th>batch</th><th>source</th><th>category</th><th>message</th></tr>"
    return (
        f'<h2 id="warnings">Warnings ({len(rows)})</h2>\n<table class="list">'
        f"{head}{''.join(rows)}</table>"
    )


def verifications_html(verdicts: dict[int, list[Verification]]) -> str:
    """The verdicts summed, then every verification of the job's images with its measurements."""
    checks = sorted((v for found in verdicts.values() for v in found), key=lambda v: v.id)
    if not checks:
        return '<h2 id="verifications">Verifications</h2>\n<p>No image of this job is verified.</p>'
    columns = ("image_id", "mode", "verdict", "max_abs_diff", "mean_abs_diff", "psnr")
    head = "".join(f"<th>{c}</th>" for c in (*columns, "environment_id", "created_at"))
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{_cell(getattr(v, c))}</td>" for c in columns)
        + f"<td>{_cell(v.environment_id)}</td>"
        + f"<td>{v.created_at.isoformat(timespec='seconds')}</td></tr>"
        for v in checks
    )
    return (
        f'<h2 id="verifications">Verifications ({len(checks)})</h2>\n'
        f"{verdict_counts_html(verdicts)}\n"
        f'<table class="list"><tr>{head}</tr>{rows}</table>'
    )


def verdict_counts_html(verdicts: dict[int, list[Verification]]) -> str:
    """Per verdict: how many verifications found it, and how many images it is the latest of."""
    checks = Counter(v.verdict for found in verdicts.values() for v in found)
    latest = Counter(found[-1].verdict for found in verdicts.values() if found)
    rows = "".join(
        f"<tr><td>{escape(verdict)}</td><td>{checks[verdict]}</td><td>{latest[verdict]}</td></tr>"
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
