"""Shared fixtures: small real-looking structures written with gemmi, in tmp_path."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from patterson.cells import Cell
from patterson.structures import Atoms

ELEMENTS = ["C", "N", "O", "S", "C", "C", "O", "Fe", "Se", "H"]


def random_atoms(cell: Cell, n: int = 20, seed: int = 0, elements=ELEMENTS) -> Atoms:
    """n atoms at random fractional positions with random B (5–40 Å²) and occupancy (0.5–1)."""
    rng = np.random.default_rng(seed)
    frac = rng.random((n, 3))
    return Atoms(
        xyz=cell.to_cartesian(frac),
        elements=np.array([elements[i % len(elements)] for i in range(n)]),
        b_iso=rng.uniform(5, 40, n),
        occ=rng.uniform(0.5, 1.0, n),
        cell=cell.parameters,
        spacegroup="P 1",
        source=f"random-{seed}",
    )


def gemmi_structure(atoms: Atoms) -> gemmi.Structure:
    """The same atoms as a one-residue gemmi.Structure in P1 (for gemmi's calculators and for writing files)."""
    st = gemmi.Structure()
    if atoms.cell is not None:
        st.cell = gemmi.UnitCell(*atoms.cell)
    st.spacegroup_hm = "P 1"
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    res = gemmi.Residue()
    res.name = "UNK"
    res.seqid = gemmi.SeqId(1, " ")
    for i, (xyz, el, b, occ) in enumerate(zip(atoms.xyz, atoms.elements, atoms.b_iso, atoms.occ, strict=True)):
        atom = gemmi.Atom()
        atom.name = f"X{i}"
        atom.element = gemmi.Element(str(el))
        atom.pos = gemmi.Position(*xyz)
        atom.b_iso = float(b)
        atom.occ = float(occ)
        res.add_atom(atom)
    chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    return st


@pytest.fixture
def triclinic() -> Cell:
    return Cell(10.0, 12.0, 14.0, 80.0, 95.0, 110.0)


@pytest.fixture
def cubic() -> Cell:
    return Cell.cubic(12.0)


@pytest.fixture
def fragment_pdb(tmp_path):
    """A 12-atom molecule about 4 Å across, written as a PDB file without a cell."""
    atoms = random_atoms(Cell.cubic(4.0), 12, seed=21, elements=["C", "N", "O"]).replace(cell=None)
    st = gemmi_structure(atoms)
    st.cell = gemmi.UnitCell()
    path = tmp_path / "frag.pdb"
    st.write_pdb(str(path))
    return path
