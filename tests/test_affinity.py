"""Checkpoint affinity: on a fleet, each worker keeps to the checkpoint it has loaded.

Two workers take the messages of a job over two checkpoints in turn, as the
fleet delivers them; claims go through the real database (SQLite and
PostgreSQL), and
a worker "loads" whenever it claims a batch of a checkpoint it does not hold.
"""

from __future__ import annotations

from sqlalchemy import select, update

from reprogrid.models import DONE, QUEUED, Batch, Cell
from reprogrid.scheduler.control import finish_batch
from reprogrid.scheduler.jobs import create_job, form_batches
from reprogrid.scheduler.spec import validate_spec
from reprogrid.worker.affinity import claim_preferred


def queued_job(db, models: list[str], seeds: str = "0-7") -> list[int]:
    """A submitted job over ``models``, every batch formed and published (queued)."""
    raw = {"prompts": ["a fox"], "seeds": seeds, "batch_size": 2, "steps": 2}
    spec = validate_spec({**raw, "axes": {"model": models}}, max_cells=100)
    job_id = create_job(db, spec, queue="default")
    with db.sessions() as session:
        batch_ids = form_batches(session, job_id)
        session.execute(update(Batch).where(Batch.id.in_(batch_ids)).values(status=QUEUED))
        session.commit()
    return batch_ids


def model_of(db, batch_id: int) -> str:
    with db.sessions() as session:
        params = session.scalar(select(Cell.params).where(Cell.batch_id == batch_id).limit(1))
    return params["model"]


def test_two_workers_on_a_job_over_two_checkpoints_load_each_checkpoint_once(
    database, tiny_checkpoint
):
    db = database
    models = [str(tiny_checkpoint("sd", 0)), str(tiny_checkpoint("sd", 1))]
    messages = queued_job(db, models)
    held: dict[str, set[tuple[str, None]]] = {"w1": set(), "w2": set()}
    loads = {"w1": 0, "w2": 0}
    ran: dict[str, set[str]] = {"w1": set(), "w2": set()}
    for first, second in zip(messages[::2], messages[1::2], strict=True):
        claims = {}
        for worker, message in (("w1", first), ("w2", second)):  # both busy at once
            with db.sessions() as session:
                claims[worker] = claim_preferred(session, message, worker, 60, held[worker])
            model = model_of(db, claims[worker].batch_id)
            if (model, None) not in held[worker]:
                held[worker], loads[worker] = {(model, None)}, loads[worker] + 1
            ran[worker].add(model)
        with db.sessions() as session:
            for worker, claim in claims.items():
                finish_batch(session, claim.batch_id, worker, DONE, "")
            session.commit()
    assert loads == {"w1": 1, "w2": 1}
    assert ran["w1"] | ran["w2"] == set(models) and not ran["w1"] & ran["w2"]


def test_a_message_whose_batch_another_worker_took_runs_a_waiting_one(database, tiny_checkpoint):
    db = database
    models = [str(tiny_checkpoint("sd", 0)), str(tiny_checkpoint("sd", 1))]
    first, *_ = queued_job(db, models, seeds="0-3")
    with db.sessions() as session:
        taken = claim_preferred(session, first, "w1", 60, {(models[1], None)})
        assert taken.batch_id != first  # w1 holds the second checkpoint: it took one of those
        again = claim_preferred(session, taken.batch_id, "w2", 60, set())
        assert again is not None and again.batch_id != taken.batch_id
