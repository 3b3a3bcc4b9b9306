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
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from reprogrid.config import Settings
from reprogrid.models import Database
from reprogrid.models.calls import call_json
from reprogrid.scheduler.grid import canonical_json, sha256_text
from reprogrid.worker import affinity, records
from reprogrid.worker.checkpoints import (
    CheckpointIdentity,
    LoadedCheckpoint,
    PipelineKey,
    in_memory,
    load_pipeline,
    loaded_checkpoints,
)
from reprogrid.worker.determinism import DeterminismSettings, configure
from reprogrid.worker.environment import describe_environment
from reprogrid.worker.failures import TRANSIENT, RetryPolicy, error_kind
from reprogrid.worker.generate import BatchInterrupted, CallRefused, GeneratedBatch, generate
from reprogrid.worker.infotext import infotext
from reprogrid.worker.recorder import InProcess, Recorder, RecorderGone
from reprogrid.worker.store import (
    encode_png,
    pixel_sha256,
    remove_stale_temp_files,
    write_png,
)


@dataclass
class RecordingContext:
    """What claiming and recording batches needs: database, store, this worker's name,
    lease and retry policy, and the ids of the rows it has found or written."""

    db: Database
    store: Path
    name: str
    lease_seconds: int
    retry: RetryPolicy
    _environment_ids: dict[str, int] = field(default_factory=dict)
    _call_ids: dict[str, int] = field(default_factory=dict)
    _checkpoint_ids: dict[tuple[str, str | None, str], int] = field(default_factory=dict)

    def environment_id(self, description: str) -> int:
        """The environment row id for an environment's description (its canonical JSON)."""
        if description not in self._environment_ids:
            key = sha256_text(description)  # its fingerprint
            with self.db.sessions() as session:
                self._environment_ids[description] = records.environment_id(
                    session, key, json.loads(description)
                )
        return self._environment_ids[description]

    def call_id(self, call: dict[str, Any]) -> int:
        """The pipeline_call row id for a recorded call."""
        body = call_json(call)
        key = sha256_text(body)
        if key not in self._call_ids:
            with self.db.sessions() as session:
                self._call_ids[key] = records.call_id(session, key, body)
        return self._call_ids[key]

    def checkpoint_id(self, identity: CheckpointIdentity) -> int:
        """The checkpoint row id for a checkpoint's identity."""
        key = (identity.model, identity.revision, identity.sha256)
        if key not in self._checkpoint_ids:
            with self.db.sessions() as session:
                self._checkpoint_ids[key] = records.checkpoint_id(
                    session, identity.model, identity.revision, identity.sha256, identity.files
                )
        return self._checkpoint_ids[key]


@dataclass
class WorkerContext:
    """What a process that runs batches holds: device and determinism, what recording
    needs (``recording``: database, store, identity), and its recording process
    (``recorder``), where batches are claimed and recorded."""

    recording: RecordingContext
    device: str
    determinism: DeterminismSettings
    recorder: Recorder
    # per dtype: the environment last described, and its canonical JSON
    _described: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    # batches claimed and not yet recorded or given up, with when they were claimed
    # (time.monotonic()): the heartbeat renews their leases, for a while
    active: dict[int, float] = field(default_factory=dict)
    # batches to stop at their next denoising step and give back: computing ahead of a
    # run that will not come (see OverlappedBatches.close)
    giving_back: set[int] = field(default_factory=set)
    # run on the device thread once the batch computing has done its first denoising
    # step, or has ended before one: the batch before's hand-over (OverlappedBatches)
    at_first_step: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def start(cls, settings: Settings, db: Database, device: str, name: str) -> WorkerContext:
        """Start the recording process, configure determinism for this process (which
        imports torch meanwhile), sweep orphan temp files, build the context."""
        retry = RetryPolicy.from_settings(settings)
        recording = RecordingContext(db, settings.store, name, settings.lease_seconds, retry)
        recorder = Recorder(recording)
        recorder.start()
        determinism = configure(settings.threads, settings.full_determinism)
        remove_stale_temp_files(settings.store)
        return cls(recording, device, determinism, recorder)

    def close(self) -> None:
        """Stop the recording process, once the request in hand is answered."""
        self.recorder.close()

    def first_step_done(self) -> None:
        """Run what waits for the batch computing to be under way (``at_first_step``)."""
        while self.at_first_step:
            self.at_first_step.pop(0)()

    @property
    def db(self) -> Database:
        """The database."""
        return self.recording.db

    @property
    def store(self) -> Path:
        """The image store's folder."""
        return self.recording.store

    @property
    def name(self) -> str:
        """This worker's name: batches are leased to it."""
        return self.recording.name

    @property
    def lease_seconds(self) -> int:
        """How long a claim holds a batch without renewal."""
        return self.recording.lease_seconds

    @property
    def retry(self) -> RetryPolicy:
        """When failed batches run again."""
        return self.recording.retry

    def environment_id(self, dtype: str) -> int:
        """The environment row id for computing in ``dtype`` here."""
        return self.recording.environment_id(self.environment(dtype))

    def environment(self, dtype: str) -> str:
        """The environment this process computes in with ``dtype``, read now, as canonical
        JSON (encoded again only when it changed: it is sent with every batch)."""
        info = self.describe(dtype)
        described = self._described.get(dtype)
        if described is None or described[0] != info:
            described = self._described[dtype] = (info, canonical_json(info))
        return described[1]

    def describe(self, dtype: str) -> dict[str, Any]:
        """The environment this process computes in with ``dtype``, read now."""
        return describe_environment(self.device, dtype, self.determinism)

    def checkpoint(self, loaded: LoadedCheckpoint) -> int:
        """The checkpoint row id for a loaded checkpoint."""
        return self.recording.checkpoint_id(loaded.identity)


