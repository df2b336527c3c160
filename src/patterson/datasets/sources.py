"""Dataset sources: fragments or crystals read from files into one Pool; the split of entries."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import logging
import math
import multiprocessing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np

from patterson.cells import Cell
from patterson.datasets.config import SPLITS, GenerateConfig
from patterson.errors import PattersonError
from patterson.runtime import bar_options
from patterson.structures import (
    Atoms,
    atomic_numbers,
    embedded_entries,
    entry_id,
    extract_fragments,
    read_structure,
    structure_files,
)

log = logging.getLogger(__name__)


# --- sources: a pool of molecules or crystals --------------------------------------------------------------------

_SYMBOLS = {}


def _symbols(z: np.ndarray) -> np.ndarray:
    out = []
    for v in z.tolist():
        if v not in _SYMBOLS:
            _SYMBOLS[v] = gemmi.Element(int(v)).name
        out.append(_SYMBOLS[v])
    return np.array(out)


@dataclass
class Pool:
    """Molecules (fragments or crystals) from a source, flattened into arrays.

    Item i has atoms ``offsets[i]:offsets[i + 1]`` of ``xyz`` (Å), ``z``, ``b_iso``, ``occ``; its ``entry``,
    ``label`` (provenance) and ``file`` (source file name); ``cells`` (F, 6) for crystals, else None.
    """

    xyz: np.ndarray
    z: np.ndarray
    b_iso: np.ndarray
    occ: np.ndarray
    offsets: np.ndarray
    entries: list[str]
    labels: list[str]
    files: list[str]
    cells: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def atoms(self, i: int) -> Atoms:
        """Item i as :class:`Atoms` (with its cell, for crystals)."""
        s = slice(self.offsets[i], self.offsets[i + 1])
        cell = None if self.cells is None else tuple(float(v) for v in self.cells[i])
        return Atoms(
            self.xyz[s].astype(np.float64),
            _symbols(self.z[s]),
            self.b_iso[s].astype(np.float64),
            self.occ[s].astype(np.float64),
            cell=cell,
            spacegroup="P 1" if cell else None,
            source=self.files[i],
        )

    def n_atoms(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])


_NUMBERS: dict[str, int] = {}


def _numbers(elements: np.ndarray) -> np.ndarray:
    out = np.empty(len(elements), np.uint8)
    for i, e in enumerate(elements):
        z = _NUMBERS.get(e)
        if z is None:
            z = _NUMBERS[e] = int(atomic_numbers([e])[0])
        out[i] = z
    return out


def _flatten(items: list[tuple[Atoms, str, str, str, tuple | None]], crystal: bool) -> Pool:
    sizes = [len(a) for a, *_ in items]
    cat = lambda f, dt: np.concatenate([f(a) for a, *_ in items]).astype(dt) if items else np.zeros(0, dt)  # noqa: E731
    return Pool(
        xyz=np.concatenate([a.xyz for a, *_ in items]).astype(np.float32) if items else np.zeros((0, 3), np.float32),
        z=cat(lambda a: _numbers(a.elements), np.uint8),
        b_iso=cat(lambda a: a.b_iso, np.float32),
        occ=cat(lambda a: a.occ, np.float32),
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        entries=[e for _, e, _, _, _ in items],
        labels=[lab for _, _, lab, _, _ in items],
        files=[f for _, _, _, f, _ in items],
        cells=np.array([c for *_, c in items], dtype=np.float64).reshape(-1, 6) if crystal else None,
    )


def _concat_pools(pools: list[Pool], crystal: bool) -> Pool:
    offsets = [np.zeros(1, np.int64)]
    total = 0
    for p in pools:
        offsets.append(p.offsets[1:] + total)
        total += int(p.offsets[-1])
    return Pool(
        xyz=np.concatenate([p.xyz for p in pools]) if pools else np.zeros((0, 3), np.float32),
        z=np.concatenate([p.z for p in pools]) if pools else np.zeros(0, np.uint8),
        b_iso=np.concatenate([p.b_iso for p in pools]) if pools else np.zeros(0, np.float32),
        occ=np.concatenate([p.occ for p in pools]) if pools else np.zeros(0, np.float32),
        offsets=np.concatenate(offsets),
        entries=[e for p in pools for e in p.entries],
        labels=[e for p in pools for e in p.labels],
        files=[e for p in pools for e in p.files],
        cells=np.concatenate([p.cells for p in pools]) if crystal and pools else None,
    )


def crystal_default_sources() -> list[str]:
    """The installable default crystals: CIFs of the ``crystals`` package and pymatgen's AFLOW prototypes."""
    found: list[str] = []
    spec = importlib.util.find_spec("crystals")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "cifs"
        found += [str(p) for p in sorted(folder.glob("*.cif"))]
    spec = importlib.util.find_spec("pymatgen")
    if spec is not None and spec.submodule_search_locations:
        for base in spec.submodule_search_locations:
            for name in ("aflow_prototypes.json.gz", "aflow_prototypes.json"):
                path = Path(base) / "analysis" / "prototypes" / name
                if path.is_file():
                    found.append(str(path))
                    break
    if not found:
        raise PattersonError(
            "the default crystal source needs the crystals package (pip install --no-deps crystals) "
            "or pymatgen (pip install pymatgen)"
        )
    return found


