"""Reflections as a file holds them (:class:`Reflections`), and what every reader shares: cells, space groups,
compositions, gzipped files."""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

import gemmi
import numpy as np

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.symmetry import SpaceGroup


@dataclass
class Reflections:
    """Reflections as a file holds them: hkl (N, 3) in any asymmetric unit, value (N,) amplitudes or intensities
    (NaN = missing), sigma (N,) or None, the cell, the rotation parts (K, 3, 3) of the space group's operators
    (x' = R x + t), and provenance; free (N,) bool: the reflections the file flags as its free set (an MTZ
    FreeR_flag/FREE column, mmCIF ``_refln.status`` 'f'), None when it flags none."""

    hkl: np.ndarray
    value: np.ndarray
    sigma: np.ndarray | None
    kind: str  # "amplitude" or "intensity"
    cell: Cell
    rotations: np.ndarray
    spacegroup: str
    source: str
    labels: tuple[str, ...]
    warnings: list[str] = field(default_factory=list)
    composition: dict[str, float] | None = None  # atoms per unit cell by element (SHELX SFAC/UNIT)
    free: np.ndarray | None = None
    free_label: str | None = None
    group: SpaceGroup | None = None  # every operator, translations and centring included
    wavelength: float | None = None  # Å, where the file says


def one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]


def spacegroup_rotations(name: str) -> tuple[str, np.ndarray]:
    """Hermann–Mauguin symbol (or number) → (gemmi's full symbol, (K, 3, 3) integer rotation matrices)."""
    group = SpaceGroup.of(name)
    return group.name, group.rot


def cell_from(values, source: str) -> Cell:
    try:
        return Cell.of(values)
    except PattersonError as exc:
        raise PattersonError(f"{source}: no usable cell ({exc}); give --cell a b c alpha beta gamma") from None


def parse_composition(text: str) -> dict[str, float]:
    """A unit-cell formula such as ``C12 N4 O4`` or ``C12N4O4S`` → {element: count}."""
    found = re.findall(r"([A-Z][a-z]?)\s*(\d*\.?\d*)", text.strip())
    if not found or "".join(e + n for e, n in found) != re.sub(r"\s+", "", text):
        raise PattersonError(f"cannot read the composition {text!r}; write the cell contents as e.g. 'C12 N4 O4'")
    out: dict[str, float] = {}
    for element, count in found:
        if gemmi.Element(element).atomic_number == 0:
            raise PattersonError(f"unknown element {element!r} in the composition {text!r}")
        out[element] = out.get(element, 0.0) + (float(count) if count else 1.0)
    return out


def open_binary(path: Path):
    """A file, or what a gzipped one (.gz) holds, for reading bytes."""
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


RADIATIONS = ("xray", "electron")
XRAY_WAVELENGTHS = (0.2, 3.0)  # Å: hard X-rays from Ag Kα (0.56) to Cr Kα (2.29), synchrotrons included
ELECTRON_WAVELENGTH_MAX = 0.1  # Å: electrons of 15 kV and more (0.0197 Å at 300 kV)


def radiation_for(wavelength: float | None, source: str, asked: str = "auto") -> str:
    """``xray`` or ``electron``: what was asked, else what the wavelength says (X-rays without one); one line for a
    wavelength that fits neither or an unknown name."""
    if asked != "auto":
        if asked not in RADIATIONS:
            raise PattersonError(f"unknown radiation {asked!r} (choose from auto, {', '.join(RADIATIONS)})")
        return asked
    if wavelength is None:
        return "xray"
    if 0 < wavelength <= ELECTRON_WAVELENGTH_MAX:
        return "electron"
    if XRAY_WAVELENGTHS[0] <= wavelength <= XRAY_WAVELENGTHS[1]:
        return "xray"
    raise PattersonError(
        f"{source}: a wavelength of {wavelength:g} Å fits neither X-rays "
        f"({XRAY_WAVELENGTHS[0]}–{XRAY_WAVELENGTHS[1]} Å) nor electrons (≤ {ELECTRON_WAVELENGTH_MAX} Å); "
        "fix the CELL card or give --radiation xray|electron"
    )
