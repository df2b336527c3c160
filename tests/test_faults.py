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


def _command(command: str, tmp_path: Path, fragment_pdb: Path) -> tuple[list[str], tuple[str, ...], tuple]:
    """The command line (without the output folder), the files of a complete output and when to kill it (s)."""
    from patterson.demo.run import REPORT_FILES
    from patterson.evaluation.run import EVALUATE_FILES
    from patterson.maps import MAPS_FILES
    from patterson.solving import OUTPUT_FILES

    if command == "solve":
        data = write_mtz(tmp_path / "p1.mtz", molecule(P1_CELL, "P 1"), P1_CELL, "P 1")
        return ["solve", str(data), "--no-progress", "--out"], OUTPUT_FILES, (0.5, 2.0, 3.5, 5.0)
    if command == "maps":
        argv = ["maps", str(fragment_pdb), "--cell", "30", "--d-min", "0.8", "--out"]
        return argv, MAPS_FILES, (0.5, 2.0, 3.5, 5.0)
    if command == "evaluate":
        from patterson.datasets import generate, make_config

        config = make_config(kind="random", source="random", n_atoms=6, n=6, cell=(10.0,) * 3, d_min=2.0,
                             splits=(0.0, 0.0, 1.0), map_dtype="float32")  # fmt: skip
        generate(config, tmp_path / "ds", progress=False)
        argv = ["evaluate", "--method", "hio", "--n-iter", "100", "--data", str(tmp_path / "ds"), "--out"]
        return argv, EVALUATE_FILES, (0.5, 1.5, 2.5, 3.5)  # it runs about 4 s
    argv = ["demo", "--n", "2", "--n-peptide", "1", "--peptide-budget", "0.2", "--n-iter", "10", "--n-maps", "1",
            "--no-progress", "--out"]  # fmt: skip
    return argv, REPORT_FILES, (1.0, 3.0, 5.0, 7.0)  # start-up, the test sets, the methods, the report


@pytest.mark.parametrize("command", ["solve", "maps", "evaluate", "demo"])
def test_kill_9_leaves_the_whole_output_or_nothing(command, tmp_path, fragment_pdb):
    argv, files, times = _command(command, tmp_path, fragment_pdb)
    out = tmp_path / "out"
    for seconds in times:
        _kill_after([*argv, str(out)], seconds, tmp_path)
        _whole_or_absent(out, files)
    subprocess.run([sys.executable, "-m", "patterson", *argv, str(out)], cwd=tmp_path, env=ENV, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)  # fmt: skip
    _whole_or_absent(out, files)
    assert out.is_dir() and not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no leftovers