GIVEN_BACK = "given back"


@dataclass(frozen=True)
class BatchOutcome:
    """What became of one batch: done, retrying, failed, cancelled, split, skipped, lost or
    given back (``GIVEN_BACK``: stopped, its claim released, to run again elsewhere)."""

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
        self.ctx.first_step_done()
        if self.batch_id in self.ctx.giving_back:
            return True
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


class Results(Protocol):
    """A computed batch's results, as data (they are pickled to the recording process)."""

    def record(self, ctx: RecordingContext) -> int:
        """Write the results (files, rows) and return how many were recorded."""
        ...


BatchWork = Callable[[WorkerContext, records.ClaimedBatch], Results]
"""The computation of one kind of batch; it returns its results, to be recorded."""


@dataclass(frozen=True)
class Computed:
    """A claimed batch whose results are computed and wait to be recorded."""

    claim: records.ClaimedBatch
    results: Results
    started: float


def execute_batch(ctx: WorkerContext, batch_id: int, work: BatchWork | None = None) -> BatchOutcome:
    """Claim the batch, compute it, then store and record its results, in this thread.

    ``work`` computes other kinds of batches (verification); it defaults to
    generating images.
    """
    here = InProcess(ctx.recording)
    step = _compute(ctx, batch_id, work or generate_images, _claim(ctx, here, batch_id))
    return step if isinstance(step, BatchOutcome) else _record(ctx, here, step)


@dataclass
class _Batch:
    """A batch this process was told of: its claim, then its computation and recording."""

    work: BatchWork
    claim: Future[records.ClaimedBatch | None]
    computed: Future[BatchOutcome | Computed] = field(default_factory=Future)
    recorded: Future[BatchOutcome] | None = None


@dataclass(frozen=True)
class Ran:
    """What ``OverlappedBatches.run`` gives back: the claim (None if none was taken),
    whether the batch computed (it is being recorded), and its recorded outcome."""

    claim: records.ClaimedBatch | None
    computed: bool
    recorded: Future[BatchOutcome]


