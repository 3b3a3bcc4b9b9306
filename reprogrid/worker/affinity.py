"""Checkpoint affinity: a worker runs the batches of the checkpoint it has loaded.

Loading a checkpoint costs far more than one batch, so for a job that sweeps
checkpoints (``[axes] model``) each worker should load one and keep to it. A
message names a batch, but any waiting batch of the same job will do: the
number of messages still equals the number of batches waiting, so taking
another one in its place loses nothing (when the message of the batch taken
arrives, its worker takes one that is still waiting). A worker picks, in order:

1. a waiting batch of the job whose checkpoint it holds;
2. the batch the message names, if no other worker is running its checkpoint;
3. a waiting batch of a checkpoint no worker is running;
4. the batch the message names; then any waiting batch of the job.

Jobs without a model axis have one checkpoint: the message's batch is taken.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from reprogrid.models import QUEUED, RUNNING, Batch, Cell, Job
from reprogrid.worker import records

CANDIDATES = 200  # cells looked at per message: a few dozen batches
Checkpoint = tuple[str, str | None]  # (model, revision)


def claim_preferred(
    session: Session,
    batch_id: int,
    worker: str,
    lease_seconds: int,
    held: Iterable[Checkpoint],
) -> records.ClaimedBatch | None:
    """Claim the best batch for a worker holding ``held``, given a message for ``batch_id``."""
    for candidate in _preference(session, batch_id, set(held)):
        claim = records.claim_batch(session, candidate, worker, lease_seconds)
        if claim is not None:
            return claim
    return None


def _preference(session: Session, batch_id: int, held: set[Checkpoint]) -> list[int]:
    named = session.execute(
        select(Batch.kind, Batch.job_id).where(Batch.id == batch_id)
    ).one_or_none()
    if named is None or named.kind != "generate" or not _sweeps_checkpoints(session, named.job_id):
        return [batch_id]
    # The job row's lock (PostgreSQL; SQLite transactions are serial anyway) makes
    # choosing and claiming one step: two idle workers then never both pick the
    # checkpoint nobody runs yet. claim_batch's commit releases it.
    session.execute(select(Job.id).where(Job.id == named.job_id).with_for_update())
    waiting = _waiting_checkpoints(session, named.job_id)
    if len({checkpoint for _, checkpoint in waiting}) < 2:
        return [batch_id, *(b for b, _ in waiting if b != batch_id)]
    busy = _running_checkpoints(session, named.job_id)
    named_checkpoint = _checkpoint_of(session, batch_id)
    order = [b for b, c in waiting if any(_matches(c, h) for h in held)]
    if named_checkpoint not in busy:
        order.append(batch_id)
    order += [b for b, c in waiting if c not in busy]
    order += [batch_id, *(b for b, _ in waiting)]
    return list(dict.fromkeys(order))


# (database URL, job id) -> whether the job has a model or revision axis
_sweeping: dict[tuple[str, int], bool] = {}


def _sweeps_checkpoints(session: Session, job_id: int) -> bool:
    """Whether the job sweeps checkpoints, read once per job: a spec never changes."""
    key = (str(session.get_bind().url), job_id)
    if key not in _sweeping:
        axes = session.scalar(select(Job.spec["axes"]).where(Job.id == job_id))
        _sweeping[key] = bool({"model", "revision"} & set(axes or {}))
    return _sweeping[key]


def _matches(swept: Checkpoint, held: Checkpoint) -> bool:
    """Whether a batch's swept checkpoint values (None: not swept) are those held."""
    return all(value is None or value == have for value, have in zip(swept, held, strict=True))


def _waiting_checkpoints(session: Session, job_id: int) -> list[tuple[int, Checkpoint]]:
    """Waiting (queued) generate batches of the job with their checkpoints, oldest first."""
    return _batches_with_checkpoints(session, job_id, QUEUED)


def _running_checkpoints(session: Session, job_id: int) -> set[Checkpoint]:
    return {c for _, c in _batches_with_checkpoints(session, job_id, RUNNING)}


def _batches_with_checkpoints(
    session: Session, job_id: int, status: str
) -> list[tuple[int, Checkpoint]]:
    rows = session.execute(
        select(Batch.id, Cell.params)
        .join(Cell, Cell.batch_id == Batch.id)
        .where(Batch.job_id == job_id, Batch.kind == "generate", Batch.status == status)
        .order_by(Batch.id)
        .limit(CANDIDATES)
    ).all()
    found = {batch: _params_checkpoint(params) for batch, params in rows}
    return list(found.items())


def _checkpoint_of(session: Session, batch_id: int) -> Checkpoint:
    params = session.scalar(select(Cell.params).where(Cell.batch_id == batch_id).limit(1))
    return _params_checkpoint(params or {})


def _params_checkpoint(params: dict) -> Checkpoint:
    """The checkpoint axis values of a cell (None where the job does not sweep it)."""
    return params.get("model"), params.get("revision")
