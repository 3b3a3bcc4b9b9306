"""Running batches end to end: claim, compute, write files, record.

A batch runs in two steps: ``_compute`` claims and computes it on the calling
thread, ``_record`` stores and records its results. ``OverlappedBatches``
(behind ``reprogrid run`` and the Celery worker) records each batch on a
background thread while the next one computes; ``execute_batch`` does both
steps in line. Either way a batch is computed and recorded by the same code.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from reprogrid.config import Settings
from reprogrid.models import Database
from reprogrid.models.calls import call_json
from reprogrid.scheduler.grid import sha256_text
from reprogrid.worker import affinity, records
from reprogrid.worker.checkpoints import (
    CheckpointIdentity,
    LoadedCheckpoint,
    load_checkpoint,
    loaded_checkpoints,
)
from reprogrid.worker.determinism import DeterminismSettings, configure
from reprogrid.worker.environment import describe_environment, fingerprint
from reprogrid.worker.failures import TRANSIENT, RetryPolicy, error_kind
from reprogrid.worker.generate import BatchInterrupted, CallRefused, generate
from reprogrid.worker.infotext import infotext
from reprogrid.worker.store import (
    encode_png,
    pixel_sha256,
    remove_stale_temp_files,
    write_png,
)


@dataclass
class WorkerContext:
    """What a process that runs batches holds: database, store, device, identity."""

    db: Database
    store: Path
    device: str
    name: str
    determinism: DeterminismSettings
    lease_seconds: int
    retry: RetryPolicy
    # batches claimed and not yet recorded or given up, with when they were claimed
    # (time.monotonic()): the heartbeat renews their leases, for a while
    active: dict[int, float] = field(default_factory=dict)
    _environment_ids: dict[str, int] = field(default_factory=dict)
    _call_ids: dict[str, int] = field(default_factory=dict)
    _checkpoint_ids: dict[tuple[str, str | None, str], int] = field(default_factory=dict)

    @classmethod
    def start(cls, settings: Settings, db: Database, device: str, name: str) -> WorkerContext:
        """Configure determinism for this process, sweep orphan temp files, build the context."""
        determinism = configure(settings.threads, settings.full_determinism)
        remove_stale_temp_files(settings.store)
        return cls(
            db=db,
            store=settings.store,
            device=device,
            name=name,
            determinism=determinism,
            lease_seconds=settings.lease_seconds,
            retry=RetryPolicy.from_settings(settings),
        )

    def environment(self, dtype: str) -> tuple[int, dict[str, Any]]:
        """The environment row id (and description) for computing in ``dtype`` here."""
        info = describe_environment(self.device, dtype, self.determinism)
        key = fingerprint(info)
        if key not in self._environment_ids:
            with self.db.sessions() as session:
                self._environment_ids[key] = records.environment_id(session, key, info)
        return self._environment_ids[key], info

    def call(self, call: dict[str, Any]) -> int:
        """The pipeline_call row id for a recorded call."""
        body = call_json(call)
        key = sha256_text(body)
        if key not in self._call_ids:
            with self.db.sessions() as session:
                self._call_ids[key] = records.call_id(session, key, body)
        return self._call_ids[key]

    def checkpoint(self, loaded: LoadedCheckpoint) -> int:
        """The checkpoint row id for a loaded checkpoint."""
        identity = loaded.identity
        key = (identity.model, identity.revision, identity.sha256)
        if key not in self._checkpoint_ids:
            with self.db.sessions() as session:
                self._checkpoint_ids[key] = records.checkpoint_id(
                    session, identity.model, identity.revision, identity.sha256, identity.files
                )
        return self._checkpoint_ids[key]


@dataclass(frozen=True)
class BatchOutcome:
    """What became of one batch: done, retrying, failed, cancelled, split, skipped or lost."""

    batch_id: int
    status: str
    images: int
    seconds: float
    error: str | None = None


class LeaseKeeper:
    """The ``should_stop`` check run between denoising steps.

    At most every few seconds it renews the batch's lease and reads whether the
    job was cancelled or the lease was lost to another worker.
    """

    def __init__(self, ctx: WorkerContext, batch_id: int) -> None:
        self.ctx = ctx
        self.batch_id = batch_id
        self.interval = min(5.0, ctx.lease_seconds / 3)
        # Counted from the claim: a batch claimed ahead long ago (its job may have
        # been cancelled since) is checked at its first step.
        self.last = ctx.active.get(batch_id, time.monotonic())

    def __call__(self) -> bool:
        if time.monotonic() - self.last < self.interval:
            return False
        self.last = time.monotonic()
        with self.ctx.db.sessions() as session:
            return not records.renew_lease(
                session, self.batch_id, self.ctx.name, self.ctx.lease_seconds
            )


log = logging.getLogger(__name__)
T = TypeVar("T")
# Tries at recording a computed batch before its attempt counts as failed: an
# outage of the store or database while recording costs waiting, not the pixels.
RECORD_TRIES = 4

Record = Callable[[], int]
"""Writes a computed batch's results (files, rows) and returns how many it recorded."""

