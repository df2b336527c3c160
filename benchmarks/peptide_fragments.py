"""Sequence-aware fragment phasing of two amyloid-like peptide crystals (#30): 5E5Z (LVHSSN, P2₁, 1.66 Å) and 1YJP
(GNNQQNY, P2₁, 1.8 Å), judged against the deposited models.

For each data set: the reflections are read and merged as ``patterson solve`` reads them (the file's free set kept
out of every step), :func:`patterson.phasing.peptide.phase_with_sequence` places ideal poly-alanine strands and
builds them out, and the phases are scored by the map correlation with the deposited model's structure factors
(after the P1 origin and hand search, as ``benchmarks/real_small_molecules.py`` scores) beside five sets of random
phases. Also scored: the best placed fragment alone, and an oracle, the ideal strand superposed on the deposited
one (what a perfect search would give), so that search and building can be told apart.

The deposited model is expanded to the whole cell here: :func:`patterson.structures.read_structure` keeps the
asymmetric unit of a PDB/mmCIF file (``real_small_molecules.model_f`` does not expand it; for these files that
would score against one molecule of the two in the cell).

Run ``python benchmarks/peptide_fragments.py`` (about 10 minutes on 2 CPU cores); writes
``benchmarks/results/peptide_fragments.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import gemmi
import numpy as np
import torch

from _common import RESULTS, ROOT, run_metadata, write_json
from patterson.cells import Cell, expand_to_p1
from patterson.evaluation import align
from patterson.ideal import ideal_strand
from patterson.phasing.peptide import phase_with_sequence
from patterson.physics import AtomBatch, structure_factors
from patterson.solving import prepare_data, read_reflections
from patterson.structures import Atoms, read_structure
from patterson.symmetry import SpaceGroup

DATA = ROOT.parent / "shared" / "data" / "real"
SETS = {"5e5z": ("5e5z/5e5z.mtz", "5e5z/5e5z.pdb", "LVHSSN"), "1yjp": ("1yjp/1yjp-sf.cif", "1yjp/1yjp.cif", "GNNQQNY")}
N_RANDOM = 5


def model_f(path: Path, cell: Cell, hkl: np.ndarray, waters: bool = True) -> np.ndarray:
    """(M,) the deposited model's structure factors, every atom of the cell (``waters=False``: its waters left
    out), at the data's P1 hkl."""
    atoms = expand_to_p1(read_structure(path))
    keep = water_atoms(atoms) <= waters  # every atom, or those that are no water
    placed = atoms.replace(xyz=cell.to_cartesian(Cell(*atoms.cell).to_fractional(atoms.xyz[keep])),
                           elements=atoms.elements[keep], b_iso=atoms.b_iso[keep], occ=atoms.occ[keep],
                           residues=None, cell=cell.parameters)  # fmt: skip
    return structure_factors(AtomBatch.from_atoms([placed], cell), hkl)[0].numpy()


def water_atoms(atoms: Atoms) -> np.ndarray:
    """(N,) bool: the atoms of HOH residues (none where the file names no residues)."""
    if atoms.residues is None:
        return np.zeros(len(atoms), dtype=bool)
    return np.array([":HOH:" in r for r in atoms.residues], dtype=bool)


def map_cc(f_model: np.ndarray, f_obs: np.ndarray, phi: np.ndarray, hkl: np.ndarray, cell: Cell) -> float:
    """Map correlation of |F_obs| e^{iφ} with the model after the P1 origin and hand search."""
    found = align(torch.as_tensor(f_model)[None], torch.as_tensor(f_obs * np.exp(1j * phi))[None], hkl, cell)
    return float(found.score[0])


def fragment_f(frac: np.ndarray, elements: np.ndarray, hkl: np.ndarray, cell: Cell, group: SpaceGroup) -> np.ndarray:
    """(M,) structure factors of asymmetric-unit atoms (B 20 Å²) and their images."""
    sites = np.concatenate([frac @ r.T + t for r, t in zip(group.rot, group.tran, strict=True)])
    atoms = Atoms(
        xyz=cell.to_cartesian(sites),
        elements=np.tile(elements, len(group.rot)),
        b_iso=np.full(len(sites), 20.0),
        occ=np.ones(len(sites)),
    )
    return structure_factors(AtomBatch.from_atoms([atoms], cell), hkl)[0].numpy()


