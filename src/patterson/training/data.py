"""What the trainer eats: (input, target) map pairs, from any indexable source, a stored dataset or random atoms.

The trainer's only requirement on data is ``len(ds)`` and ``ds[i] -> (input, target)``, each a float32 tensor shaped
(C, X, Y, Z). :class:`MapPairs` adapts anything close to that (dict items, numpy arrays, (X, Y, Z) maps without a
channel axis). :class:`RandomAtomMaps` makes real Patterson/density pairs from random atoms with the physics core.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.files import plain
from patterson.maps import density_from_f, f_from_density, impose_amplitudes, patterson_from_f
from patterson.physics import AtomBatch, grid_shape, miller_indices, structure_factors

log = logging.getLogger(__name__)

INPUT_KEYS = ("input", "patterson", "x", "inputs")
TARGET_KEYS = ("target", "density", "y", "targets")


def _as_map(value: Any, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    if not t.is_floating_point():
        raise PattersonError(f"the {what} map must hold floating-point values, got {t.dtype}")
    if t.dim() == 3:
        t = t.unsqueeze(0)  # (1, X, Y, Z)
    if t.dim() != 4:
        raise PattersonError(f"the {what} map must be shaped (C, X, Y, Z) or (X, Y, Z), got {tuple(t.shape)}")
    return t.to(torch.float32)


def _pick(item: Mapping[str, Any], keys: tuple[str, ...], what: str) -> Any:
    for key in keys:
        if key in item:
            return item[key]
    raise PattersonError(f"a data item has no {what} map (looked for keys {', '.join(keys)}; has {', '.join(item)})")


def split_item(item: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """One data item -> (input, target) float32 tensors shaped (C, X, Y, Z).

    Accepts a pair (tuple/list, extra entries ignored) or a mapping with keys like ``input``/``patterson`` and
    ``target``/``density``.
    """
    if isinstance(item, Mapping):
        x, y = _pick(item, INPUT_KEYS, "input"), _pick(item, TARGET_KEYS, "target")
    elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) >= 2:
        x, y = item[0], item[1]
    else:
        raise PattersonError(f"a data item must be an (input, target) pair or a dict, got {type(item).__name__}")
    x, y = _as_map(x, "input"), _as_map(y, "target")
    if x.shape[1:] != y.shape[1:]:
        raise PattersonError(f"input grid {tuple(x.shape[1:])} differs from target grid {tuple(y.shape[1:])}")
    return x, y


def permute_axes(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random permutation of the three grid axes applied to a batch of inputs and targets (B, C, X, Y, Z),
    an exact augmentation for maps on fractional grids: intensity grids h, k, l with their targets, or cubic cells.
    """
    order = [int(a) + 2 for a in rng.permutation(3)]
    return x.permute(0, 1, *order), y.permute(0, 1, *order)


class MapPairs(Dataset):
    """Adapter from any indexable source to ``(input, target)`` float32 tensors (C, X, Y, Z).

    Parameters
    ----------
    source : indexable
        ``len(source)`` and ``source[i]`` giving a pair or a dict (see :func:`split_item`).
    """

    def __init__(self, source: Any) -> None:
        if isinstance(source, MapPairs):
            source = source.source
        try:
            n = len(source)
        except TypeError:
            raise PattersonError(f"data must support len() and indexing, got {type(source).__name__}") from None
        if n == 0:
            raise PattersonError("the dataset is empty")
        self.source = source
        x, y = split_item(source[0])
        self.input_shape, self.target_shape = tuple(x.shape), tuple(y.shape)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return split_item(self.source[index])

    @property
    def grid(self) -> tuple[int, int, int]:
        """The (X, Y, Z) grid of every map."""
        return self.input_shape[1:]  # type: ignore[return-value]

    def info(self) -> dict[str, Any]:
        """Plain-typed description for checkpoints: size, shapes, normalisation constants and the source's info."""
        out: dict[str, Any] = {
            "len": len(self),
            "input_shape": self.input_shape,
            "target_shape": self.target_shape,
            "source": type(self.source).__name__,
        }
        for name in ("normalisation", "normalization", "scales", "norm"):
            value = getattr(self.source, name, None)
            if value is not None:
                out["normalisation"] = plain(value)
                break
        extra = getattr(self.source, "info", None)
        if callable(extra):
            extra = extra()
        config = getattr(self.source, "config", None)
        if extra is None and dataclasses.is_dataclass(config) and not isinstance(config, type):
            extra = dataclasses.asdict(config)  # e.g. a stored dataset's GenerateConfig
        if extra is not None:
            out["dataset"] = plain(extra)
        for name in ("path", "split"):
            if getattr(self.source, name, None) is not None:
                out[name] = str(getattr(self.source, name))
        entries = getattr(self.source, "entries", None)
        if entries is not None:  # the source entries trained on: a test set's held-out check needs nothing else
            out["entries"] = list(entries)
        return out


