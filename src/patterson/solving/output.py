"""Writing a solution: density.ccp4, phases.mtz, peaks.pdb, peaks.csv, solution.res and summary.json, all or
nothing, in the solution's space group (at its conventional origin)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
from pathlib import Path

import gemmi
import numpy as np

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.files import check_output_folder, check_writable_folder, holds_only, publish_folder
from patterson.maps import ccp4_map, reflections_mtz
from patterson.solving.atoms import B_START, assign_elements
from patterson.solving.shelx import res_text
from patterson.solving.solve import Solution, SolveConfig, solve

OUTPUT_FILES = ("density.ccp4", "phases.mtz", "peaks.pdb", "peaks.csv", "solution.res", "report.md", "summary.json")
# and sections.png (map sections through the strongest peaks) when matplotlib is installed


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
    """Write the output files (:data:`OUTPUT_FILES`) into ``out``, all or nothing: into a fresh temporary folder
    beside it that then replaces ``out`` (an empty folder, or an earlier solve output; anything else is refused).
    Nothing half-written is ever left, and leftovers of killed runs are removed on the next run."""
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
    group, res = solution.group, _res(solution, mult)
    figure = sections_figure(solution)
    writers = {
        "density.ccp4": ccp4_map(solution.rho, cell, group.name).write_ccp4_map,
        "phases.mtz": _mtz(solution).write_to_file,
        "peaks.pdb": peaks_structure(solution.peaks_frac, solution.peaks_height, cell, group.name).write_pdb,
        "peaks.csv": lambda p: Path(p).write_text(buf.getvalue()),
        "solution.res": lambda p: Path(p).write_text(res),
        "report.md": lambda p: Path(p).write_text(report_markdown(solution, figure is not None)),
        "summary.json": lambda p: Path(p).write_text(json.dumps(solution.summary, indent=2, allow_nan=False) + "\n"),
    }
    if figure is not None:
        writers["sections.png"] = lambda p: figure.savefig(p, format="png")
    if out.exists() and not out.is_dir():
        raise PattersonError(f"{out}: exists and is not a folder")
    with publish_folder(out, may_replace=is_solve_output) as tmp:
        for name, write in writers.items():
            write(str(tmp / name))
    return {name: out / name for name in writers}


def _res(solution: Solution, mult: np.ndarray) -> str:
    """solution.res: the refined atoms where there are any, else the peaks highest first, the heaviest elements of
    the contents (or carbon for the Wilson estimate of the atom count) to the highest, the rest as Q peaks."""
    group, title = solution.group, f"patterson {solution.summary['input']}"
    k = len(group.rot)
    n_expected = float(solution.summary["data"]["wilson_atoms_c_equivalent"])
    composition = solution.composition or {"C": max(1.0, round(n_expected) if math.isfinite(n_expected) else 1.0)}
    atoms = solution.atoms
    if atoms is not None and len(atoms):
        u = atoms.b_iso / (8 * math.pi**2)
        return res_text(solution.cell, group, atoms.frac, atoms.elements, atoms.occ * k, u, composition, None, title,
                        atoms.part, atoms.hydrogens)
    order = np.argsort(-solution.peaks_height)
    elements = assign_elements(solution.peaks_height[order], mult[order], composition, group)
    u = np.full(len(order), B_START / (8 * math.pi**2))
    return res_text(solution.cell, group, solution.peaks_frac[order], elements, mult[order], u, composition,
                    solution.peaks_height[order], title)  # fmt: skip


def is_solve_output(folder: Path) -> bool:
    """Whether ``folder`` holds an earlier ``patterson solve`` output and nothing else (so it may be replaced)."""
    return holds_only(folder, (*OUTPUT_FILES, "sections.png"), marker="summary.json")


def sections_figure(solution: Solution, n_sections: int = 3):
    """Sections of the map perpendicular to c through the strongest peaks (fractional x, y axes, the map in units
    of its r.m.s. with a colour bar, peaks within 0.7 Å of the section circled); None without matplotlib."""
    try:
        from patterson.evaluation.report import new_figure
    except ImportError:  # pragma: no cover - evaluation.report imports matplotlib lazily
        return None
    if importlib.util.find_spec("matplotlib") is None:
        return None
    rho = solution.rho
    rms = float(np.sqrt(np.mean((rho - rho.mean()) ** 2))) or 1.0
    frac = solution.peaks_frac[:n_sections] if len(solution.peaks_frac) else np.zeros((1, 3))
    fig = new_figure(4.2 * len(frac), 4.0)
    nz = rho.shape[2]
    for i, p in enumerate(frac):
        k = int(round(p[2] * nz)) % nz
        ax = fig.add_subplot(1, len(frac), i + 1)
        half = 0.5 / np.array(rho.shape[:2])  # voxel i sits at i/n: pixel centres, not edges, on the grid points
        extent = (-half[0], 1 - half[0], -half[1], 1 - half[1])
        im = ax.imshow((rho[:, :, k] / rms).T, origin="lower", extent=extent, cmap="viridis", aspect="auto")
        near = np.abs(((solution.peaks_frac[:, 2] - k / nz) + 0.5) % 1 - 0.5) * solution.cell.c < 0.7
        ax.scatter(solution.peaks_frac[near, 0] % 1, solution.peaks_frac[near, 1] % 1, s=60, facecolors="none",
                   edgecolors="white", linewidths=0.8)  # fmt: skip
        ax.set_xlabel("x (fraction of a)")
        ax.set_ylabel("y (fraction of b)")
        ax.set_title(f"section z = {k / nz:.3f} (peak {i + 1})", fontsize=9)
        fig.colorbar(im, ax=ax, label="ρ / r.m.s.", shrink=0.85)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.13, top=0.92, wspace=0.35)  # tight_layout: 0.1 s more
    return fig


def report_markdown(solution: Solution, has_picture: bool) -> str:
    """report.md: the verdict in words, the data, the symmetry, the strongest peaks and the sections."""
    s, sym = solution.summary, solution.summary["symmetry"]
    lines = [f"# patterson solve: {s['input']}", "", f"**{s['verdict_explanation']}**", "",
             f"- data: {s['data']['kind']}s, {s['data']['spacegroup']}, cell "
             + " ".join(f"{v:g}" for v in s["data"]["cell"])
             + f", d_min {s['data']['d_min']:.2f} Å, {s['data']['unique_merged']} unique reflections",
             f"- chosen run: {s['method']} (lowest R-free): R-work {s['r_work']:.3f}, R-free {s['r_free']:.3f}, "
             f"random phases {s['r_free_random']:.3f}; mean FOM {s['figure_of_merit']:.2f} (σA from the free set)",
             f"- symmetry: written in {sym['written_in']}"]  # fmt: skip
    if "worst_agreement" in sym:
        lines[-1] += (f"; the P1 solution's worst operator agreement with {sym['spacegroup']} is "
                      f"{sym['worst_agreement']:.2f} (1 exact, about 0.1 for random phases)")  # fmt: skip
    if "check" in sym:
        ok = [r["spacegroup"] for r in sym["check"] if r["consistent"]]
        caveat = "" if s["verdict"] == "solved" else " (the map is not solved: this says nothing about the crystal)"
        lines.append(f"- space groups the P1 solution obeys: {', '.join(ok) if ok else 'none'}{caveat}")
    lines += ["", "| peak | x | y | z | height / r.m.s. | multiplicity |", "|---|---|---|---|---|---|"]
    rho = solution.rho
    rms = float(np.sqrt(np.mean((rho - rho.mean()) ** 2))) or 1.0
    mult = _multiplicity(solution)
    for i, (p, h, m) in enumerate(zip(solution.peaks_frac[:10], solution.peaks_height[:10], mult[:10], strict=True)):
        lines.append(f"| {i + 1} | {p[0]:.4f} | {p[1]:.4f} | {p[2]:.4f} | {h / rms:.1f} | {int(m)} |")
    lines.append("")
    if has_picture:
        lines += ["![map sections through the strongest peaks](sections.png)", ""]
    else:
        lines += ["(no picture of the map sections: matplotlib is not installed; pip install matplotlib)", ""]
    for w in s["warnings"]:
        lines.append(f"> warning: {w}")
    return "\n".join(lines) + "\n"


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
    check_output_folder(Path(config.out), is_solve_output, "an earlier output of patterson solve")  # before the work
    solution = solve(config)
    return solution, write_solution(solution, config.out)