def oracle_fragment(path: Path, sequence: str) -> tuple[np.ndarray, np.ndarray]:
    """The ideal poly-alanine strand of the whole sequence superposed (least squares) on the deposited chain:
    Cartesian coordinates (N, 3) in the deposited frame and elements."""
    model = ideal_strand(sequence)
    residues = [r for r in gemmi.read_structure(str(path))[0][0] if r.name != "HOH"]
    pairs = [(i, residues[int(label.split(":")[2]) - 1].find_atom(name, "*"))
             for i, (name, label) in enumerate(zip(model.names, model.atoms.residues, strict=True))]  # fmt: skip
    pairs = [(i, a) for i, a in pairs if a is not None]
    p = model.atoms.xyz[[i for i, _ in pairs]]
    q = np.array([a.pos.tolist() for _, a in pairs])
    u, _, vt = np.linalg.svd((p - p.mean(0)).T @ (q - q.mean(0)))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1, 1, d]) @ u.T
    return (model.atoms.xyz - p.mean(0)) @ rot.T + q.mean(0), model.atoms.elements


def run_set(name: str) -> dict:
    reflections, deposited, sequence = SETS[name]
    refl = read_reflections(DATA / reflections, None, None, None, None)
    data = prepare_data(refl)
    cell, group, hkl, f, free = data.cell, refl.group, data.hkl, data.f, data.free
    f_model = model_f(DATA / deposited, cell, hkl)
    rng = np.random.default_rng(0)
    chance = [map_cc(f_model, f, rng.uniform(0, 2 * np.pi, len(f)), hkl, cell) for _ in range(N_RANDOM)]
    t0, c0 = time.perf_counter(), time.process_time()
    solution = phase_with_sequence(sequence, hkl, f, cell, group, ~free)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    k = float((f * np.abs(solution.f_calc)).sum() / (np.abs(solution.f_calc) ** 2).sum())
    r1 = {s: float(np.abs(f[m] - k * np.abs(solution.f_calc[m])).sum() / f[m].sum()) for s, m in
          (("work", ~free), ("free", free))}  # fmt: skip
    xyz, elements = oracle_fragment(DATA / deposited, sequence)
    oracle = map_cc(f_model, f, np.angle(fragment_f(cell.to_fractional(xyz), elements, hkl, cell, group)), hkl, cell)
    return {"sequence": sequence, "spacegroup": group.name, "cell": list(cell.parameters), "d_min": data.d_min,
            "p1_reflections": len(hkl), "free_p1": int(free.sum()),
            "map_cc": map_cc(f_model, f, solution.phi_rad, hkl, cell),
            "chance_cc": chance, "oracle_ideal_strand_cc": oracle, "atoms_built": len(solution.frac),
            "cc_work_e2": solution.cc_work, "r1_work": r1["work"], "r1_free": r1["free"], "seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 1), "step_seconds": solution.seconds, "steps": solution.steps,
            "tried": solution.tried}  # fmt: skip


def main() -> None:
    torch.set_num_threads(2)
    results = {"run": run_metadata(), "sets": {}}
    for name in SETS:
        record = run_set(name)
        results["sets"][name] = record
        print(f"{name}: map CC {record['map_cc']:.3f} (random {np.median(record['chance_cc']):.3f}, ideal strand on "
              f"the deposited one {record['oracle_ideal_strand_cc']:.3f}), {record['atoms_built']} atoms, R1 work "
              f"{record['r1_work']:.3f} free {record['r1_free']:.3f}, {record['seconds']} s", flush=True)  # fmt: skip
    write_json(RESULTS / "peptide_fragments.json", results)


if __name__ == "__main__":
    main()
