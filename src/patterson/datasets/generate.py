"""Making examples (placement, physics, degradations) and the resumable ``generate`` job."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import shutil
import signal
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from patterson import __version__
from patterson.cells import Cell, fits_in_cell, pack_cell, place_in_cell, set_b_factors
from patterson.datasets.config import FIELDS, FORMAT, LABEL_LEN, REFLECTION_FIELDS, SPLITS, GenerateConfig
from patterson.datasets.degrade import degrade
from patterson.datasets.peptides import EXAMPLE_FIELDS, example_fields, peptide_example, reflection_capacity
from patterson.datasets.sources import Pool, assign_splits, build_pool, split_counts
from patterson.datasets.store import damaged_shards, example_item
from patterson.errors import PattersonError
from patterson.files import atomic_write, check_writable_folder, folder_lock
from patterson.maps import density_from_f, gaussian_density, intensity_grid, patterson_from_f
from patterson.physics import AtomBatch, grid_shape, miller_indices, structure_factors
from patterson.runtime import bar_options
from patterson.structures import Atoms, random_atoms
from patterson.symmetry import SpaceGroup, systematically_absent

log = logging.getLogger(__name__)


# --- making examples ---------------------------------------------------------------------------------------------


def _placement_rng(config: GenerateConfig, item: int, repeat: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, 7, item, repeat])


def _example_rng(config: GenerateConfig, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, 11, SPLITS.index(split), index])


def _prepare(atoms: Atoms, config: GenerateConfig, rng: np.random.Generator) -> Atoms:
    atoms = set_b_factors(atoms, config.b_policy, config.b_iso, config.b_range, rng)
    if config.occupancy_one:
        atoms = atoms.replace(occ=np.ones(len(atoms)))
    return atoms


def _place_item(pool: Pool, item: int, repeat: int, config: GenerateConfig) -> Atoms | None:
    """Item placed as the config says (a pure function of item and repeat), or None when it clashes."""
    rng = _placement_rng(config, item, repeat)
    atoms = _prepare(pool.atoms(item), config, rng)
    if config.kind == "crystal":
        if config.cell is not None:
            atoms = atoms.replace(cell=Cell.of(config.cell).parameters)
        if config.position == "random":
            cell = Cell(*atoms.cell)
            atoms = atoms.replace(xyz=atoms.xyz + cell.to_cartesian(rng.random(3)))
        return atoms
    cell = Cell.of(config.cell)
    atoms = place_in_cell(atoms, cell, rng, config.position, config.rotate)
    if config.clash_distance is not None and not fits_in_cell(atoms.xyz, cell, config.clash_distance):
        return None
    return atoms


def plan_slots(pool: Pool, items: np.ndarray, n: int, config: GenerateConfig, split: str) -> np.ndarray:
    """(n, 2) [item, repeat] for the examples of one split: the split's items in a seeded random order, skipping
    those that clash. An item is used again (repeat ≥ 1, a new random placement) only when the placement is random;
    otherwise too few usable items is an error."""
    order = np.random.default_rng([config.seed, 13, SPLITS.index(split)]).permutation(items)
    random_placement = config.rotate or config.position == "random"
    slots: list[tuple[int, int]] = []
    repeat = 0
    while len(slots) < n:
        before = len(slots)
        for item in order:
            if _place_item(pool, int(item), repeat, config) is not None:
                slots.append((int(item), repeat))
                if len(slots) == n:
                    break
        if len(slots) < n:
            if not random_placement or len(slots) == before:
                raise PattersonError(
                    f"split {split}: only {len(slots)} usable {config.kind}s for {n} examples "
                    "(ask for fewer, use more source files, or a random placement)"
                )
            repeat += 1
    return np.array(slots, dtype=np.int64).reshape(-1, 2)


@dataclass
class _State:
    config: GenerateConfig
    pool: Pool
    split_items: dict[str, np.ndarray]
    slots: dict[str, np.ndarray]
    out: Path


PACK_ATTEMPTS = 20  # pack_cell calls per example before giving up

_STATE: _State | None = None  # set before workers fork; read by _make_chunk


def _example_atoms(state: _State, split: str, index: int) -> tuple[Atoms, str, str, dict]:
    """The placed atoms of one example, its provenance label, source file name(s) and, for peptide crystals, its
    space group and resolution (EXAMPLE_FIELDS)."""
    config, pool = state.config, state.pool
    if config.kind == "peptide":
        return peptide_example(pool, state.split_items[split], config, split, index)
    if config.kind == "random":
        cell = Cell.of(config.cell)
        rng = _example_rng(config, split, index)
        atoms = random_atoms_in_cell(config, cell, rng)
        return atoms, f"random/{split}/{index}", "random", {}
    if config.pack_volume is not None:
        rng = _example_rng(config, split, index)
        items = state.split_items[split]
        drawn: list[int] = []

        def draw() -> Atoms:
            drawn.append(int(items[rng.integers(len(items))]))
            mol = _prepare(pool.atoms(drawn[-1]), config, rng)
            return mol.replace(source=str(drawn[-1]))

        for attempt in range(PACK_ATTEMPTS):  # an unlucky draw of molecules may not pack: draw again (same stream)
            try:
                placed = pack_cell(draw, Cell.of(config.cell), config.pack_volume, rng, config.clash_distance or 0.0,
                                   config.pack_tolerance)  # fmt: skip
                break
            except PattersonError as exc:
                if attempt == PACK_ATTEMPTS - 1:
                    raise PattersonError(f"{split} example {index}: {exc} ({PACK_ATTEMPTS} attempts)") from None
        used = [int(m.source) for m in placed]
        atoms = Atoms(
            np.concatenate([m.xyz for m in placed]),
            np.concatenate([m.elements for m in placed]),
            np.concatenate([m.b_iso for m in placed]),
            np.concatenate([m.occ for m in placed]),
            cell=Cell.of(config.cell).parameters,
            spacegroup="P 1",
        )
        return atoms, ";".join(pool.labels[i] for i in used), ";".join(pool.files[i] for i in used), {}
    item, repeat = state.slots[split][index]
    atoms = _place_item(pool, int(item), int(repeat), config)
    return atoms, pool.labels[item] + (f"#{repeat}" if repeat else ""), pool.files[item], {}


def random_atoms_in_cell(config: GenerateConfig, cell: Cell, rng: np.random.Generator) -> Atoms:
    """Hurwitz-style random atoms (C, N, O) for ``kind='random'``, with the config's B policy."""
    atoms = random_atoms(config.n_atoms, cell.orth, rng, b_iso=config.b_iso)
    return _prepare(atoms, config, rng).replace(cell=cell.parameters, spacegroup="P 1")


