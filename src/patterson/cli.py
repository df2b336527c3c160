"""Command line: ``patterson SUBCOMMAND ...``. Each subcommand parses, builds a config and calls one library function.

Bad input ends with a one-line ``patterson: error: ...`` on stderr and exit code 2. An option's default is the
library's (:class:`Default`: the config dataclass's field), never a copy of it; generate and train stack their
settings in the one order of :mod:`patterson.config`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass
from typing import Any

from patterson import __version__
from patterson.config import default_of
from patterson.errors import PattersonError


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


@dataclass(frozen=True)
class Default:
    """An option's default read from the library where it is needed (``--help``, a run), not when the parser is
    built: the config modules import torch. ``where`` is ``module:Class.field`` (``.field`` again for a field of
    that field's default) or ``module:function.parameter``. ``layer``: the option is one layer of a stacked config
    (generate, train), so not giving it means None, leaving the key to the lower layers."""

    where: str
    layer: bool = False

    @property
    def value(self) -> Any:
        module, _, path = self.where.partition(":")
        owner, _, name = path.partition(".")
        return default_of(getattr(importlib.import_module(module), owner), name)

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class MethodDefault(Default):
    """A phasing option left to each method (``where`` names it in
    :data:`~patterson.phasing.options.METHOD_OPTIONS`): None in a run, each method's own default in ``--help``."""

    layer: bool = True

    def __str__(self) -> str:
        from patterson.phasing.options import METHOD_OPTIONS

        shown = {m: getattr(o, self.where) for m, o in METHOD_OPTIONS.items() if m != "histogram"}
        return "each method's own: " + ", ".join(f"{m} {v}" for m, v in shown.items())


_MAPS = "patterson.maps:MapsConfig"
_COMPARE = "patterson.evaluation:CompareConfig"
_EVALUATE = "patterson.phasing:EvaluateConfig"
_TRAIN = "patterson.training:TrainConfig"
_GENERATE = "patterson.datasets:GenerateConfig"
_SOLVE = "patterson.solving:SolveConfig"
_DEMO = "patterson.demo:DemoConfig"


def _add(p: argparse.ArgumentParser, flag: str, of: str, help: str = "", layer: bool = False, **options) -> None:
    """Option ``flag`` whose default is the library's ``of`` (see :class:`Default`), shown in its help."""
    shown = f"{help} (default %(default)s)" if help else "default %(default)s"
    p.add_argument(flag, default=Default(of, layer), help=shown, **options)


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with each :class:`Default` left by the parser replaced by its value (None for a layer option)."""
    for key, value in vars(args).items():
        if isinstance(value, Default):
            setattr(args, key, None if value.layer else value.value)
    return args


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
        progress=not args.no_progress,
    )
    for name, path in write_maps(config, args.out).items():
        print(f"{name:16s} {path}")
    return 0


def _add_maps(sub) -> None:
    p = sub.add_parser("maps", help=_first_line(cmd_maps.__doc__), description=cmd_maps.__doc__)
    p.add_argument("structure", help="structure file, or embedded[:ID]")
    _add(p, "--d-min", f"{_MAPS}.d_min", "resolution limit in Å", type=float)
    p.add_argument(
        "--cell",
        type=float,
        nargs="+",
        metavar="X",
        help="a b c [alpha beta gamma]: the cell (a structure without one is centred in it)",
    )
    _add(p, "--sample-rate", f"{_MAPS}.sample_rate", "grid spacing is d_min / rate", type=float)
    p.add_argument("--b-iso", type=float, default=None, help="set every atom's B-factor to this (Å²)")
    _add(p, "--dtype", f"{_MAPS}.dtype", choices=("float64", "float32"))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_maps)


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare two maps of the same cell and grid after the origin and hand search (as CCP4 cphasematch).

    MAP_B is moved onto MAP_A (the reference) by the origin shift and hand that match it best; prints the map CC
    and the phase error overall and per resolution shell, next to the chance level (random phases with A's
    amplitudes). With --json prints one JSON object with the keys of metrics.json for one pair. Without --d-min
    the finest resolution the grid holds is used: give the maps' real resolution for band-limited maps.
    """
    import json

    from patterson.evaluation import CompareConfig, compare_maps

    config = CompareConfig(args.map_a, args.map_b, d_min=args.d_min, n_shells=args.shells, weight=args.weight)
    result = compare_maps(config)
    print(json.dumps(result.metrics, indent=2, allow_nan=False) if args.json else result.table())
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help=_first_line(cmd_compare.__doc__), description=cmd_compare.__doc__)
    p.add_argument("map_a", metavar="MAP_A", help="reference CCP4/MRC map (e.g. the truth)")
    p.add_argument("map_b", metavar="MAP_B", help="CCP4/MRC map to compare, same cell and grid")
    p.add_argument("--d-min", type=float, default=None, help="resolution limit in Å (default: finest the grid holds)")
    _add(p, "--shells", f"{_COMPARE}.n_shells", "resolution shells", type=int)
    _add(p, "--weight", f"{_COMPARE}.weight", "F-weighting: |F_A| or |F_A||F_B|", choices=("f1", "f1f2"))
    p.add_argument("--json", action="store_true", help="print one JSON object (metrics.json keys)")
    p.set_defaults(func=cmd_compare)


