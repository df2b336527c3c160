"""Structures: atoms read from PDB, mmCIF, small-molecule CIF and SHELX .res/.ins files, and the embedded default
source.

An :class:`Atoms` holds plain numpy arrays (Cartesian coordinates in Å, element symbols, B-factors, occupancies) and,
where the file gives one, the crystal cell and space group. Everything later in the pipeline starts from it.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import gemmi
import numpy as np

from patterson.errors import PattersonError
from patterson.shelx import ShelxFile, read_shelx

log = logging.getLogger(__name__)

STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdb.gz", ".ent.gz", ".cif.gz", ".mmcif.gz")
SHELX_SUFFIXES = (".res", ".ins")  # read by patterson.shelx


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


_CIF2_TAG = re.compile(r"(?m)^([ \t]*)_([A-Za-z][A-Za-z0-9_]*)\.(?=\S)")


def cif1_tags(text: str) -> str:
    """A CIF's CIF2 dotted tags (``_cell.length_a``) as CIF1 spells them (``_cell_length_a``): gemmi's small-molecule
    reader knows only those, and gives a 1 Å cell and no atoms, silently, for the others."""
    return _CIF2_TAG.sub(r"\1_\2_", text)


def _is_small_molecule_cif(text: str) -> bool:
    """Fractional sites and no Cartesian ones: a small-molecule CIF (CIF1 ``_atom_site_fract_x`` or CIF2
    ``_atom_site.fract_x``); mmCIF gives ``_atom_site.Cartn_x``."""
    return ("_atom_site_fract_x" in text or "_atom_site.fract_x" in text) and "_atom_site.Cartn_x" not in text


def _cell_tuple(cell: gemmi.UnitCell) -> tuple[float, float, float, float, float, float] | None:
    if cell.a <= 1.0 or cell.b <= 1.0 or cell.c <= 1.0:  # PDB files without CRYST1 carry a 1 Å dummy cell
        return None
    return (cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma)


def _from_small_structure(small: gemmi.SmallStructure, source: str) -> Atoms:
    if _cell_tuple(small.cell) is None:
        raise PattersonError(f"{source}: no cell (_cell_length_a …); a small-molecule CIF needs one")
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
    _refuse_non_finite(xyz, b_iso, occ, [s.label for s in sites], source)
    return Atoms(xyz, elements, b_iso, occ, cell=_cell_tuple(small.cell), spacegroup="P 1", source=source)


def _refuse_non_finite(xyz: np.ndarray, b_iso: np.ndarray, occ: np.ndarray, labels, source: str) -> None:
    """One line naming the file and the first atom whose coordinates, occupancy or B is NaN or infinite."""
    bad = ~(np.isfinite(xyz).all(axis=1) & np.isfinite(b_iso) & np.isfinite(occ))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = "coordinate" if not np.isfinite(xyz[i]).all() else "B" if not np.isfinite(b_iso[i]) else "occupancy"
        raise PattersonError(f"{source}: atom {labels[i]} has a non-finite {what}; fix or remove it")


def _refuse_non_finite_model(model: gemmi.Model, source: str) -> None:
    """:func:`_refuse_non_finite` for every atom of a gemmi model, named as chain/residue number/atom."""
    for chain in model:
        for res in chain:
            for atom in res:
                values = (atom.pos.x, atom.pos.y, atom.pos.z, atom.occ, atom.b_iso)
                if not all(math.isfinite(v) for v in values):
                    label = f"{chain.name}/{res.name} {str(res.seqid).strip()}/{atom.name}"
                    xyz = np.array([values[:3]])
                    _refuse_non_finite(xyz, np.array([atom.b_iso]), np.array([atom.occ]), [label], source)


def _from_macromolecule(st: gemmi.Structure, source: str) -> Atoms:
    st.remove_hydrogens()
    st.remove_alternative_conformations()
    xyz, elements, b_iso, occ, residues = [], [], [], [], []
    if len(st) == 0:
        raise PattersonError(f"{source}: no atoms")
    _refuse_non_finite_model(st[0], source)
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
    """Read a PDB, mmCIF, small-molecule CIF or SHELX .res/.ins file (optionally gzipped) into :class:`Atoms`.

    Macromolecular files keep the first model, drop hydrogens and keep the first alternate conformation.
    Small-molecule CIFs and SHELX files are expanded to all sites of the unit cell (space group P1 afterwards).
    A NaN or infinite coordinate, occupancy or B is refused with one line naming the file and the atom.
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
        if base.endswith(SHELX_SUFFIXES):
            atoms = _from_shelx(read_shelx(text, str(path)))
        elif base.endswith((".cif", ".mmcif")) and _is_small_molecule_cif(text):
            doc = gemmi.cif.read_string(cif1_tags(text))
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


