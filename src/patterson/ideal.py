"""Ideal peptides from a sequence: a β-strand or an α-helix with standard geometry, for molecular replacement
(:mod:`patterson.phasing.placement`) and for building a placed fragment out (:mod:`patterson.phasing.building`).

A peptide is built atom by atom from internal coordinates (the natural extension reference frame, Parsons et al.
2005): Engh & Huber (1991) bond lengths and angles, a trans peptide (ω = 180°), one (φ, ψ) per residue ((−120°,
+130°) for a strand, (−57°, −47°) for a helix) and side-chain torsions χ. The builder is written in torch and is
differentiable in the torsions, so a model can be refined in torsion space. By default only the Cβ of each residue
but glycine is kept (a poly-alanine model, the usual search model for short peptides); ``side_chains=True`` gives
every non-hydrogen atom, in common rotamers.

Unlike the fragments of :mod:`patterson.structures` (windows cut from deposited chains for the datasets), these are
made from the sequence alone.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from patterson.errors import PattersonError
from patterson.structures import Atoms

log = logging.getLogger(__name__)

ONE_LETTER = {"A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU", "G": "GLY",
              "H": "HIS", "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE", "P": "PRO", "S": "SER",
              "T": "THR", "W": "TRP", "Y": "TYR", "V": "VAL"}  # fmt: skip
CONFORMATIONS = {"strand": (-120.0, 130.0), "helix": (-57.0, -47.0)}  # (φ, ψ) in degrees
BOND = {"N-CA": 1.458, "CA-C": 1.525, "C-N": 1.329, "C-O": 1.231, "C-OXT": 1.25, "CA-CB": 1.53}  # Å
ANGLE = {"N-CA-C": 111.2, "CA-C-N": 116.2, "C-N-CA": 121.7, "CA-C-O": 120.8, "N-CA-CB": 110.5}  # degrees
CB_TORSION = -122.6  # C–N–CA–CB of an L-amino acid, degrees
MAX_RESIDUES = 200
SC = tuple[str, str, tuple[str, str, str], float, float, int | None, float]
# side-chain atoms beyond CB: (name, element, (a, b, c) the atoms it hangs from, bond |c–x| Å, angle b–c–x, χ index
# (None: a fixed torsion), torsion offset): torsion a–b–c–x = χ + offset (Engh & Huber 1991, rounded)
_G = ("N", "CA", "CB")
_D = ("CA", "CB", "CG")
SIDE_CHAIN_GEOMETRY: dict[str, tuple[SC, ...]] = {
    "ALA": (), "GLY": (),
    "SER": (("OG", "O", _G, 1.417, 110.8, 0, 0.0),),
    "CYS": (("SG", "S", _G, 1.808, 113.8, 0, 0.0),),
    "VAL": (("CG1", "C", _G, 1.527, 110.7, 0, 0.0), ("CG2", "C", _G, 1.527, 110.4, 0, 120.0)),
    "THR": (("OG1", "O", _G, 1.433, 109.2, 0, 0.0), ("CG2", "C", _G, 1.521, 111.1, 0, -120.0)),
    "ILE": (("CG1", "C", _G, 1.527, 110.4, 0, 0.0), ("CG2", "C", _G, 1.527, 110.5, 0, -120.0),
            ("CD1", "C", ("CA", "CB", "CG1"), 1.52, 113.9, 1, 0.0)),
    "LEU": (("CG", "C", _G, 1.53, 116.1, 0, 0.0), ("CD1", "C", _D, 1.52, 110.3, 1, 0.0),
            ("CD2", "C", _D, 1.52, 110.6, 1, 120.0)),
    "MET": (("CG", "C", _G, 1.52, 114.0, 0, 0.0), ("SD", "S", _D, 1.81, 112.7, 1, 0.0),
            ("CE", "C", ("CB", "CG", "SD"), 1.79, 100.6, 2, 0.0)),
    "PRO": (("CG", "C", _G, 1.50, 104.5, 0, 0.0), ("CD", "C", _D, 1.51, 105.5, 1, 0.0)),
    "PHE": (("CG", "C", _G, 1.50, 113.8, 0, 0.0), ("CD1", "C", _D, 1.39, 120.7, 1, 0.0),
            ("CD2", "C", _D, 1.39, 120.7, 1, 180.0), ("CE1", "C", ("CB", "CG", "CD1"), 1.39, 120.7, None, 180.0),
            ("CE2", "C", ("CB", "CG", "CD2"), 1.39, 120.7, None, 180.0),
            ("CZ", "C", ("CG", "CD1", "CE1"), 1.39, 120.0, None, 0.0)),
    "TYR": (("CG", "C", _G, 1.51, 113.8, 0, 0.0), ("CD1", "C", _D, 1.39, 120.8, 1, 0.0),
            ("CD2", "C", _D, 1.39, 120.8, 1, 180.0), ("CE1", "C", ("CB", "CG", "CD1"), 1.39, 121.2, None, 180.0),
            ("CE2", "C", ("CB", "CG", "CD2"), 1.39, 121.2, None, 180.0),
            ("CZ", "C", ("CG", "CD1", "CE1"), 1.38, 119.6, None, 0.0),
            ("OH", "O", ("CD1", "CE1", "CZ"), 1.38, 119.9, None, 180.0)),
    "TRP": (("CG", "C", _G, 1.50, 114.1, 0, 0.0), ("CD1", "C", _D, 1.37, 127.0, 1, 0.0),
            ("CD2", "C", _D, 1.43, 126.6, 1, 180.0), ("NE1", "N", ("CB", "CG", "CD1"), 1.38, 110.2, None, 180.0),
            ("CE2", "C", ("CB", "CG", "CD2"), 1.41, 107.2, None, 180.0),
            ("CE3", "C", ("CB", "CG", "CD2"), 1.40, 133.9, None, 0.0),
            ("CZ2", "C", ("CG", "CD2", "CE2"), 1.40, 122.4, None, 180.0),
            ("CZ3", "C", ("CG", "CD2", "CE3"), 1.39, 118.7, None, 180.0),
            ("CH2", "C", ("CD2", "CE2", "CZ2"), 1.37, 117.5, None, 0.0)),
    "HIS": (("CG", "C", _G, 1.50, 113.7, 0, 0.0), ("ND1", "N", _D, 1.38, 122.7, 1, 0.0),
            ("CD2", "C", _D, 1.36, 131.0, 1, 180.0), ("CE1", "C", ("CB", "CG", "ND1"), 1.32, 109.0, None, 180.0),
            ("NE2", "N", ("CB", "CG", "CD2"), 1.37, 107.0, None, 180.0)),
    "ASN": (("CG", "C", _G, 1.52, 112.6, 0, 0.0), ("OD1", "O", _D, 1.23, 120.8, 1, 0.0),
            ("ND2", "N", _D, 1.33, 116.4, 1, 180.0)),
    "ASP": (("CG", "C", _G, 1.52, 112.6, 0, 0.0), ("OD1", "O", _D, 1.25, 119.2, 1, 0.0),
            ("OD2", "O", _D, 1.25, 118.2, 1, 180.0)),
    "GLN": (("CG", "C", _G, 1.52, 114.0, 0, 0.0), ("CD", "C", _D, 1.52, 112.6, 1, 0.0),
            ("OE1", "O", ("CB", "CG", "CD"), 1.23, 120.8, 2, 0.0),
            ("NE2", "N", ("CB", "CG", "CD"), 1.33, 116.4, 2, 180.0)),
    "GLU": (("CG", "C", _G, 1.52, 114.0, 0, 0.0), ("CD", "C", _D, 1.52, 112.6, 1, 0.0),
            ("OE1", "O", ("CB", "CG", "CD"), 1.25, 119.0, 2, 0.0),
            ("OE2", "O", ("CB", "CG", "CD"), 1.25, 118.1, 2, 180.0)),
    "LYS": (("CG", "C", _G, 1.52, 114.0, 0, 0.0), ("CD", "C", _D, 1.52, 111.5, 1, 0.0),
            ("CE", "C", ("CB", "CG", "CD"), 1.52, 111.5, 2, 0.0),
            ("NZ", "N", ("CG", "CD", "CE"), 1.49, 111.9, 3, 0.0)),
    "ARG": (("CG", "C", _G, 1.52, 114.0, 0, 0.0), ("CD", "C", _D, 1.52, 111.5, 1, 0.0),
            ("NE", "N", ("CB", "CG", "CD"), 1.46, 112.0, 2, 0.0),
            ("CZ", "C", ("CG", "CD", "NE"), 1.33, 124.5, 3, 0.0),
            ("NH1", "N", ("CD", "NE", "CZ"), 1.33, 120.0, None, 0.0),
            ("NH2", "N", ("CD", "NE", "CZ"), 1.33, 120.0, None, 180.0)),
}  # fmt: skip
# the usual χ (degrees) of the ideal model: gauche− χ1, trans χ2..χ4 of chains, χ2 = 90° of rings and amides
DEFAULT_CHI = {"PHE": (-60.0, 90.0), "TYR": (-60.0, 90.0), "TRP": (-60.0, 90.0), "HIS": (-60.0, 90.0),
               "ASN": (-60.0, -20.0), "ASP": (-60.0, -20.0), "GLN": (-60.0, 180.0, -20.0), "GLU": (-60.0, 180.0, -20.0),
               "PRO": (30.0, -35.0)}  # fmt: skip
N_CHI = {name: 1 + max((a[5] for a in atoms if a[5] is not None), default=-1) for name, atoms in
         SIDE_CHAIN_GEOMETRY.items()}  # fmt: skip


def parse_sequence(sequence: str) -> str:
    """The one-letter sequence in capitals, spaces and dashes removed; a letter that is no standard residue, or an
    empty or over-long sequence, is a one-line PattersonError."""
    if not isinstance(sequence, str):
        raise PattersonError(f"a sequence must be text of one-letter residue codes, got {sequence!r}")
    seq = "".join(sequence.split()).replace("-", "").upper()
    bad = sorted({c for c in seq if c not in ONE_LETTER})
    if bad:
        raise PattersonError(f"sequence {sequence!r}: {', '.join(map(repr, bad))} is not a standard residue "
                             f"(one-letter codes: {''.join(sorted(ONE_LETTER))})")  # fmt: skip
    if not seq:
        raise PattersonError("an empty sequence: give one-letter residue codes such as LVHSSN")
    if len(seq) > MAX_RESIDUES:
        raise PattersonError(f"a sequence of {len(seq)} residues: at most {MAX_RESIDUES} for an ideal fragment")
    return seq


DENSEST_A3 = 12.0  # Å³ per non-H atom: denser than any peptide crystal (5E5Z: about 18 with its waters)


def heavy_atoms(sequence: str) -> int:
    """Non-hydrogen atoms of a peptide (N, CA, C, O and the side chains, one OXT)."""
    seq = parse_sequence(sequence)
    return sum(4 + (c != "G") + len(SIDE_CHAIN_GEOMETRY[ONE_LETTER[c]]) for c in seq) + 1


def check_fits(sequence: str, volume_asu: float) -> None:
    """A one-line PattersonError where the peptide cannot fit in an asymmetric unit of ``volume_asu`` Å³: its
    non-H atoms at :data:`DENSEST_A3` Å³ each would need more."""
    n = heavy_atoms(sequence)
    if n * DENSEST_A3 > volume_asu:
        raise PattersonError(f"sequence {sequence}: {n} non-H atoms need at least {n * DENSEST_A3:.0f} Å³, but the "
                             f"asymmetric unit of this cell holds {volume_asu:.0f} Å³; give the residues of one "
                             "asymmetric unit")  # fmt: skip


def place_atom(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, bond: float, angle_deg: float,
               torsion_rad: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """(3,) the atom d with |cd| = ``bond``, angle b–c–d (degrees) and torsion a–b–c–d (radians, IUPAC sign) from
    the atoms a, b, c (3,) each: the natural extension reference frame; differentiable in every argument."""
    bc = (c - b) / torch.linalg.vector_norm(c - b)
    n = torch.linalg.cross(b - a, bc)
    n = n / torch.linalg.vector_norm(n)
    m = torch.linalg.cross(n, bc)
    theta = math.radians(angle_deg)
    torsion_rad = torch.as_tensor(torsion_rad, dtype=a.dtype)
    return c + bond * (-math.cos(theta) * bc + math.sin(theta) * (torch.cos(torsion_rad) * m
                                                                    + torch.sin(torsion_rad) * n))  # fmt: skip


@dataclass(frozen=True)
class PeptideTopology:
    """The atoms a peptide is built with: its sequence, the names (N,) and elements (N,) of its atoms in building
    order, the residue label ("A:LEU:1") and index of each, and how many χ each residue has."""

    sequence: str
    names: tuple[str, ...]
    elements: tuple[str, ...]
    labels: tuple[str, ...]
    residue: np.ndarray
    n_chi: tuple[int, ...]
    side_chains: bool


def topology(sequence: str, side_chains: bool = False) -> PeptideTopology:
    """The atoms :func:`build_peptide` makes for ``sequence``: per residue N, CA, C, O, CB (not for glycine), its
    other side-chain atoms when ``side_chains``, and OXT at the end."""
    seq = parse_sequence(sequence)
    names, elements, labels, residue = [], [], [], []
    for i, code in enumerate(seq):
        res = ONE_LETTER[code]
        atoms = [("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O")] + ([("CB", "C")] if res != "GLY" else [])
        if side_chains:
            atoms += [(a[0], a[1]) for a in SIDE_CHAIN_GEOMETRY[res]]
        if i == len(seq) - 1:
            atoms.append(("OXT", "O"))
        names += [a[0] for a in atoms]
        elements += [a[1] for a in atoms]
        labels += [f"A:{res}:{i + 1}"] * len(atoms)
        residue += [i] * len(atoms)
    n_chi = tuple(N_CHI[ONE_LETTER[c]] if side_chains else 0 for c in seq)
    return PeptideTopology(seq, tuple(names), tuple(elements), tuple(labels), np.array(residue), n_chi, side_chains)


def _main_chain(phi: torch.Tensor, psi: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """N, CA, C of R + 1 residues (the last one gives the C terminus its plane), residue i at (φ_i, ψ_i), ω = 180°;
    the first residue's N, CA, C in a fixed frame."""
    dtype = phi.dtype
    t = math.radians(180.0 - ANGLE["N-CA-C"])
    first = (
        torch.zeros(3, dtype=dtype),
        torch.tensor([BOND["N-CA"], 0.0, 0.0], dtype=dtype),
        torch.tensor([BOND["N-CA"] + BOND["CA-C"] * math.cos(t), BOND["CA-C"] * math.sin(t), 0.0], dtype=dtype),
    )
    chain = [first]
    pi = torch.tensor(math.pi, dtype=dtype)
    for i in range(len(phi)):
        n, ca, c = chain[-1]
        n1 = place_atom(n, ca, c, BOND["C-N"], ANGLE["CA-C-N"], psi[i])
        ca1 = place_atom(ca, c, n1, BOND["N-CA"], ANGLE["C-N-CA"], pi)
        c1 = place_atom(c, n1, ca1, BOND["CA-C"], ANGLE["N-CA-C"], phi[i + 1] if i + 1 < len(phi) else phi[i])
        chain.append((n1, ca1, c1))
    return chain  # fmt: skip


