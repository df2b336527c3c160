"""Structures: atoms read from PDB, mmCIF and small-molecule CIF files (gemmi), and the embedded default source.

An :class:`Atoms` holds plain numpy arrays (Cartesian coordinates in Å, element symbols, B-factors, occupancies) and,
where the file gives one, the crystal cell and space group. Everything later in the pipeline starts from it.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

import gemmi
import numpy as np

from patterson.errors import PattersonError

log = logging.getLogger(__name__)

STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdb.gz", ".ent.gz", ".cif.gz", ".mmcif.gz")


@dataclass(frozen=True)
class Atoms:
    """A set of atoms, optionally in a crystal.

    Attributes
    ----------
    xyz : (N, 3) float64, Cartesian coordinates in Å.
    elements : (N,) str, element symbols as gemmi spells them ("C", "Fe").
    b_iso : (N,) float64, isotropic B-factors in Å².
    occ : (N,) float64, occupancies.
    cell : (a, b, c, alpha, beta, gamma) in Å and degrees, or None when the file has no cell.
    spacegroup : Hermann–Mauguin symbol, or None.
    source : where the atoms came from (path or name), for provenance.
    residues : optional (N,) per-atom labels "chain:resname:seqid" for provenance.
    """

    xyz: np.ndarray
    elements: np.ndarray
    b_iso: np.ndarray
    occ: np.ndarray
    cell: tuple[float, float, float, float, float, float] | None = None
    spacegroup: str | None = None
    source: str = ""
    residues: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.xyz)

    @property
    def atomic_numbers(self) -> np.ndarray:
        """(N,) int64 atomic numbers; an unknown element raises PattersonError."""
        return atomic_numbers(self.elements)

    def replace(self, **changes) -> Atoms:
        """A copy with some fields changed."""
        kw = {k: getattr(self, k) for k in self.__dataclass_fields__}
        kw.update(changes)
        return Atoms(**kw)


def atomic_numbers(elements) -> np.ndarray:
    """Atomic numbers of element symbols; deuterium counts as hydrogen.

    Raises PattersonError naming the first symbol gemmi does not know.
    """
    z = np.empty(len(elements), dtype=np.int64)
    cache: dict[str, int] = {}
    for i, name in enumerate(elements):
        if name not in cache:
            el = gemmi.Element(str(name))
            number = el.atomic_number
            if el.name == "D":
                number = 1
            if number == 0 or el.it92 is None:
                raise PattersonError(f"unknown element {name!r}")
            cache[name] = number
        z[i] = cache[name]
    return z


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise PattersonError(f"{path}: no such file")
    if not path.is_file():
        raise PattersonError(f"{path}: not a file")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise PattersonError(f"{path}: cannot read ({exc.strerror})") from None


def _read_text(path: Path) -> str:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", errors="replace") as fh:
            return fh.read()
    except (OSError, EOFError) as exc:
        raise PattersonError(f"{path}: cannot read ({exc})") from None


def _is_small_molecule_cif(text: str) -> bool:
    return "_atom_site_fract_x" in text and "_atom_site.fract_x" not in text


def _cell_tuple(cell: gemmi.UnitCell) -> tuple[float, float, float, float, float, float] | None:
    if cell.a <= 1.0 or cell.b <= 1.0 or cell.c <= 1.0:  # PDB files without CRYST1 carry a 1 Å dummy cell
        return None
    return (cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma)


def _from_small_structure(small: gemmi.SmallStructure, source: str) -> Atoms:
    sites = small.get_all_unit_cell_sites()
    if not sites:
        raise PattersonError(f"{source}: no atoms")
    frac = np.array([[s.fract.x, s.fract.y, s.fract.z] for s in sites], dtype=np.float64)
    xyz = frac @ np.array(small.cell.orth.mat).T
    elements = np.array([s.element.name for s in sites])
    if any(s.element.atomic_number == 0 for s in sites):
        bad = next(s for s in sites if s.element.atomic_number == 0)
        raise PattersonError(f"{source}: unknown element for site {bad.label!r}")
    b_iso = np.array([s.u_iso * 8 * np.pi**2 for s in sites], dtype=np.float64)
    occ = np.array([s.occ for s in sites], dtype=np.float64)
    return Atoms(xyz, elements, b_iso, occ, cell=_cell_tuple(small.cell), spacegroup="P 1", source=source)


def _from_macromolecule(st: gemmi.Structure, source: str) -> Atoms:
    st.remove_hydrogens()
    st.remove_alternative_conformations()
    xyz, elements, b_iso, occ, residues = [], [], [], [], []
    if len(st) == 0:
        raise PattersonError(f"{source}: no atoms")
    for chain in st[0]:
        for res in chain:
            for atom in res:
                xyz.append((atom.pos.x, atom.pos.y, atom.pos.z))
                elements.append(atom.element.name)
                b_iso.append(atom.b_iso)
                occ.append(atom.occ)
                residues.append(f"{chain.name}:{res.name}:{res.seqid.num}")
    if not xyz:
        raise PattersonError(f"{source}: no atoms")
    sg = st.find_spacegroup()
    return Atoms(
        np.array(xyz, dtype=np.float64),
        np.array(elements),
        np.array(b_iso, dtype=np.float64),
        np.array(occ, dtype=np.float64),
        cell=_cell_tuple(st.cell),
        spacegroup=sg.hm if sg is not None else None,
        source=source,
        residues=np.array(residues),
    )


def read_structure(path: str | Path) -> Atoms:
    """Read a PDB, mmCIF or small-molecule CIF file (optionally gzipped) into :class:`Atoms`.

    Macromolecular files keep the first model, drop hydrogens and keep the first alternate conformation.
    Small-molecule CIFs are expanded to all sites of the unit cell (space group P1 afterwards).
    A name ``embedded`` or ``embedded:ID`` reads from the embedded default source.
    """
    if str(path).startswith("embedded"):
        name = str(path).partition(":")[2] or None
        return read_structure(embedded_entry(name))
    path = Path(path)
    _check_readable(path)
    text = _read_text(path)
    if not text.strip():
        raise PattersonError(f"{path}: empty file")
    base = path.name.removesuffix(".gz").lower()
    try:
        if base.endswith((".cif", ".mmcif")) and _is_small_molecule_cif(text):
            doc = gemmi.cif.read_string(text)
            block = next((b for b in doc if b.find_value("_cell_length_a")), doc.sole_block())
            atoms = _from_small_structure(gemmi.make_small_structure_from_block(block), str(path))
        elif base.endswith((".cif", ".mmcif")):
            st = gemmi.make_structure_from_block(gemmi.cif.read_string(text).sole_block())
            atoms = _from_macromolecule(st, str(path))
        else:
            atoms = _from_macromolecule(gemmi.read_pdb_string(text), str(path))
    except PattersonError:
        raise
    except (RuntimeError, ValueError, IndexError, StopIteration) as exc:
        raise PattersonError(f"{path}: not a readable structure ({str(exc).splitlines()[0][:120]})") from None
    atoms.atomic_numbers  # noqa: B018 - validates every element symbol now, with a clear message
    log.debug("read %d atoms from %s", len(atoms), path)
    return atoms


# --- the embedded default source -----------------------------------------------------------------------------


def embedded_directory() -> Path:
    """Folder of real X-ray protein chains shipped by the MDAnalysisTests package (``dssp/*.pdb.gz``).

    The package is found without importing it (its ``__init__`` needs MDAnalysis, which we do not install).
    """
    spec = importlib.util.find_spec("MDAnalysisTests")
    if spec is None or not spec.submodule_search_locations:
        raise PattersonError("the embedded default source needs MDAnalysisTests: pip install --no-deps MDAnalysisTests")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "dssp"
    if not folder.is_dir():
        raise PattersonError(f"MDAnalysisTests is installed but has no {folder}")
    return folder


def embedded_entries() -> list[Path]:
    """Sorted paths of the embedded real X-ray protein chains."""
    return sorted(p for p in embedded_directory().glob("*.pdb.gz") if "_" not in p.name)


DEFAULT_EMBEDDED = "1ahsA"


def embedded_entry(name: str | None = None) -> Path:
    """Path of one embedded entry by its name (e.g. ``1ahsA``); the default is :data:`DEFAULT_EMBEDDED`."""
    name = name or DEFAULT_EMBEDDED
    for p in embedded_entries():
        if p.name.split(".")[0].lower() == name.lower():
            return p
    known = ", ".join(p.name.split(".")[0] for p in embedded_entries()[:8])
    raise PattersonError(f"no embedded entry {name!r} (known: {known}, ...)")


def structure_files(directory: str | Path) -> list[Path]:
    """Sorted structure files (PDB/mmCIF/CIF, gzipped or not) in a directory, recursively."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PattersonError(f"{directory}: no such directory")
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name.lower().endswith(STRUCTURE_SUFFIXES))
    if not files:
        raise PattersonError(f"{directory}: no structure files (.pdb, .cif, .ent, gzipped or not)")
    return files
