"""Physics: Miller indices, grids, form factors and exact structure factors of batches of structures (torch).

Sign convention (as gemmi and the International Tables):

    F(h) = Σ_j occ_j f_j(s) exp(−B_j s²/4) exp(2πi h·x_j),     s = 1/d,

with f_j the IT92 four-Gaussian X-ray form factor ``Σ a_k exp(−b_k s²/4) + c`` or, in the 2021 report's variant,
f_j = Z_j. Everything here works on batches (B structures padded to N atoms, padding has occupancy 0) on any
device, in float32 or float64.

The *Friedel half* of a reflection sphere is CCP4's P1 asymmetric unit: l > 0, or l = 0 and h > 0, or
h = l = 0 and k > 0. It pairs naturally with real FFTs along the last axis (see :mod:`patterson.maps`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import gemmi
import numpy as np
import torch

from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.runtime import check_memory
from patterson.structures import Atoms, atomic_numbers

MAX_Z = 98  # gemmi has IT92 coefficients for H (1) to Cf (98)
FORMS = ("it92", "z", "electron")


# --- Miller indices and grids ----------------------------------------------------------------------------------


def check_d_min(d_min: float) -> float:
    """Return d_min as float, or raise PattersonError if it is not a positive finite number."""
    if not (isinstance(d_min, int | float) and math.isfinite(d_min) and d_min > 0):
        raise PattersonError(f"d_min must be a positive number of Å, got {d_min!r}")
    return float(d_min)


def in_friedel_half(hkl: np.ndarray) -> np.ndarray:
    """(M,) bool: whether each of (M, 3) Miller indices lies in CCP4's P1 asymmetric unit."""
    h, k, l = np.asarray(hkl).T
    return (l > 0) | ((l == 0) & (h > 0)) | ((l == 0) & (h == 0) & (k > 0))


def miller_indices(cell: Cell, d_min: float, half: bool = True, include_000: bool = False) -> np.ndarray:
    """All Miller indices with d ≥ d_min, as an (M, 3) int64 array sorted by resolution (low first).

    Parameters
    ----------
    cell : the unit cell.
    d_min : resolution limit in Å; reflections exactly at d_min are kept (to 1e-9 relative).
    half : keep only the Friedel half (P1 asymmetric unit); False gives the full sphere.
    include_000 : add (0, 0, 0) first.
    """
    d_min = check_d_min(d_min)
    h_max = [int(math.floor(length / d_min + 1e-9)) for length in (cell.a, cell.b, cell.c)]
    _check_box(cell, d_min, h_max)
    axes = [np.arange(-m, m + 1) for m in h_max]
    hkl = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    s2 = cell.inv_d2(hkl)
    keep = (s2 <= (1.0 / d_min**2) * (1 + 1e-9)) & (s2 > 0)
    if half:
        keep &= in_friedel_half(hkl)
    hkl, s2 = hkl[keep], s2[keep]
    hkl = hkl[np.lexsort((hkl[:, 2], hkl[:, 1], hkl[:, 0], np.round(s2, 12)))]
    if include_000:
        hkl = np.concatenate([np.zeros((1, 3), dtype=hkl.dtype), hkl])
    return hkl.astype(np.int64)


