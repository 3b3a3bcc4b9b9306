"""Process-wide switches that make PyTorch computations repeatable.

Call :func:`configure` once, before the first CUDA call, in the process that
runs pipelines. What it set is returned and recorded with every image.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# cuBLAS needs a fixed workspace to be deterministic; it reads this when CUDA starts.
CUBLAS_WORKSPACE_CONFIG = ":16:8"


@dataclass(frozen=True)
class DeterminismSettings:
    """What :func:`configure` put in place."""

    threads: int
    full_determinism: bool


def configure(threads: int | None, full_determinism: bool) -> DeterminismSettings:
    """Pin the CPU thread count and, if asked, turn on full determinism."""
    if full_determinism:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(full_determinism)
    torch.backends.cudnn.deterministic = full_determinism
    torch.backends.cudnn.benchmark = not full_determinism
    # TF32 rounds matmul inputs to 10-bit mantissas; off unless speed was chosen over bits.
    torch.backends.cuda.matmul.allow_tf32 = not full_determinism
    torch.backends.cudnn.allow_tf32 = not full_determinism
    return DeterminismSettings(threads=torch.get_num_threads(), full_determinism=full_determinism)


@contextmanager
def configured(threads: int, full_determinism: bool) -> Iterator[DeterminismSettings]:
    """:func:`configure` for the duration of a block, then put the previous switches back.

    The switches are process-wide: a worker that replays another run's settings
    to verify it must not leave them behind for the batches it generates next.
    """
    import torch

    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    try:
        yield configure(threads, full_determinism)
    finally:
        configure(*before)