def build_peptide(top: PeptideTopology, phi: torch.Tensor, psi: torch.Tensor, chi: torch.Tensor) -> torch.Tensor:
    """(N, 3) Cartesian coordinates (Å) of the atoms of ``top`` from the torsions in radians: φ (R,), ψ (R,) and
    χ (R, 4) (unused entries ignored); differentiable in all of them. The first residue's φ is not used."""
    chain = _main_chain(phi, psi)
    pi = torch.tensor(math.pi, dtype=phi.dtype)
    out = []
    for i, code in enumerate(top.sequence):
        res = ONE_LETTER[code]
        n, ca, c = chain[i]
        atoms = {"N": n, "CA": ca, "C": c}
        atoms["O"] = place_atom(chain[i + 1][0], ca, c, BOND["C-O"], ANGLE["CA-C-O"], pi)
        if res != "GLY":
            cb_torsion = torch.tensor(math.radians(CB_TORSION), dtype=phi.dtype)
            atoms["CB"] = place_atom(c, n, ca, BOND["CA-CB"], ANGLE["N-CA-CB"], cb_torsion)
        if top.side_chains:
            for name, _, (a, b, p), bond, angle, k, offset in SIDE_CHAIN_GEOMETRY[res]:
                torsion = (chi[i, k] if k is not None else 0.0) + math.radians(offset)
                atoms[name] = place_atom(atoms[a], atoms[b], atoms[p], bond, angle, torsion)
        if i == len(top.sequence) - 1:
            atoms["OXT"] = place_atom(n, ca, c, BOND["C-OXT"], ANGLE["CA-C-N"], psi[i])
        out += [atoms[name] for name, r in zip(top.names, top.residue, strict=True) if r == i]
    return torch.stack(out)


