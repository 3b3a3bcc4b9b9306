"""The environment fingerprint: everything about the machine that can change pixels.

Two images made under the same fingerprint, in the same batch composition,
are expected to be bit-identical. The fingerprint is the SHA-256 of the
canonical JSON of these fields.

``packages`` is the process's whole installed-distribution inventory (name ->
version): any package can change pixels (PixArt's caption cleaning runs ftfy
and beautifulsoup4; tokenizers, accelerate, safetensors, peft and Pillow all
take part), so every one is recorded and compared, and ``requirements`` writes
the inventory back as a ``pip install -r`` file.

``switches`` are torch's numeric switches as they stand when the batch runs
(deterministic algorithms, cuDNN benchmark, TF32, reduced-precision matmul
reductions, the scaled-dot-product attention backends allowed), ``cpu_capability``
the CPU kernels torch dispatches to (AVX2, AVX512...), and ``variables`` the
environment variables torch, its BLAS and OpenMP read (``CUBLAS_WORKSPACE_CONFIG``,
``PYTORCH_*``, ``OMP_*``...): each can change the bits.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import socket
from importlib.metadata import distributions, version
from typing import Any

from reprogrid.scheduler.grid import canonical_json, sha256_text
from reprogrid.worker.determinism import DeterminismSettings

# Fields a user can set when regenerating; the others describe the machine.
SETTABLE_FIELDS = ("threads", "full_determinism", "dtype", "device_type")
# Environment variables that change what torch, cuBLAS, cuDNN, MKL or OpenMP compute.
NUMERIC_VARIABLES = ("CUBLAS_", "CUDNN_", "NVIDIA_TF32_OVERRIDE", "PYTORCH_", "TORCH_")
NUMERIC_VARIABLES += ("MKL_", "OMP_", "KMP_", "ONEDNN_", "DNNL_", "DIFFUSERS_")


def describe_environment(
    device: str, dtype: str, determinism: DeterminismSettings
) -> dict[str, Any]:
    """Collect the fields of the environment this process computes in."""
    return {
        **_process_facts(device),
        "threads": determinism.threads,
        "full_determinism": determinism.full_determinism,
        "dtype": dtype,
        "switches": torch_switches(),
        "variables": {
            k: v for k, v in sorted(os.environ.items()) if k.startswith(NUMERIC_VARIABLES)
        },
    }


def torch_switches() -> dict[str, Any]:
    """torch's process-wide numeric switches, read now (``configured`` changes some)."""
    import torch

    cuda = torch.backends.cuda
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": cuda.matmul.allow_tf32,
        "matmul_fp16_reduced_precision": cuda.matmul.allow_fp16_reduced_precision_reduction,
        "matmul_bf16_reduced_precision": cuda.matmul.allow_bf16_reduced_precision_reduction,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "sdp_backends": {
            "flash": cuda.flash_sdp_enabled(),
            "mem_efficient": cuda.mem_efficient_sdp_enabled(),
            "math": cuda.math_sdp_enabled(),
            "cudnn": cuda.cudnn_sdp_enabled(),
        },
    }


@functools.cache
def _process_facts(device: str) -> dict[str, Any]:
    """The fields that cannot change while this process runs (read once: a few ms)."""
    import torch

    packages, sources = _inventory()
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # not its str subclass: unpickled, it imports torch
        "diffusers": version("diffusers"),
        "transformers": version("transformers"),
        "numpy": version("numpy"),
        "device_type": torch.device(device).type,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device_name": _device_name(device),
        "generator_device": "cpu",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "driver": _nvidia_driver() if torch.device(device).type == "cuda" else None,
        "packages": packages,
        "package_sources": sources,
    }


def _inventory() -> tuple[dict[str, str], dict[str, str]]:
    """Every distribution this process can import from, in one pass over them: normalized
    name -> version, and name -> URL for those installed from a URL or a local folder
    (PEP 610), not an index. Where one name is installed twice on ``sys.path``, the
    first version wins, as for imports."""
    versions: dict[str, str] = {}
    sources: dict[str, str] = {}
    for dist in distributions():
        if not (name := dist.metadata["Name"]):
            continue
        key = normalized_name(name)
        versions.setdefault(key, dist.version)
        if direct := dist.read_text("direct_url.json"):
            sources.setdefault(key, json.loads(direct)["url"])
    return dict(sorted(versions.items())), dict(sorted(sources.items()))


def normalized_name(name: str) -> str:
    """A distribution name as PEP 503 compares them: lower case, runs of ``-_.`` as ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def fingerprint(info: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of an environment description."""
    return sha256_text(canonical_json(info))