def phasing_config(args: argparse.Namespace):
    """The PhasingConfig of a command's options (those it has; the others keep their defaults)."""
    from patterson.phasing import PhasingConfig

    names = ("refine", "n_iter", "n_starts", "seed", "free_fraction", "amplitudes")
    return PhasingConfig(**{k: getattr(args, k) for k in names if getattr(args, k, None) is not None})


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a method on a dataset split as crystallographers do (map CC, phase error per shell).

    --method model (default) scores a trained network; charge-flip, hio, raar and rrr phase the split's amplitudes
    (taken from its Patterson maps) classically; hybrid refines the network's density with --refine against them;
    learned runs the phasing loop with a density-modification network inside (--checkpoint, default the shipped
    one) and histogram the same loop with the non-learned control step.
    Writes DIR/metrics.json, DIR/per_example.csv, DIR/report.md and PNG plots (phase error and fraction < 60° vs
    resolution, CC histogram, central sections of the best / median / worst examples), all next to the chance
    level (random phases with the true amplitudes). Phasing methods hold out a free set (--free-fraction) that
    they never impose: per_example.csv gets r_work, r_free and the verdict, metrics.json a verdict block with
    the claimed and truly solved counts. Runs on the GPU when one is present.
    """
    from patterson.phasing import EvaluateConfig, evaluate

    config = EvaluateConfig(
        data=args.data,
        out=args.out,
        method=args.method,
        checkpoint=args.checkpoint,
        split=args.split,
        name=args.name,
        phasing=phasing_config(args),
        batch_size=args.batch_size,
        limit=args.limit,
        device=args.device,
        plots=not args.no_plots,
        region=args.region,
    )
    metrics = evaluate(config)
    chance = metrics["chance"] or {}
    fmt = lambda m, k, d=3: "-" if not m or m[k]["median"] is None else f"{m[k]['median']:.{d}f}"  # noqa: E731
    print(f"n {metrics['n']}  median CC (aligned) {fmt(metrics, 'cc_aligned')}, chance {fmt(chance, 'cc_aligned')}")
    print(f"median phase error {fmt(metrics, 'phase_error_deg', 1)}°, chance {fmt(chance, 'phase_error_deg', 1)}°")
    verdict = metrics.get("verdict")
    if verdict:
        print(
            f"verdict: {verdict['n_claimed_solved']} claimed solved, {verdict['n_truly_solved']} truly solved, "
            f"{verdict['n_correct_claims']} claims right, {verdict['counts']['uncertain']} uncertain"
        )
    print(f"solved {metrics['solved_fraction']:.2f}, report {args.out}/report.md")
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help=_first_line(cmd_evaluate.__doc__), description=cmd_evaluate.__doc__)
    p.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="checkpoint file (RUN/checkpoints/best.pt) or shipped name; model, hybrid, learned",
    )
    p.add_argument("--data", required=True, metavar="DS", help="dataset folder")
    _add(p, "--split", f"{_EVALUATE}.split", choices=("train", "val", "test", "all"))
    p.add_argument("--out", required=True, metavar="DIR", help="report folder")
    methods = ("model", "charge-flip", "hio", "raar", "rrr", "hybrid", "learned", "histogram")
    _add(p, "--method", f"{_EVALUATE}.method", choices=methods)
    _add(
        p,
        "--refine",
        f"{_EVALUATE}.phasing.refine",
        "hybrid's refinement",
        choices=("hio", "raar", "rrr", "charge-flip"),
    )
    for flag, name in (("--n-iter", "iterations per start"), ("--n-starts", "random starts")):
        p.add_argument(flag, type=int, default=MethodDefault(flag[2:].replace("-", "_")),
                       help=f"{name} of the phasing methods (default %(default)s)")  # fmt: skip
    _add(p, "--free-fraction", f"{_EVALUATE}.phasing.free_fraction", "share of reflections held out", type=float)
    _add(
        p,
        "--amplitudes",
        f"{_EVALUATE}.phasing.amplitudes",
        "what the phasing imposes",
        choices=("F", "E", "sharpened"),
    )
    _add(p, "--seed", f"{_EVALUATE}.phasing.seed", "random starts and free set", type=int)
    p.add_argument("--name", default=None, help="method name in the report")
    _add(p, "--batch-size", f"{_EVALUATE}.batch_size", type=int)
    p.add_argument("--limit", type=int, default=None, help="score only the first N examples")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--region", type=float, default=None, metavar="A", help="map CC on the central cube of A Å only")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=cmd_evaluate)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a network that turns Patterson maps into electron density.

    DS is a dataset folder (its train/val splits) or ``random:n=N,cell=A,d_min=D,atoms=K,seed=S,val=V`` (random
    atoms made on the fly). Settings come from the defaults (the paper's recipe), then --config (TOML), then
    --model/--data, then each ``--set key=value`` (``epochs=3``, ``lr=1e-3``; ``model.FIELD=value`` changes the
    network, e.g. ``model.c1=8``): the order ``generate`` uses too. Writes OUT/checkpoints/{last,best,epoch-NNN}.pt,
    OUT/metrics.{jsonl,csv}, OUT/config.json and OUT/train.log. Under ``torchrun --nproc-per-node N -m patterson
    train ...`` the processes train together (DistributedDataParallel); rank 0 writes the files.
    """
    from patterson.training import load_config, run_lr_find, train

    config = load_config(args.config, args.set or [], model=args.model, data=args.data)
    if args.lr_find:
        result = run_lr_find(config, args.out)
        print(f"suggested lr {result.suggestion:.3g} (lowest loss at {result.min_loss_lr:.3g}); see {args.out}")
        return 0
    result = train(config, args.out, resume=args.resume)
    if result.rank == 0:
        print(f"{result.epochs} epochs done; last checkpoint {result.last_checkpoint}")
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help=_first_line(cmd_train.__doc__), description=cmd_train.__doc__)
    p.add_argument("--data", required=True, metavar="DS", help="dataset folder, or random:KEY=VALUE,...")
    _add(p, "--model", f"{_TRAIN}.model", "model preset", metavar="NAME", layer=True)
    p.add_argument("--config", default=None, metavar="TOML", help="training config file")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override one setting (repeatable); model.FIELD=V too"
    )
    p.add_argument("--out", required=True, metavar="RUN", help="run folder (checkpoints, metrics)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last.pt")
    p.add_argument("--lr-find", action="store_true", help="run the learning-rate range test instead of training")
    p.set_defaults(func=cmd_train)


