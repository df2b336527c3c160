"""Reading stored datasets: ``dataset info``, a PyTorch Dataset and on-the-fly maps from stored atoms."""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np
import torch

from patterson.cells import Cell, random_rotation
from patterson.datasets.config import EXAMPLE_FIELDS, REFLECTION_FIELDS, SPLITS, GenerateConfig
from patterson.errors import PattersonError
from patterson.maps import density_from_f, patterson_from_f
from patterson.physics import AtomBatch, grid_shape, miller_indices, structure_factors

log = logging.getLogger(__name__)


# --- reading datasets --------------------------------------------------------------------------------------------


def damaged_shards(out: Path, sizes: dict[str, int] | None = None) -> list[str]:
    """What is wrong with the shards that ``out``/dataset.h5 lists ("shard shards/x.h5 is missing" or "... is
    truncated (a of b bytes)"); empty when all are whole, or when there is no index (or an old one without sizes).
    ``sizes``: the index's record, when the caller has it open already."""
    if sizes is None:
        import h5py

        index = out / "dataset.h5"
        if not index.is_file():
            return []
        try:
            with h5py.File(index, "r") as fh:
                sizes = json.loads(fh.attrs.get("shards", "{}"))
        except (OSError, ValueError):
            return []
    problems = []
    for name, size in sizes.items():
        path = out / name
        if not path.is_file():
            problems.append(f"shard {name} is missing")
        elif path.stat().st_size != size:
            problems.append(f"shard {name} is truncated or changed ({path.stat().st_size} of {size} bytes)")
    return problems


def _open_index(path: str | Path):
    import h5py

    path = Path(path)
    index = path / "dataset.h5" if path.is_dir() else path
    if not index.is_file():
        if (path / "config.json").is_file():
            raise PattersonError(f"{path}: generation has not finished; run the same generate command to resume")
        raise PattersonError(f"{path}: not a patterson dataset (no dataset.h5)")
    try:
        fh = h5py.File(index, "r")
    except OSError as exc:
        raise PattersonError(f"{index}: not a readable HDF5 file ({exc})") from None
    problems = damaged_shards(index.parent, json.loads(fh.attrs.get("shards", "{}")))
    if problems:
        fh.close()
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PattersonError(f"{index.parent}: {problems[0]}{more}; run the same generate command again to remake it")
    return fh


def dataset_info(path: str | Path) -> dict:
    """Summary of a stored dataset: config, version, counts per split, residue-type (or element) histogram,
    map statistics (min, max, mean, std per split and map type) and normalisation constants."""
    with _open_index(path) as fh:
        config = json.loads(fh.attrs["config"])
        info = dict(
            path=str(path),
            version=str(fh.attrs["version"]),
            preset=config.get("preset"),
            config=config,
            total=0,
            counts={},
            norm={"input": float(fh.attrs["norm_input"]), "target": float(fh.attrs["norm_target"])},
            source_counts=json.loads(fh.attrs["source_counts"]),
            maps={},
            residues={},
            elements={},
        )
        residues: Counter = Counter()
        elements: Counter = Counter()
        for s in SPLITS:
            if s not in fh:
                info["counts"][s] = 0
                continue
            group = fh[s]
            info["counts"][s] = int(group.attrs["count"])
            stats = json.loads(group.attrs["map_stats"])
            for name, st in stats.items():
                mean = st["sum"] / st["count"]
                std = math.sqrt(max(st["sumsq"] / st["count"] - mean**2, 0.0))
                info["maps"][f"{s}/{name}"] = dict(min=st["min"], max=st["max"], mean=mean, std=std)
            for label in group["label"][:]:
                for frag in label.decode().split(";"):
                    parts = frag.split("/")
                    if len(parts) == 3:
                        residues.update(r.split(":")[-1].split("#")[0] for r in parts[2].split(","))
            z = group["z"][:]
            values, counts = np.unique(z[z > 0], return_counts=True)
            for v, c in zip(values.tolist(), counts.tolist(), strict=True):
                elements[gemmi.Element(int(v)).name] += c
        info["total"] = sum(info["counts"].values())
        info["residues"] = dict(sorted(residues.items()))
        info["elements"] = dict(sorted(elements.items()))
    return info