def default_torsions(top: PeptideTopology, conformation: str = "strand") -> tuple[torch.Tensor, ...]:
    """φ (R,), ψ (R,) and χ (R, 4) in radians (float64) of the ideal model: every residue at the conformation's
    (φ, ψ), χ as :data:`DEFAULT_CHI` (else −60°, then 180°)."""
    if conformation not in CONFORMATIONS:
        raise PattersonError(f"unknown conformation {conformation!r} (choose from {', '.join(CONFORMATIONS)})")
    n_res = len(top.sequence)
    phi0, psi0 = CONFORMATIONS[conformation]
    chi = np.zeros((n_res, 4))
    for i, code in enumerate(top.sequence):
        given = DEFAULT_CHI.get(ONE_LETTER[code], (-60.0,))
        chi[i] = [given[k] if k < len(given) else (-60.0 if k == 0 else 180.0) for k in range(4)]
    as_rad = lambda v: torch.as_tensor(np.radians(v), dtype=torch.float64)  # noqa: E731
    return as_rad(np.full(n_res, phi0)), as_rad(np.full(n_res, psi0)), as_rad(chi)


@dataclass(frozen=True)
class IdealPeptide:
    """An ideal peptide: ``atoms`` (Cartesian Å centred on the origin, elements, B, occupancy, residue labels
    "A:LEU:1"), the atom names (N,) in PDB spelling, the sequence and the conformation it was built in."""

    atoms: Atoms
    names: np.ndarray
    sequence: str
    conformation: str

    def pdb_text(self) -> str:
        """The atoms as PDB ATOM records (chain A, residues numbered from 1)."""
        return pdb_text(self.atoms, self.names)