def cmd_generate(args: argparse.Namespace) -> int:
    """Make a dataset of (input map, target map) examples from real structures, reproducibly.

    Settings come from the defaults, then --preset (paper-1a, paper-1b, paper-2, report-hkl10, report-hkl20,
    dense-protein, peptide-crystal), then --config (TOML of ``key = value``), then --source/--n/--seed, then each
    ``--set key=value``: the order ``train`` uses too. SOURCE is a folder of structure files or ``embedded``. Run again
    after an interruption to resume; see docs/datasets.md.
    """
    from patterson.datasets import describe_config, generate, load_config

    fields = {key: getattr(args, key) for key in ("source", "n", "seed")}
    config = load_config(args.config, args.set or [], args.preset, **fields)
    if args.show_config:
        print(describe_config(config))
        return 0
    if not args.out:
        raise PattersonError("generate needs --out DS")
    summary = generate(config, args.out, workers=args.workers, progress=not args.no_progress)
    counts = ", ".join(f"{s} {n}" for s, n in summary.counts.items())
    sources = summary.source_counts
    print(f"{summary.out}: {sum(summary.counts.values())} examples ({counts})")
    fragments = f", {sources['fragments']} fragments" if "fragments" in sources else ""
    skipped = sources.get("skipped_files", 0)
    print(f"source: {sources.get('files', 0)} files read, {skipped} unreadable or empty skipped{fragments}")
    return 0


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help=_first_line(cmd_generate.__doc__), description=cmd_generate.__doc__)
    p.add_argument("--preset", default=None, metavar="P", help="named preset (see docs/datasets.md)")
    _add(p, "--source", f"{_GENERATE}.source", "folder of structure files, or embedded", metavar="DIR", layer=True)
    _add(p, "--n", f"{_GENERATE}.n", "number of examples, all splits", type=int, layer=True)
    p.add_argument("--out", default=None, metavar="DS", help="dataset folder (resumed if it holds this dataset)")
    _add(p, "--workers", "patterson.datasets:generate.workers", "worker processes", type=int, metavar="K")
    _add(p, "--seed", f"{_GENERATE}.seed", "random seed", type=int, layer=True)
    p.add_argument("--config", default=None, metavar="TOML", help="config file of key = value lines")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one setting (repeatable; last)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--show-config", action="store_true", help="print the resulting config and exit")
    p.set_defaults(func=cmd_generate)