def is_batch_source(data: Any) -> bool:
    """True for an on-the-fly source: an object with ``batch(rng)`` returning a whole batch, not indexable maps."""
    if not callable(getattr(data, "batch", None)):
        return False
    return isinstance(data, IterableDataset) or not callable(getattr(data, "__getitem__", None))


class BatchSource:
    """Adapter for on-the-fly sources such as :class:`patterson.datasets.OnTheFlyMaps`.

    The source's ``batch(rng)`` makes ``batch_size`` maps at once (dict or pair of (B, C, X, Y, Z) tensors). Batch
    k of epoch e on rank r is drawn with ``numpy.random.default_rng([seed, e, k, r])``, so a resumed run sees the
    same maps as an uninterrupted one. One epoch is ``len(source)`` maps (for OnTheFlyMaps: as many as its
    stored examples) unless ``max_batches`` caps it.
    """

    def __init__(self, source: Any) -> None:
        self.source = source
        try:
            self.n = len(source)
        except TypeError:
            self.n = len(getattr(source, "z", ()))  # OnTheFlyMaps keeps one atom array per stored example
        x, y = self.draw(np.random.default_rng(0), 1)
        self.input_shape, self.target_shape = tuple(x.shape[1:]), tuple(y.shape[1:])

    def __len__(self) -> int:
        return self.n

    @property
    def grid(self) -> tuple[int, int, int]:
        """The (X, Y, Z) grid of every map."""
        return self.input_shape[1:]  # type: ignore[return-value]

    def draw(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch of ``size`` maps: (input, target), each (size, C, X, Y, Z) float32."""
        if getattr(self.source, "batch_size", size) != size:
            self.source.batch_size = size
        item = self.source.batch(rng)
        if isinstance(item, Mapping):
            x, y = _pick(item, INPUT_KEYS, "input"), _pick(item, TARGET_KEYS, "target")
        else:
            x, y = item[0], item[1]
        x, y = torch.as_tensor(x).to(torch.float32), torch.as_tensor(y).to(torch.float32)
        if x.dim() != 5 or x.shape != y.shape:
            raise PattersonError(f"an on-the-fly batch must be two (B, C, X, Y, Z) maps, got {tuple(x.shape)}")
        return x, y

    def info(self) -> dict[str, Any]:
        """Plain-typed description (as :meth:`MapPairs.info`), with ``on_the_fly`` set."""
        return MapPairs.info(self) | {"on_the_fly": True, "len": self.n}  # type: ignore[arg-type]


# --- random atoms -> (Patterson, density) with the physics core --------------------------------------------------


@dataclass(frozen=True)
class RandomAtomSpec:
    """Random fragment-like structures in a cubic P1 cell (the paper's setup with random atoms instead of peptides).

    ``n`` structures of ``atoms`` atoms (C/N/O, B ``b_iso``), uniformly inside a central box of side ``spread``
    times the cell edge, maps to ``d_min`` sampled at ``d_min / 3`` (12 Å, 1.5 Å -> 24³; 12 Å, 3 Å -> 12³).
    """

    n: int = 64
    cell: float = 12.0
    d_min: float = 1.5
    atoms: int = 8
    spread: float = 0.5
    b_iso: float = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.atoms < 1:
            raise PattersonError(f"random-atom data needs n >= 1 and atoms >= 1, got n={self.n}, atoms={self.atoms}")
        if not (0 < self.spread <= 1 and self.cell > 0 and self.d_min > 0):
            raise PattersonError("random-atom data needs cell > 0, d_min > 0 and 0 < spread <= 1")


class RandomAtomMaps(Dataset):
    """Patterson (input) and band-limited density (target) of random structures, made with the physics core.

    Each map type is divided by one dataset-wide constant (max |value|), as the paper does, so values lie in
    [-1, 1]; pass ``normalisation`` (e.g. the training set's) to reuse constants.

    Parameters
    ----------
    spec : RandomAtomSpec
        What to generate.
    normalisation : dict, optional
        ``{"input": c_in, "target": c_out}``; computed from these maps when None.
    """

    def __init__(self, spec: RandomAtomSpec, normalisation: Mapping[str, float] | None = None) -> None:
        self.spec = spec
        cell = Cell.cubic(spec.cell)
        rng = np.random.default_rng(spec.seed)
        lo = 0.5 - spec.spread / 2
        frac = lo + spec.spread * rng.random((spec.n, spec.atoms, 3))
        z = rng.choice(np.array([6, 7, 8]), size=(spec.n, spec.atoms), p=[0.6, 0.2, 0.2])
        atoms = AtomBatch(
            torch.as_tensor(frac),
            torch.as_tensor(z),
            torch.full((spec.n, spec.atoms), float(spec.b_iso), dtype=torch.float64),
            torch.ones((spec.n, spec.atoms), dtype=torch.float64),
            cell,
        )
        hkl = miller_indices(cell, spec.d_min)
        shape = grid_shape(cell, spec.d_min)
        f = structure_factors(atoms, hkl)  # (n, M) complex128
        density = density_from_f(f, hkl, cell, shape)  # (n, X, Y, Z)
        patterson = patterson_from_f(f, hkl, cell, shape)  # (n, X, Y, Z)
        if normalisation is None:
            normalisation = {"input": float(patterson.abs().max()), "target": float(density.abs().max())}
        self.normalisation = {"input": float(normalisation["input"]), "target": float(normalisation["target"])}
        self.inputs = (patterson / self.normalisation["input"]).to(torch.float32).unsqueeze(1)  # (n, 1, X, Y, Z)
        self.targets = (density / self.normalisation["target"]).to(torch.float32).unsqueeze(1)  # (n, 1, X, Y, Z)
        log.debug("made %d random-atom map pairs on grid %s", spec.n, shape)

    def __len__(self) -> int:
        return self.spec.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.targets[index]  # (1, X, Y, Z) each

    def info(self) -> dict[str, Any]:
        """The generating spec (plain dict)."""
        return {"kind": "random-atoms", **self.spec.__dict__}


def random_atom_splits(spec: RandomAtomSpec, n_val: int) -> tuple[RandomAtomMaps, RandomAtomMaps]:
    """A training set and a validation set (other seed, the training set's normalisation constants)."""
    train = RandomAtomMaps(spec)
    val_spec = RandomAtomSpec(**{**spec.__dict__, "n": n_val, "seed": spec.seed + 1_000_003})
    return train, RandomAtomMaps(val_spec, normalisation=train.normalisation)


def parse_random_spec(text: str) -> tuple[RandomAtomSpec, int]:
    """Parse ``random:n=64,cell=12,d_min=1.5,atoms=8,seed=0,val=16`` into a spec and a validation size."""
    body = text.partition(":")[2]
    values: dict[str, Any] = {}
    fields = RandomAtomSpec.__dataclass_fields__
    n_val = None
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep:
            raise PattersonError(f"random data spec needs key=value items, got {part!r}")
        if key == "val":
            n_val = _number(key, value, int)
        elif key in fields:
            values[key] = _number(key, value, int if fields[key].type == "int" else float)
        else:
            raise PattersonError(f"unknown random data key {key!r}; known: {', '.join([*fields, 'val'])}")
    spec = RandomAtomSpec(**values)
    return spec, n_val if n_val is not None else max(1, math.ceil(spec.n / 8))


def _number(key: str, value: str, kind: type) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise PattersonError(f"random data key {key!r} needs a {kind.__name__}, got {value!r}") from None


N_VAL_PAIRS = 64  # validation pairs of the density-modification task (drawn once from the validation split)


def open_data(
    spec: str,
    train_split: str = "train",
    val_split: str = "val",
    on_the_fly: bool = False,
    seed: int = 0,
    task: str = "density",
    recycle_from: str = "",
) -> tuple[Any, Any]:
    """Open training and validation data named by a string.

    ``random:KEY=VALUE,...`` makes random-atom maps (see :func:`parse_random_spec`); anything else is a dataset
    folder opened with :mod:`patterson.datasets` (its ``train``/``val`` splits). With ``on_the_fly`` the training
    maps are remade each time from the stored atoms with augmentation (``patterson.datasets.OnTheFlyMaps`` with
    its default random rotation and B-factors); validation stays on the stored maps. ``task="density-modification"``
    needs a stored dataset: the training pairs (density with wrong phases, true density) are made on the fly from
    its atoms (:class:`patterson.datasets.PhaseErrorMaps`; with ``recycle_from`` a checkpoint, half of them are
    that network's own loop iterates, :class:`RecycledPairs`), the validation pairs once from its validation split;
    for a dataset of crystals of many cells (``kind`` peptide) crops of each crystal's own maps
    (:class:`patterson.datasets.CrystalPhaseErrorMaps`).

    Returns
    -------
    (train, val)
        Indexable sources (``val`` may be None when the dataset has no validation split).
    """
    if not spec:
        raise PattersonError("no training data given (--data DS)")
    if spec.startswith("random:") or spec == "random":
        if task != "density":
            raise PattersonError(f"the {task} task needs a stored dataset, not random: data")
        rspec, n_val = parse_random_spec(spec)
        if on_the_fly:
            raise PattersonError("on_the_fly needs a stored dataset, not random: data")
        return random_atom_splits(rspec, n_val)
    if task == "density-modification":
        return _phase_error_pairs(spec, train_split, val_split, seed, recycle_from)
    train, val = _open_stored(spec, train_split, val_split)
    if on_the_fly:
        from patterson.datasets import OnTheFlyMaps

        train = OnTheFlyMaps(spec, train_split, seed=seed)
    return train, val


def _open_stored(path: str, train_split: str, val_split: str) -> tuple[Any, Any]:
    try:
        from patterson.datasets import open_split
    except ImportError as exc:
        raise PattersonError(f"{path}: stored datasets need patterson.datasets and h5py ({exc})") from None
    train = open_split(path, train_split)
    try:
        val = open_split(path, val_split)
    except PattersonError as exc:
        log.warning("no validation split %r in %s (%s); training without validation", val_split, path, exc)
        val = None
    return train, val


class RecycledPairs:
    """Density-modification pairs whose inputs are, for a ``share`` of each batch, the phasing loop's own iterates:
    from the corrupted start, k ∈ [1, ``iterations``] cycles of ρ ← P_M(D(ρ)) with a frozen earlier network D
    (recycling, as PhAI and RecCrysFormer do), so that the network being trained sees D's own mistakes and fixed
    points. P_M imposes the measured amplitudes shown to the loop; the others float. Targets: the exact density.

    Parameters
    ----------
    source : :class:`patterson.datasets.PhaseErrorMaps`
        Makes the structures and the corrupted starts.
    model : torch.nn.Module
        The frozen step D (a density-modification network, e.g. the previous stage's best checkpoint).
    """

    def __init__(self, source: Any, model: torch.nn.Module, iterations: int = 6, share: float = 0.5) -> None:
        self.source, self.model, self.iterations, self.share = source, model.eval(), iterations, share
        self.config, self.entries = source.config, source.entries

    def __len__(self) -> int:
        return len(self.source.z)

    @property
    def batch_size(self) -> int:
        return self.source.batch_size

    @batch_size.setter
    def batch_size(self, size: int) -> None:
        self.source.batch_size = size

    def batch(self, rng: np.random.Generator) -> dict:
        """One batch: corrupted starts, some of them run through the loop with D, and the exact densities."""
        src, c = self.source, self.source.corrupted(rng)
        rho = density_from_f(c["f_in"], src.hkl, src.cell, src.shape)  # (B, X, Y, Z)
        bsz = rho.shape[0]
        k = np.where(rng.random(bsz) < self.share, rng.integers(1, self.iterations + 1, size=bsz), 0)
        out, x = rho.clone(), rho
        with torch.no_grad():
            for it in range(1, int(k.max(initial=0)) + 1):
                d = self.model(x.to(torch.float32)[:, None])[:, 0].to(x.dtype)  # (B, X, Y, Z)
                g = impose_amplitudes(c["amp"], ~c["shown"], f_from_density(d, src.hkl, src.cell))
                x = density_from_f(g, src.hkl, src.cell, src.shape)
                out[torch.as_tensor(k == it)] = x[torch.as_tensor(k == it)]
        return src.pairs(out, c["f"], c["index"])

    def info(self) -> dict[str, Any]:
        """The generating dataset's config and the recycling settings (plain dict)."""
        return dataclasses.asdict(self.config) | {"recycled": {"iterations": self.iterations, "share": self.share}}


def _phase_error_pairs(
    path: str, train_split: str, val_split: str, seed: int, recycle_from: str = ""
) -> tuple[Any, Any]:
    try:
        from patterson.datasets import CrystalPhaseErrorMaps, PhaseErrorMaps, StoredDataset
    except ImportError as exc:
        raise PattersonError(f"{path}: stored datasets need patterson.datasets and h5py ({exc})") from None
    crystals = StoredDataset(path, train_split).config.kind == "peptide"  # one cell each: crops of their own maps
    if crystals and recycle_from:
        raise PattersonError("recycling a network's own iterates needs a dataset of one cell, not crystals")
    pairs = CrystalPhaseErrorMaps if crystals else PhaseErrorMaps
    train = pairs(path, train_split, seed=seed)
    if recycle_from:
        from patterson.networks import load_model
        from patterson.networks.checkpoint import find_checkpoint

        frozen = load_model(find_checkpoint(recycle_from), task="density-modification")
        train = RecycledPairs(train, frozen)
    try:
        val = pairs(path, val_split).fixed(N_VAL_PAIRS, seed=seed)
    except PattersonError as exc:
        log.warning("no validation split %r in %s (%s); training without validation", val_split, path, exc)
        val = None
    return train, val
