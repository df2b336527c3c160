"""Command line: ``patterson SUBCOMMAND ...``. Each subcommand parses, builds a config and calls one library function.

Bad input ends with a one-line ``patterson: error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from patterson import __version__
from patterson.errors import PattersonError


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


# --- subcommands -------------------------------------------------------------------------------------------------


def cmd_maps(args: argparse.Namespace) -> int:
    """Compute the density, Patterson map and structure factors of one structure.

    STRUCTURE is a PDB, mmCIF or small-molecule CIF file (gzipped too), or ``embedded[:ID]`` for an entry of the
    embedded default source (real X-ray protein chains from MDAnalysisTests). Writes DIR/density.ccp4,
    DIR/patterson.ccp4 and DIR/reflections.mtz (H K L F PHI, phases in degrees).
    """
    from patterson.maps import MapsConfig, write_maps

    config = MapsConfig(
        structure=args.structure,
        d_min=args.d_min,
        cell=tuple(args.cell) if args.cell else None,
        sample_rate=args.sample_rate,
        b_iso=args.b_iso,
        dtype=args.dtype,
    )
    for name, path in write_maps(config, args.out).items():
        print(f"{name:16s} {path}")
    return 0


def _add_maps(sub) -> None:
    p = sub.add_parser("maps", help=_first_line(cmd_maps.__doc__), description=cmd_maps.__doc__)
    p.add_argument("structure", help="structure file, or embedded[:ID]")
    p.add_argument("--d-min", type=float, default=1.5, help="resolution limit in Å (default 1.5)")
    p.add_argument(
        "--cell",
        type=float,
        nargs="+",
        metavar="X",
        help="a b c [alpha beta gamma]: the cell (a structure without one is centred in it)",
    )
    p.add_argument("--sample-rate", type=float, default=3.0, help="grid spacing is d_min / rate (default 3)")
    p.add_argument("--b-iso", type=float, default=None, help="set every atom's B-factor to this (Å²)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_maps)


# --- entry point -------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="patterson", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"patterson {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_maps(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except PattersonError as exc:
        print(f"patterson: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"patterson: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("patterson: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