def cmd_dataset_info(args: argparse.Namespace) -> int:
    """Summarise a stored dataset: counts per split, residue types, elements, map statistics, normalisation."""
    import json

    from patterson.datasets import dataset_info, format_info

    info = dataset_info(args.dataset)
    print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0


def _add_dataset(sub) -> None:
    p = sub.add_parser("dataset", help="inspect stored datasets", description="Inspect stored datasets.")
    dsub = p.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    q = dsub.add_parser("info", help=_first_line(cmd_dataset_info.__doc__), description=cmd_dataset_info.__doc__)
    q.add_argument("dataset", metavar="DS", help="dataset folder")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_dataset_info)


def cmd_solve(args: argparse.Namespace) -> int:
    """Phase a reflection file: map, phases, peaks, and at atomic resolution refined atoms (see docs/solving.md).

    INPUT is an MTZ, SF-mmCIF, SHELX .hkl (cell and symmetry from a .ins/.res beside it, or --cell and
    --spacegroup) or a small-molecule CIF carrying its reflections; gzipped or not. Amplitudes or intensities are
    chosen automatically when only one column fits, else --columns. --refine auto (the default) tries charge
    flipping on E-values first where atoms can be refined (d_min ≤ 1.3 Å, cell contents known), then dual-space
    phasing (d_min ≤ 1.2 Å), then the networks and HIO; with --sequence last ideal fragments of the peptide
    placed and built out. Phases in P1, then moves the solution to the space group's
    origin and symmetrises it when it obeys the group; the peaks become atoms refined against the work amplitudes,
    judged by R1 on the free reflections.
    Writes DIR/density.ccp4, DIR/phases.mtz (F PHI FWT PHWT FOM FREE), DIR/peaks.pdb, DIR/peaks.csv (the peaks
    in the asymmetric unit), DIR/solution.res (SHELX) and DIR/summary.json, all or nothing, in the space group.
    Without shipped weights, ``pretrained`` falls back to classical phasing.
    A free set (the file's FreeR_flag/FREE column or mmCIF status, else --free-fraction of the reflections) is
    never imposed; runs are chosen by R-free, and the last line gives the verdict (solved, uncertain, not solved).
    """
    from patterson.solving import SolveConfig, solve_to_folder

    config = SolveConfig(
        input=args.input,
        out=args.out,
        checkpoint=args.checkpoint,
        phasing=phasing_config(args),
        d_min=args.d_min,
        columns=args.columns,
        cell=tuple(args.cell) if args.cell else None,
        spacegroup=args.spacegroup,
        transfer=args.transfer,
        composition=args.composition,
        progress=not args.no_progress,
        free_column=args.free_column,
        check_symmetry=args.check_symmetry,
        radiation=args.radiation,
        sequence=args.sequence,
        fragment=args.fragment,
    )
    solution, paths = solve_to_folder(config)
    s = solution.summary
    for name, path in paths.items():
        print(f"{name:14s} {path}")
    if s["verdict"] != "solved":
        print(s["verdict_explanation"])
    sym = s["symmetry"]
    if "check" in sym:
        top = next((r for r in sym["check"] if r["consistent"]), None)
        caveat = "" if s["verdict"] == "solved" else "; the map is not solved, so this says nothing about the crystal"
        print(f"highest symmetry the P1 solution obeys: {top['spacegroup'] if top else 'none'} (summary.json){caveat}")
    atoms = s.get("atoms")
    n_minor = atoms.get("minor_components") if atoms else 0
    n_h = atoms.get("riding_hydrogens", 0) if atoms else 0
    besides = f" ({n_minor} minor component{'s' if n_minor != 1 else ''})" if n_minor else ""
    besides += f" and {n_h} riding H" if n_h else ""
    found = (f"{atoms['n']} atoms{besides} refined to R1 {atoms['r1_work']:.3f} (free {atoms['r1_free']:.3f})" if atoms
             else f"{s['n_peaks']} peaks")  # fmt: skip
    print(
        f"{s['verdict']}: {s['method']}, R-work {s['r_work']:.3f}, R-free {s['r_free']:.3f} "
        f"(random phases {s['r_free_random']:.3f}), {found} in {sym['written_in']}"
    )
    return 0


