"""Atoms from a solved map (#29): elements from the cell contents, least-squares refinement against the work
amplitudes with the exact physics, R1 on free reflections it never fitted; on real data from ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from patterson.cells import frac_distances
from patterson.maps import density_from_f
from patterson.shelx import read_shelx
from patterson.solving import prepare_data, read_reflections
from patterson.solving.atoms import (
    AtomModel,
    _expand,
    assign_elements,
    atoms_per_asu,
    complete_model,
    r_factors,
    reassign_elements,
    refine_atoms,
    scattering_power,
)
from patterson.solving.disorder import add_disorder, disorder_candidates
from patterson.solving.structure import atoms_of_split, cell_contents
from patterson.symmetry import SpaceGroup, images

SMALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "small"


def test_the_heaviest_elements_go_to_the_highest_peaks():
    group = SpaceGroup.of("P 1 21/c 1")  # K = 4
    composition = {"C": 40.0, "H": 44.0, "Cl": 4.0, "Pd": 4.0}  # per asu: Pd 1, Cl 1, C 10
    assert atoms_per_asu(composition, group) == {"Pd": 1.0, "Cl": 1.0, "C": 10.0}
    height = np.array([5.0, 30.0, 12.0, *np.linspace(4.0, 3.0, 12)])
    elements = assign_elements(height, np.full(len(height), 4), composition, group)
    assert elements[1] == "Pd" and elements[2] == "Cl"
    assert (elements == "C").sum() == 10 and (elements == None).sum() == 3  # noqa: E711 - the peaks left over


def _published(name: str):
    """A data set's data (thpp: P2₁/n, 0.70 Å) and its published non-H atoms (from published.ins or .res)."""
    refl = read_reflections(SMALL / name / f"{name}.hkl")
    data = prepare_data(refl)
    path = next(SMALL / name / f"published{s}" for s in (".ins", ".res") if (SMALL / name / f"published{s}").is_file())
    atoms = [a for a in read_shelx(path.read_text(), str(path)).atoms if a[1] != "H"]
    frac, elements = np.array([a[2] for a in atoms]), np.array([a[1] for a in atoms])
    k = len(refl.group.rot)
    mult = np.array([len(np.unique(np.round(images(refl.group, f) % 1, 3), axis=0)) for f in frac])
    _, rep = np.unique(data.orbit, return_index=True)  # one reflection per symmetry orbit
    free = np.random.default_rng(0).random(len(rep)) < 0.05
    return data, refl.group, (frac, elements, mult / k), (data.f[rep], None, data.hkl[rep], free)


def _p1_free(data, free: np.ndarray) -> np.ndarray:
    """The P1 reflections of each free orbit."""
    return free[np.unique(data.orbit, return_inverse=True)[1]]


def test_refinement_from_a_perturbed_model_lowers_r1_and_random_atoms_do_not_get_there():
    data, group, (frac, elements, occ), obs = _published("thpp")
    rng = np.random.default_rng(1)
    shift = rng.normal(0, 0.3, frac.shape) / np.array(data.cell.parameters[:3])  # 0.3 Å r.m.s. per axis
    start = AtomModel((frac + shift) % 1.0, elements, np.full(len(frac), 3.0), occ)
    before = r_factors(start, *obs, (data.cell, group, "it92"))
    after = refine_atoms(start, obs, data.cell, group, rounds=2, steps=20)
    assert before.r1_work > 0.5 and after.r1_work < 0.2 and after.solved  # R1-free ≤ 0.25 on ~80 free reflections
    assert len(after) >= len(frac) - 2  # the N3/C3 mixed site (EXYZ) merges; nothing else is lost
    noise = AtomModel(rng.random(frac.shape), elements, np.full(len(frac), 3.0), occ)
    wrong = refine_atoms(noise, obs, data.cell, group, rounds=2, steps=10)
    assert wrong.r1_free > 0.5 and not wrong.solved  # the free R1 is a figure refinement cannot fit


