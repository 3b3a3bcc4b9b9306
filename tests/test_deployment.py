"""Deployment: one worker per GPU, no connection shared across a fork, the compose file,
and an image built from a lock file of the whole environment.

``docker compose config`` and ``docker build`` need a Docker engine, which the
test machines do not have: the compose file is read as YAML, and the Dockerfile
and ``requirements.lock`` as text, here instead.
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from sqlalchemy import text

from reprogrid.models import Database
from reprogrid.worker.gpus import NoFreeGpu, claim_free_gpu

ROOT = Path(__file__).parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
# The extras the image installs: Flower runs from it (docker-compose.yml).
IMAGE_EXTRAS = ("flower",)


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
    assert "--gpu-locks" in " ".join(worker["command"])
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


def test_compose_worker_is_healthy_while_its_own_celery_node_answers_a_ping(
    services: dict,
) -> None:
    worker = services["worker"]
    shell, flag, script = worker["command"]
    assert (shell, flag) == ("sh", "-c")
    words = shlex.split(script.replace("$$", "$"))
    assert words[:3] == ["exec", "reprogrid", "worker"]
    assert words[words.index("--name") + 1] == "$(hostname)"  # its node: NAME@HOST
    kind, check = worker["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    ping = shlex.split(check.replace("$$", "$"))
    assert ping[:5] == ["celery", "-A", "reprogrid.scheduler.broker", "inspect", "ping"]
    assert ping[ping.index("-d") + 1] == "$(hostname)@$(hostname)"


def test_compose_runs_flower_on_the_reprogrid_app_for_this_machine_only(services: dict) -> None:
    flower = services["flower"]
    assert flower["command"][:4] == ["celery", "-A", "reprogrid.scheduler.broker", "flower"]
    assert (
        flower["environment"]["REPROGRID_BROKER"]
        == (services["worker"]["environment"]["REPROGRID_BROKER"])
    )
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert flower["depends_on"]["redis"] == {"condition": "service_healthy"}


def _pins() -> dict[str, Version]:
    """The lock's ``name==version`` lines, by canonical name."""
    found = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", LOCK.read_text(), re.MULTILINE)
    return {canonicalize_name(name): Version(version) for name, version in found}


def _image_requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    named = project["dependencies"] + [r for extra in IMAGE_EXTRAS for r in extras[extra]]
    return [Requirement(line) for line in named]


def test_the_lock_pins_every_dependency_of_pyproject_within_its_range() -> None:
    pins = _pins()
    for requirement in _image_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {requirement}"
        )


def test_the_lock_pins_what_the_extras_of_pyprojects_dependencies_bring() -> None:
    pins = _pins()
    assert "psycopg-binary" in pins  # psycopg[binary]
    assert "redis" in pins  # celery[redis]
    assert pins["psycopg-binary"] == pins["psycopg"]


def test_every_package_in_the_lock_is_pinned_with_its_hashes() -> None:
    entries = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text())
    packages = [entry for entry in entries if not entry.startswith("#")]
    assert len(packages) == len(_pins())
    for entry in packages:
        assert "==" in entry.splitlines()[0], entry.splitlines()[0]
        assert "--hash=sha256:" in entry, f"no hash for {entry.splitlines()[0]}"


def test_the_lock_holds_torchs_cuda_12_6_build_for_the_dockerfiles_gpus() -> None:
    pins = _pins()
    assert pins["torch"] == Version("2.7.1")
    assert pins["nvidia-cuda-runtime-cu12"].release[:2] == (12, 6)
    assert "cpu" not in str(pins["torch"]), "a CPU build of torch in the GPU image"


def test_the_lock_was_made_for_the_python_of_the_dockerfiles_base_image() -> None:
    locked = re.search(r"autogenerated by pip-compile with Python (\d+\.\d+)", LOCK.read_text())
    base = re.search(r"^FROM python:(\d+\.\d+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert locked is not None and base is not None
    assert locked.group(1) == base.group(1)


def test_the_image_installs_every_package_from_the_lock_and_nothing_else() -> None:
    runs = [
        shlex.split(line.removeprefix("RUN "))
        for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
        if line.startswith("RUN ") and "pip install" in line
    ]
    from_lock, project = runs
    assert {"--require-hashes", "-r", "requirements.lock"} <= set(from_lock)
    assert "--only-binary=:all:" in from_lock  # no build with unpinned build tools
    assert {"--no-deps", "--no-build-isolation", "."} <= set(project[: project.index("&&")])
    assert "check" in project  # pip check: nothing the lock lacks
    assert "--index-url" not in " ".join(from_lock + project)