def pdb_text(atoms: Atoms, names) -> str:
    """Atoms with residue labels "A:LEU:1" and atom names as PDB ATOM records (no CRYST1)."""
    lines = []
    for i, (xyz, element, name, label) in enumerate(zip(atoms.xyz, atoms.elements, names, atoms.residues,
                                                        strict=True), start=1):  # fmt: skip
        chain, resname, seqid = label.split(":")
        name = f" {name:<3s}" if len(name) < 4 else name
        lines.append(f"ATOM  {i:5d} {name} {resname:3s} {chain}{int(seqid):4d}    {xyz[0]:8.3f}{xyz[1]:8.3f}"
                     f"{xyz[2]:8.3f}{atoms.occ[i - 1]:6.2f}{atoms.b_iso[i - 1]:6.2f}"
                     f"          {element:>2s}")  # fmt: skip
    return "\n".join(lines + ["END", ""])


def ideal_peptide(sequence: str, conformation: str = "strand", b_iso: float = 20.0,
                  side_chains: bool = False) -> IdealPeptide:  # fmt: skip
    """An ideal model of ``sequence`` in ``conformation`` (``strand`` or ``helix``): poly-alanine (glycines without
    Cβ) or, with ``side_chains``, every non-hydrogen atom; centred on the origin (mean of its atoms), every atom
    with B = ``b_iso`` Å² and occupancy 1."""
    top = topology(sequence, side_chains)
    with torch.no_grad():
        xyz = build_peptide(top, *default_torsions(top, conformation)).numpy()  # (N, 3)
    xyz = xyz - xyz.mean(axis=0)
    n_atoms = len(xyz)
    atoms = Atoms(xyz=xyz, elements=np.array(top.elements), b_iso=np.full(n_atoms, float(b_iso)),
                  occ=np.ones(n_atoms), source=f"ideal {conformation} {top.sequence}",
                  residues=np.array(top.labels))  # fmt: skip
    log.debug("ideal %s of %s: %d atoms", conformation, top.sequence, n_atoms)
    return IdealPeptide(atoms, np.array(top.names), top.sequence, conformation)


def ideal_strand(sequence: str, b_iso: float = 20.0, side_chains: bool = False) -> IdealPeptide:
    """An ideal β-strand (φ, ψ = −120°, +130°) of ``sequence``: see :func:`ideal_peptide`."""
    return ideal_peptide(sequence, "strand", b_iso, side_chains)


def ideal_helix(sequence: str, b_iso: float = 20.0, side_chains: bool = False) -> IdealPeptide:
    """An ideal α-helix (φ, ψ = −57°, −47°) of ``sequence``: see :func:`ideal_peptide`."""
    return ideal_peptide(sequence, "helix", b_iso, side_chains)


def dihedral(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> float:
    """The torsion a–b–c–d in degrees (IUPAC sign, −180 to 180)."""
    b0, b1, b2 = a - b, c - b, d - c
    b1 = b1 / np.linalg.norm(b1)
    v = b0 - (b0 @ b1) * b1
    w = b2 - (b2 @ b1) * b1
    return float(np.degrees(np.arctan2(np.cross(b1, v) @ w, v @ w)))
