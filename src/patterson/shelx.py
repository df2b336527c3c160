"""SHELX instruction files (.ins/.res) as read: the cards that describe the crystal (CELL, LATT, SYMM, SFAC, UNIT,
HKLF) and the atoms up to HKLF/END, with SHELX's free variables, fixed parameters and riding U decoded.

:mod:`patterson.structures` turns the atoms into :class:`~patterson.structures.Atoms` of the whole cell; the
reflection readers of :mod:`patterson.solving` take the cell, symmetry and contents from here. Writing a ``.res`` of a
solution is :mod:`patterson.solving.shelx`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import gemmi
import numpy as np

from patterson.errors import PattersonError

# LATT |n| → centring translations (n > 0 adds the inversion)
SHELX_CENTRING = {
    1: [], 2: [(0.5, 0.5, 0.5)], 3: [(2 / 3, 1 / 3, 1 / 3), (1 / 3, 2 / 3, 2 / 3)],
    4: [(0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)], 5: [(0, 0.5, 0.5)], 6: [(0.5, 0, 0.5)], 7: [(0.5, 0.5, 0)],
}  # fmt: skip
# instructions that are not atoms (the first four letters of a card)
_SHELX_CARDS = set(
    "TITL CELL ZERR LATT SYMM SFAC UNIT DISP LAUE REM MORE TIME END HKLF OMIT SHEL BASF TWIN EXTI SWAT HOPE MERG "
    "SPEC RESI MOVE ANIS AFIX HFIX FRAG FEND EXYZ EADP EQIV CONN PART BIND FREE DFIX DANG BUMP SAME SADI CHIV "
    "FLAT DELU SIMU DEFS ISOR NCSY SUMP L.S. CGLS BLOC DAMP STIR WGHT FVAR BOND CONF MPLA RTAB HTAB LIST ACTA "
    "SIZE TEMP WPDB FMAP GRID PLAN MOLE ABIN ANSC ANSR NOTR NEUT TWST RIGU XNPD SHEL PRIG WIGL BEDE LONE".split()
)
_TERM = re.compile(r"([+-]?)\s*(\d+(?:\.\d*)?(?:/\d+)?|\.\d+)?\s*\*?\s*([xyz])?", re.I)


def _fraction(text: str) -> float:
    """'1/2' → 0.5, '0.25' → 0.25."""
    if "/" in text:
        a, b = text.split("/")
        return float(a) / float(b)
    return float(text)


def parse_symm(text: str) -> tuple[np.ndarray, np.ndarray]:
    """A SHELX SYMM card (``-X, 0.5+Y, -Z``) → (3, 3) integer rotation and (3,) translation."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise PattersonError(f"SYMM {text!r}: need three comma-separated expressions")
    rot, tran = np.zeros((3, 3), dtype=np.int64), np.zeros(3)
    for row, expr in enumerate(parts):
        pos, compact = 0, expr.replace(" ", "")
        while pos < len(compact):
            m = _TERM.match(compact, pos)
            if not m or m.end() == pos or not (m.group(2) or m.group(3)):
                raise PattersonError(f"SYMM {text!r}: cannot read {compact[pos:]!r}")
            coef = (-1.0 if m.group(1) == "-" else 1.0) * (_fraction(m.group(2)) if m.group(2) else 1.0)
            if m.group(3):
                rot[row, "xyz".index(m.group(3).lower())] += int(round(coef))
            else:
                tran[row] += coef
            pos = m.end()
    return rot, tran


def symmetry_op(rot: np.ndarray, tran: np.ndarray) -> gemmi.Op:
    """A rotation and fractional translation as a gemmi operator (in its units of 1/24)."""
    op = gemmi.Op()
    op.rot = (np.asarray(rot, dtype=np.int64) * op.DEN).tolist()
    op.tran = [int(round(t * op.DEN)) % op.DEN for t in np.asarray(tran, dtype=np.float64)]
    return op


def shelx_group(latt: int, symm: list[gemmi.Op], source: str) -> gemmi.SpaceGroup:
    """The space group that LATT and the SYMM cards generate (identity implied), as gemmi tabulates it; one line
    when they do not close into a space group."""
    if abs(latt) not in SHELX_CENTRING:
        raise PattersonError(f"{source}: LATT {latt} is not a SHELX lattice type (±1 to ±7)")
    ops = [gemmi.Op("x,y,z"), *symm]
    ops += [symmetry_op(np.eye(3, dtype=np.int64), np.array(t)) for t in SHELX_CENTRING[abs(latt)]]
    if latt > 0:
        ops.append(gemmi.Op("-x,-y,-z"))
    try:
        group_ops = gemmi.GroupOps(ops)
        group_ops.add_missing_elements()
        sg = gemmi.find_spacegroup_by_ops(group_ops)
    except (RuntimeError, ValueError) as exc:
        raise PattersonError(f"{source}: LATT/SYMM do not form a space group ({str(exc).splitlines()[0]})") from None
    if sg is None:
        raise PattersonError(f"{source}: LATT {latt} with these SYMM cards is no tabulated space group; check them")
    return sg