def compute_maps(structures: list[Atoms], config: GenerateConfig, rngs, d_min=None, group=None) -> dict:
    """The stored arrays of structures that share one cell, as the config says: ``input`` and ``target`` maps
    (B, X, Y, Z) float32 and, for Patterson inputs, the reflections behind them (the Friedel half to d_min):
    ``f_obs`` (B, M) float32, the degraded amplitudes the input was made from; ``measured`` (B, M) bool; and for
    density targets ``f_calc`` (B, M) complex64, the exact structure factors of the target.

    ``rngs`` (one numpy generator per structure) draw the degradations. ``d_min`` (peptide crystals: maps on
    ``config.grid``) replaces ``config.d_min``: input, target and reflections are cut at this resolution; ``group``
    (peptide crystals: their space group) makes its systematically absent reflections unmeasured, as in real data.
    """
    cell = Cell(*structures[0].cell)
    batch = AtomBatch.from_atoms(structures, cell, dtype=torch.float32)  # float32: maps are stored as float16
    out: dict[str, np.ndarray] = {}
    if config.input == "intensity":
        f_amp = intensity_grid(batch, config.h_max, form=config.form, b_iso=config.b_iso).sqrt()  # (B, h, h, h)
        keep = torch.ones(f_amp[0].numel(), dtype=torch.bool)
        amp, _ = degrade(f_amp.reshape(len(structures), -1), keep, config, rngs)
        inp = (amp**2).reshape(f_amp.shape)
    else:
        hkl = miller_indices(cell, config.d_min if d_min is None else d_min)
        shape = config.grid or grid_shape(cell, config.d_min, config.sample_rate)
        f = structure_factors(batch, hkl, form=config.form)  # (B, M)
        keep = torch.ones(len(hkl), dtype=torch.bool) if group is None else ~torch.as_tensor(
            systematically_absent(group, hkl))  # fmt: skip
        if config.input_d_min is not None:
            keep = torch.as_tensor(cell.d_spacing(hkl) >= config.input_d_min * (1 - 1e-9))
        amp, measured = degrade(f.abs(), keep, config, rngs, cell.inv_d2(hkl))
        inp = patterson_from_f(amp.to(f.dtype), hkl, cell, shape)
        out |= {"f_obs": amp.numpy().astype(np.float32), "measured": measured.numpy()}
    if config.target == "gaussian":
        shape = tuple(inp.shape[-3:])
        tgt = gaussian_density(batch, shape, form="z", sigma=config.target_sigma)
    else:
        if config.input == "intensity":
            raise PattersonError("target 'density' needs input 'patterson'")
        tgt = density_from_f(f, hkl, cell, tuple(inp.shape[-3:]))
        out |= {"f_calc": f.numpy().astype(np.complex64)}
    return {"input": inp.numpy(), "target": tgt.numpy()} | out


