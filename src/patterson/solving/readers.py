"""Reading reflection files: MTZ, SF-mmCIF and SHELX HKLF 3/4 with .ins/.res (cell, LATT, SYMM)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import gemmi
import numpy as np

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.solving.reflections import Reflections, cell_from, one_line, open_binary, spacegroup_rotations
from patterson.solving.shelx_data import carries_small_molecule_reflections, read_shelx_hkl, read_small_cif
from patterson.symmetry import SpaceGroup, check_cell

log = logging.getLogger(__name__)


# MTZ labels of computed (not observed) coefficients: never chosen automatically
_COMPUTED = re.compile(r"^(FC|FWT|DELFWT|PH|2FOFC|FOFC|F-?MODEL|FPART|FMASK|FDIFF|FAN|DANO|FOM|HL)", re.I)
# SF-mmCIF _refln items: (amplitude, intensity) groups, each (value, sigma)
_CIF_AMPLITUDES = (("F_meas_au", "F_meas_sigma_au"), ("F_meas", "F_meas_sigma"))
_CIF_INTENSITIES = (("intensity_meas", "intensity_sigma"), ("F_squared_meas", "F_squared_sigma"))
_CIF_ANOMALOUS = (("pdbx_F_plus", "pdbx_F_minus", "F"), ("pdbx_I_plus", "pdbx_I_minus", "I"))


def read_reflections(
    path: str | Path,
    columns: str | None = None,
    cell: tuple[float, ...] | None = None,
    spacegroup: str | None = None,
    free_column: str | None = None,
) -> Reflections:
    """Read an MTZ, SF-mmCIF (.cif, .mmcif, .ent) or SHELX .hkl file; ``cell`` and ``spacegroup`` override the
    file's. ``columns`` is ``"LABEL[,SIGLABEL]"`` (MTZ labels or _refln items; for .hkl, ``F`` or ``I`` chooses
    HKLF 3 or 4 when no .ins says which). ``free_column`` names the MTZ free-flag column (default: the integer
    column whose label holds "free", e.g. FreeR_flag or FREE)."""
    path = Path(path)
    if not path.is_file():
        raise PattersonError(f"{path}: no such file")
    suffix = Path(path.name.lower().removesuffix(".gz")).suffix
    try:
        with open_binary(path) as fh:
            magic = fh.read(4)
    except (OSError, EOFError) as exc:
        raise PattersonError(f"{path}: cannot read ({one_line(exc)})") from None
    if free_column is not None and not (magic == b"MTZ " or suffix == ".mtz"):
        raise PattersonError(f"{path}: --free-column is for MTZ files (mmCIF flags come from _refln.status)")
    if magic == b"MTZ " or suffix == ".mtz":
        refl = _read_mtz(path, columns, free_column)
    elif suffix in (".cif", ".mmcif", ".ent", ".fcf") and carries_small_molecule_reflections(text := _text(path)):
        refl = read_small_cif(path, text)
    elif suffix in (".cif", ".mmcif", ".ent"):
        refl = _read_sf_cif(path, columns, text)
    elif suffix in (".hkl", ".hkl4", ".hkl3"):
        refl = read_shelx_hkl(path, columns, cell, spacegroup)
    else:
        raise PattersonError(f"{path}: unknown reflection file type {suffix!r}; give .mtz, .cif, .fcf or SHELX .hkl")
    if cell is not None:
        refl.cell = Cell.of(cell)
    if spacegroup is not None:
        refl.group = SpaceGroup.of(spacegroup)
    if refl.group is None and refl.spacegroup:
        refl.group = SpaceGroup.of(refl.spacegroup)
    if refl.group is not None:
        refl.spacegroup, refl.rotations = refl.group.name, refl.group.rot
        check_cell(refl.cell, refl.group, str(path))
    _check_resolution(refl, str(path))
    return refl


D_MIN_POSSIBLE = 0.2  # Å: no X-ray, neutron or electron data set reaches finer; reflections beyond it mean a wrong cell


def _check_resolution(refl: Reflections, source: str) -> None:
    """One line when the reflections reach beyond any measurable resolution in the cell: they contradict it."""
    d = refl.cell.d_spacing(refl.hkl[np.any(refl.hkl != 0, axis=1)])
    if len(d) and float(np.min(d)) < D_MIN_POSSIBLE:
        raise PattersonError(
            f"{source}: the reflections reach d = {float(np.min(d)):.3f} Å in the cell {refl.cell.text}: "
            "they contradict the cell (check the cell, or the hkl columns)"
        )


def _text(path: Path) -> str:
    """A text file's content, gzipped or not; one line when it cannot be read."""
    try:
        with open_binary(path) as fh:
            return fh.read().decode("utf-8", errors="replace")
    except (OSError, EOFError) as exc:
        raise PattersonError(f"{path}: cannot read ({one_line(exc)})") from None


