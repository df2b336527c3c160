"""Maps: band-limited electron density, Patterson maps, Gaussian-sum density and diffraction-intensity grids;
CCP4 map and MTZ files.

Grid conventions: a map is a (B, nx, ny, nz) real tensor whose voxel (i, j, k) sits at fractional coordinates
(i/nx, j/ny, k/nz). With F(h) = Σ f exp(2πi h·x) (see :mod:`patterson.physics`):

    ρ(x) = (1/V) Σ_h F(h) exp(−2πi h·x),        P(u) = (1/V) Σ_h |F(h)|² exp(−2πi h·u),

summed over the full sphere d ≥ d_min. Both are computed from the Friedel half with one real inverse FFT.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np
import torch

from patterson.cells import NEIGHBOUR_OFFSETS, Cell, box_cell, centre_in_cell, expand_to_p1
from patterson.errors import PattersonError
from patterson.files import atomic_write, check_output_folder, holds_only, publish_folder
from patterson.physics import (
    AtomBatch,
    check_d_min,
    form_factor_coefficients,
    grid_shape,
    miller_indices,
    structure_factors,
)
from patterson.runtime import bar_options
from patterson.structures import read_structure

log = logging.getLogger(__name__)


# --- reciprocal space ↔ grid -----------------------------------------------------------------------------------


def _half_grid_indices(hkl: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices into the (nx, ny, nz//2+1) half grid for hkl with l ≥ 0, and for the Friedel mates of l = 0."""
    nx, ny, nz = shape
    nzh = nz // 2 + 1
    hkl = np.asarray(hkl)
    lim = np.array([nx, ny, nz]) // 2
    if np.any(np.abs(hkl) > lim - (np.array(shape) % 2 == 0)) or np.any(hkl[:, 2] < 0):
        raise PattersonError(f"grid {shape} is too coarse for these reflections (or hkl is not a Friedel half)")
    h, k, l = hkl.T
    flat = ((h % nx) * ny + (k % ny)) * nzh + l
    plane = np.nonzero((l == 0) & np.any(hkl != 0, axis=1))[0]
    mate = (((-h[plane]) % nx) * ny + ((-k[plane]) % ny)) * nzh
    return flat, plane, mate


