"""Fault injection (#15): ``kill -9`` of a command at several points leaves its complete output or nothing, and the
next run removes what the killed one left beside the folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from test_solving import P1_CELL, molecule, write_mtz

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _kill_after(argv: list[str], seconds: float, cwd: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "patterson", *argv], cwd=cwd, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def _whole_or_absent(out: Path, files: tuple[str, ...]) -> None:
    if out.exists():
        assert {p.name for p in out.iterdir()} >= set(files), sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("command", ["solve", "maps"])
def test_kill_9_leaves_the_whole_output_or_nothing(command, tmp_path, fragment_pdb):
    from patterson.maps import MAPS_FILES
    from patterson.solving import OUTPUT_FILES

    if command == "solve":
        data = write_mtz(tmp_path / "p1.mtz", molecule(P1_CELL, "P 1"), P1_CELL, "P 1")
        argv, files = ["solve", str(data), "--no-progress", "--out"], OUTPUT_FILES
    else:
        argv, files = ["maps", str(fragment_pdb), "--cell", "30", "--d-min", "0.8", "--out"], MAPS_FILES
    out = tmp_path / "out"
    for seconds in (0.5, 2.0, 3.5, 5.0):  # during start-up, reading, computing, writing
        _kill_after([*argv, str(out)], seconds, tmp_path)
        _whole_or_absent(out, files)
    subprocess.run([sys.executable, "-m", "patterson", *argv, str(out)], cwd=tmp_path, env=ENV, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)  # fmt: skip
    _whole_or_absent(out, files)
    assert out.is_dir() and not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no leftovers
