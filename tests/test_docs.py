"""The documentation runs: every ```python block of the README, docs/phasing.md and docs/solving.md executes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ("README.md", "docs/phasing.md", "docs/solving.md")  # the documents whose Python blocks are tested
BLOCKS = [b for doc in RUN for b in re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), flags=re.S)]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"docs block {index}", "exec"), namespace)  # noqa: S102


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].strip()
    assert ci in readme