def test_refinement_never_reads_the_free_amplitudes():
    data, group, (frac, elements, occ), (f, sigma, hkl, free) = _published("thpp")
    start = AtomModel(frac, elements, np.full(len(frac), 3.0), occ)
    a = refine_atoms(start, (f, sigma, hkl, free), data.cell, group, rounds=1, steps=5)
    scrambled = f.copy()
    scrambled[free] = np.random.default_rng(2).permutation(f[free]) * 3.0
    b = refine_atoms(start, (scrambled, sigma, hkl, free), data.cell, group, rounds=1, steps=5)
    np.testing.assert_array_equal(a.frac, b.frac)
    np.testing.assert_array_equal(a.b_iso, b.b_iso)
    assert a.r1_work == b.r1_work and a.r1_free != b.r1_free


def test_an_empty_model_is_an_error():
    data, group, _, obs = _published("thpp")
    empty = AtomModel(np.zeros((0, 3)), np.array([], dtype=str), np.zeros(0), np.zeros(0))
    with pytest.raises(Exception, match="no atoms"):
        refine_atoms(empty, obs, data.cell, group)


def test_completion_puts_back_atoms_left_out_and_never_reads_the_free_amplitudes():
    data, group, (frac, elements, occ), (f, sigma, hkl, free) = _published("thpp")
    _, inverse = np.unique(data.orbit, return_inverse=True)
    free_p1 = free[inverse]  # the P1 reflections of each free orbit
    left_out = np.array([2, 7, 11])
    keep = ~np.isin(np.arange(len(frac)), left_out)
    start = AtomModel(frac[keep], elements[keep], np.full(int(keep.sum()), 3.0), occ[keep])
    start = refine_atoms(start, (f, sigma, hkl, free), data.cell, group, rounds=1, steps=20)
    setting = (data.cell, group, "it92")
    done = complete_model(start, (f, sigma, hkl, free), (data.f, data.hkl, free_p1), setting, data.d_min)
    assert len(done) > len(start) and done.r1_work < start.r1_work and done.r1_free < start.r1_free
    images = _expand(torch.as_tensor(done.frac), group).numpy()
    assert all(frac_distances(frac[i][None], images, data.cell).min() < 0.5 for i in left_out)  # back where they were
    scrambled = np.where(free_p1, data.f * 3.0 + 1.0, data.f)
    again = complete_model(start, (np.where(free, f * 3.0 + 1.0, f), sigma, hkl, free),
                           (scrambled, data.hkl, free_p1), setting, data.d_min)  # fmt: skip
    assert np.array_equal(again.frac, done.frac) and np.array_equal(again.b_iso, done.b_iso)


def test_refined_scattering_power_tells_c_n_and_f_apart():
    data, group, (frac, elements, occ), obs = _published("thpp")
    carbon = AtomModel(frac, np.full(len(frac), "C"), np.full(len(frac), 3.0), occ)
    carbon = refine_atoms(carbon, obs, data.cell, group, rounds=1, steps=20)  # every atom called C, refined
    electrons = scattering_power(carbon, obs, (data.cell, group, "it92"))
    truth = elements[[int(np.argmin(frac_distances(x[None], frac, data.cell))) for x in carbon.frac]]
    assert electrons[truth == "F"].min() > electrons[truth == "N"].max() > electrons[truth == "C"].mean()
    composition = {"C": 40, "F": 8, "N": 16}
    _, inverse = np.unique(data.orbit, return_inverse=True)
    p1 = (data.f, data.hkl, obs[3][inverse])
    again = reassign_elements(carbon, obs, p1, (data.cell, group, "it92"), composition)
    right = np.mean(again.elements == elements[[int(np.argmin(frac_distances(x[None], frac, data.cell)))
                                                for x in again.frac]])  # fmt: skip
    assert right >= 0.85 and again.r1_work < carbon.r1_work