def _make_chunk(task: tuple[str, int, int, int]) -> tuple[str, int, int]:
    """Worker: make the examples start … start+count−1 of a split and write them as one shard (atomically)."""
    split, chunk, start, count = task
    arrays = _chunk_arrays(_STATE, split, start, count)
    result = dict(split=split, chunk=chunk, start=start, arrays=arrays)
    _write_shard(_shard_path(_STATE.out, split, chunk), result, _STATE.config)
    return split, chunk, count


def _chunk_arrays(state: _State, split: str, start: int, count: int) -> dict[str, np.ndarray]:
    """The stored arrays (FIELDS and, for Patterson inputs, REFLECTION_FIELDS) of examples start … start+count−1."""
    config = state.config
    structures, labels, files, extras = [], [], [], []
    for i in range(start, start + count):
        atoms, label, file, extra = _example_atoms(state, split, i)
        structures.append(atoms)
        labels.append(label)
        files.append(file)
        extras.append(extra)
    rngs = [np.random.default_rng([config.seed, 17, SPLITS.index(split), i]) for i in range(start, start + count)]
    groups: dict[tuple, list[int]] = {}  # one cell (peptide crystals: and one resolution) each
    for j, s in enumerate(structures):
        key = (tuple(np.round(s.cell, 6)), extras[j].get("d_min"), extras[j].get("spacegroup"))
        groups.setdefault(key, []).append(j)
    made: dict[str, np.ndarray] = {}
    for (_, d_min, sg), members in groups.items():
        arrays = compute_maps([structures[j] for j in members], config, [rngs[j] for j in members], d_min,
                              SpaceGroup.of(sg) if sg else None)  # fmt: skip
        if not made:
            if len(groups) > 1 and (arrays["input"].shape[1:] not in ((config.h_max,) * 3, config.grid)):
                raise PattersonError("examples with different cells need input='intensity' (one grid size)")
            dtypes = {"input": config.map_dtype, "target": config.map_dtype}
            width = {k: (reflection_capacity(config.grid),) for k in REFLECTION_FIELDS if config.kind == "peptide"}
            made = {k: np.zeros((count, *width.get(k, a.shape[1:])), dtype=dtypes.get(k, a.dtype))
                    for k, a in arrays.items()}  # fmt: skip
        with np.errstate(over="ignore"):
            for k, a in arrays.items():  # peptide crystals: each one's own reflections first, zeros after
                made[k][(members, *(slice(0, n) for n in a.shape[1:]))] = a
    inp, tgt = made.pop("input"), made.pop("target")
    if not (np.isfinite(inp).all() and np.isfinite(tgt).all()):
        raise PattersonError(f"map values exceed the range of {config.map_dtype}; use --set map_dtype=float32")
    m = config.max_atoms
    xyz = np.zeros((count, m, 3), np.float32)
    z = np.zeros((count, m), np.uint8)
    b_iso = np.zeros((count, m), np.float32)
    occ = np.zeros((count, m), np.float32)
    n_atoms = np.zeros(count, np.int32)
    for j, s in enumerate(structures):
        n = len(s)
        if n > m:
            raise PattersonError(f"an example has {n} atoms, more than max_atoms={m}")
        xyz[j, :n], z[j, :n], b_iso[j, :n], occ[j, :n], n_atoms[j] = s.xyz, s.atomic_numbers, s.b_iso, s.occ, n
    enc = lambda texts: np.array([t.encode()[:LABEL_LEN] for t in texts], dtype=f"S{LABEL_LEN}")  # noqa: E731
    return dict(
        input=inp,
        target=tgt,
        xyz=xyz,
        z=z,
        b_iso=b_iso,
        occ=occ,
        n_atoms=n_atoms,
        cell=np.array([s.cell for s in structures], dtype=np.float64),
        label=enc(labels),
        source=enc(files),
    ) | made | example_fields(extras)  # the reflections behind the maps (Patterson inputs); peptides' fields


