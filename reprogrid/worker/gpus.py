"""One worker per GPU: a worker that may use any GPU of its machine takes a free one.

Workers started alike (``docker compose up --scale worker=4``, each container
seeing every GPU) share a folder of lock files, one per GPU; each takes the
first GPU whose lock it can hold. The kernel drops a lock when its process
dies, so a restarted worker finds its GPU free again.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO


class NoFreeGpu(RuntimeError):
    """Every GPU of this machine already has a worker."""


def claim_free_gpu(lock_dir: Path, gpu_count: int) -> tuple[str, IO[str]]:
    """The device of the first unclaimed GPU, and the open lock file to keep while using it."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index in range(gpu_count):
        handle = (lock_dir / f"gpu-{index}.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return f"cuda:{index}", handle
    raise NoFreeGpu(f"all {gpu_count} GPUs have a worker (locks in {lock_dir})")
