"""The ground-floor file helpers: all-or-nothing folders and the cleaning of killed runs' leftovers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from patterson.errors import PattersonError
from patterson.files import clean_leftovers, publish_folder


def test_a_folder_is_published_whole_or_not_at_all(tmp_path):
    out = tmp_path / "report"
    with publish_folder(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    with pytest.raises(RuntimeError), publish_folder(out, may_replace=lambda f: True) as tmp:
        (tmp / "b.txt").write_text("half")
        raise RuntimeError("killed half-way")
    assert [p.name for p in out.iterdir()] == ["a.txt"]  # the earlier output, untouched
    with publish_folder(out, may_replace=lambda f: (f / "a.txt").exists()) as tmp:
        (tmp / "c.txt").write_text("2")
    assert [p.name for p in out.iterdir()] == ["c.txt"]  # replaced whole
    with pytest.raises(PattersonError, match="not an earlier output"), publish_folder(out) as tmp:
        pass
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report.")]


def test_leftovers_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = tmp_path / f".out.{int(dead.stdout)}.abc.tmp"
    alive = tmp_path / f".out.{os.getpid()}.def.tmp"
    gone.mkdir()
    alive.mkdir()
    clean_leftovers(out)
    assert not gone.exists() and alive.exists()
