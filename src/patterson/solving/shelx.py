"""A SHELX .res of a solution: the cell, symmetry (LATT/SYMM), SFAC/UNIT and the peaks as atoms, assigned to
elements by height, ready for SHELXL or Olex2 (rename it .ins, put the .hkl beside it)."""

from __future__ import annotations

from fractions import Fraction

import gemmi
import numpy as np

from patterson.cells import Cell
from patterson.symmetry import SpaceGroup

_LATT_NUMBER = {"P": 1, "I": 2, "R": 3, "F": 4, "A": 5, "B": 6, "C": 7}
WAVELENGTH = 0.71073  # Å, Mo Kα, written when the file gave none
U_ISO = 0.05  # Å², every atom's starting displacement


def latt_and_symm(group: SpaceGroup) -> tuple[int, list[str]]:
    """SHELX LATT (positive when the group holds the inversion at the origin) and the SYMM cards: the operators
    without their centring, without the identity and, for LATT > 0, without the ones the inversion generates."""
    sg = group.gemmi
    ops = sg.operations()
    centric = any(np.array_equal(np.array(op.rot) // op.DEN, -np.eye(3)) and not any(op.tran) for op in ops.sym_ops)
    latt = _LATT_NUMBER.get(sg.centring_type(), 1) * (1 if centric else -1)
    cards = []
    for op in ops.sym_ops:
        rot = np.array(op.rot) // op.DEN
        if np.array_equal(rot, np.eye(3)) or (centric and round(np.linalg.det(rot)) < 0):
            continue
        cards.append(_shelx_triplet(rot, np.array(op.tran) / op.DEN))
    return latt, cards


def _shelx_triplet(rot: np.ndarray, tran: np.ndarray) -> str:
    rows = []
    for r, t in zip(rot, tran, strict=True):
        frac = Fraction(float(t) % 1.0).limit_denominator(12)
        terms = [f"{frac}"] if frac else []
        terms += [f"{'-' if c < 0 else '+'}{'XYZ'[i]}" for i, c in enumerate(r) if c]
        rows.append("".join(terms).lstrip("+"))
    return ", ".join(rows)


def assign_elements(
    height: np.ndarray, multiplicity: np.ndarray, composition: dict[str, float] | None, n_expected: float
) -> list[str | None]:
    """An element per peak (highest first gets the heaviest), until each element's count in the cell is used up
    (a peak of multiplicity m uses m atoms); the rest get None (written as Q peaks). Without a composition the
    expected count of carbon equivalents is used."""
    composition = composition or {"C": max(1.0, round(n_expected))}
    left = sorted(composition.items(), key=lambda kv: -gemmi.Element(kv[0]).atomic_number)
    left = [[e, float(n)] for e, n in left]
    out: list[str | None] = [None] * len(height)
    for i in np.argsort(-np.asarray(height)):
        for slot in left:
            if slot[1] >= multiplicity[i] - 1e-6:
                out[i] = slot[0]
                slot[1] -= multiplicity[i]
                break
    return out


def res_text(
    cell: Cell,
    group: SpaceGroup,
    frac: np.ndarray,
    height: np.ndarray,
    multiplicity: np.ndarray,
    composition: dict[str, float] | None,
    n_expected: float,
    title: str = "patterson solution",
) -> str:
    """The .res file as text: TITL, CELL, ZERR, LATT, SYMM, SFAC, UNIT, the atoms (name, SFAC number, x y z,
    site occupation 10 + 1/site-symmetry order, U), the unassigned peaks as Q, HKLF 4, END."""
    k = len(group.rot)
    elements = assign_elements(height, multiplicity, composition, n_expected)
    sfac = list((composition or {}).keys()) or ["C"]
    unit = [composition[e] if composition else max(1.0, round(n_expected)) for e in sfac]
    latt, symm = latt_and_symm(group)
    z = max(1, k)
    lines = [f"TITL {title} in {group.name}", "CELL {:.5f} {:.4f} {:.4f} {:.4f} {:.3f} {:.3f} {:.3f}".format(
        WAVELENGTH, *cell.parameters), f"ZERR {z} 0.001 0.001 0.001 0.01 0.01 0.01", f"LATT {latt}"]  # fmt: skip
    lines += [f"SYMM {card}" for card in symm]
    lines += ["SFAC " + " ".join(sfac), "UNIT " + " ".join(f"{n:g}" for n in unit), "L.S. 10", "FMAP 2", "PLAN 20"]
    counts: dict[str, int] = {}
    q_lines = []
    top = float(np.max(height)) if len(height) else 1.0
    for i in np.argsort(-np.asarray(height)):
        x, y, zz = frac[i]
        sof = 10.0 + multiplicity[i] / k
        e = elements[i]
        if e is None:
            q_lines.append(f"Q{len(q_lines) + 1:<3d} 1 {x:9.5f} {y:9.5f} {zz:9.5f} {sof:9.5f} {U_ISO:.5f} "
                           f"{height[i] / top:.3f}")  # fmt: skip
            continue
        counts[e] = counts.get(e, 0) + 1
        name = f"{e}{counts[e]}"[:4]
        lines.append(f"{name:<4s} {sfac.index(e) + 1} {x:9.5f} {y:9.5f} {zz:9.5f} {sof:9.5f} {U_ISO:.5f}")
    lines += q_lines + ["HKLF 4", "END", ""]
    return "\n".join(lines)