BatchWork = Callable[[WorkerContext, records.ClaimedBatch], Record]
"""The computation of one kind of batch; it returns how to record its results."""


@dataclass(frozen=True)
class _Computed:
    """A claimed batch whose results are computed and wait to be recorded."""

    claim: records.ClaimedBatch
    record: Record
    started: float


def execute_batch(ctx: WorkerContext, batch_id: int, work: BatchWork | None = None) -> BatchOutcome:
    """Claim the batch, compute it, then store and record its results, in this thread.

    ``work`` computes other kinds of batches (verification); it defaults to
    generating images.
    """
    step = _compute(ctx, batch_id, work or generate_images, _claim(ctx, batch_id))
    return step if isinstance(step, BatchOutcome) else _record(ctx, step)


class OverlappedBatches:
    """Runs batches one after another, recording each while the next one computes.

    Storing PNGs and writing rows happen on one background thread, so the
    device is never idle while the database commits; at most one batch waits to
    be recorded. ``on_outcome`` is called on that thread, in batch order.

    The same thread claims ahead: told which batch comes next (``claim_ahead``,
    from any thread: the embedded run knows its next batch, a Celery worker
    hears of its next message while this one computes), it takes that batch's
    lease meanwhile, so the claim's statements (and, on SQLite, its wait for the
    write lock the recording holds) are off the device's time too. A batch
    claimed ahead is held like one computing: the heartbeat renews its lease, a
    process killed holding it loses it when its heartbeat stops, and one whose
    run never comes is given back by ``close`` (``records.release_claims``).
    """

    def __init__(self, ctx: WorkerContext, on_outcome: Callable[[BatchOutcome], None]) -> None:
        self.ctx = ctx
        self.on_outcome = on_outcome
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reprogrid-record")
        self._recording: Future[BatchOutcome] | None = None
        self._lock = threading.Lock()
        self._ahead: dict[int, Future[records.ClaimedBatch | None]] = {}
        self._computing: records.ClaimedBatch | None = None

    def claim_ahead(self, batch_id: int) -> None:
        """Claim the batch in the background, for a ``run`` of it that comes later."""
        with self._lock:
            if batch_id not in self._ahead:
                self._ahead[batch_id] = self._thread.submit(self._claim, batch_id)

    def run(self, batch_id: int, work: BatchWork | None = None, then: int | None = None) -> None:
        """Compute the batch here, then hand it to the recording thread.

        ``then`` is the batch to run next, claimed in the background meanwhile.
        """
        with self._lock:
            ahead = self._ahead.pop(batch_id, None)
        claim = self._claim(batch_id) if ahead is None else ahead.result()
        self._computing = claim
        if then is not None:
            self.claim_ahead(then)
        try:
            step = _compute(self.ctx, batch_id, work or generate_images, claim)
        finally:
            self._computing = None
        self.wait()
        self._recording = self._thread.submit(self._finish, step)

    def wait(self) -> BatchOutcome | None:
        """Wait until the last batch is recorded; its outcome (errors are raised here)."""
        recording, self._recording = self._recording, None
        return None if recording is None else recording.result()

    def close(self) -> None:
        """Record what is left, give back batches claimed ahead and not run, stop the thread."""
        try:
            self.wait()
            self._give_back_unrun()
        finally:
            self._thread.shutdown()

    def __enter__(self) -> OverlappedBatches:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _claim(self, batch_id: int) -> records.ClaimedBatch | None:
        """Claim the batch, preferring the checkpoint of the batch computing now: it
        is the one loaded by the time a batch claimed ahead runs."""
        computing = self._computing
        return _claim(self.ctx, batch_id, [] if computing is None else [_checkpoint(computing)])

    def _give_back_unrun(self) -> None:
        with self._lock:
            ahead, self._ahead = list(self._ahead.values()), {}
        for future in ahead:
            try:
                claim = future.result()
                if claim is not None:
                    with self.ctx.db.sessions() as session:
                        records.release_claims(session, claim.job_id, self.ctx.name)
                    self.ctx.active.pop(claim.batch_id, None)
            except Exception as exc:  # its lease runs out, or the scheduler sees us gone
                log.error("could not give back a batch claimed ahead: %s", exc)

    def _finish(self, step: BatchOutcome | _Computed) -> BatchOutcome:
        outcome = step if isinstance(step, BatchOutcome) else _record(self.ctx, step)
        self.on_outcome(outcome)
        return outcome