class OverlappedBatches:
    """Runs batches one after another on a device thread, each as soon as the one before it
    is computed, and records each while the next one computes.

    Batches come in order: announced ahead (``claim_ahead``: the embedded run
    knows its next batch, a Celery worker hears of its next message while this
    one computes) or asked for (``run``). The device thread computes them in
    that order without waiting for anyone: a batch announced ahead starts the
    moment the one before it is computed, whether or not its ``run`` has been
    called, so no hand-over (Celery's acknowledgement and next task) sits
    between two pipeline calls. ``run`` waits until its batch is computed.

    A background thread claims each batch as it is announced (the statements
    run in the recording process, ``ctx.recorder``: see ``recorder``), and
    hands each computed batch to the recording process to be stored and
    recorded, in batch order, at most one batch waiting; ``on_outcome`` is
    called on that thread. When the next batch is announced already, a
    computed batch is handed over (to be recorded, and to its ``run``) once
    the next one has done its first denoising step: the threads the hand-over
    wakes then run beside the pipeline, not between two calls.

    A batch claimed ahead is held like one computing: the heartbeat renews its
    lease, and a process killed holding it loses it when its heartbeat stops.
    ``close`` gives back every batch whose ``run`` did not come (a stopping
    worker's next message, a run interrupted): one computing stops at its next
    denoising step; all get their claims released.
    """

    def __init__(self, ctx: WorkerContext, on_outcome: Callable[[BatchOutcome], None]) -> None:
        self.ctx = ctx
        self.on_outcome = on_outcome
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reprogrid-record")
        self._recording: Future[BatchOutcome] | None = None
        self._lock = threading.Lock()
        self._batches: dict[int, _Batch] = {}
        self._order: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._computing: records.ClaimedBatch | None = None
        self._device = threading.Thread(
            target=self._compute_in_order, name="reprogrid-device", daemon=True
        )
        self._device.start()

    def claim_ahead(self, batch_id: int, work: BatchWork | None = None) -> None:
        """Claim the batch in the background, and compute it after those announced before."""
        with self._lock:
            if batch_id in self._batches:
                return
            claim = self._thread.submit(self._claim, batch_id)
            self._batches[batch_id] = _Batch(work or generate_images, claim)
        self._order.put(batch_id)

    def run(self, batch_id: int, work: BatchWork | None = None, then: int | None = None) -> Ran:
        """Wait until the batch is computed (computing it after those announced before, if it
        was not announced) and handed over to be recorded.

        ``then`` is the batch to run next, announced meanwhile.
        """
        self.claim_ahead(batch_id, work)
        if then is not None:
            self.claim_ahead(then)
        with self._lock:
            batch = self._batches[batch_id]
        step = batch.computed.result()
        with self._lock:
            del self._batches[batch_id]
        assert batch.recorded is not None
        if isinstance(step, Computed):
            return Ran(step.claim, True, batch.recorded)
        return Ran(batch.claim.result(), False, batch.recorded)

    def wait(self) -> BatchOutcome | None:
        """Wait until the last batch computed is recorded; its outcome (errors are raised)."""
        recording = self._recording
        return None if recording is None else recording.result()

    def close(self) -> None:
        """Give back the batches whose run did not come (one computing stops at its next
        step), record what was computed, stop the threads."""
        with self._lock:
            self.ctx.giving_back.update(self._batches)
        self._order.put(None)
        self._device.join()
        try:
            self.wait()
            self._give_back_unrun()
        finally:
            self._thread.shutdown()
            self.ctx.giving_back.clear()

    def __enter__(self) -> OverlappedBatches:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _compute_in_order(self) -> None:
        """The device thread: compute each batch in order, hand it over to be recorded."""
        while (batch_id := self._order.get()) is not None:
            with self._lock:
                batch = self._batches[batch_id]
            try:
                step = self._compute(batch_id, batch)
                self._wait_for_recording()  # one batch waits to be recorded, at most
            except BaseException as exc:  # its claim, or the last recording, failed
                batch.computed.set_exception(exc)  # its run raises it; close gives it back
                continue
            hand_over = partial(self._hand_over, batch, step)
            if self._order.empty():
                hand_over()
            else:
                # The hand-over wakes this process's other threads (Celery acknowledges
                # and takes its next message, the batch after next is claimed): they run
                # while the next batch computes, not between two pipeline calls.
                self.ctx.at_first_step.append(hand_over)
        self.ctx.first_step_done()

    def _hand_over(self, batch: _Batch, step: BatchOutcome | Computed) -> None:
        """Send a computed batch to be recorded, and tell its ``run`` it is computed."""
        self._recording = batch.recorded = self._thread.submit(self._finish, step)
        batch.computed.set_result(step)

    def _wait_for_recording(self) -> None:
        """Wait for the last recording; an error of it is raised once."""
        recording = self._recording
        if recording is None:
            return
        try:
            recording.result()
        except BaseException:
            self._recording = None
            raise

    def _compute(self, batch_id: int, batch: _Batch) -> BatchOutcome | Computed:
        try:
            if batch_id in self.ctx.giving_back:  # not started: ``close`` releases its claim
                return BatchOutcome(batch_id, GIVEN_BACK, 0, 0.0)
            claim = batch.claim.result()
            self._computing = claim
            return _compute(self.ctx, batch_id, batch.work, claim)
        finally:
            self._computing = None
            self.ctx.first_step_done()  # a batch without denoising steps, or ended early

    def _claim(self, batch_id: int) -> records.ClaimedBatch | None:
        """Claim the batch, preferring the checkpoint of the batch computing now: it
        is the one loaded by the time a batch claimed ahead runs; then prepare it."""
        computing = self._computing
        loading = [] if computing is None else [_checkpoint(computing)]
        claim = _claim(self.ctx, self.ctx.recorder, batch_id, loading)
        if claim is not None and claim.kind == "generate":
            try:
                prepare_images(self.ctx, claim)
            except Exception:  # an optimization only: the batch's own call meets the error
                log.debug("could not prepare batch %d ahead", batch_id, exc_info=True)
        return claim

    def _give_back_unrun(self) -> None:
        with self._lock:
            unrun, self._batches = list(self._batches.values()), {}
        for batch in unrun:
            if batch.computed.done() and not _given_back(batch.computed):
                continue  # computed and recorded, or ended: nothing is held
            try:
                claim = batch.claim.result()
                if claim is not None:
                    with self.ctx.db.sessions() as session:
                        records.release_claims(session, claim.job_id, self.ctx.name)
                    self.ctx.active.pop(claim.batch_id, None)
            except Exception as exc:  # its lease runs out, or the scheduler sees us gone
                log.error("could not give back a batch claimed ahead: %s", exc)

    def _finish(self, step: BatchOutcome | Computed) -> BatchOutcome:
        """Record a computed batch; tell ``on_outcome`` how each batch ended."""
        if isinstance(step, BatchOutcome):
            outcome = step
        else:
            outcome = _record(self.ctx, self.ctx.recorder, step)
        self.on_outcome(outcome)
        return outcome