def friedel_expand(hkl: np.ndarray, f: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """The full sphere from its Friedel half: (M, 3), (..., M) → (2M', 3), (..., 2M') with F(−h) = F(h)*.

    (0, 0, 0), if present, appears once.
    """
    nonzero = np.any(hkl != 0, axis=1)
    idx = torch.as_tensor(np.nonzero(nonzero)[0], device=f.device)
    return np.concatenate([hkl, -hkl[nonzero]]), torch.cat([f, f.index_select(-1, idx).conj()], dim=-1)


def fft_friendly(n: int, even: bool = True) -> int:
    """Smallest integer ≥ n whose prime factors are 2, 3 and 5 only (and even, if asked)."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1 and (not even or m % 2 == 0):
            return m
        m += 1


def grid_shape(cell: Cell, d_min: float, sample_rate: float = 3.0, even: bool = True) -> tuple[int, int, int]:
    """FFT-friendly grid for maps to d_min: spacing at most d_min / sample_rate along each axis.

    The grid also holds every reflection to d_min without aliasing (n > 2 h_max). With ``even`` (default) each
    size is even, which the U-Nets need. The paper's 12 Å cell at d_min 1.5 Å gives 24³; 20 Å gives 40³.
    """
    d_min = check_d_min(d_min)
    if sample_rate < 2:
        raise PattersonError(f"sample_rate must be at least 2 (Nyquist), got {sample_rate}")
    shape = []
    for length in (cell.a, cell.b, cell.c):
        need = max(math.ceil(length * sample_rate / d_min - 1e-6), 2 * math.floor(length / d_min + 1e-9) + 1)
        if need > MAX_GRID_SIDE:
            raise PattersonError(f"the cell {cell.text} at {d_min:g} Å needs {need} grid points along one "
                                 f"axis (at most {MAX_GRID_SIDE}): use a coarser d_min or a smaller cell")  # fmt: skip
        shape.append(fft_friendly(need, even))
    check_memory(math.prod(shape) * BYTES_PER_VOXEL, f"a {'×'.join(map(str, shape))} map grid")
    return tuple(shape)


def _check_box(cell: Cell, d_min: float, h_max: list[int]) -> None:
    box = math.prod(2 * m + 1 for m in h_max)
    check_memory(box * BYTES_PER_INDEX, f"the reflections of the cell {cell.text} to {d_min:g} Å")


def check_size(cell: Cell, d_min: float, sample_rate: float = 3.0) -> None:
    """Raise PattersonError, allocating nothing, when the reflections or the map grid of ``cell`` to ``d_min``
    would not fit in this machine's memory (see :func:`~patterson.runtime.check_memory`)."""
    d_min = check_d_min(d_min)
    _check_box(cell, d_min, [int(math.floor(length / d_min + 1e-9)) for length in (cell.a, cell.b, cell.c)])
    grid_shape(cell, d_min, sample_rate)


BYTES_PER_INDEX = 64  # miller_indices builds the whole box of h, k, l with d-spacings before it cuts the sphere
BYTES_PER_VOXEL = 8 * 24  # float64 maps: a phasing job holds about 24 grids at once (4 starts, iterates, FFTs)
MAX_GRID_SIDE = 4096



def resolution_shells(d: np.ndarray, n_shells: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Split reflections into shells of (nearly) equal count in 1/d², as gemmi's ``Binner`` and CCP4 bin them.

    With the M values of 1/d² sorted, the upper limit of shell i < S−1 is the value at index ⌊(i+1)·M/S⌋; a
    reflection belongs to the first shell whose limit is ≥ its 1/d², so reflections of equal d share a shell.

    Returns
    -------
    shell : (M,) int shell index of each reflection, 0 = lowest resolution.
    edges : (n_shells + 1,) d-spacing edges in Å, decreasing: shell i holds edges[i] > d ≥ edges[i+1]
        (edges[0] is infinite, the last edge is the finest d itself).
    """
    d = np.asarray(d, dtype=np.float64)
    if d.size == 0:
        raise PattersonError("no reflections to split into resolution shells")
    n_shells = int(n_shells)
    if n_shells < 1:
        raise PattersonError(f"n_shells must be at least 1, got {n_shells}")
    s2 = np.round(1.0 / d**2, 12)  # ties stay exact despite rounding
    ordered = np.sort(s2)
    limits = np.full(n_shells, np.inf)
    for i in range(1, n_shells):
        limits[i - 1] = ordered[min(int(s2.size / n_shells * i), s2.size - 1)]
    limits[-1] = ordered[-1]
    shell = np.searchsorted(limits, s2, side="left")
    return shell, np.concatenate([[np.inf], 1.0 / np.sqrt(limits)])


# --- form factors ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _it92_table() -> np.ndarray:
    table = np.zeros((MAX_Z + 1, 9), dtype=np.float64)  # a1..a4, b1..b4, c per atomic number
    for z in range(1, MAX_Z + 1):
        table[z] = gemmi.Element(z).it92.get_coefs()
    return table


@lru_cache(maxsize=1)
def _electron_table() -> np.ndarray:
    table = np.zeros((MAX_Z + 1, 11), dtype=np.float64)  # a1..a5, b1..b5, c = 0 per atomic number
    for z in range(1, MAX_Z + 1):
        coefs = gemmi.Element(z).c4322
        table[z, :10] = [*coefs.a, *coefs.b]
    return table


def form_factor_coefficients(form: str = "it92") -> torch.Tensor:
    """(MAX_Z + 1, 2n + 1) float64 table of a1..an, b1..bn, c by atomic number: X-ray IT92 (n = 4); ``form='z'``
    gives a = 0, c = Z; ``form='electron'`` the electron scattering factors of International Tables C 4.3.2.2
    (n = 5, c = 0; gemmi's ``c4322``), for electron diffraction."""
    if form == "it92":
        return torch.from_numpy(_it92_table())
    if form == "electron":
        return torch.from_numpy(_electron_table())
    if form == "z":
        table = np.zeros((MAX_Z + 1, 9))
        table[:, 8] = np.arange(MAX_Z + 1)
        return torch.from_numpy(table)
    raise PattersonError(f"unknown form factor {form!r} (choose from {', '.join(FORMS)})")


def form_factors(z: torch.Tensor, stol2: torch.Tensor, form: str = "it92") -> torch.Tensor:
    """Atomic scattering factors f(s) for atomic numbers (E,) at stol2 = s²/4 = (sinθ/λ)² (M,) → (E, M)."""
    coefs = form_factor_coefficients(form).to(device=stol2.device, dtype=stol2.dtype)[z]  # (E, 2n + 1)
    n = (coefs.shape[1] - 1) // 2
    a, b, c = coefs[:, :n], coefs[:, n : 2 * n], coefs[:, 2 * n]
    return torch.einsum("ek,ekm->em", a, torch.exp(-b[:, :, None] * stol2[None, None, :])) + c[:, None]


# --- batches of structures -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AtomBatch:
    """B structures in one cell, padded to N atoms (padding: occupancy 0, Z = 1).

    frac (B, N, 3) fractional coordinates; z (B, N) int64; b_iso (B, N) Å²; occ (B, N).
    """

    frac: torch.Tensor
    z: torch.Tensor
    b_iso: torch.Tensor
    occ: torch.Tensor
    cell: Cell

    @classmethod
    def from_atoms(
        cls,
        structures: list[Atoms],
        cell: Cell | None = None,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ) -> AtomBatch:
        """Pad a list of :class:`Atoms` (all in ``cell``, or in their own common cell) into one batch."""
        if not structures:
            raise PattersonError("an empty list of structures")
        if cell is None:
            if structures[0].cell is None:
                raise PattersonError(f"{structures[0].source or 'structure'} has no cell; give one")
            cell = Cell(*structures[0].cell)
        n = max(len(s) for s in structures)
        if n == 0:
            raise PattersonError("a structure with no atoms")
        b = len(structures)
        if any(len(s) == 0 for s in structures):
            empty = next(s for s in structures if len(s) == 0)
            raise PattersonError(f"{empty.source or 'structure'} has no atoms")
        counts = np.array([len(s) for s in structures])
        rows = np.repeat(np.arange(b), counts)  # structure of each atom
        cols = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # slot within it
        frac = np.zeros((b, n, 3))
        z = np.ones((b, n), dtype=np.int64)
        b_iso = np.zeros((b, n))
        occ = np.zeros((b, n))
        frac[rows, cols] = cell.to_fractional(np.concatenate([s.xyz for s in structures]))
        z[rows, cols] = atomic_numbers(np.concatenate([s.elements for s in structures]))
        b_iso[rows, cols] = np.concatenate([s.b_iso for s in structures])
        occ[rows, cols] = np.concatenate([s.occ for s in structures])
        as_t = lambda x: torch.as_tensor(x, dtype=dtype, device=device)  # noqa: E731
        return cls(as_t(frac), torch.as_tensor(z, device=device), as_t(b_iso), as_t(occ), cell)

    def __len__(self) -> int:
        return self.frac.shape[0]


def structure_factors(
    atoms: AtomBatch,
    hkl: np.ndarray | torch.Tensor,
    form: str = "it92",
    b_iso: float | None = None,
    max_elements: int = 2**20,
) -> torch.Tensor:
    """Exact structure factors by direct summation over atoms.

    Parameters
    ----------
    atoms : B structures padded to N atoms.
    hkl : (M, 3) Miller indices.
    form : ``"it92"`` (X-ray form factors) or ``"z"`` (f = Z, the 2021 report's variant).
    b_iso : if given, every atom gets this B-factor instead of its own.
    max_elements : work in chunks of reflections so that B·N·chunk stays below this (bounds memory).

    Returns
    -------
    (B, M) complex tensor (complex64 for float32 input, complex128 for float64).
    """
    occ = atoms.occ
    frac = atoms.frac - torch.floor(atoms.frac)  # (B, N, 3) in [0, 1): keeps 2π h·x small for float32
    dtype, device = frac.dtype, frac.device
    hkl_t = torch.as_tensor(np.asarray(hkl), dtype=dtype, device=device)  # (M, 3)
    if hkl_t.ndim != 2 or hkl_t.shape[-1] != 3:
        raise PattersonError("hkl must be an (M, 3) array of Miller indices")
    stol2 = (atoms.cell.inv_d2(np.asarray(hkl)) / 4.0) if len(hkl_t) else np.zeros(0)
    stol2 = torch.as_tensor(stol2, dtype=dtype, device=device)  # (M,)
    bees = atoms.b_iso if b_iso is None else torch.full_like(atoms.b_iso, float(b_iso))
    elements, index = torch.unique(atoms.z, return_inverse=True)  # (E,), (B, N)
    uniform_b = float(b_iso) if b_iso is not None else None
    if uniform_b is None and bees.numel() and not bees.requires_grad and bool(torch.all(bees == bees.reshape(-1)[0])):
        uniform_b = float(bees.reshape(-1)[0])
    bsz, n = occ.shape
    chunk = max(1, max_elements // max(bsz * n, 1))
    out = []
    for start in range(0, len(hkl_t), chunk):
        h = hkl_t[start : start + chunk]  # (m, 3)
        s2 = stol2[start : start + chunk]  # (m,)
        if uniform_b is not None:  # one B for all: the Debye–Waller factor depends on s only
            w = (form_factors(elements, s2, form) * torch.exp(-uniform_b * s2))[index]  # (B, N, m)
        else:
            w = torch.exp(-bees[..., None] * s2) * form_factors(elements, s2, form)[index]  # (B, N, m) f·Debye–Waller
        w = w * occ[..., None]  # out of place: coordinates, B and occupancies can be refined through it (autograd)
        theta = (2 * math.pi) * (frac @ h.T)  # (B, N, m)
        cos_sin = torch.stack((torch.cos(theta), torch.sin(theta)))  # (2, B, N, m)
        re_im = (cos_sin * w).sum(2)  # (2, B, m)
        out.append(torch.complex(re_im[0], re_im[1]))
    if not out:
        return torch.zeros((bsz, 0), dtype=torch.complex128 if dtype == torch.float64 else torch.complex64)
    return torch.cat(out, dim=-1)


def electron_count(atoms: AtomBatch) -> torch.Tensor:
    """(B,) F(000) = Σ occ·Z, the number of electrons in the cell."""
    return (atoms.occ * atoms.z.to(atoms.occ.dtype)).sum(-1)