def _from_shelx(shelx: ShelxFile) -> Atoms:
    """All sites of the cell of a SHELX file's atoms; SHELX occupancies are per site, so an atom on a special
    position (sof 0.5 on a twofold) is one whole atom in the cell."""
    if shelx.cell is None:
        raise PattersonError(f"{shelx.source}: no CELL card")
    if not shelx.atoms:
        raise PattersonError(f"{shelx.source}: no atoms")
    small = gemmi.SmallStructure()
    small.cell = gemmi.UnitCell(*shelx.cell)
    small.symops = [op.triplet() for op in shelx.group().operations()]
    small.determine_and_set_spacegroup("S")
    small.setup_cell_images()
    for name, element, xyz, sof, u in shelx.atoms:
        site = gemmi.SmallStructure.Site()
        site.label, site.element, site.fract, site.u_iso = name, gemmi.Element(element), gemmi.Fractional(*xyz), u
        site.occ = sof * (1 + small.cell.is_special_position(small.cell.orthogonalize(site.fract)))
        small.add_site(site)
    return _from_small_structure(small, shelx.source)


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


# --- peptide fragments ---------------------------------------------------------------------------------------

BACKBONE = ("N", "CA", "C", "O")
SIDE_CHAINS: dict[str, tuple[str, ...]] = {
    "ALA": ("CB",),
    "ARG": ("CB", "CG", "CD", "NE", "CZ", "NH1", "NH2"),
    "ASN": ("CB", "CG", "OD1", "ND2"),
    "ASP": ("CB", "CG", "OD1", "OD2"),
    "CYS": ("CB", "SG"),
    "GLN": ("CB", "CG", "CD", "OE1", "NE2"),
    "GLU": ("CB", "CG", "CD", "OE1", "OE2"),
    "GLY": (),
    "HIS": ("CB", "CG", "ND1", "CD2", "CE1", "NE2"),
    "ILE": ("CB", "CG1", "CG2", "CD1"),
    "LEU": ("CB", "CG", "CD1", "CD2"),
    "LYS": ("CB", "CG", "CD", "CE", "NZ"),
    "MET": ("CB", "CG", "SD", "CE"),
    "PHE": ("CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ"),
    "PRO": ("CB", "CG", "CD"),
    "SER": ("CB", "OG"),
    "THR": ("CB", "OG1", "CG2"),
    "TRP": ("CB", "CG", "CD1", "CD2", "NE1", "CE2", "CE3", "CZ2", "CZ3", "CH2"),
    "TYR": ("CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ", "OH"),
    "VAL": ("CB", "CG1", "CG2"),
}
STANDARD_RESIDUES = tuple(sorted(SIDE_CHAINS))
PEPTIDE_BOND_MAX = 1.5  # Å: a longer C–N distance between consecutive residues is a chain break


def entry_id(path: str | Path) -> str:
    """The source entry of a structure file, used to keep an entry in one split.

    A name that starts with a PDB code (``1abc_A.pdb.gz``, ``1abcA.pdb.gz``, ``pdb1abc.ent``) gives that code in lower
    case; any other name gives its stem (the file name without suffixes).
    """
    stem = Path(str(path)).name.split(".")[0].lower()
    stem = stem.removeprefix("pdb") if len(stem) > 4 and stem.startswith("pdb") and stem[3].isdigit() else stem
    if len(stem) >= 4 and stem[0].isdigit() and stem[:4].isalnum():
        return stem[:4]
    return stem