def _pick(groups: list[list[tuple[str, ...]]], source: str, hint: str) -> tuple[str, ...]:
    """The only candidate of the first non-empty group, or a one-line error listing the candidates."""
    for group in groups:
        if len(group) == 1:
            return group[0]
        if len(group) > 1:
            names = ", ".join("/".join(c[:1] if c[1] is None else c[:2]) for c in group)
            raise PattersonError(f"{source}: several candidate columns ({names}); choose one with --columns {hint}")
    raise PattersonError(f"{source}: no amplitude or intensity column found; name one with --columns {hint}")


def free_from_flags(flags: np.ndarray) -> np.ndarray:
    """Which reflections a file's free-flag column marks free; (N,) bool, NaN counts as not free.

    Two values (0/1 flags): the rarer value is free, whichever convention wrote it (PHENIX and CNS flag the free set
    1, CCP4 programs that keep two groups flag it 0; a free set is always the smaller part). More values (CCP4
    ``FreeR_flag``, 0–19): 0 is free. One value: none is free.
    """
    flags = np.asarray(flags, dtype=np.float64)
    values, counts = np.unique(flags[np.isfinite(flags)], return_counts=True)
    if len(values) < 2:
        return np.zeros(len(flags), dtype=bool)
    if len(values) == 2:
        free_value = values[0] if counts[0] < counts[1] else values[1]  # a tie: the larger value (1) is free
    else:
        free_value = 0.0
    return np.isfinite(flags) & (flags == free_value)


def _mtz_free(mtz, path: Path, label: str | None) -> tuple[np.ndarray | None, str | None]:
    """The free set an MTZ flags: column ``label``, else the first integer column named like FreeR_flag/FREE."""
    types = {c.label: c.type for c in mtz.columns}
    if label is not None:
        if label not in types:
            raise PattersonError(f"{path}: no column {label!r} (columns: {', '.join(types)}); fix --free-column")
        if types[label] != "I":
            raise PattersonError(f"{path}: column {label!r} has MTZ type {types[label]}; a free flag has type I")
    else:
        found = [c for c, t in types.items() if t == "I" and "free" in c.lower()]
        if not found:
            return None, None
        label = found[0]
    return free_from_flags(np.array(mtz.column_with_label(label), dtype=np.float64)), label