def format_info(info: dict) -> str:
    """Human-readable text of :func:`dataset_info`."""
    lines = [
        f"dataset   {info['path']}",
        f"preset    {info['preset']}   (patterson {info['version']})",
        f"examples  {info['total']}  (" + ", ".join(f"{s} {n}" for s, n in info["counts"].items()) + ")",
        "sources   " + ", ".join(f"{k} {v}" for k, v in sorted(info["source_counts"].items())),
        f"norm      input {info['norm']['input']:.6g}   target {info['norm']['target']:.6g}",
    ]
    c = info["config"]
    lines.append(f"maps      input {c['input']}, target {c['target']}, d_min {c['d_min']}, cell {c['cell']}")
    for key, st in info["maps"].items():
        lines.append(
            f"  {key:14s} min {st['min']:10.4g}  max {st['max']:10.4g}  mean {st['mean']:10.4g}  std {st['std']:10.4g}"
        )
    if info["residues"]:
        lines.append("residues  " + " ".join(f"{k}:{v}" for k, v in info["residues"].items()))
    lines.append("elements  " + " ".join(f"{k}:{v}" for k, v in info["elements"].items()))
    return "\n".join(lines)


def label_entries(labels: list[str]) -> list[str]:
    """The sorted source entries named by provenance labels (``entry/chain/seqid:resname,...``, ``;`` between the
    fragments of one example)."""
    return sorted({frag.split("/")[0] for label in labels for frag in label.split(";") if frag})


def example_item(row: Mapping[str, np.ndarray], index: int, scale: Mapping[str, float] | None = None) -> dict:
    """One example as a dataset item (see :class:`StoredDataset`) from its stored arrays ``row``: maps (1, X, Y,
    Z) float32 divided by ``scale`` (None: physical units), the reflections exact in float64 / complex128, the
    label decoded where ``row`` has one."""
    scale = scale or {"input": 1.0, "target": 1.0}
    out = {
        name: torch.from_numpy(row[name].astype(np.float32) / np.float32(scale[name]))[None]
        for name in ("input", "target")
    }  # (1, X, Y, Z) each
    out.update(
        cell=torch.from_numpy(np.asarray(row["cell"])),
        index=index,
        n_atoms=int(row["n_atoms"]),
        xyz=torch.from_numpy(np.asarray(row["xyz"])),
        z=torch.from_numpy(row["z"].astype(np.int64)),
    )
    m = int(row["n_reflections"]) if "n_reflections" in row else None  # peptide crystals: the rest is padding
    if "f_obs" in row:  # exact, never scaled: (M,) each
        out["f_obs"] = torch.from_numpy(row["f_obs"][:m].astype(np.float64))
        out["measured"] = torch.from_numpy(row["measured"][:m].astype(bool))
    if "f_calc" in row:
        out["f_calc"] = torch.from_numpy(row["f_calc"][:m].astype(np.complex128))
    if "label" in row:
        out["label"] = bytes(row["label"]).decode()
    if "spacegroup" in row:  # peptide crystals: the example's group, resolution (its reflections') and kind
        out.update(spacegroup=bytes(row["spacegroup"]).decode(), d_min=float(row["d_min"]),
                   beta_stack=bool(row["beta_stack"]))  # fmt: skip
    return out