def _add_solve(sub) -> None:
    p = sub.add_parser("solve", help=_first_line(cmd_solve.__doc__), description=cmd_solve.__doc__)
    p.add_argument("input", metavar="INPUT", help="reflection file: .mtz, .cif (SF-mmCIF) or SHELX .hkl")
    _add(p, "--checkpoint", f"{_SOLVE}.checkpoint", "pretrained, a shipped NAME or a PATH")
    _add(p, "--refine", f"{_SOLVE}.phasing.refine",
         choices=("auto", "hybrid", "charge-flip", "hio", "dual-space", "fragments", "none"))  # fmt: skip
    p.add_argument("--d-min", type=float, default=None, help="resolution cut-off in Å (default: all data)")
    p.add_argument("--columns", default=None, metavar="F,SIGF", help="amplitude or intensity column [, its sigma]")
    p.add_argument("--cell", type=float, nargs="+", metavar="X", help="a b c [alpha beta gamma] (overrides the file)")
    p.add_argument("--spacegroup", default=None, metavar="SG", help="e.g. 'P 21 21 21' or 19 (overrides the file)")
    p.add_argument("--composition", default=None, metavar="FORMULA", help="cell contents, e.g. 'C24 N8 O8'")
    p.add_argument("--sequence", default=None, metavar="SEQ",
                   help="a peptide's one-letter residue codes (asymmetric unit): adds the fragments route")  # fmt: skip
    p.add_argument("--fragment", default=None, metavar="FILE",
                   help="a search model (PDB/mmCIF) placed by the fragments route instead of the sequence's strands")
    _add(p, "--transfer", f"{_SOLVE}.transfer", "network on other cells (measured)", choices=("convolve", "resample"))
    _add(p, "--n-iter", f"{_SOLVE}.phasing.n_iter", "refinement iterations per run", type=int)
    _add(p, "--n-starts", f"{_SOLVE}.phasing.n_starts", "random starts of classical phasing", type=int)
    _add(p, "--seed", f"{_SOLVE}.phasing.seed", "random starts and free set", type=int)
    _add(
        p,
        "--free-fraction",
        f"{_SOLVE}.phasing.free_fraction",
        "share of reflections held out when the file flags none",
        type=float,
    )
    p.add_argument("--free-column", default=None, metavar="LABEL", help="MTZ free-flag column (default: found)")
    p.add_argument(
        "--check-symmetry", action="store_true", help="report the space groups the P1 solution obeys (always for P1)"
    )
    _add(p, "--amplitudes", f"{_SOLVE}.phasing.amplitudes", "what the phasing imposes", choices=("F", "E", "sharpened"))
    _add(p, "--radiation", f"{_SOLVE}.radiation", "scattering factors of the atoms; auto: from the wavelength",
         choices=("auto", "xray", "electron"))  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=cmd_solve)


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: phase real protein chains with every method and write a report (see docs/demo.md).

    Makes a paper-2 test set (one dipeptide in a 12 Å cell, 1.5 Å) from real X-ray chains (the embedded default:
    MDAnalysisTests), phased by the shipped network alone, the hybrid (network + HIO), charge flipping and HIO, and
    a peptide-crystal test set (short segments packed by a space group's symmetry, 1.0 Å), phased crystal by
    crystal by dual-space direct methods, charge flipping and HIO with the same seconds each; scores every map next
    to the chance level and writes DIR/report.md, DIR/results.json, PNG plots, CCP4 maps of a few examples (moved
    onto the truth) and the test sets. DIR must be absent, empty or a previous demo report (which is replaced).
    """
    from patterson.demo import DemoConfig, run_demo

    if args.dense_checkpoint is not None:
        raise PattersonError(
            "--dense-checkpoint: the demo has no dense-protein test set any more (peptide crystals replaced it); "
            "drop the option (docs/demo.md)"
        )
    config = DemoConfig(
        out=args.out,
        n=args.n,
        n_peptide=args.n_peptide,
        peptide_budget_s=args.peptide_budget,
        paper2_checkpoint=args.paper2_checkpoint,
        source=args.source,
        phasing=phasing_config(args),
        n_maps=args.n_maps,
        plots=not args.no_plots,
        progress=not args.no_progress,
    )
    result = run_demo(config)
    print(result.table, end="")
    for warning in result.results["warnings"]:
        print(f"warning: {warning}")
    print(f"report {result.out / 'report.md'}")
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help=_first_line(cmd_demo.__doc__), description=cmd_demo.__doc__)
    _add(p, "--out", f"{_DEMO}.out", "report folder", metavar="DIR")
    _add(p, "--n", f"{_DEMO}.n", "paper-2 test structures", type=int)
    _add(p, "--n-peptide", f"{_DEMO}.n_peptide", "peptide-crystal test crystals", type=int)
    _add(p, "--peptide-budget", f"{_DEMO}.peptide_budget_s", "seconds per crystal for every method", type=float,
         metavar="S")  # fmt: skip
    _add(p, "--paper2-checkpoint", f"{_DEMO}.paper2_checkpoint", "pretrained, a PATH or none", metavar="CKPT")
    p.add_argument("--dense-checkpoint", default=None, help=argparse.SUPPRESS)  # removed: a one-line error says why
    _add(p, "--source", f"{_DEMO}.source", "structure folder", metavar="DIR")
    _add(p, "--seed", f"{_DEMO}.phasing.seed", "test sets, starts, chance", type=int)
    p.add_argument("--n-iter", type=int, default=MethodDefault("n_iter"),
                   help="iterations of the classical methods and the hybrid (default %(default)s)")  # fmt: skip
    _add(p, "--n-maps", f"{_DEMO}.n_maps", "examples per test set written as CCP4 maps", type=int)
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)


# --- entry point -------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patterson",
        description="Solve the crystallographic phase problem: Patterson maps to electron density, learned and "
        "classical. Commands in pipeline order; `patterson COMMAND -h` for each.",
    )
    parser.add_argument("--version", action="version", version=f"patterson {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    adders = (_add_maps, _add_generate, _add_dataset, _add_train, _add_evaluate, _add_compare, _add_solve, _add_demo)
    for add in adders:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(resolve_defaults(args))
    except PattersonError as exc:
        print(f"patterson: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be read or written is bad input too (the README promises exit 2)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"patterson: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("patterson: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