def _claim(
    ctx: WorkerContext, batch_id: int, loading: list[affinity.Checkpoint] | None = None
) -> records.ClaimedBatch | None:
    """Claim the batch (or, for a job that sweeps checkpoints, the best one for this
    process's checkpoints and those it is ``loading``); None when another worker
    holds it or nothing is left."""
    held = [(c.ref.model, c.ref.revision) for c in loaded_checkpoints()] + (loading or [])
    with ctx.db.sessions() as session:
        claim = affinity.claim_preferred(session, batch_id, ctx.name, ctx.lease_seconds, held)
    if claim is not None:
        ctx.active[claim.batch_id] = time.monotonic()
    return claim


def _checkpoint(claim: records.ClaimedBatch) -> affinity.Checkpoint:
    """The checkpoint (model, revision) a claimed batch computes with."""
    recipe = json.loads(claim.cells[0][2])
    return recipe.get("model"), recipe.get("revision")


def _compute(
    ctx: WorkerContext, batch_id: int, work: BatchWork, claim: records.ClaimedBatch | None
) -> BatchOutcome | _Computed:
    """Compute the batch claimed for ``batch_id``; an outcome if it ended here
    (skipped: not claimed; cancelled, failed)."""
    started = time.perf_counter()
    if claim is None:
        return BatchOutcome(batch_id, "skipped", 0, 0.0)
    try:
        return _Computed(claim, work(ctx, claim), started)
    except BatchInterrupted:
        with ctx.db.sessions() as session:
            records.cancel_batch(session, claim, ctx.name)
        ctx.active.pop(claim.batch_id, None)
        return BatchOutcome(claim.batch_id, "cancelled", 0, time.perf_counter() - started)
    except Exception as exc:
        return _failed(ctx, claim, exc, started)
    except BaseException:
        ctx.active.pop(claim.batch_id, None)
        raise


def _record(ctx: WorkerContext, computed: _Computed) -> BatchOutcome:
    """Store and record a computed batch.

    A transient error (I/O, database) is retried here, with the policy's
    backoff, up to ``RECORD_TRIES`` times: storing and recording are
    idempotent, and the computed pixels are kept meanwhile. Any other error,
    or the last try's, is a failed attempt like any other.
    """
    try:
        return _record_with_retries(ctx, computed)
    finally:
        ctx.active.pop(computed.claim.batch_id, None)


def _record_with_retries(ctx: WorkerContext, computed: _Computed) -> BatchOutcome:
    batch_id = computed.claim.batch_id
    try:
        kept = _retrying(ctx, f"recording batch {batch_id}", computed.record)
    except Exception as exc:
        return _failed(ctx, computed.claim, exc, computed.started)
    seconds = time.perf_counter() - computed.started
    return BatchOutcome(batch_id, "done", kept, seconds)


def _retrying(ctx: WorkerContext, what: str, write: Callable[[], T]) -> T:
    """Run a store or database write, trying a transient error (I/O, database) again
    after the policy's backoff, up to ``RECORD_TRIES`` times; raises the last error."""
    for attempt in range(1, RECORD_TRIES):
        try:
            return write()
        except Exception as exc:
            if error_kind(exc) != TRANSIENT:
                raise
            wait = ctx.retry.delay(attempt)
            log.warning("%s failed (%s); again in %.0f s", what, exc, wait)
            time.sleep(wait)
    return write()


