"""SHELX reflection data: a .hkl (HKLF 3 or 4, fixed or free format, gzipped or not) with the cell, symmetry and
contents of the .ins/.res beside it, or a small-molecule CIF that carries its reflections (``_shelx_hkl_file`` as
SHELXL read it, or an fcf-style ``_refln`` loop of F² or F) beside its cell, symmetry and formula; CIF1 and CIF2
(dotted) tag names alike."""

from __future__ import annotations

import math
import re
from pathlib import Path

import gemmi
import numpy as np

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.shelx import read_shelx, shelx_group, symmetry_op
from patterson.solving.reflections import Reflections, cell_from, one_line, open_binary, parse_composition
from patterson.structures import cif1_tags
from patterson.symmetry import SpaceGroup


def group_from_shelx(latt: int, symm: list[tuple[np.ndarray, np.ndarray]], source: str) -> SpaceGroup:
    """The space group that LATT and the SYMM cards ((rotation, translation) each) generate; one line when they do
    not close into a space group."""
    return SpaceGroup.of(shelx_group(latt, [symmetry_op(rot, tran) for rot, tran in symm], source))


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
    return {"cell": cell_from(shelx.cell, str(path)), "latt": shelx.latt, "symm": list(shelx.symm),
            "rotations": rots, "hklf": shelx.hklf, "composition": shelx.composition,
            "wavelength": shelx.wavelength}  # fmt: skip


def _beside(path: Path, suffix: str) -> Path:
    """NAME.hkl(.gz) → NAME.ins (or another suffix) in the same folder."""
    base = Path(path.name.removesuffix(".gz").removesuffix(".GZ"))
    return path.with_name(base.stem + suffix)


def _fixed_row(line: str) -> tuple[int, int, int, float, float] | None:
    """3I4,2F8 (the rest, such as a batch number, ignored); None when the columns do not hold numbers."""
    try:
        return int(line[0:4]), int(line[4:8]), int(line[8:12]), float(line[12:20]), float(line[20:28])
    except ValueError:
        return None


def _free_row(line: str) -> tuple[int, int, int, float, float] | None:
    """h k l value sigma [batch] separated by blanks; None when the line is not that."""
    words = line.split()
    try:
        return int(words[0]), int(words[1]), int(words[2]), float(words[3]), float(words[4])
    except (ValueError, IndexError):
        return None


def _is_free_format(lines: list[str]) -> bool:
    """Whether a .hkl is written free format (blank-separated) rather than 3I4,2F8: every one of the first data
    lines reads as blank-separated numbers and at least one of them reads otherwise in fixed columns (a fixed-format
    line may run numbers together, ``   0017931.98``, which free format cannot read)."""
    sample = [line for line in lines[:200] if line.strip()]
    free = [_free_row(line) for line in sample]
    if not sample or any(r is None for r in free):
        return False
    return any(_fixed_row(line) != r for line, r in zip(sample, free, strict=True))


def _hkl_rows(lines: list[str], path: Path) -> tuple[list[tuple], bool, int, bool]:
    """The reflections of a SHELX .hkl (fixed or free format) up to the 0 0 0 line: (rows, ended, rows skipped for
    σ < 0 (placeholders of unmeasured reflections), free format)."""
    free_format = _is_free_format(lines)
    read = _free_row if free_format else _fixed_row
    rows, ended, negative = [], False, 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row = read(line)
        if row is None:
            form = "h k l value sigma separated by blanks" if free_format else "3I4,2F8"
            raise PattersonError(
                f"{path}: line {n} is not {form} ({line[:30]!r}); is the file truncated or not SHELX HKLF?"
            )
        if row[:3] == (0, 0, 0):
            ended = True
            break
        if not (math.isfinite(row[3]) and math.isfinite(row[4])):
            raise PattersonError(f"{path}: line {n} holds a non-finite value; remove or fix that reflection")
        if row[4] < 0:
            negative += 1
            continue
        rows.append(row)
    return rows, ended, negative, free_format