def read_aflow_prototypes(path: str | Path) -> list[tuple[str, Atoms]]:
    """Crystals from pymatgen's AFLOW prototype library (a JSON list of {'snl': structure, 'tags': ...}) without
    pymatgen: lattice rows and fractional site coordinates. Entries that cannot be parsed are skipped."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as fh:
        data = json.load(fh)
    out = []
    for i, item in enumerate(data):
        try:
            snl = item.get("snl", item)
            matrix = np.array(snl["lattice"]["matrix"], dtype=np.float64)  # rows are a, b, c
            lengths = np.linalg.norm(matrix, axis=1)
            angle = lambda u, v: math.degrees(math.acos(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v)))  # noqa: E731
            cell = Cell(*lengths, angle(matrix[1], matrix[2]), angle(matrix[0], matrix[2]), angle(matrix[0], matrix[1]))
            frac = np.array([s["abc"] for s in snl["sites"]], dtype=np.float64)
            elements = np.array([max(s["species"], key=lambda sp: sp.get("occu", 1))["element"] for s in snl["sites"]])
            tags = item.get("tags", {}) or {}
            name = str(tags.get("aflow") or tags.get("mineral") or f"prototype-{i}").replace("/", "_")
            atoms = Atoms(cell.to_cartesian(frac), elements, np.zeros(len(frac)), np.ones(len(frac)), cell.parameters,
                          "P 1", f"{path}#{i}")  # fmt: skip
            atoms.atomic_numbers  # noqa: B018 - validates the element symbols
            out.append((f"aflow-{i}-{name}", atoms))
        except (KeyError, TypeError, ValueError, IndexError, PattersonError):
            log.debug("skipping AFLOW prototype %d of %s", i, path)
    return out


def source_files(source: str, kind: str) -> list[str]:
    """The files a source names: a folder (recursively), ``embedded`` or, for crystals, the package default."""
    if kind == "random":
        return []
    if source == "embedded":
        return crystal_default_sources() if kind == "crystal" else [str(p) for p in embedded_entries()]
    folder = Path(source)
    if not folder.exists():
        raise PattersonError(f"{source}: no such source folder")
    if not folder.is_dir():
        raise PattersonError(f"{source}: the source must be a folder (or 'embedded')")
    return [str(p) for p in structure_files(folder)]


def source_entries(source: str) -> set[str]:
    """The PDB entries (``entry_id``) of a source's structure files: a folder or ``embedded``."""
    return {entry_id(p) for p in source_files(source, "fragment")}