def _failed(
    ctx: WorkerContext, claim: records.ClaimedBatch, exc: Exception, started: float
) -> BatchOutcome:
    """Replace a batch that ran out of GPU memory by its two halves, waiting to be run;
    otherwise retry it after the policy's backoff, or fail its cells at once when the
    error cannot change on retry or the attempts are spent (see ``failures``). A call
    the pipeline refuses also fails the job's waiting cells on the same checkpoint
    (``records.fail_same_calls``): the job fails once, not batch by batch.

    Writing the failure is tried again after the policy's backoff (the database
    may be restarting). If even then it cannot be written, the batch
    keeps its lease and comes back when the lease runs out: the outcome is
    ``lost``, and the worker carries on.
    """
    ctx.active.pop(claim.batch_id, None)
    error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    split = _out_of_memory(exc) and len(claim.cells) > 1
    retry_at = None if split else ctx.retry.retry_at(exc, claim.attempt)

    def write() -> bool:
        with ctx.db.sessions() as session:
            if split:
                records.split_batch(session, claim, ctx.name, error)
                return False
            retry = records.fail_batch(session, claim, ctx.name, error, retry_at)
            if isinstance(exc, CallRefused):  # every batch on this checkpoint would be
                records.fail_same_calls(session, claim, error)
            return retry

    try:
        retry = _retrying(ctx, f"recording the failure of batch {claim.batch_id}", write)
    except Exception as unwritten:
        log.error(
            "batch %d failed (%s) and the failure could not be recorded (%s)",
            claim.batch_id,
            error,
            unwritten,
        )
        return BatchOutcome(claim.batch_id, "lost", 0, seconds, error)
    outcome = "split" if split else "retrying" if retry else "failed"
    return BatchOutcome(claim.batch_id, outcome, 0, seconds, error)


def _out_of_memory(exc: Exception) -> bool:
    """True for a CUDA out-of-memory error, after giving the cached memory back."""
    import torch

    if not isinstance(exc, torch.cuda.OutOfMemoryError):
        return False
    torch.cuda.empty_cache()
    return True


def generate_images(ctx: WorkerContext, claim: records.ClaimedBatch) -> Record:
    """Generate the batch's images; return how to store and record them."""
    recipes = [json.loads(recipe) for _, _, recipe in claim.cells]
    first = recipes[0]
    loaded = load_checkpoint(
        first["model"],
        first["revision"],
        first["dtype"],
        ctx.device,
        first.get("safety_checker", True),
        first.get("config"),
    )
    environment_id, _ = ctx.environment(first["dtype"])
    checkpoint_id = ctx.checkpoint(loaded)

    started = time.perf_counter()
    made = generate(loaded, recipes, ctx.device, LeaseKeeper(ctx, claim.batch_id))
    pixels = made.pixels
    seconds_each = (time.perf_counter() - started) / len(recipes)

    def record() -> int:
        images = []
        store = str(ctx.store.absolute())
        call_id = ctx.call(made.call)
        for index, (cell_id, grid_index, recipe_json) in enumerate(claim.cells):
            chunks = png_chunks(
                claim.job_id, cell_id, grid_index, recipe_json, loaded.identity, made.call
            )
            path, png_sha256 = write_png(ctx.store, encode_png(pixels[index], chunks))
            images.append(
                {
                    "cell_id": cell_id,
                    "batch_id": claim.batch_id,
                    "index_in_batch": index,
                    "batch_size": len(recipes),
                    "pixel_sha256": pixel_sha256(pixels[index]),
                    "png_sha256": png_sha256,
                    "path": path,
                    "store": store,
                    "width": int(pixels.shape[2]),
                    "height": int(pixels.shape[1]),
                    "environment_id": environment_id,
                    "checkpoint_id": checkpoint_id,
                    "call_id": call_id,
                    "worker": ctx.name,
                    "generate_seconds": seconds_each,
                    "nsfw": None if made.nsfw is None else made.nsfw[index],
                }
            )
        # Files of cells another worker recorded first stay: see worker/store.py.
        with ctx.db.sessions() as session:
            return len(records.record_images(session, claim, ctx.name, images, made.warnings))

    return record


def png_chunks(
    job_id: int,
    cell_id: int,
    grid_index: int,
    recipe_json: str,
    checkpoint: CheckpointIdentity,
    call: dict[str, Any],
) -> dict[str, str]:
    """The ``parameters`` (AUTOMATIC1111 format) and ``reprogrid`` text chunks of a PNG.

    The ``reprogrid`` chunk holds the recipe and the call the pipeline received
    (shared arguments, sampler class and config as built): one source, the
    objects that ran.
    """
    recipe = json.loads(recipe_json)
    metadata = {
        "job_id": job_id,
        "cell_id": cell_id,
        "grid_index": grid_index,
        "recipe": recipe,
        "recipe_sha256": sha256_text(recipe_json),
        "checkpoint_sha256": checkpoint.sha256,
        "call": call,
    }
    return {
        "parameters": infotext(recipe, call["sampler"], checkpoint.a1111_hash),
        "reprogrid": json.dumps(metadata, sort_keys=True),
    }


def pick_device(device: str) -> str:
    """Resolve ``auto`` to ``cuda`` when a GPU is visible, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