def read_shelx_hkl(path: Path, columns: str | None, cell, spacegroup) -> Reflections:
    warnings: list[str] = []
    ins = next((p for p in (_beside(path, ".ins"), _beside(path, ".res")) if p.is_file()), None)
    info = read_ins(ins) if ins is not None else None
    if info is None and cell is None:
        raise PattersonError(f"{path}: no cell: put {_beside(path, '.ins').name} beside it or give --cell")
    if info is None and spacegroup is None:
        raise PattersonError(f"{path}: no symmetry: put {_beside(path, '.ins').name} beside it or give --spacegroup")
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
    try:
        with open_binary(path) as fh:
            lines = fh.read().decode("latin-1").splitlines()
    except (OSError, EOFError) as exc:
        raise PattersonError(f"{path}: cannot read ({one_line(exc)}); is it truncated?") from None
    rows, ended, negative, free_format = _hkl_rows(lines, path)
    if free_format:
        warnings.append(f"{path.name} is free format (blank-separated columns), not 3I4,2F8: read as such")
    if negative:
        warnings.append(f"skipped {negative} rows with σ < 0 (placeholders of unmeasured reflections)")
    if not ended:
        warnings.append(f"{path.name} has no 0 0 0 end line: read to the end of the file")
    if not rows:
        skipped = f" ({negative} rows with σ < 0 skipped)" if negative else ""
        raise PattersonError(f"{path}: no reflections{skipped}; is the file empty or truncated?")
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
        wavelength=info["wavelength"] if info else None,
    )  # fmt: skip


# --- small-molecule CIFs with reflections --------------------------------------------------------------------------

_CIF_SYMOPS = ("_space_group_symop_operation_xyz", "_symmetry_equiv_pos_as_xyz")
_CIF_GROUP_NAMES = ("_space_group_name_Hall", "_symmetry_space_group_name_Hall", "_space_group_name_H-M_alt",
                    "_symmetry_space_group_name_H-M")  # fmt: skip


def carries_small_molecule_reflections(text: str) -> bool:
    """Whether a CIF's text holds SHELX reflections (``_shelx_hkl_file``) or a CIF1 ``_refln_index_h`` loop (a
    macromolecular SF-mmCIF spells it ``_refln.index_h``)."""
    return "_shelx_hkl_file" in text or "_refln_index_h" in text


def _cif_number(block: gemmi.cif.Block, tag: str) -> float | None:
    value = block.find_value(tag)
    number = gemmi.cif.as_number(value) if value not in (None, "?", ".") else math.nan
    return None if math.isnan(number) else number


def _cif_group(block: gemmi.cif.Block, source: str) -> SpaceGroup:
    """The symmetry operators' loop, else the Hall symbol, else the Hermann–Mauguin symbol; one line without any."""
    for tag in _CIF_SYMOPS:
        ops = [gemmi.cif.as_string(v) for v in block.find_values(tag)]
        if ops:
            try:
                sg = gemmi.find_spacegroup_by_ops(gemmi.GroupOps([gemmi.Op(op.replace(" ", "")) for op in ops]))
            except (RuntimeError, ValueError) as exc:
                raise PattersonError(f"{source}: cannot read {tag} ({one_line(exc)})") from None
            if sg is None:
                raise PattersonError(f"{source}: the operators of {tag} are no tabulated space group")
            return SpaceGroup.of(sg)
    for tag in _CIF_GROUP_NAMES:
        name = block.find_value(tag)
        if name not in (None, "?", "."):
            name = gemmi.cif.as_string(name)
            return SpaceGroup.of(f"Hall:{name}" if "Hall" in tag else name)
    raise PattersonError(f"{source}: no symmetry ({_CIF_SYMOPS[0]} or a space-group name); give --spacegroup")


