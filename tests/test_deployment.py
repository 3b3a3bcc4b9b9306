"""Deployment: one worker per GPU, no connection shared across a fork, the compose file.

``docker compose config`` needs a Docker engine, which the test machines do not
have; the compose file is read as YAML here instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from reprogrid.models import Database
from reprogrid.worker.gpus import NoFreeGpu, claim_free_gpu

COMPOSE = Path(__file__).parents[1] / "docker-compose.yml"


def test_identical_workers_each_take_a_different_gpu(tmp_path: Path) -> None:
    first, first_lock = claim_free_gpu(tmp_path, gpu_count=2)
    second, second_lock = claim_free_gpu(tmp_path, gpu_count=2)
    assert (first, second) == ("cuda:0", "cuda:1")
    with pytest.raises(NoFreeGpu):
        claim_free_gpu(tmp_path, gpu_count=2)
    first_lock.close()  # the process holding cuda:0 ended
    again, again_lock = claim_free_gpu(tmp_path, gpu_count=2)
    assert again == "cuda:0"
    second_lock.close()
    again_lock.close()


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]


def test_compose_redis_requires_a_password(services: dict) -> None:
    command = services["redis"]["command"]
    assert command[command.index("--requirepass") + 1] == "${REDIS_PASSWORD:?set REDIS_PASSWORD}"
    assert services["worker"]["environment"]["REPROGRID_BROKER"].startswith(
        "redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD}@"
    )


def test_compose_worker_reserves_nvidia_gpus_and_shares_store_and_hf_cache(services: dict) -> None:
    worker = services["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert (device["driver"], device["capabilities"]) == ("nvidia", ["gpu"])
    assert {"store:/store", "hf-cache:/hf-cache"} <= set(worker["volumes"])
    assert "store:/store" in services["scheduler"]["volumes"]
    assert "--gpu-locks" in worker["command"]
    assert "replicas" not in worker.get("deploy", {}), "scaled with --scale worker=N"


def test_compose_scheduler_and_workers_use_postgresql_and_redis(services: dict) -> None:
    for name in ("scheduler", "worker"):
        environment = services[name]["environment"]
        assert environment["REPROGRID_DB"].startswith("postgresql://reprogrid:")
        assert environment["REPROGRID_STORE"] == "/store"
    assert services["scheduler"]["command"] == ["reprogrid", "scheduler"]


def test_a_forked_child_does_not_reuse_the_parents_database_connections(db: Database) -> None:
    with db.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    assert db.engine.pool.checkedin() == 1
    child = os.fork()
    if child == 0:  # the child: its pool must start empty
        os._exit(0 if db.engine.pool.checkedin() == 0 else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert db.engine.pool.checkedin() == 1, "the parent keeps its connection"