def _map_stats(values: np.ndarray) -> dict[str, float]:
    v = values.astype(np.float64)
    return dict(min=float(v.min()), max=float(v.max()), sum=float(v.sum()), sumsq=float((v**2).sum()), count=v.size)


def _write_shard(path: Path, result: dict, config: GenerateConfig) -> None:
    import h5py

    arrays = result["arrays"]

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as fh:
            for name, data in arrays.items():
                chunks = (1, *data.shape[1:]) if name in ("input", "target") else None
                fh.create_dataset(name, data=data, chunks=chunks, compression="gzip", compression_opts=4,
                                  shuffle=name in ("input", "target"))  # fmt: skip
            fh.attrs["config"] = config.to_json()
            fh.attrs["version"] = __version__
            fh.attrs["split"] = result["split"]
            fh.attrs["start"] = result["start"]
            for name in ("input", "target"):
                fh.attrs[f"{name}_stats"] = json.dumps(_map_stats(arrays[name]))

    atomic_write(path, write)


# --- the generate job --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateSummary:
    """What ``generate`` did: examples per split, files read and skipped, chunks made now and found done, and
    wall-clock seconds spent reading the source (``seconds_source``), planning (``seconds_plan``) and making the
    examples (``seconds_examples``)."""

    out: Path
    counts: dict[str, int]
    source_counts: dict[str, int]
    chunks_made: int
    chunks_resumed: int
    seconds_source: float = 0.0
    seconds_plan: float = 0.0
    seconds_examples: float = 0.0


def _check_out(out: Path, config: GenerateConfig) -> bool:
    """Whether ``out`` holds this config's (partial) dataset already; other content is refused."""
    check_writable_folder(out)
    if not out.exists():
        return False
    if not out.is_dir():
        raise PattersonError(f"{out}: exists and is not a folder")
    saved = out / "config.json"
    if not saved.is_file():
        if any(out.iterdir()):
            raise PattersonError(f"{out}: not empty and not a patterson dataset; choose another --out")
        return False
    try:
        old = json.loads(saved.read_text())
    except (OSError, json.JSONDecodeError):
        raise PattersonError(f"{out}/config.json is unreadable; remove the folder to start again") from None
    new = json.loads(config.to_json())
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        said = "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in diff)
        raise PattersonError(f"{out} holds a dataset with another config ({said}); choose another --out")
    return True