@dataclass(frozen=True)
class Fragment:
    """k consecutive residues cut from a chain: the atoms and where they came from.

    Attributes
    ----------
    atoms : the fragment's heavy atoms (original coordinates, B and occupancy; ``residues`` labels per atom).
    entry : the source entry (see :func:`entry_id`).
    chain : chain name.
    seqids : residue numbers with insertion codes, e.g. ("12", "13A").
    resnames : residue names after any truncation (dialanine fragments are all "ALA").
    """

    atoms: Atoms
    entry: str
    chain: str
    seqids: tuple[str, ...]
    resnames: tuple[str, ...]

    @property
    def label(self) -> str:
        """Provenance as ``entry/chain/seqid:resname,...``, e.g. ``1abc/A/12:SER,13:ALA``."""
        return f"{self.entry}/{self.chain}/" + ",".join(
            f"{s}:{r}" for s, r in zip(self.seqids, self.resnames, strict=True)
        )


def _residue_atoms(res: gemmi.Residue, names: tuple[str, ...]) -> list[gemmi.Atom] | None:
    """The residue's atoms with these names, in this order, or None when one is missing."""
    found = {}
    for atom in res:
        if atom.name in names and atom.name not in found:
            found[atom.name] = atom
    if len(found) != len(names):
        return None
    return [found[n] for n in names]


def _peptide_bonded(prev: gemmi.Residue, res: gemmi.Residue) -> bool:
    c = prev.find_atom("C", "*")
    n = res.find_atom("N", "*")
    return c is not None and n is not None and c.pos.dist(n.pos) <= PEPTIDE_BOND_MAX


def _kept_residue(res: gemmi.Residue, dialanine: bool) -> tuple[tuple | None, str | None]:
    """A residue's kept atoms as (xyz, elements, b_iso, occ), or None and why it is unusable."""
    if res.name not in SIDE_CHAINS:
        return None, "nonstandard"
    if dialanine and res.name == "GLY":
        return None, "glycine"
    atoms = _residue_atoms(res, BACKBONE + (("CB",) if dialanine else SIDE_CHAINS[res.name]))
    if atoms is None:
        return None, "incomplete"
    xyz = np.array([(a.pos.x, a.pos.y, a.pos.z) for a in atoms])
    return (xyz, [a.element.name for a in atoms], [a.b_iso for a in atoms], [a.occ for a in atoms]), None


def _chain_windows(
    chain: gemmi.Chain, k: int, dialanine: bool, counts: dict[str, int], entry: str, source: str
) -> list[Fragment]:
    """The usable windows of ``k`` residues of one chain (see :func:`extract_fragments`), counting the others."""
    residues = list(chain)
    kept, reason = zip(*(_kept_residue(res, dialanine) for res in residues), strict=True) if residues else ((), ())
    bonded = [False] + [_peptide_bonded(residues[i - 1], residues[i]) for i in range(1, len(residues))]
    out = []
    for start in range(len(residues) - k + 1):
        counts["windows"] = counts.get("windows", 0) + 1
        window = range(start, start + k)
        bad = next((reason[i] for i in window if reason[i] is not None), None)
        if bad is None and not all(bonded[i] for i in window[1:]):
            bad = "break"
        if bad is not None:
            counts[bad] = counts.get(bad, 0) + 1
            continue
        resnames = tuple("ALA" if dialanine else residues[i].name for i in window)
        labels = [
            f"{chain.name}:{resname}:{residues[i].seqid.num}"
            for i, resname in zip(window, resnames, strict=True)
            for _ in kept[i][1]
        ]
        atoms = Atoms(
            np.concatenate([kept[i][0] for i in window]),
            np.array([e for i in window for e in kept[i][1]]),
            np.array([b for i in window for b in kept[i][2]], dtype=np.float64),
            np.array([o for i in window for o in kept[i][3]], dtype=np.float64),
            source=source,
            residues=np.array(labels),
        )
        seqids = tuple(str(residues[i].seqid).strip() for i in window)
        out.append(Fragment(atoms, entry, chain.name, seqids, resnames))
    return out


