"""Every script in examples/ runs as it is and says what it promises (as gemmi's tests/test_examples.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "real" / "5e5z"
EXPECT = {  # script: a piece of what it prints
    "structure_factors.py": "R(|F|) against gemmi",
    "patterson_map.py": "(the origin)",
    "phase_a_dipeptide.py": "chance  solved 0/4",
    "read_reflections.py": "space group P 1 21 1",
    "solve_small_molecule.py": "published non-H atoms within 0.3 Å of a refined atom: 46 of 46",
}


def test_every_example_is_tested():
    assert {p.name for p in (ROOT / "examples").glob("*.py")} == set(EXPECT)


@pytest.mark.parametrize("script", sorted(EXPECT))
def test_example_runs(script, tmp_path):
    if script in ("read_reflections.py", "solve_small_molecule.py") and not SHARED.is_dir():
        pytest.skip("needs ../shared/data/real/5e5z")
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert EXPECT[script] in done.stdout, done.stdout
    if script == "structure_factors.py":
        r = float(done.stdout.split("R(|F|) against gemmi ")[1].split(",")[0])
        assert r < 1e-4  # the same structure factors as gemmi's