def _given_back(computed: Future[BatchOutcome | Computed]) -> bool:
    if computed.exception() is not None:
        return True  # its claim failed, or it may have succeeded: give it back
    step = computed.result()
    return isinstance(step, BatchOutcome) and step.status == GIVEN_BACK


def _claim(
    ctx: WorkerContext,
    recorder: Recorder | InProcess,
    batch_id: int,
    loading: list[affinity.Checkpoint] | None = None,
) -> records.ClaimedBatch | None:
    """Claim the batch (or, for a job that sweeps checkpoints, the best one for this
    process's checkpoints and those it is ``loading``); None when another worker
    holds it or nothing is left."""
    held = [(c.ref.model, c.ref.revision) for c in loaded_checkpoints()] + (loading or [])
    claim = recorder.call(claim_preferred, batch_id, held)
    if claim is not None:
        ctx.active[claim.batch_id] = time.monotonic()
    return claim


def claim_preferred(
    ctx: RecordingContext, batch_id: int, held: list[affinity.Checkpoint]
) -> records.ClaimedBatch | None:
    """``affinity.claim_preferred`` in a session of its own (run by the recorder)."""
    with ctx.db.sessions() as session:
        return affinity.claim_preferred(session, batch_id, ctx.name, ctx.lease_seconds, held)


def _checkpoint(claim: records.ClaimedBatch) -> affinity.Checkpoint:
    """The checkpoint (model, revision) a claimed batch computes with."""
    recipe = json.loads(claim.cells[0][2])
    return recipe.get("model"), recipe.get("revision")


def _compute(
    ctx: WorkerContext, batch_id: int, work: BatchWork, claim: records.ClaimedBatch | None
) -> BatchOutcome | Computed:
    """Compute the batch claimed for ``batch_id``; an outcome if it ended here
    (skipped: not claimed; cancelled, failed)."""
    started = time.perf_counter()
    if claim is None:
        return BatchOutcome(batch_id, "skipped", 0, 0.0)
    try:
        return Computed(claim, work(ctx, claim), started)
    except BatchInterrupted:
        if claim.batch_id in ctx.giving_back:
            return BatchOutcome(claim.batch_id, GIVEN_BACK, 0, time.perf_counter() - started)
        with ctx.db.sessions() as session:
            records.cancel_batch(session, claim, ctx.name)
        ctx.active.pop(claim.batch_id, None)
        return BatchOutcome(claim.batch_id, "cancelled", 0, time.perf_counter() - started)
    except Exception as exc:
        ctx.active.pop(claim.batch_id, None)
        return _failed(ctx.recording, claim, exc, started)
    except BaseException:
        ctx.active.pop(claim.batch_id, None)
        raise


