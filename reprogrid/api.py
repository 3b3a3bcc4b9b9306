"""The public Python API: run or submit a spec, wait for a job, read its images, verify them.

One :class:`Reprogrid` holds the settings of a database, a store and a broker;
:func:`connect` makes one from keyword arguments over the ``REPROGRID_*``
environment. The ``reprogrid`` command line is a thin layer over this module:
what a command does, a method here does, and the command parses and prints.

Reading never imports torch; only the methods that generate (``run``,
``run_job``, ``regenerate``, ``verify``) load the worker.

    grid = reprogrid.connect(db="night.db", store="night-store")
    job = grid.run({"prompts": ["a red fox"], "seeds": "0-3", "steps": 3})
    seeds = [row["seed"] for row in grid.images(job.job_id)]
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy.engine import make_url

from reprogrid.config import Settings, database_url
from reprogrid.models import Database, DatabaseUnavailable, Job, open_database
from reprogrid.models.queries import (
    CellFilter,
    NotFound,
    find_image,
    image_record,
    job_progress,
    live_workers,
    query_cells,
)
from reprogrid.models.tables import FINISHED
from reprogrid.models.verifications import (
    DEFAULT_TOLERANCE,
    ImageRef,
    images_to_verify,
    sample_images,
)
from reprogrid.scheduler.broker import DEFAULT_QUEUE
from reprogrid.scheduler.spec import (
    JobSpec,
    SpecError,
    SpecLimits,
    read_spec_file,
    validate_spec,
)

if TYPE_CHECKING:
    import pandas
    from PIL.Image import Image as PILImage

    from reprogrid.review.report import Written
    from reprogrid.scheduler.control import JobChange
    from reprogrid.scheduler.tokenization import TokenReport
    from reprogrid.worker.regenerate import Regeneration, Replay

__all__ = [
    "JobResult",
    "NotFound",
    "Refinement",
    "Reprogrid",
    "SpecError",
    "connect",
    "sqlite_url",
]

SpecSource = str | os.PathLike[str] | Mapping[str, Any]


def sqlite_url(value: str | os.PathLike[str] | None) -> str | None:
    """A SQLAlchemy URL as given, or a plain path turned into a SQLite URL."""
    return None if value is None else database_url(str(value))


def connect(
    db: str | os.PathLike[str] | None = None,
    store: str | os.PathLike[str] | None = None,
    broker: str | None = None,
    **settings: Any,
) -> Reprogrid:
    """A :class:`Reprogrid` on this database (a URL or a SQLite file), store and broker.

    Unset arguments come from ``REPROGRID_*`` variables, then the defaults;
    other :class:`~reprogrid.config.Settings` fields may be given by name.
    """
    base = Settings.from_env()
    store_path = Path(store).expanduser().resolve() if store is not None else None
    return Reprogrid(
        base.with_overrides(db_url=sqlite_url(db), store=store_path, broker_url=broker, **settings)
    )


@dataclass(frozen=True)
class JobResult:
    """How a job run here ended: its id, status, cell counts and wall time."""

    job_id: int
    status: str
    cells: int
    done: int
    failed: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Refinement:
    """A refine job: its id, its spec and the image it refines."""

    job_id: int
    spec: JobSpec
    parent_image_id: int


class Reprogrid:
    """A database, a store and a broker, and what can be done with them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        """The database, opened (and migrated) on first use.

        Raises DatabaseUnavailable, also for a URL whose driver is not installed.
        """
        if self._db is None:
            try:
                self._db = open_database(self.settings.db_url)
            except ImportError as exc:  # e.g. mysql://: SQLAlchemy knows it, its driver is absent
                url = make_url(self.settings.db_url).render_as_string(hide_password=True)
                raise DatabaseUnavailable(
                    f"database {url}: its driver is not installed ({exc}); reprogrid runs on"
                    " SQLite and PostgreSQL"
                ) from None
        return self._db

    def close(self) -> None:
        """Close the database's pooled connections."""
        if self._db is not None:
            self._db.dispose()
            self._db = None

    def __enter__(self) -> Reprogrid:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # 1. Specs and jobs

    def spec(self, spec: SpecSource | None = None, **fields: Any) -> JobSpec:
        """Validate a spec (a TOML file or a dict), ``fields`` set over it; raises SpecError."""
        if spec is None or isinstance(spec, Mapping):
            raw, base_dir = dict(spec or {}), Path.cwd()
        else:
            raw, base_dir = read_spec_file(Path(spec)), Path(spec).parent
        if fields.get("prompts"):
            raw.pop("prompts_file", None)
        if fields.get("prompts_file"):
            raw.pop("prompts", None)
        raw |= {name: value for name, value in fields.items() if value is not None}
        settings = self.settings
        limits = SpecLimits(settings.max_steps, settings.max_image_side, settings.max_batch_size)
        return validate_spec(raw, settings.max_cells, base_dir, limits)

    def submit(
        self,
        spec: SpecSource | JobSpec,
        *,
        priority: int = 0,
        not_before: datetime | None = None,
        queue: str = DEFAULT_QUEUE,
        parent_image_id: int | None = None,
        tokens: TokenReport | None = None,
    ) -> int:
        """Write a job and its cells for the fleet's scheduler; return the job id.

        ``tokens`` are the spec's token counts if already computed (:meth:`tokens`).
        """
        from reprogrid.scheduler.jobs import create_job

        job_spec = spec if isinstance(spec, JobSpec) else self.spec(spec)
        return create_job(
            self.db,
            job_spec,
            priority=priority,
            not_before=not_before,
            queue=queue,
            parent_image_id=parent_image_id,
            tokens=tokens or self.tokens(job_spec),
        )

    def create(
        self,
        spec: SpecSource | JobSpec,
        parent_image_id: int | None = None,
        tokens: TokenReport | None = None,
    ) -> int:
        """Write a job to be run in this process (see :meth:`run_job`); return its id."""
        from reprogrid.scheduler.jobs import create_job

        job_spec = spec if isinstance(spec, JobSpec) else self.spec(spec)
        return create_job(
            self.db,
            job_spec,
            parent_image_id=parent_image_id,
            tokens=tokens or self.tokens(job_spec),
        )

    def tokens(self, job_spec: JobSpec) -> TokenReport | None:
        """Token counts of the spec's prompts, per tokenizer (None: it takes no prompt).

        Raises SpecError naming ``model`` when a tokenizer cannot be loaded.
        """
        from reprogrid.scheduler.tokenization import TokenizerError, tokenize_spec

        try:
            return tokenize_spec(job_spec)
        except TokenizerError as exc:
            raise SpecError("model", str(exc)) from None

    def run(
        self,
        spec: SpecSource | JobSpec,
        *,
        device: str = "auto",
        threads: int | None = None,
        on_batch: Callable[[Any], None] | None = None,
        progress: bool | None = None,
    ) -> JobResult:
        """Run a whole job in this process (no broker needed) and say how it ended;
        ``on_batch`` and ``progress`` are :meth:`run_job`'s."""
        job_id = self.create(spec)
        return self.run_job(
            job_id, device=device, threads=threads, on_batch=on_batch, progress=progress
        )

    def run_job(
        self,
        job_id: int,
        *,
        device: str = "auto",
        threads: int | None = None,
        on_batch: Callable[[Any], None] | None = None,
        progress: bool | None = None,
    ) -> JobResult:
        """Run every waiting cell of a created job here.

        ``on_batch`` is called with each batch's outcome once it is recorded (a
        ``BatchOutcome``: ``batch_id``, ``status``, ``images``, ``error``), from
        the recording thread. ``progress`` shows a bar of images done: in a
        Jupyter notebook by default (a widget where ipywidgets is installed,
        else text), on stderr elsewhere when True.
        """
        from reprogrid.scheduler.control import embedded_run_name
        from reprogrid.worker.embedded import run_job
        from reprogrid.worker.execute import WorkerContext, pick_device

        settings = self.settings.with_overrides(threads=threads)
        ctx = WorkerContext.start(settings, self.db, pick_device(device), embedded_run_name())
        started = time.perf_counter()
        try:
            (before,) = self.progress(job_id)
            with _progress_bar(progress, job_id, before["queued"] + before["running"]) as bar:
                status = run_job(ctx, job_id, on_batch=_both(bar, on_batch))
        finally:
            ctx.close()
        (counts,) = self.progress(job_id)
        return JobResult(
            job_id=job_id,
            status=status,
            cells=counts["cells"],
            done=counts["done"],
            failed=counts["failed"],
            seconds=time.perf_counter() - started,
        )

    def progress(self, job_id: int | None = None) -> list[dict[str, Any]]:
        """Per job (or for one): status, cell counts, throughput and ETA, or ``stalled``
        (no live worker consumes its queue), and ``retrying`` batches with the latest
        ``retry_error``; raises NotFound."""
        from reprogrid.scheduler.control import with_stalls

        with self.db.reads() as session:
            return with_stalls(session, job_progress(session, job_id))

    def wait(
        self, job_id: int, timeout: float | None = None, poll_seconds: float = 1.0
    ) -> dict[str, Any]:
        """Block until the job is done, failed or cancelled; return its progress row.

        Raises TimeoutError after ``timeout`` seconds, NotFound for no such job.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            (row,) = self.progress(job_id)
            if row["status"] in FINISHED:
                return row
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {row['status']} after {timeout} s")
            time.sleep(poll_seconds)

    def cancel(self, job_id: int) -> JobChange:
        """Cancel a job: waiting batches now, running ones at their next step; raises NotFound."""
        from reprogrid.scheduler.control import cancel_job

        with self.db.sessions() as session:
            return cancel_job(session, job_id)

    def retry(self, job_id: int) -> JobChange:
        """Queue every cell of a job that is not done again (failed, cancelled, or left by
        a run that was stopped or crashed); a job made here needs ``run_job``."""
        from reprogrid.scheduler.control import dead_embedded_runs, retry_job

        with self.db.sessions() as session:
            return retry_job(session, job_id, dead_embedded_runs(session, job_id))

    def refine(
        self,
        image: str | int,
        appends: Sequence[str] = (),
        changes: Mapping[str, Any] | None = None,
    ) -> Refinement:
        """Create a job keeping every recipe field of ``image`` but the changed ones.

        Each of ``appends`` is added to the image's prompt (one prompt each);
        ``changes`` sets recipe fields. Run the job with :meth:`run_job`.
        Raises NotFound or SpecError.
        """
        from reprogrid.review.refine import refine_spec

        with self.db.sessions() as session:
            parent = find_image(session, str(image))
            spec = refine_spec(parent, appends, changes or {}, self.settings.max_cells)
        return Refinement(self.create(spec, parent_image_id=parent.id), spec, parent.id)

    def workers(self) -> list[dict[str, Any]]:
        """Live workers: name, device, queue, current job and batch, loaded checkpoints."""
        with self.db.reads() as session:
            return live_workers(session)

    # 2. Reading images and their records

    def query(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Cells and their images, filtered as ``reprogrid query`` (see CellFilter), streamed."""
        with self.db.reads() as session:
            yield from query_cells(session, CellFilter(**filters), self.settings.store)

    def images(self, job_id: int | None = None) -> Iterator[dict[str, Any]]:
        """A job's (None: every job's) image records as flat rows, streamed (export columns)."""
        from reprogrid.review.export import image_rows

        with self.db.reads() as session:
            if job_id is not None and session.get(Job, job_id) is None:
                raise NotFound(f"no job {job_id}")
            yield from image_rows(session, self.settings.store, job_id)

    def open_images(self, job_id: int) -> Iterator[tuple[dict[str, Any], PILImage]]:
        """Each image row of the job with its PNG opened by Pillow (close it when done)."""
        from PIL import Image

        for row in self.images(job_id):
            yield row, Image.open(row["path"])

    def dataframe(self, job_id: int | None = None) -> pandas.DataFrame:
        """The image rows as a pandas DataFrame (``pip install 'reprogrid[pandas]'``):
        ``seed`` integers (int64, or uint64 where a seed is 2**63 or more), ``created_at``
        UTC datetimes."""
        try:
            import pandas
        except ImportError:
            raise ImportError(
                "Reprogrid.dataframe needs pandas: pip install 'reprogrid[pandas]'"
            ) from None
        from reprogrid.review.export import EXPORT_COLUMNS

        frame = pandas.DataFrame.from_records(list(self.images(job_id)), columns=EXPORT_COLUMNS)
        frame["seed"] = pandas.to_numeric(frame["seed"])  # an empty frame's too
        frame["created_at"] = pandas.to_datetime(frame["created_at"], utc=True, format="ISO8601")
        return frame

    def record(self, image: str | int) -> dict[str, Any]:
        """Everything recorded about one image (an id or a hash prefix); raises NotFound."""
        with self.db.reads() as session:
            return image_record(session, find_image(session, str(image)), self.settings.store)

    # 3. Regenerating and verifying

    def regenerate(
        self,
        image: str | int,
        *,
        device: str | None = None,
        threads: int | None = None,
        full_determinism: bool | None = None,
        alone: bool = False,
        tolerance: int = DEFAULT_TOLERANCE,
    ) -> Regeneration:
        """Rebuild one image from its record alone and compare; writes nothing.

        By default its whole batch runs again as recorded (device type, threads,
        determinism); ``alone`` regenerates the image by itself, and ``tolerance``
        is the largest per-channel difference still called close. Raises NotFound,
        or ReplayError when the record cannot be replayed here.
        """
        from reprogrid.worker.regenerate import load_recorded_batch, regenerate

        replay = _replay(device, threads, full_determinism, alone, tolerance)
        with self.db.reads() as session:
            (ref,) = images_to_verify(session, image_ids=[find_image(session, str(image)).id])
            recorded = load_recorded_batch(session, ref.batch_id)
        (result,) = regenerate(recorded, [ref], replay, self.settings.store)
        return result

    def images_to_check(
        self, job_id: int | None = None, image_ids: Sequence[int] = (), sample: int | None = None
    ) -> list[ImageRef]:
        """The images of a job or with these ids (``sample``: N of them at random)."""
        with self.db.reads() as session:
            return sample_images(images_to_verify(session, job_id, image_ids), sample)

    def verify(
        self,
        job_id: int | None = None,
        image_ids: Sequence[int] = (),
        *,
        sample: int | None = None,
        files_only: bool = False,
        images: Sequence[ImageRef] | None = None,
        device: str | None = None,
        threads: int | None = None,
        full_determinism: bool | None = None,
        alone: bool = False,
        tolerance: int = DEFAULT_TOLERANCE,
    ) -> list[dict[str, Any]]:
        """Regenerate (or, ``files_only``, re-hash) images; record and return one row each.

        The images are a job's, or those with ``image_ids``, or ``images`` as
        :meth:`images_to_check` picked them; the other arguments are
        :meth:`regenerate`'s.
        """
        if images is None:
            images = self.images_to_check(job_id, image_ids, sample)
        images = list(images)
        if files_only:
            from reprogrid.worker.files_check import check_files

            return check_files(self.db, self.settings.store, images)
        from reprogrid.worker.verify import verify_images

        replay = _replay(device, threads, full_determinism, alone, tolerance)
        verifier = f"verify-{socket.gethostname()}-{os.getpid()}"
        return verify_images(self.db, self.settings.store, images, replay, verifier)

    def queue_verification(
        self, images: Sequence[ImageRef], queue: str = DEFAULT_QUEUE, replay: dict | None = None
    ) -> list[int]:
        """Leave the regeneration of ``images`` to the fleet: verify batches on ``queue``.

        ``replay`` holds the Replay fields that differ from recorded (not
        ``device``: a worker uses its own). Returns the batch ids.
        """
        from reprogrid.scheduler.verification import queue_verification

        with self.db.sessions() as session:
            batch_ids = queue_verification(session, list(images), queue, replay)
            session.commit()
        return batch_ids

    def verifications(self, job_id: int | None = None) -> list[dict[str, Any]]:
        """Verdict counts per pair of environments (original run, verifier) and mode, by
        each image's latest verification: ``reprogrid verifications``. Each row has both
        environments' devices and ``differences``: the fields that differ, as
        ``{name: [original, verifier]}``, ranked as :func:`worker.environment.ranked`
        ranks them."""
        from reprogrid.models.verifications import environment_details, verification_summary
        from reprogrid.worker.environment import differences, ranked

        with self.db.reads() as session:
            rows = verification_summary(session, job_id)
            ids = {r["original_env"] for r in rows} | {r["verifier_env"] for r in rows}
            details = environment_details(session, ids)
        for row in rows:
            original, verifier = details[row["original_env"]], details[row["verifier_env"]]
            first, used, rest = ranked(differences(original, verifier))
            row["original_device"] = original["device_name"]
            row["verifier_device"] = verifier["device_name"]
            row["differences"] = {**first, **used, **rest}
        return rows

    def environment(self, environment_id: int) -> dict[str, Any]:
        """A recorded environment: its fingerprint and every field and package; raises
        NotFound."""
        from reprogrid.models import Environment

        with self.db.reads() as session:
            row = session.get(Environment, environment_id)
            if row is None:
                raise NotFound(f"no environment {environment_id}")
            return {"environment_id": row.id, "fingerprint": row.fingerprint, **row.details}

    def requirements(self, environment_id: int) -> str:
        """A recorded environment's packages as a requirements file (``pip install -r``);
        raises NotFound, also for an environment recorded before package inventories."""
        from reprogrid.worker.environment import requirements

        info = self.environment(environment_id)
        if "packages" not in info:
            raise NotFound(
                f"environment {environment_id} was recorded before package inventories were kept"
            )
        return requirements(info)

    # 4. Reviewing: sheets, reports, exports

    def grid(
        self,
        job_id: int,
        output: str | os.PathLike[str],
        *,
        rows: str | None = None,
        cols: str | None = None,
        thumb: int | None = None,
    ) -> list[Path]:
        """Draw the job as labelled contact sheets (``rows`` down, ``cols`` across: prompt
        and seed by default), one PNG per combination of the other axes, named after
        ``output``; return their paths. Raises NotFound, or ReviewError for bad axes or
        sizes."""
        from reprogrid.review.layout import job_sheets
        from reprogrid.review.sheet import write_sheets

        with self.db.reads() as session:
            sheets = job_sheets(session, job_id, self.settings.store, rows, cols)
            return write_sheets(session, sheets, self.settings.store, Path(output), thumb)

    def sheets(
        self,
        job_id: int,
        *,
        rows: str | None = None,
        cols: str | None = None,
        thumb: int | None = None,
    ) -> list[PILImage]:
        """:meth:`grid`'s sheets as Pillow images, in memory: a notebook shows one inline."""
        import tempfile

        from PIL import Image

        with tempfile.TemporaryDirectory(prefix="reprogrid-sheets-") as folder:
            paths = self.grid(job_id, Path(folder) / "sheet.png", rows=rows, cols=cols, thumb=thumb)
            return [_loaded(Image.open(path)) for path in paths]

    def report(
        self,
        job_id: int,
        output: str | os.PathLike[str],
        *,
        thumb: int | None = None,
        page_tiles: int = 1000,
        standalone: bool = False,
        on_images: Callable[[int], None] | None = None,
    ) -> Written:
        """Write the job's interactive HTML report into the folder ``output`` (viewable
        offline, see ``reprogrid report``); ``written.index`` is its page. ``on_images``
        hears how many images each step wrote. Raises NotFound, or ReviewError for bad
        options."""
        from reprogrid.review.report import write_report

        with self.db.reads() as session:
            if session.get(Job, job_id) is None:
                raise NotFound(f"no job {job_id}")
            return write_report(
                session,
                job_id,
                self.settings.store,
                Path(output),
                thumb,
                page_tiles,
                standalone,
                on_images=on_images,
            )

    def export(
        self,
        out: TextIO | str | os.PathLike[str],
        job_id: int | None = None,
        *,
        fmt: str = "csv",
        on_rows: Callable[[int], None] | None = None,
    ) -> int:
        """Write the image rows of a job (None: of every job) as ``csv`` or ``jsonl`` into
        ``out`` (an open text stream, or a file path); return how many. Streamed: a
        million images export in constant memory. Raises NotFound."""
        from reprogrid.review.export import image_rows, write_rows

        with self.db.reads() as session:
            if job_id is not None and session.get(Job, job_id) is None:
                raise NotFound(f"no job {job_id}")
            rows = image_rows(session, self.settings.store, job_id)
            if not isinstance(out, str | os.PathLike):
                return write_rows(rows, fmt, out, on_rows)
            with Path(out).open("w", newline="", encoding="utf-8") as stream:
                return write_rows(rows, fmt, stream, on_rows)

    def count_images(self, job_id: int | None = None) -> int:
        """How many images a job (None: every job) has recorded: the rows of an export.
        Raises NotFound."""
        from reprogrid.review.export import count_images

        with self.db.reads() as session:
            if job_id is not None and session.get(Job, job_id) is None:
                raise NotFound(f"no job {job_id}")
            return count_images(session, job_id)


