"""A SHELX .res of a solution: the cell, symmetry (LATT/SYMM), SFAC/UNIT and the atoms (refined ones, or peaks
with the elements :func:`~patterson.solving.atoms.assign_elements` gave them), ready for SHELXL or Olex2 (rename it
.ins, put the .hkl beside it)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from patterson.cells import Cell
from patterson.solving.hydrogens import U_RATIO
from patterson.symmetry import SpaceGroup

_LATT_NUMBER = {"P": 1, "I": 2, "R": 3, "F": 4, "A": 5, "B": 6, "C": 7}
WAVELENGTH = 0.71073  # Å, Mo Kα, written when the file gave none


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


def res_text(
    cell: Cell,
    group: SpaceGroup,
    frac: np.ndarray,
    elements: np.ndarray,
    multiplicity: np.ndarray,
    u_iso: np.ndarray,
    composition: dict[str, float],
    heights: np.ndarray | None = None,
    title: str = "patterson solution",
    part: np.ndarray | None = None,
    riding=None,
) -> str:
    """The .res file as text: TITL, CELL, ZERR, LATT, SYMM, SFAC, UNIT, the atoms (name, SFAC number, x y z, site
    occupation 10 + multiplicity/K, U_iso Å²) in the order given, each of a disordered site's components in its
    ``part`` (PART 1, PART 2, then PART 0), sites without an element as Q peaks (with their height relative to the
    highest of ``heights``), HKLF 4, END. ``multiplicity`` (N,) is the occupancy × K (a minor component's share
    included). ``riding``: a :class:`~patterson.solving.atoms.Riding` whose hydrogens follow their parents in
    AFIX groups (U as −1.2 or −1.5 × the parent's, as SHELXL's HFIX writes them), where the SFAC names H."""
    k = len(group.rot)
    sfac = list(composition)
    latt, symm = latt_and_symm(group)
    cell_card = "CELL {:.5f} {:.4f} {:.4f} {:.4f} {:.3f} {:.3f} {:.3f}".format(WAVELENGTH, *cell.parameters)
    lines = [f"TITL {title} in {group.name}", cell_card, f"ZERR {max(1, k)} 0.001 0.001 0.001 0.01 0.01 0.01",
             f"LATT {latt}"]  # fmt: skip
    lines += [f"SYMM {card}" for card in symm]
    lines += ["SFAC " + " ".join(sfac), "UNIT " + " ".join(f"{composition[e]:g}" for e in sfac)]
    lines += ["L.S. 10", "FMAP 2", "PLAN 20"]
    counts: dict[str, int] = {}
    q_lines = []
    top = float(np.max(heights)) if heights is not None and len(heights) else 1.0
    current = 0
    for i, (x, y, zz) in enumerate(np.asarray(frac).reshape(-1, 3)):
        sof, u, e = 10.0 + multiplicity[i] / k, float(u_iso[i]), elements[i]
        if e is None or e not in sfac:
            rel = heights[i] / top if heights is not None else 0.0
            q_lines.append(f"Q{len(q_lines) + 1:<3d} 1 {x:9.5f} {y:9.5f} {zz:9.5f} {sof:9.5f} {u:.5f} {rel:.3f}")
            continue
        counts[e] = counts.get(e, 0) + 1
        name = f"{e}{counts[e]}"[:4]
        wanted = int(part[i]) if part is not None else 0
        if wanted != current:
            lines.append(f"PART {wanted}")
            current = wanted
        lines.append(f"{name:<4s} {sfac.index(e) + 1} {x:9.5f} {y:9.5f} {zz:9.5f} {sof:9.5f} {u:.5f}")
        if riding is not None and "H" in sfac:
            lines += _afix_lines(riding, i, name[len(e):], sfac.index("H") + 1)
    lines += (["PART 0"] if current else []) + q_lines + ["HKLF 4", "END", ""]
    return "\n".join(lines)


def _afix_lines(riding, parent: int, suffix: str, number: int) -> list[str]:
    """The AFIX group of the hydrogens riding on atom ``parent`` (named H + the parent's number, A, B, C when
    several), or no lines."""
    rows = np.flatnonzero(riding.parent == parent)
    if not len(rows):
        return []
    code = int(riding.afix[rows[0]])
    ratio = U_RATIO[code]
    lines = [f"AFIX {code}"]
    for n, j in enumerate(rows):
        name = f"H{suffix}{'ABC'[n] if len(rows) > 1 else ''}"[:4]
        x, y, zz = riding.frac[j]
        lines.append(f"{name:<4s} {number} {x:9.5f} {y:9.5f} {zz:9.5f} {10.0 + riding.occ[j]:9.5f} {-ratio:.5f}")
    return lines + ["AFIX 0"]
