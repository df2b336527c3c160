"""Writing a solution: density.ccp4, phases.mtz, peaks.pdb, peaks.csv, solution.res and summary.json, all or
nothing, in the solution's space group (at its conventional origin)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import gemmi
import numpy as np

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.maps import atomic_write, ccp4_map, check_writable_folder, reflections_mtz
from patterson.solving.shelx import res_text
from patterson.solving.solve import Solution, SolveConfig, solve

OUTPUT_FILES = ("density.ccp4", "phases.mtz", "peaks.pdb", "peaks.csv", "solution.res", "summary.json")


def peaks_structure(frac: np.ndarray, height: np.ndarray, cell: Cell, spacegroup: str = "P 1") -> gemmi.Structure:
    """Peaks as a gemmi Structure in ``spacegroup``: one HETATM residue PEK per peak, atom Q (element C),
    occupancy = height relative to the highest peak, B 20 Å²."""
    st = gemmi.Structure()
    st.cell = cell.to_gemmi()
    st.spacegroup_hm = spacegroup
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    top = float(height.max()) if len(height) else 1.0
    xyz = cell.to_cartesian(frac) if len(frac) else np.zeros((0, 3))
    for i, (pos, h) in enumerate(zip(xyz, height, strict=True), 1):
        res = gemmi.Residue()
        res.name = "PEK"
        res.seqid = gemmi.SeqId(i, " ")
        res.het_flag = "H"
        atom = gemmi.Atom()
        atom.name = "Q"
        atom.element = gemmi.Element("C")
        atom.pos = gemmi.Position(*pos)
        atom.occ = float(h / top) if top > 0 else 0.0
        atom.b_iso = 20.0
        atom.serial = i
        res.add_atom(atom)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    return st


def write_solution(solution: Solution, out: str | Path) -> dict[str, Path]:
    """Write the output files (:data:`OUTPUT_FILES`) into ``out``: into a fresh temporary folder beside it that is
    renamed to ``out`` (or, when ``out`` already exists, file by file with atomic renames). Nothing half-written is
    ever left."""
    out = Path(out)
    check_writable_folder(out)
    cell = solution.cell
    rms = float(np.sqrt(np.mean((solution.rho - solution.rho.mean()) ** 2))) or 1.0
    xyz = cell.to_cartesian(solution.peaks_frac) if len(solution.peaks_frac) else np.zeros((0, 3))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["id", "x", "y", "z", "frac_x", "frac_y", "frac_z", "height", "height_rms", "relative_height"]
    writer.writerow([*header, "multiplicity"])
    top = float(solution.peaks_height.max()) if len(solution.peaks_height) else 1.0
    mult = _multiplicity(solution)
    for i, (p, q, h, m) in enumerate(zip(xyz, solution.peaks_frac, solution.peaks_height, mult, strict=True), 1):
        writer.writerow([i, *(f"{v:.3f}" for v in p), *(f"{v:.5f}" for v in q), f"{h:.5g}", f"{h / rms:.2f}",
                         f"{h / top:.3f}", int(m)])  # fmt: skip
    group = solution.group
    n_expected = float(solution.summary["data"]["wilson_atoms_c_equivalent"])
    title = f"patterson {solution.summary['input']}"
    res = res_text(cell, group, solution.peaks_frac, solution.peaks_height, mult, solution.composition, n_expected,
                   title)  # fmt: skip
    writers = {
        "density.ccp4": ccp4_map(solution.rho, cell, group.name).write_ccp4_map,
        "phases.mtz": _mtz(solution).write_to_file,
        "peaks.pdb": peaks_structure(solution.peaks_frac, solution.peaks_height, cell, group.name).write_pdb,
        "peaks.csv": lambda p: Path(p).write_text(buf.getvalue()),
        "solution.res": lambda p: Path(p).write_text(res),
        "summary.json": lambda p: Path(p).write_text(json.dumps(solution.summary, indent=2, allow_nan=False) + "\n"),
    }
    if out.exists():
        if not out.is_dir():
            raise PattersonError(f"{out}: exists and is not a folder")
        for name, write in writers.items():
            atomic_write(out / name, write)
        return {name: out / name for name in writers}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, write in writers.items():
            write(str(tmp / name))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {name: out / name for name in writers}


def _multiplicity(solution: Solution) -> np.ndarray:
    if solution.peaks_multiplicity is None:
        return np.ones(len(solution.peaks_height), dtype=np.int64)
    return solution.peaks_multiplicity


def _mtz(solution: Solution) -> gemmi.Mtz:
    """The measured reflections, one per symmetry orbit (in gemmi's reciprocal asymmetric unit): F, PHI, the
    figure-of-merit-weighted map coefficients FWT/PHWT that Coot opens by default, FOM and FREE (1 = free set)."""
    hkl, f, fom, free = solution.hkl, solution.f * np.exp(1j * solution.phi), solution.fom, solution.free
    if not solution.group.is_p1:
        asu = gemmi.ReciprocalAsu(solution.group.gemmi)
        inside = np.array([asu.is_in(h) for h in hkl.tolist()], dtype=bool)
        mate = ~inside & np.array([asu.is_in(h) for h in (-hkl).tolist()], dtype=bool)
        hkl = np.where(mate[:, None], -hkl, hkl)
        f = np.where(mate, np.conj(f), f)
        keep = inside | mate
        hkl, f, fom, free = hkl[keep], f[keep], fom[keep], free[keep]
        _, first = np.unique(hkl, axis=0, return_index=True)  # one copy of h (l = 0 mates can both land in the asu)
        hkl, f, fom, free = hkl[first], f[first], fom[first], free[first]
    extra = {"FWT": ("F", fom * np.abs(f)), "PHWT": ("P", np.degrees(np.angle(f))), "FOM": ("W", fom),
             "FREE": ("I", free.astype(np.float64))}  # fmt: skip
    return reflections_mtz(hkl, f, solution.cell, extra=extra, spacegroup=solution.group.name)


def solve_to_folder(config: SolveConfig) -> tuple[Solution, dict[str, Path]]:
    """``patterson solve``: check the output folder, solve, then write all outputs (nothing on failure)."""
    if not config.out:
        raise PattersonError("solve needs --out DIR")
    check_writable_folder(Path(config.out))
    solution = solve(config)
    return solution, write_solution(solution, config.out)