def _cif_composition(block: gemmi.cif.Block, source: str) -> dict[str, float] | None:
    """Atoms per cell: ``_chemical_formula_sum`` times ``_cell_formula_units_Z``, None without both."""
    formula, z = block.find_value("_chemical_formula_sum"), _cif_number(block, "_cell_formula_units_Z")
    if formula in (None, "?", ".") or z is None:
        return None
    return {e: n * z for e, n in parse_composition(gemmi.cif.as_string(formula)).items()}


def _cif_rows(block: gemmi.cif.Block, source: Path) -> tuple[np.ndarray, str, list[str]]:
    """(rows (N, 5) h k l value sigma, kind, warnings) from ``_shelx_hkl_file`` or the ``_refln`` loop."""
    hkl_text = block.find_value("_shelx_hkl_file")
    if hkl_text is not None:
        res = gemmi.cif.as_string(block.find_value("_shelx_res_file") or "")
        found = re.search(r"(?mi)^HKLF\s+(-?\d+)", res)
        hklf = int(found.group(1)) if found else 4
        if hklf not in (3, 4):
            raise PattersonError(f"{source}: HKLF {hklf} is not supported (HKLF 3 amplitudes or HKLF 4 intensities)")
        rows, _, negative, _ = _hkl_rows(gemmi.cif.as_string(hkl_text).splitlines(), source)
        notes = [f"skipped {negative} rows with σ < 0 (placeholders of unmeasured reflections)"] if negative else []
        return np.array(rows, dtype=np.float64).reshape(-1, 5), "amplitude" if hklf == 3 else "intensity", notes
    for value, sigma, kind in (("F_squared_meas", "F_squared_sigma", "intensity"), ("F_meas", "F_sigma", "amplitude")):
        table = block.find("_refln_", ["index_h", "index_k", "index_l", value, "?" + sigma])
        if table:
            cols = [[gemmi.cif.as_number(v) for v in table.column(i)] for i in range(4)]
            sig = [gemmi.cif.as_number(v) for v in table.column(4)] if table.has_column(4) else [math.nan] * len(table)
            return np.column_stack(cols + [sig]).astype(np.float64), kind, []
    raise PattersonError(f"{source}: no _shelx_hkl_file and no _refln loop of F_squared_meas or F_meas")


def read_small_cif(path: Path, text: str) -> Reflections:
    """A small-molecule CIF (or .fcf) that carries its reflections, with its own cell, symmetry, formula and
    wavelength; one line where the block lacks the cell or the symmetry (never a 1 Å cell)."""
    try:
        doc = gemmi.cif.read_string(cif1_tags(text))
    except (RuntimeError, ValueError) as exc:
        raise PattersonError(f"{path}: unreadable CIF ({one_line(exc)}); is it truncated?") from None
    block = next((b for b in doc if b.find_value("_shelx_hkl_file") or b.find_value("_refln_index_h")), doc[0])
    cell = [_cif_number(block, f"_cell_{k}") for k in ("length_a", "length_b", "length_c", "angle_alpha",
                                                        "angle_beta", "angle_gamma")]  # fmt: skip
    if any(v is None for v in cell):
        raise PattersonError(f"{path}: no cell (_cell_length_a … _cell_angle_gamma); give --cell")
    rows, kind, notes = _cif_rows(block, path)
    if not len(rows):
        raise PattersonError(f"{path}: no reflections in the CIF")
    if not np.isfinite(rows[:, 3]).all():
        raise PattersonError(f"{path}: a reflection holds a non-finite value; remove or fix it")
    group = _cif_group(block, str(path))
    sigma = rows[:, 4] if np.isfinite(rows[:, 4]).all() else None
    labels = ("_shelx_hkl_file",) if block.find_value("_shelx_hkl_file") is not None else ("_refln",)
    return Reflections(
        rows[:, :3].astype(np.int64), rows[:, 3], sigma, kind, cell_from(cell, str(path)), group.rot, group.name,
        str(path), labels, notes, _cif_composition(block, str(path)), group=group,
        wavelength=_cif_number(block, "_diffrn_radiation_wavelength"),
    )  # fmt: skip