@dataclass(frozen=True)
class ShelxFile:
    """What a SHELX .ins/.res says of the crystal, and its atoms (up to HKLF or END).

    cell : (a, b, c, alpha, beta, gamma) in Å and degrees, or None without a CELL card; wavelength in Å.
    symm : (rotation (3, 3), translation (3,)) of each SYMM card; sfac/unit: the elements and their counts per cell.
    atoms : (name, element, fractional (3,), SHELX site occupancy, U_eq Å²) as written (asymmetric unit).
    """

    source: str
    cell: tuple[float, ...] | None = None
    wavelength: float | None = None
    latt: int = 1
    symm: tuple = ()
    sfac: tuple[str, ...] = ()
    unit: tuple[float, ...] = ()
    hklf: int | None = None
    atoms: tuple = ()

    @property
    def composition(self) -> dict[str, float] | None:
        """Atoms per unit cell by element (SFAC/UNIT), or None without UNIT."""
        return dict(zip(self.sfac, self.unit, strict=True)) if self.sfac and self.unit else None

    def group(self) -> gemmi.SpaceGroup:
        """The space group of LATT and SYMM."""
        return shelx_group(self.latt, [symmetry_op(r, t) for r, t in self.symm], self.source)


def _free_variable(value: float, fvar: list[float]) -> float:
    """A SHELX parameter 10 m + p: p fixed (m = ±1), p × fv(m) (m > 1), p × (fv(-m) − 1) (m < -1), else free."""
    if not math.isfinite(value):
        return value  # refused with the atom's name once the atoms are read
    m = int(round(value / 10))
    p = value - 10 * m
    if m == 0:
        return value
    if abs(m) == 1:
        return p
    if abs(m) > len(fvar):
        raise PattersonError(f"free variable {abs(m)} is used but FVAR gives only {len(fvar)}")
    return p * fvar[m - 1] if m > 1 else p * (fvar[-m - 1] - 1)


def _u_equivalent(u6: list[float], cell: gemmi.UnitCell) -> float:
    """U_eq (Å²) of anisotropic U11 U22 U33 U23 U13 U12: a third of the trace of the Cartesian tensor."""
    u11, u22, u33, u23, u13, u12 = u6
    u = np.array([[u11, u12, u13], [u12, u22, u23], [u13, u23, u33]])
    n = np.diag([cell.reciprocal().a, cell.reciprocal().b, cell.reciprocal().c])
    orth = np.array(cell.orth.mat)
    return float(np.trace(orth @ n @ u @ n @ orth.T) / 3)


def _header_card(card: str, words: list[str], line: str, kw: dict) -> None:
    """Record one header card of a SHELX file in ``kw`` (the fields of :class:`ShelxFile`)."""
    if card == "CELL":
        kw["wavelength"], kw["cell"] = float(words[1]), tuple(float(w) for w in words[2:8])
        if len(kw["cell"]) != 6:
            raise ValueError("six numbers needed")
    elif card == "LATT":
        kw["latt"] = int(words[1])
    elif card == "SYMM":
        kw["symm"] = (*kw.get("symm", ()), parse_symm(line.split(None, 1)[1]))
    elif card == "SFAC":
        kw["sfac"] = (*kw.get("sfac", ()), *(w.capitalize() for w in words[1:] if w.isalpha()))
    elif card == "UNIT":
        kw["unit"] = (*kw.get("unit", ()), *(float(w) for w in words[1:]))
    elif card == "HKLF":
        kw["hklf"] = int(float(words[1]))


def _atom_record(words: list[str], kw: dict, fvar: list[float], last_u: float) -> tuple:
    """(name, element, fractional, occupancy, U_eq) of one atom line: NAME SFAC x y z [sof [U | U11 … U12]]."""
    sfac = kw.get("sfac", ())
    number = int(words[1])
    if not 1 <= number <= len(sfac):
        raise ValueError(f"SFAC number {number}, but SFAC names {len(sfac)} element(s)")
    xyz = np.array([_free_variable(float(w), fvar) for w in words[2:5]])
    sof = _free_variable(float(words[5]), fvar) if len(words) > 5 else 1.0
    us = [float(w) for w in words[6:12]]
    if len(us) == 6:
        u = _u_equivalent([_free_variable(v, fvar) for v in us], gemmi.UnitCell(*kw["cell"]))
    elif us and us[0] < 0:
        u = -us[0] * last_u  # riding: a multiple of the previous atom's U_eq
    else:
        u = _free_variable(us[0], fvar) if us else 0.05
    return words[0], sfac[number - 1], xyz, sof, u


def read_shelx(text: str, source: str) -> ShelxFile:
    """Parse a SHELX .ins/.res: the crystal's cards and the atoms before HKLF/END; one line for a bad card, a
    UNIT that does not give one number per SFAC element, or an element gemmi does not know."""
    text = re.sub(r"=[ \t]*\r?\n", " ", text)  # continuation lines
    kw: dict = {"source": source}
    atoms, fvar, last_u, in_atoms = [], [], 0.05, True
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or line[0] in " \t":
            continue
        card = words[0].upper()[:4]
        try:
            if card in ("HKLF", "END"):
                in_atoms = False
            if card == "FVAR":
                fvar += [float(w) for w in words[1:]]
            elif card in _SHELX_CARDS:
                _header_card(card, words, line, kw)
            elif in_atoms and len(words) >= 5 and "cell" in kw:
                atoms.append(_atom_record(words, kw, fvar, last_u))
                last_u = atoms[-1][4] if atoms[-1][1] != "H" else last_u
        except (ValueError, IndexError, TypeError, PattersonError) as exc:
            raise PattersonError(f"{source}: line {n}: cannot read {line.strip()[:60]!r} ({exc})") from None
    head = ShelxFile(**kw, atoms=tuple(atoms))
    if head.unit and len(head.unit) != len(head.sfac):
        raise PattersonError(f"{source}: UNIT gives {len(head.unit)} number(s) for {len(head.sfac)} SFAC element(s) "
                             f"({' '.join(head.sfac)}); give one count per element")  # fmt: skip
    unknown = [e for e in head.sfac if gemmi.Element(e).atomic_number == 0]
    if unknown:
        raise PattersonError(f"{source}: SFAC names an unknown element {unknown[0]!r}")
    return head
