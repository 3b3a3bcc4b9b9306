"""Bounded input: no spec, prompt or prompts file can make ``reprogrid`` eat the machine.

Every refusal is one line and exit code 2; the limits are documented in the
README ("Limits"). Commands run as real processes, their peak RSS measured.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reprogrid.scheduler.spec import (
    MAX_PROMPT_LENGTH,
    MAX_PROMPTS_FILE_BYTES,
    MAX_SPEC_FILE_BYTES,
)

BOUNDED_RSS_KIB = 1024 * 1024  # 1 GiB
TINY = 'model = "builtin:tiny"\nsteps = 1\nwidth = 32\nheight = 32\n'
# Runs a command and prints the peak RSS of it (and its children) in KiB, last.
MEASURED = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def submit(tmp_path: Path, spec_text: str, timeout: float = 60) -> tuple[int, str, int]:
    """``reprogrid submit`` of a spec in a fresh process: exit code, stderr, peak RSS (KiB)."""
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text, encoding="utf-8")
    argv = [sys.executable, "-m", "reprogrid", "--db", str(tmp_path / "r.db"), "submit", str(spec)]
    result = subprocess.run(
        [sys.executable, "-c", MEASURED, *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    *lines, peak = result.stderr.splitlines()
    return result.returncode, "\n".join(lines), int(peak)


def refused(tmp_path: Path, spec_text: str, *expected: str) -> int:
    """Assert the spec is refused in one line naming ``expected``; return the peak RSS."""
    code, stderr, peak = submit(tmp_path, spec_text)
    assert code == 2, stderr
    assert stderr.count("\n") == 0 and stderr.startswith("Error: "), stderr
    for text in expected:
        assert text in stderr, stderr
    assert peak < BOUNDED_RSS_KIB
    print(f"refused at peak RSS {peak / 1024:.0f} MiB: {stderr}")
    return peak


def test_a_prompt_over_the_length_limit_is_refused_naming_its_index(tmp_path: Path):
    long = "a" * (MAX_PROMPT_LENGTH + 1)
    spec = TINY + f'prompts = ["a fox", "{long}"]\n'
    refused(tmp_path, spec, "prompts: prompt 2 has 10001 characters", "limit of 10000")


@pytest.mark.parametrize("field", ["negative_prompt", "axes.negative_prompt"])
def test_a_negative_prompt_over_the_length_limit_is_refused(tmp_path: Path, field: str):
    long = "a" * (MAX_PROMPT_LENGTH + 1)
    value = f'"{long}"' if field == "negative_prompt" else f'["", "{long}"]'
    spec = (
        TINY
        + 'prompts = ["a fox"]\n'
        + (
            f"negative_prompt = {value}\n"
            if field == "negative_prompt"
            else f"[axes]\nnegative_prompt = {value}\n"
        )
    )
    refused(tmp_path, spec, f"{field}: the negative prompt has 10001 characters")


def test_a_prompt_of_50_mb_in_the_spec_is_refused_in_bounded_memory(tmp_path: Path):
    spec = TINY + f'prompts = ["{"a" * 50_000_000}"]\n'
    refused(tmp_path, spec, "spec: ", "larger than 16 MiB")


def test_a_prompts_file_line_over_the_length_limit_is_refused_naming_its_index(tmp_path: Path):
    (tmp_path / "p.txt").write_text("a fox\n\nan owl\n" + "b" * (MAX_PROMPT_LENGTH + 1) + "\n")
    refused(tmp_path, TINY + 'prompts_file = "p.txt"\n', "prompts_file: prompt 3 has 10001")


def test_a_prompt_of_50_mb_in_a_prompts_file_is_refused_in_bounded_memory(tmp_path: Path):
    (tmp_path / "p.txt").write_text("a" * 50_000_000 + "\n")
    refused(tmp_path, TINY + 'prompts_file = "p.txt"\n', "prompt 1 has 50000000")


@pytest.mark.parametrize("name", ["fifo", "/dev/zero", "folder"])
def test_a_prompts_file_that_is_not_a_regular_file_is_refused(tmp_path: Path, name: str):
    if name == "fifo":
        os.mkfifo(tmp_path / "fifo")
    elif name == "folder":
        (tmp_path / "folder").mkdir()
    refused(tmp_path, TINY + f'prompts_file = "{name}"\n', "is not a regular file")


def test_a_prompts_file_over_the_size_limit_is_refused_unread(tmp_path: Path):
    with (tmp_path / "big.txt").open("wb") as stream:
        stream.truncate(MAX_PROMPTS_FILE_BYTES + 1)  # sparse: nothing to read, but its size
    refused(tmp_path, TINY + 'prompts_file = "big.txt"\n', "more than the limit of 64 MiB")


def test_a_spec_file_over_the_size_limit_is_refused(tmp_path: Path):
    padding = "# " + "x" * 78 + "\n"
    spec = TINY + 'prompts = ["a fox"]\n' + padding * (MAX_SPEC_FILE_BYTES // len(padding) + 1)
    refused(tmp_path, spec, "larger than 16 MiB")


def test_deeply_nested_toml_is_one_line(tmp_path: Path):
    refused(tmp_path, TINY + "prompts = " + "[" * 100_000 + "]" * 100_000 + "\n", "too deeply")


def test_a_million_one_line_prompts_are_accepted_in_bounded_memory(tmp_path: Path):
    with (tmp_path / "prompts.txt").open("w", encoding="utf-8") as stream:
        stream.writelines(f"a red circle number {i}\n" for i in range(1_000_000))
    started = time.monotonic()
    code, stderr, peak = submit(tmp_path, TINY + 'prompts_file = "prompts.txt"\n', timeout=600)
    seconds = time.monotonic() - started
    assert code == 0, stderr
    assert peak < BOUNDED_RSS_KIB, f"peak RSS {peak / 1024:.0f} MiB"
    print(f"1,000,000 prompts: {seconds:.1f} s, peak RSS {peak / 1024:.0f} MiB")
