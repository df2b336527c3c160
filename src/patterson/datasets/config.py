"""Dataset configuration: GenerateConfig and the named presets, built in the one order of :mod:`patterson.config`."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from patterson.cells import Cell
from patterson.config import build, layers, merge, read_toml
from patterson.errors import PattersonError
from patterson.physics import check_size, grid_shape
from patterson.symmetry import SpaceGroup

log = logging.getLogger(__name__)


SPLITS = ("train", "val", "test")
KINDS = ("fragment", "crystal", "random", "peptide")
INPUTS = ("patterson", "intensity")
TARGETS = ("density", "gaussian")
LABEL_LEN = 256  # bytes of the fixed-length provenance strings
FIELDS = ("input", "target", "xyz", "z", "b_iso", "occ", "n_atoms", "cell", "label", "source")  # per example
REFLECTION_FIELDS = ("f_obs", "measured", "f_calc")  # per example, on the Friedel half to d_min (Patterson inputs)
EXAMPLE_FIELDS = ("spacegroup", "d_min", "beta_stack", "n_reflections")  # per example, kind='peptide' only: the
# reflection fields then hold each example's own Friedel half to its d_min, padded to the most the grid can hold
FORMAT = "patterson-dataset-2"  # 2: the reflections behind the maps are stored (1: maps and atoms only)


# --- configuration ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateConfig:
    """Everything that defines a dataset; the same config (seed included) always gives the same dataset.

    Source: ``source`` is a folder of structure files, ``embedded`` (MDAnalysisTests proteins, or for
    ``kind='crystal'`` the CIFs of the ``crystals`` package and pymatgen's AFLOW prototypes) or ``random``.
    ``kind`` is ``fragment`` (k-residue windows, ``dialanine`` truncation), ``crystal`` (whole unit cells),
    ``random`` (``n_atoms`` Hurwitz-style random atoms) or ``peptide`` (peptide microcrystals, see
    :mod:`patterson.datasets.peptides`: a segment of ``k_min`` … ``k`` residues packed by one of ``space_groups``
    to ``pack_volume`` ± ``pack_tolerance``, a fraction ``beta_fraction`` of them as β-sheet stacks with one axis
    drawn from ``beta_axis``; each example has a cell of its own, its maps lie on the fixed ``grid`` and its
    resolution is drawn from ``d_min_range``; ``b_policy='resolution'`` ties B to it).
    Placement: ``cell`` (a b c α β γ; None keeps a crystal's own cell), ``position`` (centre | random),
    ``rotate``, B policy (``b_policy`` fixed | deposited | random | resolution, ``b_iso``, ``b_range``),
    ``clash_distance`` (reject fragments closer than this to their periodic images; None: no check),
    ``pack_volume`` (Å³ per atom: pack several fragments per cell to this density; None: one fragment per cell).
    Maps: ``input`` patterson (to ``d_min``, grid spacing d_min / ``sample_rate``) or intensity (|F|² at
    h, k, l = 0 … ``h_max``−1 with f = ``form``); ``target`` density (band-limited, same F, same grid) or
    gaussian (Gaussians of ``target_sigma`` Å holding Z electrons, on the fractional grid of the input's shape).
    Degradations of the input only: ``input_d_min`` (coarser resolution cut-off), ``noise`` (relative Gaussian
    noise on amplitudes), ``missing`` (fraction of reflections dropped at random), ``noise_edge`` (measurement error
    that grows with resolution, as in real data: per example an error at d_min drawn from ``noise`` … ``noise_edge``
    times the r.m.s. |F| of its shell; 0: none). ``waters`` (peptide crystals): ordered waters per residue at most,
    in the data and the target but in no sequence (see :mod:`patterson.datasets.peptides`).
    Storage: ``splits`` (fractions of examples for train, val, test; entries never shared), ``chunk_size``
    (examples per shard), ``max_atoms`` (atoms stored per example; larger structures are skipped),
    ``map_dtype`` (float16 or float32), ``only_splits`` (make only these splits' examples; entries are assigned to
    splits as usual, so ``only_splits=["test"]`` with a training set's seed, n and splits remakes exactly its
    held-out test examples, say in float32; empty: all splits).
    """

    preset: str = "custom"
    source: str = "embedded"
    n: int = 1000
    seed: int = 0
    kind: str = "fragment"
    k: int = 2
    k_min: int | None = None
    dialanine: bool = False
    n_atoms: int = 20
    cell: tuple[float, ...] | None = (12.0, 12.0, 12.0, 90.0, 90.0, 90.0)
    position: str = "centre"
    rotate: bool = False
    b_policy: str = "fixed"
    b_iso: float = 20.0
    b_range: tuple[float, float] = (10.0, 40.0)
    occupancy_one: bool = True
    clash_distance: float | None = None
    pack_volume: float | None = None
    pack_tolerance: float = 0.1
    space_groups: tuple[str, ...] = ("P 1",)
    beta_fraction: float = 0.0
    beta_axis: tuple[float, float] = (4.7, 4.9)
    input: str = "patterson"
    target: str = "density"
    form: str = "it92"
    d_min: float = 1.5
    sample_rate: float = 3.0
    grid: tuple[int, int, int] | None = None
    d_min_range: tuple[float, float] | None = None
    h_max: int = 10
    target_sigma: float = 0.5
    input_d_min: float | None = None
    noise: float = 0.0
    missing: float = 0.0
    noise_edge: float = 0.0
    waters: float = 0.0
    splits: tuple[float, float, float] = (0.9, 0.05, 0.05)
    chunk_size: int = 256
    max_atoms: int = 64
    map_dtype: str = "float16"
    only_splits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("cell", "b_range", "splits", "beta_axis", "d_min_range", "grid"):  # TOML and JSON give lists
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple((int if name == "grid" else float)(v) for v in value))
        if self.cell is not None:
            object.__setattr__(self, "cell", Cell.of(self.cell).parameters)
        object.__setattr__(self, "only_splits", tuple(str(s) for s in self.only_splits))
        object.__setattr__(self, "space_groups", tuple(str(s) for s in self.space_groups))
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n <= 0:
            raise PattersonError(f"n must be a positive number of examples, got {self.n!r}")
        checks = [
            (self.kind in KINDS, f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}"),
            (self.input in INPUTS, f"input must be one of {', '.join(INPUTS)}, got {self.input!r}"),
            (self.target in TARGETS, f"target must be one of {', '.join(TARGETS)}, got {self.target!r}"),
            (self.position in ("centre", "random"), f"position must be centre or random, got {self.position!r}"),
            (self.b_policy in ("fixed", "deposited", "random", "resolution"), f"unknown b_policy {self.b_policy!r}"),
            (self.form in ("it92", "z"), f"form must be it92 or z, got {self.form!r}"),
            (self.map_dtype in ("float16", "float32"), f"map_dtype must be float16 or float32, not {self.map_dtype}"),
            (self.k >= 1, f"k must be at least 1, got {self.k}"),
            (self.d_min > 0 and math.isfinite(self.d_min), f"d_min must be positive, got {self.d_min}"),
            (self.sample_rate >= 2, f"sample_rate must be at least 2, got {self.sample_rate}"),
            (self.h_max >= 2, f"h_max must be at least 2, got {self.h_max}"),
            (0 <= self.noise, f"noise must be ≥ 0, got {self.noise}"),
            (0 <= self.missing < 1, f"missing must lie in [0, 1), got {self.missing}"),
            (self.noise_edge == 0 or self.noise_edge >= self.noise, "noise_edge must be 0 or at least noise"),
            (self.waters == 0 or (self.kind == "peptide" and 0 < self.waters <= 4), "waters: peptides, 0 … 4"),
            (self.chunk_size >= 1, f"chunk_size must be at least 1, got {self.chunk_size}"),
            (self.max_atoms >= 1, f"max_atoms must be at least 1, got {self.max_atoms}"),
            (len(self.splits) == 3 and min(self.splits) >= 0 and sum(self.splits) > 0, "splits needs 3 fractions"),
            (abs(sum(self.splits) - 1) < 1e-6, f"splits must add up to 1, got {list(self.splits)}"),
            (self.cell is not None or self.kind in ("crystal", "peptide"), "only crystals, peptides leave cell unset"),
            (self.pack_volume is None or self.pack_volume > 0, "pack_volume must be positive"),
            (self.input_d_min is None or self.input_d_min >= self.d_min, "input_d_min must be ≥ d_min"),
            (set(self.only_splits) <= {"train", "val", "test"}, "only_splits may name train, val and test only"),
        ]
        for ok, message in checks + (peptide_checks(self) if self.kind == "peptide" else []):
            if not ok:
                raise PattersonError(message)
        if self.kind != "peptide" and (self.b_policy == "resolution" or self.grid or self.d_min_range):
            raise PattersonError("b_policy 'resolution', grid and d_min_range are for kind='peptide' only")
        if self.cell is not None:  # before any source is read: refuse grids and reflection sets beyond the machine
            check_size(Cell.of(self.cell), self.d_min, self.sample_rate)

    def to_json(self) -> str:
        """The config as a JSON object (keys sorted)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> GenerateConfig:
        """A config from a mapping; unknown keys and values of the wrong type raise PattersonError."""
        return build(cls, values)

    @classmethod
    def from_toml(cls, path: str | Path) -> GenerateConfig:
        """A config from a TOML file of top-level ``key = value`` lines (a ``preset`` key starts from that preset)."""
        values = read_toml(path)
        return make_config(values.pop("preset", None), **values)


PEPTIDE_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic")  # the crystal systems kind='peptide' packs


def peptide_checks(config: GenerateConfig) -> list[tuple[bool, str]]:
    """The rules of a ``kind='peptide'`` config as (holds, message) pairs; an unknown space group raises."""
    lo, hi = config.d_min_range or (config.d_min, config.d_min)
    grid = config.grid or ()
    checks = [
        (config.cell is None, "kind='peptide' gives each example a cell of its own: leave cell unset"),
        (len(grid) == 3 and all(n >= 8 and n % 2 == 0 for n in grid), "kind='peptide' needs grid: 3 even sizes ≥ 8"),
        (config.input == "patterson", "kind='peptide' makes Patterson inputs"),
        (1 <= (config.k_min or config.k) <= config.k, f"k_min must lie in 1 … k={config.k}"),
        (config.d_min <= lo <= hi, f"d_min_range must be [lo, hi] with d_min ≤ lo ≤ hi, got {[lo, hi]}"),
        (0 <= config.beta_fraction <= 1, f"beta_fraction must lie in [0, 1], got {config.beta_fraction}"),
        (0 < config.beta_axis[0] <= config.beta_axis[-1], f"beta_axis must be [lo, hi] Å, got {config.beta_axis}"),
        (config.pack_volume is not None and 0 <= config.pack_tolerance < 1, "kind='peptide' needs pack_volume"),
        (len(config.space_groups) > 0, "kind='peptide' needs at least one space group"),
    ]
    for name in config.space_groups:
        sg = SpaceGroup.of(name).gemmi
        system = sg.crystal_system_str()
        fits = system in PEPTIDE_SYSTEMS and (system != "monoclinic" or sg.qualifier.startswith("b"))
        checks.append((fits, f"space group {name}: kind='peptide' packs triclinic, monoclinic (b unique) and "
                             "orthorhombic groups"))  # fmt: skip
    return checks


PRESETS: dict[str, dict] = {
    "paper-1a": dict(kind="fragment", dialanine=True, cell=(20.0,) * 3, d_min=1.5, sample_rate=3.0, max_atoms=16),
    "paper-1b": dict(kind="fragment", dialanine=True, cell=(10.0,) * 3, d_min=1.5, sample_rate=3.0, max_atoms=16),
    "paper-2": dict(kind="fragment", cell=(12.0,) * 3, d_min=1.5, sample_rate=3.0, clash_distance=2.5, max_atoms=32),
    "report-hkl10": dict(
        kind="crystal", cell=None, input="intensity", target="gaussian", form="z", h_max=10, b_iso=0.0,
        target_sigma=0.5, max_atoms=256, map_dtype="float32",
    ),
    "report-hkl20": dict(
        kind="crystal", cell=None, input="intensity", target="gaussian", form="z", h_max=20, b_iso=0.0,
        target_sigma=0.5, max_atoms=256, map_dtype="float32",
    ),
    "dense-protein": dict(
        kind="fragment", cell=(12.0,) * 3, d_min=2.0, sample_rate=4.0, pack_volume=35.0, clash_distance=2.5,
        position="random", rotate=True, max_atoms=64,
    ),
    "peptide-crystal": dict(
        kind="peptide", k=9, k_min=4, cell=None, grid=(64, 64, 64), d_min=0.8, d_min_range=(0.8, 2.0),
        space_groups=("P 21", "P 21 21 21", "C 2", "P 1"), beta_fraction=0.5, beta_axis=(4.7, 4.9),
        pack_volume=20.7, pack_tolerance=0.07, clash_distance=2.8, b_policy="resolution", b_range=(3.0, 15.0),
        noise=0.03, missing=0.05, max_atoms=400,
    ),
}  # fmt: skip
# Harder, as measured data are (#30): measurement error that grows to 3–35% of the r.m.s. |F| at d_min (5E5Z's
# data reach about 9%, 1YJP's 38%, 6MW0's 27%) and up to one ordered water per residue (1YJP: 7 for 7 residues)
PRESETS["peptide-crystal-realistic"] = dict(PRESETS["peptide-crystal"], noise_edge=0.35, waters=1.0)


def make_config(preset: str | None = None, **overrides) -> GenerateConfig:
    """A GenerateConfig from a named preset (see :data:`PRESETS`) with some fields changed."""
    values: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise PattersonError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
        values = dict(PRESETS[preset], preset=preset)
    values.update(overrides)
    return GenerateConfig.from_dict(values)


def load_config(
    path: str | Path | None = None, overrides: Iterable[str] = (), preset: str | None = None, **fields
) -> GenerateConfig:
    """The config of ``patterson generate``, in the order of :mod:`patterson.config`: the defaults, a preset, the
    TOML file at ``path``, the ``fields`` (``preset``, ``source``, ``n``, ``seed``; None: not given), then the
    ``key=value`` ``overrides`` (``--set``). The preset is the one the highest layer names (``custom``: none)."""
    stack = layers(path, {"preset": preset, **fields}, overrides)
    preset = next((layer["preset"] for layer in reversed(stack) if layer.get("preset") is not None), None)
    if preset is None and not path:
        raise PattersonError("give --preset NAME or --config FILE")
    values = merge(*stack)
    values.pop("preset", None)
    return make_config(None if preset == "custom" else preset, **values)


def toml_value(value) -> str:
    """A config value as TOML: quoted strings, arrays for tuples and lists, lower-case booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def describe_config(config: GenerateConfig) -> str:
    """A config as TOML that ``--config`` reads back (fields that are None are left out, as comments), with the
    map grid it implies."""
    fields = dataclasses.asdict(config).items()
    lines = [f"# {k} = (none)" if v is None else f"{k} = {toml_value(v)}" for k, v in fields]
    if config.grid is not None:
        lines.append(f"# grid {'x'.join(map(str, config.grid))}")
    elif config.input == "patterson" and config.cell is not None:
        shape = grid_shape(Cell.of(config.cell), config.d_min, config.sample_rate)
        lines.append(f"# grid {'x'.join(map(str, shape))}")
    elif config.input == "intensity":
        lines.append(f"# grid {config.h_max}x{config.h_max}x{config.h_max}")
    return "\n".join(lines)