class StoredDataset(torch.utils.data.Dataset):
    """A PyTorch Dataset over one split of a stored dataset.

    Each item is a dict: ``input`` and ``target`` (1, X, Y, Z) float32, divided by the dataset's normalisation
    constants when ``normalise`` (the paper: one dataset-wide max |value| per map type, so values lie in [−1, 1]),
    or by given constants (``normalise={"input": …, "target": …}``, e.g. those a network was trained with);
    ``cell`` (6,) float64; ``index``; ``n_atoms``; ``xyz`` (max_atoms, 3) and ``z`` (max_atoms,) of the atoms;
    where the dataset stores them (:attr:`has_reflections`), the reflections behind the maps on the Friedel half to
    d_min: ``f_obs`` (M,) the degraded amplitudes the input was made from, ``measured`` (M,) bool and ``f_calc``
    (M,) complex, the exact structure factors of the target; for peptide crystals ``spacegroup`` (str), ``d_min``
    (Å) and ``beta_stack`` (bool) of the example, whose reflections are then those of its own cell to its own
    ``d_min`` (``miller_indices(cell, d_min)``). The HDF5 file is opened lazily in each process, so DataLoader
    workers are safe.
    """

    def __init__(self, path: str | Path, split: str = "train", normalise: bool | Mapping[str, float] = True) -> None:
        if split not in SPLITS:
            raise PattersonError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.path = Path(path)
        self.split = split
        with _open_index(self.path) as fh:
            if split not in fh:
                raise PattersonError(f"{path}: the dataset has no {split} examples")
            self.config = GenerateConfig.from_dict(json.loads(fh.attrs["config"]))
            self.norm = {"input": float(fh.attrs["norm_input"]), "target": float(fh.attrs["norm_target"])}
            self._len = int(fh[split].attrs["count"])
            #: the reflections behind the maps are stored (format 2, Patterson inputs; see REFLECTION_FIELDS)
            self.has_reflections = all(name in fh[split] for name in ("f_obs", "measured"))
            stored = fh[split].attrs.get("entries")  # older datasets lack it: read the labels
            labels = [] if stored is not None else [x.decode() for x in fh[split]["label"][:]]
        #: the source entries of this split (those of the examples, or every entry the split was given)
        self.entries: list[str] = json.loads(stored) if stored is not None else label_entries(labels)
        if isinstance(normalise, Mapping):  # another dataset's constants, e.g. those a network was trained with
            self.scale = {"input": float(normalise["input"]), "target": float(normalise["target"])}
        else:
            self.scale = self.norm if normalise else {"input": 1.0, "target": 1.0}
        self._fh = None
        self._pid = None

    def __len__(self) -> int:
        return self._len

    def _group(self):
        if self._fh is None or self._pid != os.getpid():
            self._fh = _open_index(self.path)
            self._pid = os.getpid()
        return self._fh[self.split]

    def __getitem__(self, index: int) -> dict:
        if not -self._len <= index < self._len:
            raise IndexError(index)
        index %= self._len
        g = self._group()
        optional = (n for n in (*REFLECTION_FIELDS, *EXAMPLE_FIELDS) if n in g)
        names = ("input", "target", "cell", "n_atoms", "xyz", "z", *optional)
        return example_item({name: g[name][index] for name in names}, index, self.scale)

    def labels(self) -> list[str]:
        """The provenance label of every example (``entry/chain/seqid:RES,...``, ``;`` between fragments)."""
        return [x.decode() for x in self._group()["label"][:]]

    def close(self) -> None:
        """Close the HDF5 file (it opens again on the next item)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def require_reflections(self) -> None:
        """Raise a one-line PattersonError unless the dataset stores the reflections behind its maps."""
        if not self.has_reflections and self.config.kind == "peptide":
            raise PattersonError(f"{self.path}: peptide crystals made by an older patterson, which stored no "
                                 "reflections; phasing methods need them: make the dataset again with `patterson "
                                 "generate`")  # fmt: skip
        if not self.has_reflections:
            raise PattersonError(
                f"{self.path}: made by an older patterson (dataset format 1), which did not store the amplitudes "
                "behind the maps; phasing methods need them: make the dataset again with `patterson generate`"
            )


@dataclass(frozen=True)
class Augmentation:
    """How :class:`OnTheFlyMaps` varies each stored example: a random rotation about the mass-weighted centre
    (``rotate``; for one-fragment cells), a random origin shift (``shift``), a random B per example from ``b_range``
    (None: the dataset's B), a random input resolution from ``d_min_range`` (the target stays at the dataset's
    d_min), relative amplitude noise up to ``noise`` and up to a fraction ``missing`` of reflections dropped."""

    rotate: bool = True
    shift: bool = False
    b_range: tuple[float, float] | None = (10.0, 40.0)
    d_min_range: tuple[float, float] | None = None
    noise: float = 0.0
    missing: float = 0.0


class OnTheFlyMaps(torch.utils.data.IterableDataset):
    """Unlimited training batches made on the fly from the atoms of a stored dataset (one fixed cell).

    Each batch draws ``batch_size`` stored examples and augments them as ``augment`` says (:class:`Augmentation`).
    Structure factors are computed for the whole batch at once on ``device``.

    Yields dicts with ``input`` and ``target`` (B, 1, X, Y, Z) float32 (normalised by the dataset's constants)
    and ``index`` (B,) of the stored examples.
    """

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        batch_size: int = 8,
        seed: int = 0,
        augment: Augmentation = Augmentation(),  # noqa: B008 - frozen, so a shared default is safe
        normalise: bool = True,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        n_batches: int | None = None,
    ) -> None:
        stored = StoredDataset(path, split, normalise)
        self.config = stored.config
        self.entries = stored.entries
        if self.config.input != "patterson" or self.config.cell is None:
            raise PattersonError("on-the-fly maps need a dataset with Patterson input and one fixed cell")
        g = stored._group()
        self.xyz = g["xyz"][:].astype(np.float64)  # (N, A, 3)
        self.z = g["z"][:].astype(np.int64)  # (N, A)
        self.occ = g["occ"][:].astype(np.float64)
        self.n_atoms = g["n_atoms"][:]
        self.norm, self.scale = stored.norm, stored.scale  # the dataset's constants; those applied
        self.cell = Cell.of(self.config.cell)
        self.hkl = miller_indices(self.cell, self.config.d_min)
        self.shape = grid_shape(self.cell, self.config.d_min, self.config.sample_rate)
        self.d = self.cell.d_spacing(self.hkl)  # (M,)
        self.batch_size, self.seed, self.augment = batch_size, seed, augment
        self.rotate, self.shift, self.b_range = augment.rotate, augment.shift, augment.b_range
        self.d_min_range, self.noise, self.missing = augment.d_min_range, augment.noise, augment.missing
        self.device, self.dtype, self.n_batches = device, dtype, n_batches

    def structure_factors(self, rng: np.random.Generator) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, np.ndarray]:
        """The augmented structures of one batch: (idx (B,) stored examples, f (B, M) their exact structure factors,
        amp (B, M) the measured amplitudes (noisy, 0 where dropped), keep (B, M) bool the measured reflections)."""
        bsz = self.batch_size
        idx = rng.integers(len(self.z), size=bsz)
        xyz = self.xyz[idx].copy()  # (B, A, 3)
        mask = np.arange(xyz.shape[1])[None, :] < self.n_atoms[idx][:, None]  # (B, A)
        weights = np.where(mask, self.z[idx], 0).astype(np.float64)
        for b in range(bsz):
            if self.rotate:
                centre = (xyz[b] * weights[b, :, None]).sum(0) / weights[b].sum()
                xyz[b] = (xyz[b] - centre) @ random_rotation(rng).T + centre
            if self.shift:
                xyz[b] += self.cell.to_cartesian(rng.random(3))
        b_iso = np.full(bsz, self.config.b_iso) if self.b_range is None else rng.uniform(*self.b_range, size=bsz)
        as_t = lambda x: torch.as_tensor(x, dtype=self.dtype, device=self.device)  # noqa: E731
        atoms = AtomBatch(
            frac=as_t(self.cell.to_fractional(xyz)),
            z=torch.as_tensor(np.where(mask, self.z[idx], 1), device=self.device),
            b_iso=as_t(np.repeat(b_iso[:, None], xyz.shape[1], axis=1)),
            occ=as_t(np.where(mask, self.occ[idx], 0.0)),
            cell=self.cell,
        )
        f = structure_factors(atoms, self.hkl, form=self.config.form)  # (B, M)
        keep = np.ones((bsz, len(self.hkl)), dtype=bool)
        if self.d_min_range is not None:
            keep &= self.d[None, :] >= rng.uniform(*self.d_min_range, size=bsz)[:, None]
        if self.missing > 0:
            keep &= rng.random(keep.shape) >= rng.uniform(0, self.missing, size=bsz)[:, None]
        amp = f.abs()
        if self.noise > 0:
            sigma = rng.uniform(0, self.noise, size=bsz)[:, None]
            amp = torch.clamp(amp * as_t(1 + sigma * rng.normal(size=keep.shape)), min=0)
        keep_t = torch.as_tensor(keep, device=self.device)
        return idx, f, amp * keep_t, keep_t

    def batch(self, rng: np.random.Generator) -> dict:
        """One augmented batch drawn with ``rng``."""
        idx, f, amp, _ = self.structure_factors(rng)
        inp = patterson_from_f(amp.to(f.dtype), self.hkl, self.cell, self.shape) / self.scale["input"]
        tgt = density_from_f(f, self.hkl, self.cell, self.shape) / self.scale["target"]
        return {
            "input": inp[:, None].to(torch.float32),  # (B, 1, X, Y, Z)
            "target": tgt[:, None].to(torch.float32),
            "index": torch.as_tensor(idx),
        }

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, 0 if info is None else info.id])
        count = 0
        while self.n_batches is None or count < self.n_batches:
            yield self.batch(rng)
            count += 1


PHASE_ERROR_AUGMENT = Augmentation(rotate=False, shift=True, noise=0.05, missing=0.1)  # packed cells: no rotation


class PhaseErrorMaps(OnTheFlyMaps):
    """Training pairs for the learned real-space step of the phasing loop: a density computed with partly wrong
    phases (input) and the true density (target), made on the fly from a stored dataset's atoms.

    The structures are augmented as in :class:`OnTheFlyMaps` (rotation, origin shift, B, noise, missing
    reflections). The input keeps the measured amplitudes with phase errors drawn uniformly in ±a, with a drawn
    per example from ``error_deg`` (a = 180°: random phases); besides the missing ones, a share of up to
    ``floating`` of the reflections is left out of the input (as the free set and the unmeasured reflections float
    in the phasing). The target is the full, exact density. Both are divided by the input map's r.m.s., so the
    pairs carry no dataset constant and a network trained on them works for amplitudes on any scale.
    """

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        error_deg: tuple[float, float] = (0.0, 180.0),
        floating: float = 0.15,
        augment: Augmentation = PHASE_ERROR_AUGMENT,
        **options,
    ) -> None:
        super().__init__(path, split, augment=augment, **options)
        if not 0 <= error_deg[0] <= error_deg[1] <= 180 or not 0 <= floating < 1:
            raise PattersonError(
                f"phase errors must lie in [0, 180]° and floating in [0, 1), got {error_deg}, {floating}"
            )
        self.error_deg, self.floating = tuple(float(e) for e in error_deg), float(floating)
        self.scale = {"input": 1.0, "target": 1.0}

    def corrupted(self, rng: np.random.Generator) -> dict:
        """One batch of structures and what the loop would see of them: ``f`` (B, M) the exact structure factors,
        ``amp`` (B, M) the measured amplitudes, ``shown`` (B, M) bool the reflections imposed (measured, not left
        out) and ``f_in`` (B, M) the amplitudes shown with wrong phases; ``index`` (B,) the stored examples."""
        idx, f, amp, keep = self.structure_factors(rng)
        bsz, m = amp.shape
        a = np.deg2rad(rng.uniform(*self.error_deg, size=(bsz, 1)))
        error = torch.as_tensor(a * rng.uniform(-1, 1, size=(bsz, m)), dtype=amp.dtype, device=amp.device)
        shown = keep & torch.as_tensor(rng.random((bsz, m)) >= rng.uniform(0, self.floating, size=(bsz, 1)))
        f_in = torch.polar(amp * shown, torch.angle(f) + error)  # (B, M)
        return {"f": f, "amp": amp, "shown": shown, "f_in": f_in, "index": torch.as_tensor(idx)}

    def pairs(self, rho: torch.Tensor, f: torch.Tensor, index: torch.Tensor) -> dict:
        """The trainer's batch from input maps ``rho`` (B, X, Y, Z) and the exact ``f`` (B, M): both in units of the
        input's r.m.s., shaped (B, 1, X, Y, Z) float32."""
        tgt = density_from_f(f, self.hkl, self.cell, self.shape)
        sigma = rho.flatten(1).std(-1).clamp_min(1e-12)[:, None, None, None]
        return {
            "input": (rho / sigma)[:, None].to(torch.float32),  # (B, 1, X, Y, Z) in units of the input's r.m.s.
            "target": (tgt / sigma)[:, None].to(torch.float32),
            "index": index,
        }

    def batch(self, rng: np.random.Generator) -> dict:
        """One batch of (corrupted density, true density) pairs drawn with ``rng``."""
        c = self.corrupted(rng)
        return self.pairs(density_from_f(c["f_in"], self.hkl, self.cell, self.shape), c["f"], c["index"])

    def fixed(self, n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``n`` pairs drawn once with ``seed`` (a validation set that stays the same across epochs and runs)."""
        rng, pairs = np.random.default_rng([seed, 1]), []
        while len(pairs) < n:
            item = self.batch(rng)
            pairs += list(zip(item["input"], item["target"], strict=True))
        return pairs[:n]


def open_split(path: str | Path, split: str = "train", normalise: bool = True) -> StoredDataset:
    """One split of a stored dataset as a :class:`StoredDataset` (normalised maps by default)."""
    return StoredDataset(path, split, normalise)


MapDataset = StoredDataset  # the name the trainer also looks for
