"""Deployment: one worker per GPU, and a docker-compose file that says what the README says.

``docker compose config`` needs a Docker engine, which the test machines do not
have; the compose file is read as YAML here instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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