def _device_name(device: str) -> str:
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return _cpu_model() or platform.processor() or platform.machine()


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _nvidia_driver() -> str | None:
    try:
        import ctypes

        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        nvml.nvmlInit_v2()
        buffer = ctypes.create_string_buffer(80)
        nvml.nvmlSystemGetDriverVersion(buffer, 80)
        return buffer.value.decode()
    except (OSError, AttributeError):
        return None


def differences(original: dict[str, Any], current: dict[str, Any]) -> dict[str, list[Any]]:
    """Fields whose values differ between two environments, as [original, current].

    Packages are compared one by one, each named ``packages.NAME`` (a version of
    None: not installed). An environment recorded before inventories were kept
    has none to compare with.
    """
    original, current = dict(original), dict(current)
    found = _package_differences(original.pop("packages", None), current.pop("packages", None))
    keys = sorted(set(original) | set(current))
    fields = {
        k: [original.get(k), current.get(k)] for k in keys if original.get(k) != current.get(k)
    }
    return {**fields, **found}


def _package_differences(
    original: dict[str, str] | None, current: dict[str, str] | None
) -> dict[str, list[str | None]]:
    if original is None or current is None:
        return {}
    names = sorted(set(original) | set(current))
    return {
        f"packages.{n}": [original.get(n), current.get(n)]
        for n in names
        if original.get(n) != current.get(n)
    }


# What a verdict names first: the fields and packages that change the numbers every
# pipeline computes (the device and its CUDA stack, torch's switches, the numeric
# libraries). The rest (hostname, an unrelated package) is counted, not listed.
NUMERIC_FIELDS = frozenset(
    {
        "device_type", "device_name", "cpu_capability", "cuda", "cudnn", "driver",
        "generator_device", "threads", "full_determinism", "dtype", "switches", "variables",
        "torch", "diffusers", "transformers", "numpy", "python",
    }
)  # fmt: skip
NUMERIC_PACKAGES = frozenset(
    {
        "torch", "diffusers", "transformers", "accelerate", "peft", "safetensors", "numpy",
        "tokenizers", "sentencepiece", "triton", "xformers", "pillow", "scipy", "reprogrid",
    }
)  # fmt: skip


Ranked = tuple[dict[str, list[Any]], dict[str, list[Any]], dict[str, list[Any]]]


def ranked(found: dict[str, list[Any]], imported: frozenset[str] = frozenset()) -> Ranked:
    """``differences`` in three ranks: what changes every pipeline's numbers, the other
    packages the computing process had imported, and the rest.

    First: the numeric fields, the numeric packages and the CUDA stack's
    (``nvidia-*``) packages. Then the packages in ``imported`` (normalized
    names: a pipeline's own imports, such as PixArt's ftfy). Last: every other
    field and package (a hostname, a package nothing imported).
    """
    first: dict[str, list[Any]] = {}
    used: dict[str, list[Any]] = {}
    rest: dict[str, list[Any]] = {}
    for name, values in found.items():
        package = name.removeprefix("packages.") if name.startswith("packages.") else None
        if package is None:
            (first if name in NUMERIC_FIELDS else rest)[name] = values
        elif package in NUMERIC_PACKAGES or package.startswith("nvidia-"):
            first[name] = values
        else:
            (used if package in imported else rest)[name] = values
    return first, used, rest


def imported_packages() -> frozenset[str]:
    """The distributions (normalized names) whose modules this process has imported."""
    import sys
    from importlib.metadata import packages_distributions

    owners = packages_distributions()
    loaded = {name.partition(".")[0] for name in list(sys.modules)}
    return frozenset(normalized_name(d) for m in loaded for d in owners.get(m, ()))


def requirements(info: dict[str, Any]) -> str:
    """The environment's packages as a requirements file (``pip install -r``), pinned exactly.

    A package installed from a folder or URL rather than an index is written as
    ``name @ URL``, with the recorded version in a comment. Raises KeyError for
    an environment recorded before inventories were kept.
    """
    packages = info["packages"]
    sources = info.get("package_sources", {})
    header = [
        f"# python {info['python']} on {info['os']}",
        f"# device {info['device_type']} ({info['device_name']}), cuda {info['cuda']}",
    ]
    torch_build = packages.get("torch", "").partition("+")[2]
    if torch_build:  # e.g. 2.13.0+cpu lives on PyTorch's own index, not on PyPI
        header.append(f"--extra-index-url https://download.pytorch.org/whl/{torch_build}")
    lines = [
        f"{n} @ {sources[n]}  # version {v} when recorded" if n in sources else f"{n}=={v}"
        for n, v in packages.items()
    ]
    return "\n".join([*header, *lines]) + "\n"
