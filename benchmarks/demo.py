"""The main job, measured: ``patterson demo`` with its defaults and the shipped networks, timed end to end.

Runs :func:`patterson.demo.run_demo` as ``patterson demo`` does (its defaults: 16 ``paper-2`` structures, 8
``peptide-crystal`` crystals with 4 s per method each, seed 7, the embedded chains) into a temporary folder and keeps
its headline table, its config, every summary number and the wall time, so that docs/demo.md quotes a measurement
and not a copy.

    python benchmarks/demo.py [--out benchmarks/results/demo.json] [--table docs/tables/demo_table.md]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import run_metadata, write_json, write_text
from patterson.demo import DemoConfig, run_demo


def measure() -> dict:
    """One default demo run: the table, the per-method summaries, the timings and the machine."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run_demo(DemoConfig(out=str(Path(tmp) / "demo")))
        wall = time.perf_counter() - t0
    presets = result.results["presets"]
    return {
        "benchmark": "demo",
        "command": "patterson demo",
        "run": run_metadata(),
        "wall_s": wall,
        "config": result.results["config"],
        "seconds": {p: r.get("seconds") for p, r in presets.items()},
        "networks": {p: (r.get("network") or {}).get("path") for p, r in presets.items()},
        "methods": {p: r["methods"] for p, r in presets.items()},
        "table": result.table,
    }


def render(results: dict) -> str:
    """The demo's headline table, as docs/tables/demo_table.md and docs/demo.md quote it, from the whole results
    file."""
    return results["table"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/demo.json"))
    parser.add_argument("--table", type=Path, default=Path("docs/tables/demo_table.md"))
    args = parser.parse_args()
    results = measure()
    write_json(args.out, results, default=str)
    run = results["run"]
    write_text(
        args.table,
        f"<!-- written by benchmarks/demo.py from {args.out}; do not edit -->\n"
        f"`patterson demo` with its defaults: {results['wall_s']:.0f} s wall on {run['cpu_count']} CPUs "
        f"(patterson {run['patterson']}, torch {run['torch']}).\n\n{render(results)}\n",
    )
    print(args.table.read_text())


if __name__ == "__main__":
    main()
