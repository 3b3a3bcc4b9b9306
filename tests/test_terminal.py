"""What people see in a terminal: tables that fit 80 columns, one rate, NO_COLOR.

The commands run in a real pseudo-terminal of 80 columns (as a tmux pane is),
so rich draws for a terminal: escape codes, the live progress bar, the
terminal's own width.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from reprogrid.cli.output import WORKER_COLUMNS, WORKER_DROP_FIRST, table_of

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LONG_PROMPT = "a red fox in the snow, highly detailed, golden hour light, 35mm photograph"
SPEC = f"""
name = "a rather long job name for the status table"
model = "builtin:tiny"
prompts = ["{LONG_PROMPT}", "a blue bird"]
seeds = "0-3"
steps = 2
width = 32
height = 32
batch_size = 2
"""


def in_terminal(
    folder: Path, *args: str, columns: int = 80, env: dict[str, str] | None = None
) -> str:
    """Run ``reprogrid ARGS`` on a pseudo-terminal ``columns`` wide; everything it wrote."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR")}
    environment |= {"TERM": "xterm-256color", "REPROGRID_THREADS": "1", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "reprogrid", "--db", f"sqlite:///{folder / 'r.db'}", *args],
        cwd=folder,
        env=environment,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process exited
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=120) == 0, output.decode(errors="replace")
    return output.decode()


def screen_lines(output: str) -> list[str]:
    """The text lines a terminal shows, escape codes removed (each redraw its own line)."""
    return [line for line in re.split(r"\r\n|\r|\n", ESCAPES.sub("", output)) if line.strip()]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("terminal")
    (folder / "job.toml").write_text(SPEC)
    output = in_terminal(folder, "run", "job.toml", "--device", "cpu")
    return folder, output


def test_run_says_what_it_loads_before_the_first_images(ran):
    _, output = ran
    lines = screen_lines(output)
    assert any("loading builtin:tiny..." in line for line in lines), lines
    assert not any("0.00 images/s" in line for line in lines), lines


def test_the_progress_bar_ends_on_the_rate_of_the_summary_line(ran):
    _, output = ran
    lines = screen_lines(output)
    summary = next(line for line in lines if line.startswith("job 1 done: 8 of 8 images"))
    rate = re.search(r"\(([\d.]+) images/s\)", summary).group(1)
    bars = [line for line in lines if "8/8" in line]
    assert bars and f"{rate} images/s" in bars[-1], (summary, bars)  # the bar as it is left


@pytest.mark.parametrize("command", [("status",), ("query",), ("query", "--job", "1")])
def test_tables_fit_80_columns_and_never_cut_a_short_value(ran, command):
    folder, _ = ran
    lines = screen_lines(in_terminal(folder, *command))
    assert all(len(line) <= 80 for line in lines), lines
    assert not any("…" in line for line in lines), lines
    assert any(re.search(r"\bdone\b", line) for line in lines), lines


def test_status_names_the_columns_it_left_out_and_shows_images_per_second(ran):
    folder, _ = ran
    lines = screen_lines(in_terminal(folder, "status"))
    header = lines[0].split()
    assert header[:3] == ["job_id", "name", "status"] and "images/s" in header, lines
    caption = next(line for line in lines if line.startswith("left out to fit 80 columns"))
    assert "cancelled" in caption and "--format json" in caption
    assert re.search(r" done +8 +8 +0 +\d+\.\d\d ", lines[1]), lines  # images/s after failed


def test_a_wide_terminal_shows_every_column(ran):
    folder, _ = ran
    lines = screen_lines(in_terminal(folder, "status", columns=160))
    assert "cancelled" in lines[0].split() and not any("left out" in line for line in lines)


def test_no_color_prints_no_escape_codes_at_all(ran):
    folder, _ = ran
    assert "\x1b[" in in_terminal(folder, "status")  # bold headers on a terminal
    assert "\x1b[" not in in_terminal(folder, "status", env={"NO_COLOR": "1"})


def test_a_worker_table_drops_its_least_useful_columns_first_to_fit():
    from rich.console import Console

    worker = {
        "name": "gpu-node-017-a", "device": "cuda:0 (NVIDIA H100 80GB HBM3)", "queue": "default",
        "state": "generating", "job_id": 12, "batch_id": 40213,
        "checkpoints": "stabilityai/stable-diffusion-xl-base-1.0", "checkpoint_loads": 3,
        "hostname": "gpu-node-017.cluster.example.org",
    }  # fmt: skip
    console = Console(width=80, color_system=None)
    with console.capture() as captured:
        console.print(table_of([worker], WORKER_COLUMNS, WORKER_DROP_FIRST, width=80))
    lines = captured.get().splitlines()
    assert all(len(line) <= 80 for line in lines) and "…" not in captured.get()
    assert lines[0].split() == ["name", "device", "state", "job_id", "checkpoints"]
    assert "cuda:0 (NVIDIA H100 80GB HBM3)  generating  12" in lines[1]
    assert "left out to fit 80 columns: hostname, checkpoint_loads, batch_id, queue" in lines[-2]