def _record(ctx: WorkerContext, recorder: Recorder | InProcess, computed: Computed) -> BatchOutcome:
    """Store and record a computed batch with ``recorder`` (see ``record_computed``); a
    recording process that died twice on it leaves it ``lost``."""
    claim = computed.claim
    try:
        return recorder.call(record_computed, computed)
    except RecorderGone as exc:
        seconds = time.perf_counter() - computed.started
        return BatchOutcome(claim.batch_id, "lost", 0, seconds, str(exc))
    finally:
        ctx.active.pop(claim.batch_id, None)


def record_computed(ctx: RecordingContext, computed: Computed) -> BatchOutcome:
    """Store and record a computed batch (run by the recorder).

    A transient error (I/O, database) is retried here, with the policy's
    backoff, up to ``RECORD_TRIES`` times: storing and recording are
    idempotent, and the computed pixels are kept meanwhile. Any other error,
    or the last try's, is a failed attempt like any other.
    """
    batch_id = computed.claim.batch_id
    try:
        kept = _retrying(ctx, f"recording batch {batch_id}", partial(computed.results.record, ctx))
    except Exception as exc:
        return _failed(ctx, computed.claim, exc, computed.started)
    seconds = time.perf_counter() - computed.started
    return BatchOutcome(batch_id, "done", kept, seconds)


def _retrying(ctx: RecordingContext, what: str, write: Callable[[], T]) -> T:
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
    ctx: RecordingContext, claim: records.ClaimedBatch, exc: Exception, started: float
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
    torch = sys.modules.get("torch")  # not imported (the recording process): not one
    if torch is None or not isinstance(exc, torch.cuda.OutOfMemoryError):
        return False
    torch.cuda.empty_cache()
    return True


def generate_images(ctx: WorkerContext, claim: records.ClaimedBatch) -> GeneratedImages:
    """Generate the batch's images; return them, to be stored and recorded."""
    recipes = [json.loads(recipe) for _, _, recipe in claim.cells]
    first = recipes[0]
    loaded = load_pipeline(PipelineKey.for_recipe(first, ctx.device))
    ctx.checkpoint(loaded)  # its row is written as it loads, before its first image
    environment = ctx.environment(first["dtype"])
    started = time.perf_counter()
    made = generate(loaded, recipes, ctx.device, LeaseKeeper(ctx, claim.batch_id))
    seconds_each = (time.perf_counter() - started) / len(recipes)
    return GeneratedImages(claim, made, loaded.identity, environment, seconds_each)


@dataclass(frozen=True)
class GeneratedImages:
    """A generated batch: its images, the checkpoint and environment that made them."""

    claim: records.ClaimedBatch
    made: GeneratedBatch
    checkpoint: CheckpointIdentity
    environment: str  # its description's canonical JSON
    seconds_each: float

    def record(self, ctx: RecordingContext) -> int:
        """Write each image's PNG into the store, then the batch's rows; how many are new."""
        claim, made, pixels = self.claim, self.made, self.made.pixels
        environment_id = ctx.environment_id(self.environment)
        checkpoint_id = ctx.checkpoint_id(self.checkpoint)
        call_id = ctx.call_id(made.call)
        store = str(ctx.store.absolute())
        images = []
        for index, (cell_id, grid_index, recipe_json) in enumerate(claim.cells):
            chunks = png_chunks(
                claim.job_id, cell_id, grid_index, recipe_json, self.checkpoint, made.call
            )
            path, png_sha256 = write_png(ctx.store, encode_png(pixels[index], chunks))
            images.append(
                {
                    "cell_id": cell_id,
                    "batch_id": claim.batch_id,
                    "index_in_batch": index,
                    "batch_size": len(claim.cells),
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
                    "generate_seconds": self.seconds_each,
                    "nsfw": None if made.nsfw is None else made.nsfw[index],
                }
            )
        # Files of cells another worker recorded first stay: see worker/store.py.
        with ctx.db.sessions() as session:
            return len(records.record_images(session, claim, ctx.name, images, made.warnings))


def prepare_images(ctx: WorkerContext, claim: records.ClaimedBatch) -> None:
    """Make ready, off the device's time, what the batch's call will need and can be made
    now: its fresh sampler, when its checkpoint is in memory."""
    recipe = json.loads(claim.cells[0][2])
    loaded = in_memory(PipelineKey.for_recipe(recipe, ctx.device))
    if loaded is not None:
        loaded.prepare_sampler(recipe["sampler"], recipe)


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
