"""The crystallographic core against gemmi as an independent oracle, and against physical invariants."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest
import torch

from conftest import gemmi_structure, random_atoms
from patterson.cells import Cell, centre_in_cell, expand_to_p1, min_image_distance
from patterson.errors import PattersonError
from patterson.maps import (
    density_from_f,
    f_from_density,
    gaussian_density,
    intensity_grid,
    patterson_from_f,
    reflections_mtz,
)
from patterson.physics import (
    AtomBatch,
    electron_count,
    fft_friendly,
    friedel_expand,
    grid_shape,
    in_friedel_half,
    miller_indices,
    resolution_shells,
    structure_factors,
)
from patterson.structures import Atoms, atomic_numbers

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def rel_rms(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.sqrt(np.mean(np.abs(a - b) ** 2) / np.mean(np.abs(b) ** 2)))


def gemmi_sf(atoms: Atoms, hkl: np.ndarray) -> np.ndarray:
    st = gemmi_structure(atoms)
    st.setup_cell_images()
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    return np.array([calc.calculate_sf_from_model(st[0], [int(x) for x in h]) for h in hkl])


# --- cells -----------------------------------------------------------------------------------------------------


def test_cell_matrices_and_d_spacing_match_gemmi(triclinic):
    g = triclinic.to_gemmi()
    assert np.allclose(triclinic.orth, np.array(g.orth.mat))
    assert np.allclose(triclinic.frac, np.array(g.frac.mat))
    assert triclinic.volume == pytest.approx(g.volume)
    hkl = miller_indices(triclinic, 2.0)
    assert np.allclose(triclinic.d_spacing(hkl), [g.calculate_d([int(x) for x in h]) for h in hkl])
    frac = np.random.default_rng(1).random((5, 3))
    assert np.allclose(triclinic.to_fractional(triclinic.to_cartesian(frac)), frac)
    # torch path gives the same numbers
    assert np.allclose(triclinic.inv_d2(torch.as_tensor(hkl)).numpy(), triclinic.inv_d2(hkl))


BAD_CELLS = [(0, 10, 10), (10, 10, 10, 90, 90, 200), (10, 10, 10, 120, 120, 120), (10, 10, 10, 130, 130, 130)]


@pytest.mark.parametrize("bad", BAD_CELLS)
def test_bad_cells_are_refused(bad):
    with pytest.raises(PattersonError):
        Cell.of(bad)


# --- Miller indices, grids, shells -------------------------------------------------------------------------------


def test_miller_indices_match_gemmi_p1_asu(triclinic):
    hkl = miller_indices(triclinic, 1.5)
    ref = gemmi.make_miller_array(triclinic.to_gemmi(), gemmi.SpaceGroup("P1"), 1.5 - 1e-9)
    assert {tuple(h) for h in hkl} == {tuple(h) for h in ref}
    asu = gemmi.ReciprocalAsu(gemmi.SpaceGroup("P1"))
    assert all(asu.is_in([int(x) for x in h]) for h in hkl)
    full = miller_indices(triclinic, 1.5, half=False)
    assert len(full) == 2 * len(hkl)
    assert in_friedel_half(full).sum() == len(hkl)
    d = triclinic.d_spacing(hkl)
    assert d.min() >= 1.5 - 1e-9 and np.all(np.diff(1 / d**2) >= -1e-12)  # sorted low → high resolution


def test_grid_shapes_are_the_papers_and_fft_friendly(triclinic):
    assert grid_shape(Cell.cubic(12), 1.5) == (24, 24, 24)
    assert grid_shape(Cell.cubic(20), 1.5) == (40, 40, 40)
    assert fft_friendly(49) == 50 and fft_friendly(7, even=False) == 8 and fft_friendly(11) == 12
    shape = grid_shape(triclinic, 1.5)
    for n, length in zip(shape, (triclinic.a, triclinic.b, triclinic.c), strict=True):
        assert n % 2 == 0 and length / n <= 0.5 + 1e-9
    with pytest.raises(PattersonError):
        grid_shape(triclinic, 0.0)
    with pytest.raises(PattersonError):
        grid_shape(triclinic, 1.5, sample_rate=1.0)


def test_resolution_shells_have_equal_counts(triclinic):
    hkl = miller_indices(triclinic, 1.2)
    d = triclinic.d_spacing(hkl)
    shell, edges = resolution_shells(d, 12)
    counts = np.bincount(shell, minlength=12)
    assert counts.max() - counts.min() <= 1  # a triclinic cell has no ties in d
    assert np.all(np.diff(edges) < 0) and edges[-1] == pytest.approx(d.min())
    for i in range(12):  # shells are contiguous in resolution
        assert np.all(d[shell == i] < edges[i]) and np.all(d[shell == i] >= edges[i + 1] * (1 - 1e-9))
    # the bins are gemmi's equal-count bins
    binner = gemmi.Binner()
    binner.setup_from_1_d2(12, gemmi.Binner.Method.EqualCount, 1 / d**2, triclinic.to_gemmi())
    assert np.array_equal(shell, np.array(binner.get_bins_from_1_d2(1 / d**2)))


# --- structure factors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell_name", ["triclinic", "cubic"])
def test_structure_factors_match_gemmi(cell_name, request):
    cell = request.getfixturevalue(cell_name)
    atoms = random_atoms(cell, 20, seed=3)
    hkl = miller_indices(cell, 1.5)
    ref = gemmi_sf(atoms, hkl)
    f64 = structure_factors(AtomBatch.from_atoms([atoms], cell), hkl)[0].numpy()
    assert rel_rms(f64, ref) <= 1e-5
    f32 = structure_factors(AtomBatch.from_atoms([atoms], cell, dtype=torch.float32), hkl)[0].numpy()
    assert f32.dtype == np.complex64 and rel_rms(f32, ref) <= 1e-5


def test_batch_with_padding_equals_single_structures(triclinic):
    structures = [random_atoms(triclinic, n, seed=n) for n in (5, 20, 11)]
    hkl = miller_indices(triclinic, 2.0)
    batch = structure_factors(AtomBatch.from_atoms(structures), hkl)
    for i, atoms in enumerate(structures):
        single = structure_factors(AtomBatch.from_atoms([atoms]), hkl)[0]
        assert torch.allclose(batch[i], single, rtol=1e-12, atol=1e-10)


def test_f_equals_z_variant_and_override_of_b(cubic):
    atoms = random_atoms(cubic, 6, seed=5)
    hkl = miller_indices(cubic, 2.0)
    f = structure_factors(AtomBatch.from_atoms([atoms]), hkl, form="z", b_iso=0.0)[0].numpy()
    frac = cubic.to_fractional(atoms.xyz)
    z = atomic_numbers(atoms.elements)
    ref = (atoms.occ * z * np.exp(2j * np.pi * frac @ hkl.T).T).sum(-1)
    assert np.allclose(f, ref)


def test_friedel_law(triclinic):
    atoms = random_atoms(triclinic, 15, seed=7)
    full = miller_indices(triclinic, 1.5, half=False)
    f = structure_factors(AtomBatch.from_atoms([atoms]), full)[0].numpy()
    index = {tuple(h): i for i, h in enumerate(full)}
    mates = np.array([index[tuple(-h)] for h in full])
    assert np.allclose(f[mates], np.conj(f), atol=1e-9)
    half = miller_indices(triclinic, 1.5)
    f_half = structure_factors(AtomBatch.from_atoms([atoms]), half)
    hkl2, f2 = friedel_expand(half, f_half)
    lookup = dict(zip(map(tuple, hkl2), f2[0].numpy(), strict=True))
    assert np.allclose([lookup[tuple(h)] for h in full], f, atol=1e-9)


def test_symmetry_expansion_matches_gemmi_space_group_calculation():
    cell = Cell(20, 22, 25)
    asym = random_atoms(cell, 6, seed=11).replace(spacegroup="P 21 21 21")
    p1 = expand_to_p1(asym)
    assert len(p1) == 4 * len(asym)
    st = gemmi_structure(asym)
    st.spacegroup_hm = "P 21 21 21"
    st.setup_cell_images()
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    hkl = miller_indices(cell, 3.0)
    ref = np.array([calc.calculate_sf_from_model(st[0], [int(x) for x in h]) for h in hkl])
    ours = structure_factors(AtomBatch.from_atoms([p1]), hkl)[0].numpy()
    assert rel_rms(ours, ref) <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_device(device, cubic):
    atoms = random_atoms(cubic, 10, seed=2)
    hkl = miller_indices(cubic, 1.5)
    f = structure_factors(AtomBatch.from_atoms([atoms], device=device), hkl)
    rho = density_from_f(f, hkl, cubic, grid_shape(cubic, 1.5))
    assert f.device.type == device and rho.device.type == device
    assert torch.isfinite(rho).all()


# --- maps --------------------------------------------------------------------------------------------------------


def _maps(cell, d_min=1.5, n=20, seed=0):
    atoms = random_atoms(cell, n, seed=seed)
    hkl = miller_indices(cell, d_min)
    shape = grid_shape(cell, d_min)
    f = structure_factors(AtomBatch.from_atoms([atoms]), hkl)
    return atoms, hkl, shape, f


def test_density_matches_gemmi_fft(triclinic):
    _, hkl, shape, f = _maps(triclinic)
    rho = density_from_f(f, hkl, triclinic, shape)[0].numpy()
    mtz = reflections_mtz(hkl, f[0].numpy(), triclinic)
    ref = np.array(mtz.transform_f_phi_to_map("F", "PHI", exact_size=list(shape)), copy=True)
    # the MTZ stores float32 amplitudes and phases, hence the tolerance
    assert np.abs(rho - ref).max() <= 1e-5 * np.abs(ref).max()


def test_density_round_trip(triclinic):
    _, hkl, shape, f = _maps(triclinic)
    rho = density_from_f(f, hkl, triclinic, shape)
    back = f_from_density(rho, hkl, triclinic)
    assert torch.allclose(back, f, atol=1e-9 * f.abs().max().item())
    assert torch.allclose(density_from_f(back, hkl, triclinic, shape), rho, atol=1e-12)


def test_density_integrates_to_f000(cubic):
    atoms, _, shape, _ = _maps(cubic)
    hkl = miller_indices(cubic, 1.5, include_000=True)
    batch = AtomBatch.from_atoms([atoms])
    f = structure_factors(batch, hkl)
    rho = density_from_f(f, hkl, cubic, shape)
    assert rho.mean().item() * cubic.volume == pytest.approx(f[0, 0].real.item(), rel=1e-9)
    # IT92 form factors at s = 0 give Z to within a few hundredths of an electron
    assert f[0, 0].real.item() == pytest.approx(electron_count(batch).item(), rel=2e-3)


def test_patterson_is_centrosymmetric_with_origin_peak_sum_f2_over_v(triclinic):
    _, hkl, shape, f = _maps(triclinic)
    pat = patterson_from_f(f, hkl, triclinic, shape)[0]
    inverted = torch.roll(torch.flip(pat, dims=(0, 1, 2)), shifts=(1, 1, 1), dims=(0, 1, 2))  # P(−u)
    assert torch.allclose(pat, inverted, atol=1e-10 * pat.abs().max().item())
    full_sum = 2 * (f.abs() ** 2).sum().item()  # both Friedel halves
    assert pat[0, 0, 0].item() == pytest.approx(full_sum / triclinic.volume, rel=1e-12)
    assert pat[0, 0, 0].item() == pytest.approx(pat.max().item())


def test_patterson_is_the_autocorrelation_of_the_density(cubic):
    _, hkl, shape, f = _maps(cubic, d_min=2.0, n=8)
    rho = density_from_f(f, hkl, cubic, shape)[0]
    pat = patterson_from_f(f, hkl, cubic, shape)[0]
    n = rho.numel()
    for u in [(0, 0, 0), (3, 1, 5), (7, 0, 2)]:
        shifted = torch.roll(rho, shifts=tuple(-x for x in u), dims=(0, 1, 2))  # ρ(x + u)
        auto = (rho * shifted).sum().item() * cubic.volume / n
        assert auto == pytest.approx(pat[u].item(), rel=1e-9, abs=1e-12)


def test_patterson_cannot_tell_shifted_and_inverted_structures(cubic):
    atoms, hkl, shape, f = _maps(cubic, n=12, seed=4)
    moved = atoms.replace(xyz=-atoms.xyz + np.array([1.7, -3.1, 5.5]))  # inverted and translated
    f2 = structure_factors(AtomBatch.from_atoms([moved]), hkl)
    p1 = patterson_from_f(f, hkl, cubic, shape)
    p2 = patterson_from_f(f2, hkl, cubic, shape)
    assert torch.allclose(p1, p2, atol=1e-9 * p1.abs().max().item())
    assert not torch.allclose(density_from_f(f, hkl, cubic, shape), density_from_f(f2, hkl, cubic, shape))


def test_gaussian_density_integrates_and_approaches_band_limited_density(triclinic):
    atoms = random_atoms(triclinic, 8, seed=9).replace(b_iso=np.full(8, 20.0))
    batch = AtomBatch.from_atoms([atoms])
    shape = grid_shape(triclinic, 0.8)
    rho_g = gaussian_density(batch, shape)[0]
    assert rho_g.sum().item() * triclinic.volume / rho_g.numel() == pytest.approx(
        electron_count(batch).item(), rel=1e-3
    )
    hkl = miller_indices(triclinic, 0.8, include_000=True)
    rho_b = density_from_f(structure_factors(batch, hkl), hkl, triclinic, shape)[0]
    cc = np.corrcoef(rho_g.numpy().ravel(), rho_b.numpy().ravel())[0, 1]
    assert cc > 0.999


def test_gaussian_voxel_targets_peak_at_atoms(cubic):
    atoms = random_atoms(cubic, 1, seed=1, elements=["Fe"])
    frac = np.array([[0.25, 0.5, 0.75]])
    atoms = atoms.replace(xyz=cubic.to_cartesian(frac), occ=np.ones(1))
    rho = gaussian_density(AtomBatch.from_atoms([atoms]), (20, 20, 20), form="z", sigma=0.5)[0]
    assert np.unravel_index(int(rho.argmax()), rho.shape) == (5, 10, 15)
    assert rho.sum().item() * cubic.volume / rho.numel() == pytest.approx(26.0, rel=1e-4)  # 0.6 Å sampling
    with pytest.raises(PattersonError):
        gaussian_density(AtomBatch.from_atoms([atoms.replace(b_iso=np.zeros(1))]), (20, 20, 20))


def test_intensity_grid_is_the_reports_f_equals_z_pattern(cubic):
    atoms = random_atoms(cubic, 5, seed=6)
    batch = AtomBatch.from_atoms([atoms])
    grid = intensity_grid(batch, 10)
    assert grid.shape == (1, 10, 10, 10)
    assert grid[0, 0, 0, 0].item() == pytest.approx(electron_count(batch).item() ** 2)
    f = structure_factors(batch, np.array([[3, 1, 4]]), form="z", b_iso=0.0)
    assert grid[0, 3, 1, 4].item() == pytest.approx(f.abs().item() ** 2)


# --- placement --------------------------------------------------------------------------------------------------


def test_centre_in_cell_and_too_small_cell(cubic):
    atoms = random_atoms(Cell.cubic(5), 10, seed=8).replace(cell=None)
    placed = centre_in_cell(atoms, cubic)
    frac = cubic.to_fractional(placed.xyz)
    assert placed.cell == cubic.parameters and np.all((frac > 0) & (frac < 1))
    assert min_image_distance(placed.xyz, cubic) > 5.0
    with pytest.raises(PattersonError, match="does not fit in the cell"):
        centre_in_cell(atoms, Cell.cubic(4.0))


def test_unknown_element_is_refused():
    with pytest.raises(PattersonError, match="unknown element"):
        atomic_numbers(["C", "Xx"])