def extract_fragments(
    path: str | Path, k: int = 2, dialanine: bool = False, counts: dict[str, int] | None = None
) -> list[Fragment]:
    """Windows of ``k`` consecutive residues from every chain of the first model of a PDB/mmCIF file.

    A window is skipped when it holds a non-standard residue (anything but the 20 amino acids), a residue missing
    one of its heavy atoms, or a chain break (C–N > 1.5 Å or a missing backbone atom). Hydrogens and the C-terminal
    OXT are dropped; for atoms with alternate conformations the first is kept. In ``dialanine`` mode side chains
    are cut after Cβ and every residue is renamed ALA; glycine has no Cβ, so windows with a glycine are skipped.

    Parameters
    ----------
    path : structure file (gzipped too).
    k : residues per window (2 gives the papers' dipeptides).
    dialanine : truncate at Cβ and rename ALA.
    counts : if given, incremented with ``windows`` (all windows looked at) and the reasons for skipping one
        (``nonstandard``, ``incomplete``, ``break``, ``glycine``).

    Returns
    -------
    The fragments in chain order; raises PattersonError when the file cannot be read.
    """
    if k < 1:
        raise PattersonError(f"a fragment needs at least one residue, got k={k}")
    path = Path(path)
    _check_readable(path)
    try:
        st = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError) as exc:
        raise PattersonError(f"{path}: not a readable structure ({str(exc).splitlines()[0][:120]})") from None
    if len(st) == 0 or st[0].count_atom_sites() == 0:
        raise PattersonError(f"{path}: no atoms")
    _refuse_non_finite_model(st[0], str(path))  # one bad atom spoils the file: a dataset source skips it whole
    st.remove_hydrogens()
    st.remove_alternative_conformations()
    counts = counts if counts is not None else {}
    entry = entry_id(path)
    out: list[Fragment] = []
    for chain in st[0]:
        out += _chain_windows(chain, k, dialanine, counts, entry, str(path))
    counts["fragments"] = counts.get("fragments", 0) + len(out)
    return out


def random_walk(n_atoms: int, rng: np.random.Generator, bond: float = 1.5, min_distance: float = 1.2) -> np.ndarray:
    """Coordinates (n_atoms, 3) in Å of a random branched molecule centred at the origin: each new atom sits
    ``bond`` Å from a random earlier one, no two atoms closer than ``min_distance`` Å."""
    xyz = [np.zeros(3)]
    while len(xyz) < n_atoms:
        v = rng.normal(size=3)
        p = xyz[rng.integers(len(xyz))] + bond * v / np.linalg.norm(v)
        if min(np.linalg.norm(p - q) for q in xyz) > min_distance:
            xyz.append(p)
    xyz = np.array(xyz)
    return xyz - xyz.mean(axis=0)


def random_atoms(
    n: int,
    orth: np.ndarray,
    rng: np.random.Generator,
    elements: tuple[str, ...] = ("C", "N", "O"),
    weights: tuple[float, ...] | None = None,
    min_distance: float = 1.2,
    b_iso: float = 20.0,
    max_tries: int = 100,
) -> Atoms:
    """Hurwitz-style random structure: ``n`` atoms uniformly distributed in a periodic cell, no two closer than
    ``min_distance`` Å (minimum image in fractional coordinates; exact for orthogonal cells).

    Parameters
    ----------
    n : number of atoms.
    orth : (3, 3) orthogonalisation matrix of the cell (columns are the cell vectors, see ``Cell.orth``).
    rng : numpy random generator.
    elements, weights : element symbols and their relative frequencies (default equal).
    min_distance : smallest allowed distance in Å.
    b_iso : B-factor of every atom in Å².
    max_tries : attempts per atom before giving up with PattersonError (the cell is too crowded).
    """
    if n < 1:
        raise PattersonError(f"random_atoms needs n ≥ 1, got {n}")
    orth = np.asarray(orth, dtype=np.float64)
    frac = np.empty((n, 3))
    placed = 0
    tries = 0
    while placed < n:
        trial = rng.random(3)
        diff = frac[:placed] - trial
        diff -= np.round(diff)
        if placed == 0 or np.min(np.linalg.norm(diff @ orth.T, axis=1)) >= min_distance:
            frac[placed] = trial
            placed += 1
            tries = 0
        else:
            tries += 1
            if tries > max_tries:
                raise PattersonError(f"cannot place {n} atoms {min_distance} Å apart in this cell")
    p = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
    symbols = rng.choice(np.array(elements), size=n, p=p)
    return Atoms(frac @ orth.T, symbols, np.full(n, float(b_iso)), np.ones(n), source="random")
