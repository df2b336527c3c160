"""Reading reflection files: MTZ, SF-mmCIF and SHELX HKLF 3/4 with .ins/.res (cell, LATT, SYMM)."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import gemmi
import numpy as np

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.phasing.symmetry import SpaceGroup, check_cell
from patterson.phasing.validation import free_from_flags
from patterson.structures import read_shelx, shelx_group, symmetry_op

log = logging.getLogger(__name__)


# MTZ labels of computed (not observed) coefficients: never chosen automatically
_COMPUTED = re.compile(r"^(FC|FWT|DELFWT|PH|2FOFC|FOFC|F-?MODEL|FPART|FMASK|FDIFF|FAN|DANO|FOM|HL)", re.I)
# SF-mmCIF _refln items: (amplitude, intensity) groups, each (value, sigma)
_CIF_AMPLITUDES = (("F_meas_au", "F_meas_sigma_au"), ("F_meas", "F_meas_sigma"))
_CIF_INTENSITIES = (("intensity_meas", "intensity_sigma"), ("F_squared_meas", "F_squared_sigma"))
_CIF_ANOMALOUS = (("pdbx_F_plus", "pdbx_F_minus", "F"), ("pdbx_I_plus", "pdbx_I_minus", "I"))


# --- reflections as read ---------------------------------------------------------------------------------------


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


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]


def spacegroup_rotations(name: str) -> tuple[str, np.ndarray]:
    """Hermann–Mauguin symbol (or number) → (gemmi's full symbol, (K, 3, 3) integer rotation matrices)."""
    group = SpaceGroup.of(name)
    return group.name, group.rot


def group_from_shelx(latt: int, symm: list[tuple[np.ndarray, np.ndarray]], source: str) -> SpaceGroup:
    """The space group that LATT and the SYMM cards ((rotation, translation) each) generate; one line when they do
    not close into a space group."""
    return SpaceGroup.of(shelx_group(latt, [symmetry_op(rot, tran) for rot, tran in symm], source))


def _cell_from(values, source: str) -> Cell:
    try:
        return Cell.of(values)
    except PattersonError as exc:
        raise PattersonError(f"{source}: no usable cell ({exc}); give --cell a b c alpha beta gamma") from None


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
    suffix = path.suffix.lower()
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if free_column is not None and not (magic == b"MTZ " or suffix == ".mtz"):
        raise PattersonError(f"{path}: --free-column is for MTZ files (mmCIF flags come from _refln.status)")
    if magic == b"MTZ " or suffix == ".mtz":
        refl = _read_mtz(path, columns, free_column)
    elif suffix in (".cif", ".mmcif", ".ent"):
        refl = _read_sf_cif(path, columns)
    elif suffix in (".hkl", ".hkl4", ".hkl3"):
        refl = _read_shelx(path, columns, cell, spacegroup)
    else:
        raise PattersonError(f"{path}: unknown reflection file type {suffix!r}; give an .mtz, .cif or SHELX .hkl file")
    if cell is not None:
        refl.cell = Cell.of(cell)
    if spacegroup is not None:
        refl.group = SpaceGroup.of(spacegroup)
    if refl.group is None and refl.spacegroup:
        refl.group = SpaceGroup.of(refl.spacegroup)
    if refl.group is not None:
        refl.spacegroup, refl.rotations = refl.group.name, refl.group.rot
        check_cell(refl.cell, refl.group, str(path))
    return refl


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


def _pick(groups: list[list[tuple[str, ...]]], source: str, hint: str) -> tuple[str, ...]:
    """The only candidate of the first non-empty group, or a one-line error listing the candidates."""
    for group in groups:
        if len(group) == 1:
            return group[0]
        if len(group) > 1:
            names = ", ".join("/".join(c[:1] if c[1] is None else c[:2]) for c in group)
            raise PattersonError(f"{source}: several candidate columns ({names}); choose one with --columns {hint}")
    raise PattersonError(f"{source}: no amplitude or intensity column found; name one with --columns {hint}")


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
        raise PattersonError(f"{path}: unreadable MTZ file ({_one_line(exc)}); is it truncated?") from None
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
    cell = _cell_from(mtz.cell.parameters, str(path))
    sg = mtz.spacegroup
    if sg is None:
        raise PattersonError(f"{path}: the MTZ has no space group; give --spacegroup")
    name, rots = spacegroup_rotations(sg.xhm())
    free, free_label = _mtz_free(mtz, path, free_column)
    refl = Reflections(hkl, value, sigma, kind, cell, rots, name, str(path), tuple(used))
    refl.free, refl.free_label = free, free_label
    return refl


def _read_sf_cif(path: Path, columns: str | None) -> Reflections:
    try:
        blocks = gemmi.as_refln_blocks(gemmi.cif.read(str(path)))
    except (RuntimeError, ValueError, OSError) as exc:
        raise PattersonError(f"{path}: unreadable mmCIF file ({_one_line(exc)}); is it truncated?") from None
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
    cell = _cell_from(rb.cell.parameters, str(path))
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


# --- SHELX ---------------------------------------------------------------------------------------------------------


def read_ins(path: str | Path) -> dict:
    """CELL, LATT, SYMM, SFAC/UNIT and HKLF of a SHELX .ins/.res: {"cell", "latt", "symm" [(R, t), ...],
    "rotations" (K, 3, 3) (identity first), "hklf", "composition", "wavelength"}."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise PattersonError(f"{path}: cannot read ({exc.strerror})") from None
    shelx = read_shelx(text, str(path))
    if shelx.cell is None:
        raise PattersonError(f"{path}: no CELL card; give --cell a b c alpha beta gamma")
    rots = np.array([np.eye(3, dtype=np.int64)] + [r for r, _ in shelx.symm])
    return {"cell": _cell_from(shelx.cell, str(path)), "latt": shelx.latt, "symm": list(shelx.symm),
            "rotations": rots, "hklf": shelx.hklf, "composition": shelx.composition,
            "wavelength": shelx.wavelength}  # fmt: skip


def _read_shelx(path: Path, columns: str | None, cell, spacegroup) -> Reflections:
    warnings: list[str] = []
    ins = next((p for p in (path.with_suffix(".ins"), path.with_suffix(".res")) if p.is_file()), None)
    info = read_ins(ins) if ins is not None else None
    if info is None and cell is None:
        raise PattersonError(f"{path}: no cell: put {path.with_suffix('.ins').name} beside it or give --cell")
    if info is None and spacegroup is None:
        raise PattersonError(f"{path}: no symmetry: put {path.with_suffix('.ins').name} beside it or give --spacegroup")
    hklf = info["hklf"] if info else None
    if columns:
        choice = columns.split(",")[0].strip().upper()
        if choice not in ("F", "I"):
            raise PattersonError(f"{path}: for SHELX files --columns is F (HKLF 3) or I (HKLF 4), got {columns!r}")
        hklf = 3 if choice == "F" else 4
    if hklf is None:
        hklf = 4
        warnings.append("no HKLF card: read as HKLF 4 (intensities); give --columns F for amplitudes")
    if hklf not in (3, 4):
        raise PattersonError(f"{path}: HKLF {hklf} is not supported (HKLF 3 amplitudes or HKLF 4 intensities)")
    rows, ended = [], False
    with open(path, errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                h, k, l = int(line[0:4]), int(line[4:8]), int(line[8:12])
                if h == k == l == 0:
                    ended = True
                    break
                v, s = float(line[12:20]), float(line[20:28])
            except ValueError:
                raise PattersonError(
                    f"{path}: line {n} is not 3I4,2F8 ({line[:30]!r}); is the file truncated or not SHELX HKLF?"
                ) from None
            if not (math.isfinite(v) and math.isfinite(s)):
                raise PattersonError(f"{path}: line {n} holds a non-finite value; remove or fix that reflection")
            rows.append((h, k, l, v, s))
    if not ended:
        warnings.append(f"{path.name} has no 0 0 0 end line: read to the end of the file")
    if not rows:
        raise PattersonError(f"{path}: no reflections; is the file empty or truncated?")
    data = np.array(rows, dtype=np.float64)
    group = None
    if spacegroup is not None:
        group = SpaceGroup.of(spacegroup)
    elif info is not None:
        group = group_from_shelx(info["latt"], info["symm"], str(ins))
    the_cell = info["cell"] if info is not None else Cell.of(cell)
    kind = "amplitude" if hklf == 3 else "intensity"
    return Reflections(
        data[:, :3].astype(np.int64), data[:, 3], data[:, 4], kind, the_cell, group.rot, group.name, str(path),
        (f"HKLF {hklf}",), warnings, info["composition"] if info else None, group=group,
    )  # fmt: skip