def _replay(
    device: str | None,
    threads: int | None,
    full_determinism: bool | None,
    alone: bool,
    tolerance: int,
) -> Replay:
    """How to regenerate: None fields as recorded; a device name such as ``auto`` picked."""
    from reprogrid.worker.execute import pick_device
    from reprogrid.worker.regenerate import Replay

    return Replay(
        device=pick_device(device) if device else None,
        threads=threads,
        full_determinism=full_determinism,
        alone=alone,
        tolerance=tolerance,
    )


def _loaded(image: PILImage) -> PILImage:
    """The image read into memory (its file may go)."""
    image.load()
    return image


@contextlib.contextmanager
def _progress_bar(show: bool | None, job_id: int, total: int) -> Iterator[Any]:
    """A tqdm bar of images (None where not shown): ``show`` None means in a notebook."""
    if not (_in_notebook() if show is None else show):
        yield None
        return
    try:
        import ipywidgets  # noqa: F401  (tqdm.auto draws a widget with it)
        from tqdm.auto import tqdm
    except ImportError:  # tqdm.auto would warn "IProgress not found" and fall back to text
        from tqdm import tqdm
    with tqdm(total=total, desc=f"job {job_id}", unit="image") as bar:
        yield bar


def _both(bar: Any, on_batch: Callable[[Any], None] | None) -> Callable[[Any], None] | None:
    """A batch callback that advances ``bar`` and then calls ``on_batch``."""
    if bar is None:
        return on_batch

    def heard(outcome: Any) -> None:
        bar.update(outcome.images)
        if on_batch is not None:
            on_batch(outcome)

    return heard


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (IPython's ZMQ shell)."""
    shell = sys.modules.get("IPython")
    ipython = getattr(shell, "get_ipython", lambda: None)()
    return type(ipython).__name__ == "ZMQInteractiveShell"