def _read_one(args: tuple[str, GenerateConfig]) -> tuple[Pool, Counter]:
    """Phase 1 for one file: its fragments or crystals as a Pool; unreadable files are counted, never fatal."""
    path, config = args
    counts: Counter = Counter()
    items = []
    name = Path(path).name
    try:
        if config.kind in ("fragment", "peptide"):
            frag_counts: dict[str, int] = {}
            frags = extract_fragments(path, config.k, config.dialanine, frag_counts)
            for frag in frags[:: config.k if config.kind == "peptide" else 1]:  # peptides: windows side by side
                items.append((frag.atoms, frag.entry, frag.label, name, None))
            counts.update(frag_counts)
        elif name.startswith("aflow_prototypes.json"):
            for label, atoms in read_aflow_prototypes(path):
                items.append((atoms, label, label, name, atoms.cell))
        else:
            atoms = read_structure(path)
            if atoms.cell is None:
                raise PattersonError(f"{path}: no unit cell")
            label = Path(path).name.split(".")[0]
            items.append((atoms, entry_id(path), label, name, atoms.cell))
    except (PattersonError, OSError, EOFError) as exc:
        counts["skipped_files"] += 1
        log.warning("skipping %s", str(exc).splitlines()[0] if str(exc) else path)
        return _flatten([], config.kind == "crystal"), counts
    kept = [it for it in items if len(it[0]) <= config.max_atoms]
    counts["too_many_atoms"] += len(items) - len(kept)
    counts["files"] += 1
    return _flatten(kept, config.kind == "crystal"), counts


def assign_splits(entries: list[str], seed: int, wanted: dict[str, int], fractions) -> dict[str, str]:
    """Entry → split. Entries are ordered by a hash of (seed, entry) and cut by the split fractions; each split that
    needs examples gets at least one entry when there are enough. Deterministic for a seed and a set of entries."""
    unique = sorted(set(entries), key=lambda e: hashlib.sha256(f"{seed}:{e}".encode()).hexdigest())
    n = len(unique)
    need = [s for s in SPLITS if wanted.get(s, 0) > 0]
    counts = {s: 0 for s in SPLITS}
    total = sum(fractions)
    for s, frac in zip(SPLITS, fractions, strict=True):
        if s in need and s != "train":
            counts[s] = max(1, round(frac / total * n))
    counts["train"] = n - counts["val"] - counts["test"]
    if "train" in need and counts["train"] < 1 or len(need) > n:
        raise PattersonError(f"{n} source entries cannot fill the splits {', '.join(need)} without sharing an entry")
    out, start = {}, 0
    for s in SPLITS:
        for e in unique[start : start + counts[s]]:
            out[e] = s
        start += counts[s]
    return out


def split_counts(n: int, fractions) -> dict[str, int]:
    """Examples per split: val and test get round(n·fraction), train the rest."""
    total = sum(fractions)
    val = round(n * fractions[1] / total)
    test = round(n * fractions[2] / total)
    return {"train": n - val - test, "val": val, "test": test}


def build_pool(config: GenerateConfig, workers: int = 1, progress: bool = True) -> tuple[Pool, Counter]:
    """Phase 1: read every source file (in parallel with ``workers`` processes) into one Pool, with a progress bar
    on stderr (``progress``; reading 1,872 chains takes about half a minute)."""
    from tqdm import tqdm

    files = source_files(config.source, config.kind)
    counts: Counter = Counter()
    if config.kind == "random":
        return _flatten([], False), counts
    jobs = [(f, config) for f in files]
    bar = tqdm(total=len(jobs), unit="file", desc=f"read {config.source}", disable=not progress, leave=False,
               **bar_options())  # fmt: skip
    if workers > 1 and len(files) > 1:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=ctx) as ex:
            parts = []
            for part in ex.map(_read_one, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
                parts.append(part)
                bar.update()
    else:
        parts = []
        for job in jobs:
            parts.append(_read_one(job))
            bar.update()
    bar.close()
    for _, c in parts:
        counts.update(c)
    pool = _concat_pools([p for p, _ in parts], config.kind == "crystal")
    if len(pool) == 0:
        raise PattersonError(
            f"{config.source}: no usable {config.kind}s in {len(files)} files ({counts['skipped_files']} unreadable)"
        )
    return pool, counts