def split_entries(config: GenerateConfig, workers: int = 1, progress: bool = True) -> dict[str, list[str]]:
    """The source entries each split of ``config`` is given, as :func:`generate` assigns them (reads the source;
    for datasets whose index does not list them, e.g. those behind networks trained before it did)."""
    pool, _ = build_pool(config, workers, progress)
    return _plan(config, pool, None)[2]


def generate(
    config: GenerateConfig,
    out: str | Path,
    workers: int = 1,
    progress: bool = True,
    pool: tuple[Pool, Counter] | None = None,
) -> GenerateSummary:
    """Make (or finish) a dataset in folder ``out``; see the module docstring for the layout.

    Parameters
    ----------
    config : what to make.
    out : dataset folder; if it holds a partial dataset of the same config, only the missing shards are made.
    workers : processes computing examples (1: in this process).
    progress : show a tqdm progress bar on stderr.
    pool : the result of :func:`build_pool` for this config, to skip reading the source again (benchmarks).
    """
    if workers < 1:
        raise PattersonError(f"workers must be at least 1, got {workers}")
    out = Path(out)
    check_writable_folder(out)
    if config.kind != "random" and config.source != "embedded" and Path(config.source).is_dir():
        config = dataclasses.replace(config, source=str(Path(config.source).resolve()))  # found from anywhere later
    with folder_lock(out):  # one writer at a time: a second generate into the same folder is refused
        resuming = _check_out(out, config)
        try:
            return _generate(config, out, workers, progress, pool, resuming)
        except BaseException:
            if not resuming and out.is_dir() and not any((out / "shards").glob("*.h5")):
                shutil.rmtree(out, ignore_errors=True)  # a run that made nothing leaves nothing behind
            raise


def _plan(config: GenerateConfig, pool: Pool, out: Path | None) -> tuple[_State, dict[str, int], dict]:
    """Phase 2: the examples per split, the source entries each split is given (whole entries, by a hash of the
    seed) and, for one molecule per cell, which fragment each example takes."""
    wanted = split_counts(config.n, config.splits)
    split_items: dict[str, np.ndarray] = {s: np.zeros(0, np.int64) for s in SPLITS}
    if config.kind != "random":
        of_entry = assign_splits(pool.entries, config.seed, wanted, config.splits)
        names = np.array([of_entry[e] for e in pool.entries])
        split_items = {s: np.nonzero(names == s)[0] for s in SPLITS}
        for s in SPLITS:
            if wanted[s] and not len(split_items[s]):
                raise PattersonError(f"split {s} received no usable {config.kind}s; use more source files")
    entries = {s: sorted({pool.entries[i] for i in split_items[s]}) for s in SPLITS}  # stored: the held-out check
    slots = {}
    if config.kind != "random" and config.pack_volume is None:
        slots = {s: plan_slots(pool, split_items[s], wanted[s], config, s) for s in SPLITS if wanted[s]}
    return _State(config, pool, split_items, slots, out), wanted, entries