def grid_from_half(f: torch.Tensor, hkl: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    """Put Friedel-half coefficients (B, M) on a half-complex grid (B, nx, ny, nz//2+1), mates of l = 0 filled."""
    flat, plane, mate = _half_grid_indices(hkl, shape)
    nx, ny, nz = shape
    out = torch.zeros((f.shape[0], nx * ny * (nz // 2 + 1)), dtype=f.dtype, device=f.device)
    dev = f.device
    out[:, torch.as_tensor(flat, device=dev)] = f
    out[:, torch.as_tensor(mate, device=dev)] = f[:, torch.as_tensor(plane, device=dev)].conj()
    return out.reshape(f.shape[0], nx, ny, nz // 2 + 1)


def density_from_f(f: torch.Tensor, hkl: np.ndarray, cell: Cell, shape: tuple[int, int, int]) -> torch.Tensor:
    """Band-limited density ρ on a grid from structure factors on the Friedel half.

    f (B, M) complex, hkl (M, 3) Friedel half (optionally with 000) → (B, nx, ny, nz) real, e/Å³.
    """
    half = grid_from_half(f, hkl, shape)  # (B, nx, ny, nz//2+1)
    n = shape[0] * shape[1] * shape[2]
    return torch.fft.irfftn(half.conj(), s=shape, dim=(-3, -2, -1)) * (n / cell.volume)


def patterson_from_f(f: torch.Tensor, hkl: np.ndarray, cell: Cell, shape: tuple[int, int, int]) -> torch.Tensor:
    """Patterson map P(u) = (1/V) Σ |F|² cos(2π h·u) over the full sphere; f (B, M) → (B, nx, ny, nz)."""
    intensity = (f.real**2 + f.imag**2).to(f.dtype)
    return density_from_f(intensity, hkl, cell, shape)


def f_from_density(rho: torch.Tensor, hkl: np.ndarray, cell: Cell) -> torch.Tensor:
    """Structure factors of a density on a grid: (B, nx, ny, nz) real → (B, M) complex at hkl (l ≥ 0).

    The exact inverse of :func:`density_from_f` for reflections the grid holds.
    """
    shape = tuple(rho.shape[-3:])
    flat, _, _ = _half_grid_indices(hkl, shape)
    spectrum = torch.fft.rfftn(rho, dim=(-3, -2, -1)).reshape(rho.shape[0], -1)
    n = shape[0] * shape[1] * shape[2]
    return spectrum[:, torch.as_tensor(flat, device=rho.device)].conj() * (cell.volume / n)


def invert_map(rho: torch.Tensor) -> torch.Tensor:
    """ρ(−x) on the periodic grid (exact re-indexing): ``out[..., i, j, k] = rho[..., −i, −j, −k]`` (mod n)."""
    for axis in (-3, -2, -1):
        n = rho.shape[axis]
        rho = rho.index_select(axis, (-torch.arange(n, device=rho.device)) % n)
    return rho


def impose_amplitudes(
    f_obs: torch.Tensor, floating: torch.Tensor, f: torch.Tensor, centric: bool = False
) -> torch.Tensor:
    """The Fourier-magnitude projection: |F_obs| with the phases of ``f`` (complex, same shape (B, M)); the
    ``floating`` reflections (B, M) bool (unmeasured, or held out) keep ``f`` as it is.

    With ``centric`` the map is also kept centrosymmetric about the origin (ρ(x) = ρ(−x)): F is first projected on
    the real axis, so every phase is 0 or π (F(h) = F*(h) = F(−h))."""
    if centric:
        f = torch.complex(f.real, torch.zeros_like(f.real)).to(f.dtype)
    return torch.where(floating, f, torch.polar(f_obs, torch.angle(f)).to(f.dtype))


# --- real-space maps ---------------------------------------------------------------------------------------------


def _fractional_grid(shape, dtype, device) -> torch.Tensor:
    axes = [torch.arange(n, dtype=dtype, device=device) / n for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)  # (G, 3)


def gaussian_density(
    atoms: AtomBatch,
    shape: tuple[int, int, int],
    form: str = "it92",
    sigma: float | None = None,
    b_iso: float | None = None,
    chunk: int = 2**22,
) -> torch.Tensor:
    """Unlimited-resolution density: a sum of Gaussians at the atoms, periodic, sampled on a grid.

    With ``form='it92'`` each atom is the Fourier transform of its IT92 form factor times exp(−B s²/4)
    (five Gaussians; B must be positive). With ``form='z'`` each atom is one Gaussian holding Z electrons,
    of width ``sigma`` Å if given (the 2021 report's voxelised targets), otherwise of the atom's B
    (σ² = B / 8π²). Images in the 26 neighbouring cells are summed, so any cell shape is exact for cells
    wider than about three Gaussian widths.

    Returns (B, nx, ny, nz) in e/Å³.
    """
    dtype, device = atoms.frac.dtype, atoms.frac.device
    bees = atoms.b_iso if b_iso is None else torch.full_like(atoms.b_iso, float(b_iso))
    if sigma is not None:
        bees = torch.full_like(bees, 8 * math.pi**2 * float(sigma) ** 2)
    coefs = form_factor_coefficients(form).to(dtype=dtype, device=device)[atoms.z]  # (B, N, 9)
    amp = torch.cat([coefs[..., 0:4], coefs[..., 8:9]], dim=-1) * atoms.occ[..., None]  # (B, N, 5)
    width = torch.cat([coefs[..., 4:8], torch.zeros_like(coefs[..., 8:9])], dim=-1) + bees[..., None]  # (B, N, 5)
    active = amp != 0
    if torch.any(width[active] <= 0):
        raise PattersonError("a Gaussian-sum density needs positive B-factors (or sigma)")
    width = torch.where(active, width, torch.ones_like(width))
    norm = amp * (4 * math.pi / width) ** 1.5  # peak heights, (B, N, 5)
    expo = 4 * math.pi**2 / width  # (B, N, 5)
    grid = _fractional_grid(shape, dtype, device)  # (G, 3)
    orth = torch.as_tensor(atoms.cell.orth, dtype=dtype, device=device)
    offsets = torch.as_tensor(NEIGHBOUR_OFFSETS, dtype=dtype, device=device) @ orth.T  # (27, 3) Å
    bsz, n = atoms.z.shape
    out = torch.zeros((bsz, grid.shape[0]), dtype=dtype, device=device)
    step = max(1, chunk // max(n * 27, 1))
    for b in range(bsz):
        frac = atoms.frac[b]  # (N, 3)
        for g0 in range(0, grid.shape[0], step):
            diff = grid[g0 : g0 + step, None, :] - frac[None, :, :]  # (g, N, 3)
            diff = (diff - torch.round(diff)) @ orth.T  # minimal-image vector, Å
            r2 = ((diff[:, :, None, :] + offsets[None, None]) ** 2).sum(-1)  # (g, N, 27)
            val = norm[b][None, :, None, :] * torch.exp(-expo[b][None, :, None, :] * r2[..., None])
            out[b, g0 : g0 + step] = val.sum(dim=(1, 2, 3))
    return out.reshape(bsz, *shape)


def intensity_grid(atoms: AtomBatch, h_max: int, form: str = "z", b_iso: float | None = 0.0) -> torch.Tensor:
    """Diffraction intensities |F(h,k,l)|² at integer h, k, l = 0 … h_max−1 (the 2021 report's input).

    The default is the report's variant: f = Z and no thermal motion. Returns (B, h_max, h_max, h_max).
    """
    if h_max < 1:
        raise PattersonError(f"h_max must be at least 1, got {h_max}")
    axis = np.arange(h_max)
    hkl = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    f = structure_factors(atoms, hkl, form=form, b_iso=b_iso)
    return (f.real**2 + f.imag**2).reshape(len(atoms), h_max, h_max, h_max)


# --- files -------------------------------------------------------------------------------------------------------


def ccp4_map(rho: np.ndarray, cell: Cell, spacegroup: str = "P 1") -> gemmi.Ccp4Map:
    """A gemmi CCP4 map of one (nx, ny, nz) grid over the whole cell, with the real cell and ``spacegroup`` in the
    header."""
    ccp4 = gemmi.Ccp4Map()
    grid = np.ascontiguousarray(rho, dtype=np.float32)
    ccp4.grid = gemmi.FloatGrid(grid, cell.to_gemmi(), gemmi.SpaceGroup(spacegroup))
    ccp4.update_ccp4_header()
    return ccp4


def write_ccp4(path: str | Path, rho: np.ndarray, cell: Cell) -> None:
    """Write one (nx, ny, nz) map as a CCP4/MRC file, atomically."""
    ccp4 = ccp4_map(rho, cell)
    atomic_write(Path(path), ccp4.write_ccp4_map)


def read_ccp4(path: str | Path) -> tuple[np.ndarray, Cell]:
    """Read a CCP4/MRC map as a full-cell (nx, ny, nz) float32 array and its cell."""
    path = Path(path)
    if not path.is_file():
        raise PattersonError(f"{path}: no such file")
    try:
        ccp4 = gemmi.read_ccp4_map(str(path))
    except (RuntimeError, ValueError) as exc:
        raise PattersonError(f"{path}: not a CCP4/MRC map ({str(exc).splitlines()[0][:100]})") from None
    ccp4.setup(float("nan"))
    rho = np.array(ccp4.grid, copy=True)
    if np.isnan(rho).any():
        raise PattersonError(f"{path}: the map does not cover the whole unit cell (or holds NaN)")
    return rho, Cell(*ccp4.grid.unit_cell.parameters)


def reflections_mtz(
    hkl: np.ndarray,
    f: np.ndarray,
    cell: Cell,
    extra: dict[str, tuple[str, np.ndarray]] = None,
    spacegroup: str = "P 1",
):
    """A gemmi MTZ with columns H K L F PHI (phases in degrees) and any ``extra`` {label: (type, values)}, in
    ``spacegroup`` (hkl as given: pass one reflection per symmetry orbit for a group other than P1)."""
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.SpaceGroup(spacegroup)
    mtz.set_cell_for_all(cell.to_gemmi())
    mtz.add_dataset("patterson")
    mtz.add_column("F", "F")
    mtz.add_column("PHI", "P")
    extra = extra or {}
    for label, (kind, _) in extra.items():
        mtz.add_column(label, kind)
    cols = [hkl.astype(np.float32), np.abs(f)[:, None], np.degrees(np.angle(f))[:, None]]
    cols += [np.asarray(v, dtype=np.float32)[:, None] for _, v in extra.values()]
    mtz.set_data(np.hstack(cols).astype(np.float32))
    return mtz


def write_mtz(path: str | Path, hkl: np.ndarray, f: np.ndarray, cell: Cell, extra=None) -> None:
    """Write reflections as an MTZ file with columns H K L F PHI (+ extra), atomically."""
    mtz = reflections_mtz(hkl, f, cell, extra)
    atomic_write(Path(path), mtz.write_to_file)


# --- the `patterson maps` job -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapsConfig:
    """What ``patterson maps`` computes: maps of one structure to ``d_min`` Å.

    ``cell`` (6 numbers, or 3 for an orthogonal cell) places a structure without a cell at the centre of that
    cell; a structure with no cell and no ``cell`` gets an orthogonal box with ``margin`` Å around it.
    ``b_iso`` replaces every atom's B-factor (the paper uses 20 Å²). ``sample_rate`` sets the grid spacing
    d_min / sample_rate. ``dtype`` is ``float64`` or ``float32``.
    """

    structure: str
    d_min: float = 1.5
    cell: tuple[float, ...] | None = None
    sample_rate: float = 3.0
    b_iso: float | None = None
    margin: float = 5.0
    dtype: str = "float64"
    progress: bool = True  # a bar on stderr for structure factors that take more than a second or two

    def __post_init__(self) -> None:
        check_d_min(self.d_min)
        if self.b_iso is not None and not (math.isfinite(self.b_iso) and self.b_iso >= 0):
            raise PattersonError(f"b_iso must be a non-negative number of Å², got {self.b_iso}")
        if self.dtype not in ("float32", "float64"):
            raise PattersonError(f"dtype must be float32 or float64, got {self.dtype!r}")


@dataclass(frozen=True)
class Maps:
    """A structure's reflections and maps: hkl (M, 3) Friedel half, f (M,) complex, density and Patterson
    (nx, ny, nz) on the same grid, the cell, and d_min."""

    hkl: np.ndarray
    f: np.ndarray
    density: np.ndarray
    patterson: np.ndarray
    cell: Cell
    d_min: float


BAR_TERMS = 10**8  # atom-reflection terms (about a second here) beyond which structure factors show progress


def _structure_factors(batch: AtomBatch, hkl: np.ndarray, b_iso: float | None, progress: bool) -> torch.Tensor:
    """F (1, M) by direct summation; beyond 10⁸ atom-reflection terms (about a second here) in blocks of
    reflections, with the expected time logged and a progress bar."""
    work = len(hkl) * batch.occ.shape[1]
    if work <= BAR_TERMS:
        return structure_factors(batch, hkl, b_iso=b_iso)
    from tqdm import tqdm

    log.info("structure factors of %d atoms at %d reflections (%.1e terms; about %.0f s on this CPU)",
             batch.occ.shape[1], len(hkl), work, work / 1e8)  # fmt: skip
    blocks = np.array_split(np.arange(len(hkl)), min(len(hkl), max(2, work // BAR_TERMS)))
    bar = tqdm(blocks, desc="structure factors", unit="block", disable=not progress, leave=False, **bar_options())
    return torch.cat([structure_factors(batch, hkl[b], b_iso=b_iso) for b in bar], dim=1)


def structure_maps(config: MapsConfig) -> Maps:
    """Read, place and expand a structure, then compute F to d_min, the band-limited density and the Patterson."""
    atoms = read_structure(config.structure)
    if config.cell is not None:
        cell = Cell.of(config.cell)
        atoms = centre_in_cell(atoms, cell) if atoms.cell is None else atoms.replace(cell=cell.parameters)
    elif atoms.cell is None:
        cell = box_cell(atoms, config.margin)
        atoms = centre_in_cell(atoms, cell)
    atoms = expand_to_p1(atoms)
    cell = Cell(*atoms.cell)
    dtype = getattr(torch, config.dtype)
    batch = AtomBatch.from_atoms([atoms], cell, dtype=dtype)
    hkl = miller_indices(cell, config.d_min)
    shape = grid_shape(cell, config.d_min, config.sample_rate)
    f = _structure_factors(batch, hkl, config.b_iso, config.progress)  # (1, M)
    rho = density_from_f(f, hkl, cell, shape)[0]
    pat = patterson_from_f(f, hkl, cell, shape)[0]
    return Maps(hkl, f[0].numpy(), rho.numpy(), pat.numpy(), cell, config.d_min)


MAPS_FILES = ("density.ccp4", "patterson.ccp4", "reflections.mtz")


def write_maps(config: MapsConfig, out_dir: str | Path) -> dict[str, Path]:
    """Compute a structure's maps and write ``density.ccp4``, ``patterson.ccp4`` and ``reflections.mtz``.

    Everything is computed before anything is written; the folder appears whole (:func:`publish_folder`: an empty
    folder or an earlier maps output is replaced, anything else refused), so a failure or a kill leaves no partial
    output. Returns the written paths.
    """
    out = Path(out_dir)
    is_maps_output = lambda folder: holds_only(folder, MAPS_FILES)  # noqa: E731
    check_output_folder(out, is_maps_output, "an earlier output of patterson maps")  # refused before the work
    t0 = time.perf_counter()
    maps = structure_maps(config)
    with publish_folder(out, may_replace=is_maps_output) as tmp:
        write_ccp4(tmp / "density.ccp4", maps.density, maps.cell)
        write_ccp4(tmp / "patterson.ccp4", maps.patterson, maps.cell)
        write_mtz(tmp / "reflections.mtz", maps.hkl, maps.f, maps.cell)
    log.info(
        "%d reflections to %.2f Å, grid %s, cell %s: %.2f s",
        len(maps.hkl),
        maps.d_min,
        "x".join(map(str, maps.density.shape)),
        " ".join(f"{x:g}" for x in maps.cell.parameters),
        time.perf_counter() - t0,
    )
    return {name: out / name for name in MAPS_FILES}