def _read_mtz(path: Path, columns: str | None, free_column: str | None = None) -> Reflections:
    try:
        mtz = gemmi.read_mtz_file(str(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise PattersonError(f"{path}: unreadable MTZ file ({one_line(exc)}); is it truncated?") from None
    labels = [c.label for c in mtz.columns]
    types = {c.label: c.type for c in mtz.columns}

    def sigma_for(label: str, kinds: str) -> str | None:
        plain = label.replace("(", "").replace(")", "")
        for name in (f"SIG{label}", f"SIG{plain}", f"SIG{label.upper()}"):
            if types.get(name, "-") in kinds:
                return name
        i = labels.index(label)
        return labels[i + 1] if i + 1 < len(labels) and types[labels[i + 1]] in kinds else None

    def mate(label: str) -> str | None:
        other = label.replace("+", "-") if "+" in label else None
        return other if other in types else None

    if columns:
        parts = [p.strip() for p in columns.split(",") if p.strip()]
        for p in parts:
            if p not in types:
                raise PattersonError(f"{path}: no column {p!r} (columns: {', '.join(labels)}); fix --columns")
        label, kind = parts[0], types[parts[0]]
        if kind not in "FJGK":
            raise PattersonError(
                f"{path}: column {label!r} has MTZ type {kind}; --columns needs amplitudes (F) or intensities (J)"
            )
        sig = parts[1] if len(parts) > 1 else sigma_for(label, "QL")
        chosen = (label, sig)
    else:
        amps = [(c, sigma_for(c, "Q")) for c in labels if types[c] == "F" and not _COMPUTED.match(c)]
        ints = [(c, sigma_for(c, "Q")) for c in labels if types[c] == "J"]
        anom_f = [(c, sigma_for(c, "L")) for c in labels if types[c] == "G" and "+" in c and mate(c)]
        anom_i = [(c, sigma_for(c, "L")) for c in labels if types[c] == "K" and "+" in c and mate(c)]
        chosen = _pick([amps, ints, anom_f, anom_i], str(path), "F,SIGF")
    label, sig = chosen
    hkl = mtz.make_miller_array().astype(np.int64)
    value = np.array(mtz.column_with_label(label), dtype=np.float64)
    sigma = np.array(mtz.column_with_label(sig), dtype=np.float64) if sig else None
    used = [label] + ([sig] if sig else [])
    other = mate(label) if types[label] in "GK" else None
    if other:  # F(+)/F(−): the mean of those present (anomalous differences are ignored)
        v2 = np.array(mtz.column_with_label(other), dtype=np.float64)
        value = np.nanmean(np.stack([value, v2]), axis=0) if len(value) else value
        s2 = sigma_for(other, "L")
        if sigma is not None and s2:
            sigma = np.nanmean(np.stack([sigma, np.array(mtz.column_with_label(s2), dtype=np.float64)]), axis=0)
        used.insert(1, other)
    kind = "amplitude" if types[label] in "FG" else "intensity"
    cell = cell_from(mtz.cell.parameters, str(path))
    sg = mtz.spacegroup
    if sg is None:
        raise PattersonError(f"{path}: the MTZ has no space group; give --spacegroup")
    name, rots = spacegroup_rotations(sg.xhm())
    free, free_label = _mtz_free(mtz, path, free_column)
    refl = Reflections(hkl, value, sigma, kind, cell, rots, name, str(path), tuple(used))
    refl.free, refl.free_label = free, free_label
    return refl


def _read_sf_cif(path: Path, columns: str | None, text: str) -> Reflections:
    """An SF-mmCIF's reflections from its ``text`` (read once, gzipped or not, by :func:`read_reflections`)."""
    try:
        blocks = gemmi.as_refln_blocks(gemmi.cif.read_string(text))
    except (RuntimeError, ValueError, OSError) as exc:
        raise PattersonError(f"{path}: unreadable mmCIF file ({one_line(exc)}); is it truncated?") from None
    blocks = [b for b in blocks if b.default_loop is not None]
    if not blocks:
        raise PattersonError(f"{path}: no _refln loop with h, k, l; is this a structure-factor mmCIF?")
    rb = blocks[0]
    items = set(rb.column_labels())
    with_sigma = lambda v, s: (v, s if s in items else None)  # noqa: E731
    if columns:
        parts = [p.strip().removeprefix("_refln.") for p in columns.split(",") if p.strip()]
        for p in parts:
            if p not in items:
                raise PattersonError(f"{path}: no _refln.{p} (items: {', '.join(sorted(items))}); fix --columns")
        label = parts[0]
        sig = parts[1] if len(parts) > 1 else None
        known = {v: s for v, s in _CIF_AMPLITUDES + _CIF_INTENSITIES}
        sig = sig or (known.get(label) if known.get(label) in items else None)
        chosen = (label, sig)
    else:
        amps = [with_sigma(v, s) for v, s in _CIF_AMPLITUDES if v in items]
        ints = [with_sigma(v, s) for v, s in _CIF_INTENSITIES if v in items]
        anom = [[(p, None, m, k)] for p, m, k in _CIF_ANOMALOUS if p in items and m in items]
        groups = [amps, ints] + anom
        chosen = _pick(groups, str(path), "F_meas_au,F_meas_sigma_au")
    label = chosen[0]
    value = np.array(rb.make_float_array(label), dtype=np.float64)
    sigma = np.array(rb.make_float_array(chosen[1]), dtype=np.float64) if chosen[1] else None
    used = [x for x in chosen[:2] if x]
    if len(chosen) == 4:
        value = np.nanmean(np.stack([value, np.array(rb.make_float_array(chosen[2]), dtype=np.float64)]), axis=0)
        used.append(chosen[2])
    intensity_items = {v for v, _ in _CIF_INTENSITIES} | {"pdbx_I_plus", "pdbx_I_minus"}
    kind = "intensity" if label in intensity_items or label.lower().startswith(("intensity", "i_")) else "amplitude"
    cell = cell_from(rb.cell.parameters, str(path))
    if rb.spacegroup is None:
        raise PattersonError(
            f"{path}: the file names no space group (_symmetry.space_group_name_H-M); give --spacegroup"
        )
    name, rots = spacegroup_rotations(rb.spacegroup.xhm())
    refl = Reflections(
        rb.make_miller_array().astype(np.int64), value, sigma, kind, cell, rots, name, str(path), tuple(used)
    )
    if "status" in items:  # mmCIF: 'o' observed, 'f' free, '-' or 'x' unobserved
        status = [str(v).strip("'\"").lower() for v in rb.block.find_values("_refln.status")]
        if len(status) == len(value) and "f" in status:
            refl.free, refl.free_label = np.array([v == "f" for v in status]), "_refln.status"
    return refl