def _generate(config: GenerateConfig, out: Path, workers: int, progress: bool, pool, resuming: bool) -> GenerateSummary:
    global _STATE
    from tqdm import tqdm

    t0 = time.perf_counter()
    pool, source_counts = pool if pool is not None else build_pool(config, workers, progress)
    t1 = time.perf_counter()
    log.info("config %s", config.to_json())
    _STATE, wanted, entries = _plan(config, pool, out)
    t2 = time.perf_counter()
    if config.only_splits:  # entries and examples as planned above; only these splits' examples are made
        wanted = {s: wanted[s] if s in config.only_splits else 0 for s in SPLITS}
        if not sum(wanted.values()):
            raise PattersonError(f"only_splits {list(config.only_splits)} holds no examples of these {config.n}")

    (out / "shards").mkdir(parents=True, exist_ok=True)
    for leftover in (out / "shards").glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
    for damaged in damaged_shards(out):  # truncated since the index was written: made again below
        log.warning("%s: %s", out, damaged)
        (out / damaged.split(" ")[1]).unlink(missing_ok=True)
    if not resuming:
        atomic_write(out / "config.json", lambda tmp: Path(tmp).write_text(config.to_json()))
    tasks, done = [], 0
    for s in SPLITS:
        for c, start in enumerate(range(0, wanted[s], config.chunk_size)):
            count = min(config.chunk_size, wanted[s] - start)
            if _shard_path(out, s, c).is_file():
                done += count
            else:
                tasks.append((s, c, start, count))
    resumed = sum(math.ceil(wanted[s] / config.chunk_size) for s in SPLITS) - len(tasks)
    log.info("%s: %d examples (%s), %d chunks to make, %d done", out, sum(wanted.values()),
             ", ".join(f"{s} {wanted[s]}" for s in SPLITS), len(tasks), resumed)  # fmt: skip
    bar = tqdm(total=sum(wanted.values()), initial=done, unit="ex", disable=not progress, desc="generate",
               **bar_options())  # fmt: skip
    try:
        if workers == 1 or len(tasks) <= 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # one worker means one core
            try:
                for task in tasks:
                    _make_chunk(task)
                    bar.update(task[3])
            finally:
                torch.set_num_threads(threads)
        else:
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as ex:
                futures = {ex.submit(_make_chunk, t): t for t in tasks}
                try:
                    for fut in as_completed(futures):
                        fut.result()
                        bar.update(futures[fut][3])
                except BrokenProcessPool:
                    raise PattersonError(
                        f"a worker process died; run the same command again to resume ({out})"
                    ) from None
    finally:
        bar.close()
        _STATE = None
    _write_index(out, config, wanted, source_counts, entries)
    t3 = time.perf_counter()
    log.info("source %.1f s, plan %.1f s, examples %.1f s", t1 - t0, t2 - t1, t3 - t2)
    return GenerateSummary(out, wanted, dict(source_counts), len(tasks), resumed, t1 - t0, t2 - t1, t3 - t2)


def _worker_init() -> None:
    torch.set_num_threads(1)
    try:  # Linux: a worker ends with its parent instead of waiting forever for work
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _shard_path(out: Path, split: str, chunk: int) -> Path:
    return out / "shards" / f"{split}-{chunk:05d}.h5"