def test_a_minor_component_left_out_is_put_back_with_its_share_of_the_site():
    data, group, (frac, elements, occ), (f, sigma, hkl, free) = _published("cod2240189")  # ClO4⁻ in two orientations
    path = SMALL / "cod2240189" / "published.res"
    atoms = [a for a in read_shelx(path.read_text(), str(path)).atoms if a[1] != "H"]
    sof = {name: site for name, _, _, site, _ in atoms}
    minor = np.array([name.endswith("'") for name, *_ in atoms])  # CL1' O2' O3' (occupancy 0.23)
    whole = np.array([sof[name] + sof.get(name + "'", 0.0) for name, *_ in atoms])  # the major ones made whole
    b_iso = np.array([8 * np.pi**2 * u for *_, u in atoms])
    setting, p1 = (data.cell, group, "it92"), (data.f, data.hkl, _p1_free(data, free))
    start = AtomModel(frac[~minor], elements[~minor], b_iso[~minor], whole[~minor])  # the authors' major atoms
    start = r_factors(start, f, sigma, hkl, free, setting)
    done = add_disorder(start, (f, sigma, hkl, free), p1, setting, data.d_min)
    assert done.r1_work < start.r1_work - 0.01 and done.r1_free < start.r1_free
    second, first = done.part == 2, done.part == 1
    images = _expand(torch.as_tensor(done.frac[second]), group).numpy()
    o3 = frac[[name == "O3'" for name, *_ in atoms]]  # the clearest of the minor sites (O2' leaves no Fo − Fc peak
    assert frac_distances(o3, images, data.cell).min() < 0.3  # above 5 r.m.s. over the authors' major atoms)
    minor_share, major_share = done.occ[second].sum(), done.occ[first].sum()  # one pair, general positions
    assert 0.1 < minor_share / (minor_share + major_share) < 0.4 and np.isclose(minor_share + major_share, 1.0)
    scrambled = np.where(p1[2], data.f * 3.0 + 1.0, data.f)
    again = add_disorder(start, (np.where(free, f * 3.0 + 1.0, f), sigma, hkl, free), (scrambled, data.hkl, p1[2]),
                         setting, data.d_min)  # fmt: skip
    assert np.array_equal(again.frac, done.frac) and np.array_equal(again.occ, done.occ)  # free F never read


def test_an_ordered_structure_gets_no_minor_components():
    data, group, (frac, elements, occ), obs = _published("ntd51a")  # ordered; anisotropy leaves Fo − Fc peaks
    start = refine_atoms(AtomModel(frac, elements, np.full(len(frac), 3.0), occ), obs, data.cell, group, rounds=1)
    p1 = (data.f, data.hkl, _p1_free(data, obs[3]))
    assert disorder_candidates(start, p1, (data.cell, group, "it92"), data.d_min) == []


def test_the_atoms_step_claims_a_synthetic_peptide_crystal_from_its_true_map_and_not_from_random_phases(tmp_path):
    """solve's atoms step on the maps of phasing methods (atoms_of_split, as the peptide-crystal benchmark and the
    demo use it): the map of the true phases refines to R1-free ≤ 0.25, a map of random phases does not."""
    from patterson.datasets import StoredDataset, generate, make_config
    from patterson.phasing.compare import split_maps

    config = make_config("peptide-crystal", n=2, splits=(0.5, 0.0, 0.5), seed=15, d_min_range=(1.0, 1.0),
                         b_range=(5.0, 5.0))  # fmt: skip
    generate(config, tmp_path / "pc", progress=False)
    item = StoredDataset(tmp_path / "pc", "train", normalise=False)[0]
    data = split_maps([item], 1.0, sample_rate=2.0)
    group, composition = SpaceGroup.of(item["spacegroup"]), cell_contents(item["z"])
    assert not group.is_p1  # P2₁: the origin matters
    right = atoms_of_split(data.truth[0], data, group, composition)
    assert right is not None and right.solved and right.r1_free < 0.2
    elsewhere = torch.roll(data.truth[0], shifts=(3, 1, 5), dims=(0, 1, 2))  # an origin the group does not permit
    moved = atoms_of_split(elsewhere, data, group, composition)  # back at the group's origin first, as in solve
    assert moved is not None and moved.solved and moved.r1_free < 0.2
    phases = torch.rand(len(data.hkl), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 * np.pi
    f = torch.polar(data.f_obs[0], phases)
    noise = density_from_f(f[None], data.hkl, data.cell, data.shape)[0]
    wrong = atoms_of_split(noise, data, group, composition)
    assert wrong is None or not wrong.solved
