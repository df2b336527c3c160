"""Small real structure sources for the dataset tests, written with gemmi from an embedded X-ray entry."""

from __future__ import annotations

from pathlib import Path

import gemmi

from patterson.structures import embedded_entry


def protein_residues() -> list[gemmi.Residue]:
    """Residues of the first chain of the default embedded entry (real geometry, all standard amino acids)."""
    st = gemmi.read_structure(str(embedded_entry()))
    st.remove_hydrogens()
    st.remove_alternative_conformations()
    return [r.clone() for r in st[0][0]]


def write_chain(path: Path, residues: list[gemmi.Residue], chain: str = "A") -> Path:
    """A PDB file with one chain made of copies of ``residues``."""
    st = gemmi.Structure()
    st.cell = gemmi.UnitCell(1, 1, 1, 90, 90, 90)
    model = gemmi.Model("1")
    ch = gemmi.Chain(chain)
    for r in residues:
        ch.add_residue(r)
    model.add_chain(ch)
    st.add_model(model)
    st.setup_entities()
    st.write_pdb(str(path))
    return path


def write_source(folder: Path, entries: int = 6, chains: int = 2, residues: int = 9) -> Path:
    """``entries`` PDB entries (``9x00`` …), each split over ``chains`` files ``9xNN_C.pdb`` of ``residues``
    consecutive residues cut from one real chain: several files per entry, as in ../shared/data/pdb."""
    folder.mkdir(parents=True, exist_ok=True)
    pool = protein_residues()
    start = 0
    for e in range(entries):
        for c in range(chains):
            piece = pool[start : start + residues]
            start += residues
            write_chain(folder / f"9x{e:02d}_{'AB'[c % 2]}{c // 2 or ''}.pdb", piece, "AB"[c % 2])
    return folder


NACL = """data_NaCl
_cell_length_a 5.64
_cell_length_b 5.64
_cell_length_c 5.64
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'F m -3 m'
loop_
_symmetry_equiv_pos_as_xyz
x,y,z
x,y+1/2,z+1/2
x+1/2,y,z+1/2
x+1/2,y+1/2,z
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Na1 Na 0 0 0
Cl1 Cl 0.5 0.5 0.5
"""

CSCL = """data_CsCl
_cell_length_a 4.12
_cell_length_b 4.12
_cell_length_c 4.12
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_symmetry_equiv_pos_as_xyz
x,y,z
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Cs1 Cs 0 0 0
Cl1 Cl 0.5 0.5 0.5
"""

TRICLINIC = """data_tri
_cell_length_a 6.1
_cell_length_b 5.2
_cell_length_c 7.3
_cell_angle_alpha 80
_cell_angle_beta 95
_cell_angle_gamma 105
_symmetry_space_group_name_H-M 'P 1'
loop_
_symmetry_equiv_pos_as_xyz
x,y,z
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Si1 Si 0.1 0.2 0.3
O1 O 0.4 0.25 0.35
O2 O 0.15 0.6 0.7
"""


def write_crystals(folder: Path) -> Path:
    """Three small-molecule CIFs (NaCl, CsCl and a triclinic SiO2-like cell)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("nacl", NACL), ("cscl", CSCL), ("tri", TRICLINIC)):
        (folder / f"{name}.cif").write_text(text)
    return folder