def _write_index(
    out: Path, config: GenerateConfig, wanted: dict[str, int], source_counts, entries: dict[str, list[str]]
) -> None:
    """dataset.h5: per split, virtual datasets over the shards and the source entries assigned to it; attributes
    with config, version, normalisation."""
    import h5py

    layouts: dict[str, dict] = {}
    stats: dict[str, dict[str, dict]] = {s: {} for s in SPLITS}
    for s in SPLITS:
        n = wanted[s]
        if n == 0:
            continue
        shards = [_shard_path(out, s, c) for c in range(math.ceil(n / config.chunk_size))]
        with h5py.File(shards[0], "r") as fh:
            names = (*FIELDS, *REFLECTION_FIELDS, *EXAMPLE_FIELDS)
            meta = {name: (fh[name].shape[1:], fh[name].dtype) for name in names if name in fh}
        layouts[s] = {name: h5py.VirtualLayout((n, *shape), dtype) for name, (shape, dtype) in meta.items()}
        for c, path in enumerate(shards):
            with h5py.File(path, "r") as fh:
                m = fh["input"].shape[0]
                for name in ("input", "target"):
                    st = json.loads(fh.attrs[f"{name}_stats"])
                    acc = stats[s].setdefault(name, dict(min=math.inf, max=-math.inf, sum=0.0, sumsq=0.0, count=0))
                    acc.update(min=min(acc["min"], st["min"]), max=max(acc["max"], st["max"]))
                    for key in ("sum", "sumsq", "count"):
                        acc[key] += st[key]
                for name, (shape, _) in meta.items():
                    source = h5py.VirtualSource(f"shards/{path.name}", name, shape=(m, *shape))
                    layouts[s][name][c * config.chunk_size : c * config.chunk_size + m] = source
    norm_split = "train" if wanted["train"] else next(s for s in SPLITS if wanted[s])
    norm = {
        name: max(abs(stats[norm_split][name]["min"]), abs(stats[norm_split][name]["max"])) or 1.0
        for name in ("input", "target")
    }

    shard_sizes = {f"shards/{p.name}": p.stat().st_size for p in sorted((out / "shards").glob("*.h5"))}

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as fh:
            for s, fields in layouts.items():
                group = fh.create_group(s)
                group.attrs["count"] = wanted[s]
                group.attrs["map_stats"] = json.dumps(stats[s])
                group.attrs["entries"] = json.dumps(entries[s])  # every entry of the split, used or not
                for name, layout in fields.items():
                    group.create_virtual_dataset(name, layout)
            fh.attrs["config"] = config.to_json()
            fh.attrs["version"] = __version__
            fh.attrs["norm_input"] = norm["input"]
            fh.attrs["norm_target"] = norm["target"]
            fh.attrs["normalisation_split"] = norm_split
            fh.attrs["source_counts"] = json.dumps(dict(source_counts))
            fh.attrs["format"] = FORMAT
            fh.attrs["shards"] = json.dumps(shard_sizes)  # checked on every open: a lost shard is not read as zeros

    atomic_write(out / "dataset.h5", write)


# --- test-only datasets (the demo, the benchmarks, the examples) --------------------------------------------------


def config_for_test_split(
    preset: str, source: str = "embedded", n: int = 16, seed: int = 7, **changes
) -> GenerateConfig:
    """The config of a test-only dataset of ``n`` examples (float32 maps) of a preset; ``changes`` are further
    fields (``d_min``, ``noise``, ``missing``)."""
    from patterson.datasets.config import make_config

    return make_config(preset, source=source, n=n, splits=(0.0, 0.0, 1.0), map_dtype="float32", seed=seed, **changes)


def make_test_split(
    preset: str,
    folder: str | Path,
    source: str = "embedded",
    n: int = 16,
    seed: int = 7,
    progress: bool = False,
    **changes,
):
    """Generate the test-only dataset of :func:`config_for_test_split` into ``folder`` and open it: the
    :class:`~patterson.datasets.StoredDataset` of its test split in physical units (not normalised)."""
    from patterson.datasets.store import StoredDataset

    generate(config_for_test_split(preset, source, n, seed, **changes), folder, progress=progress)
    return StoredDataset(folder, "test", normalise=False)


def make_examples(config: GenerateConfig, split: str = "test", pool: tuple[Pool, Counter] | None = None) -> list[dict]:
    """The examples of one split of ``config``, made in memory exactly as :func:`generate` stores them, as items
    like :class:`~patterson.datasets.StoredDataset`'s (physical units; ``label`` added): for a command that
    phases a small test set it also writes, so that it never reads back what it wrote."""
    pool_, _ = pool if pool is not None else build_pool(config, progress=False)
    state, wanted, _ = _plan(config, pool_, None)
    items: list[dict] = []
    for start in range(0, wanted[split], config.chunk_size):
        arrays = _chunk_arrays(state, split, start, min(config.chunk_size, wanted[split] - start))
        for j in range(len(arrays["input"])):
            items.append(example_item({name: a[j] for name, a in arrays.items()}, start + j))
    return items
