"""The peptide-crystal preset (#30): segments of real chains packed by P2₁, P2₁2₁2₁, C2 and P1, half as β stacks."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from patterson import __version__
from patterson.cells import Cell
from patterson.datasets import StoredDataset, build_pool, generate, make_config
from patterson.datasets.degrade import degrade, measurement_error
from patterson.datasets.peptides import WATER_CONTACT, contact_distance, peptide_example, residue_sizes
from patterson.errors import PattersonError
from patterson.maps import density_from_f, patterson_from_f
from patterson.physics import AtomBatch, grid_shape, in_friedel_half, miller_indices, structure_factors
from patterson.structures import Atoms
from patterson.symmetry import HklTable, SpaceGroup, systematically_absent

GROUPS = ("P 21", "P 21 21 21", "C 2", "P 1")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pc") / "pc"
    # seed 15 draws P2₁ (a β stack), P2₁2₁2₁, C2 (a β stack) and P1 for its four examples
    generate(make_config("peptide-crystal", n=4, splits=(0.5, 0.25, 0.25), seed=15), out, progress=False)
    return out


@pytest.fixture(scope="module")
def pool():
    config = make_config("peptide-crystal")
    return build_pool(config, progress=False)[0]


def examples(ds: Path) -> list[dict]:
    """Every stored example with its atoms (the P1 cell), group, resolution and kind."""
    out = []
    with h5py.File(ds / "dataset.h5", "r") as fh:
        for split in ("train", "val", "test"):
            g = fh[split]
            for i in range(len(g["n_atoms"])):
                n = int(g["n_atoms"][i])
                out.append(dict(split=split, cell=Cell(*g["cell"][i]), xyz=g["xyz"][i, :n].astype(np.float64),
                                z=g["z"][i, :n], b=g["b_iso"][i, :n].astype(np.float64),
                                group=g["spacegroup"][i].decode(),
                                d_min=float(g["d_min"][i]), beta=bool(g["beta_stack"][i]),
                                label=g["label"][i].decode()))  # fmt: skip
    return out


def closest_molecules(xyz: np.ndarray, cell: Cell, k: int) -> float:
    """The shortest distance (Å) between atoms of different molecules of a P1 cell of k molecules (k·m, 3) over
    every lattice translation that can matter (brute force, independent of the generator's search)."""
    mols = xyz.reshape(k, -1, 3)
    reach = np.ceil((np.ptp(xyz, axis=0).max() + 3.0) * np.linalg.norm(cell.frac, axis=1)).astype(int)
    steps = np.array(list(itertools.product(*[range(-r, r + 1) for r in reach])))  # (T, 3)
    shifts = steps @ cell.orth.T
    best = np.inf
    for i, j in itertools.product(range(k), repeat=2):
        d = np.linalg.norm(mols[i][:, None, None] - mols[j][None, :, None] - shifts[None, None], axis=-1)
        if i == j:
            d[:, :, np.all(steps == 0, axis=1)] = np.inf  # an atom and its own molecule
        best = min(best, float(d.min()))
    return best


def test_cells_are_dense_clash_free_and_carry_config_and_version(dataset):
    config = make_config("peptide-crystal")
    lo, hi = (config.pack_volume * (1 + s * config.pack_tolerance) for s in (-1, 1))
    with h5py.File(dataset / "dataset.h5", "r") as fh:
        assert fh.attrs["version"] == __version__ and json.loads(fh.attrs["config"])["preset"] == "peptide-crystal"
        assert fh["train/input"].shape[1:] == (64, 64, 64) and fh["train/f_obs"].shape[1:] == (125_023,)
    made = examples(dataset)
    assert {ex["group"] for ex in made} == {SpaceGroup.of(g).name for g in GROUPS}
    assert sorted(ex["beta"] for ex in made) == [False, False, True, True]
    for ex in made:
        k = len(SpaceGroup.of(ex["group"]).rot)
        assert ex["group"] in [SpaceGroup.of(g).name for g in GROUPS] and len(ex["xyz"]) % k == 0
        assert 4 * 4 <= len(ex["xyz"]) // k and np.all(ex["z"] > 1)  # ≥ 4 residues; heavy atoms only
        assert lo <= ex["cell"].volume / len(ex["xyz"]) <= hi
        assert closest_molecules(ex["xyz"], ex["cell"], k) >= config.clash_distance - 1e-6
        assert 0.8 <= ex["d_min"] <= 2.0 and 1.0 < ex["b"].mean() < 20.0


def test_the_expanded_cell_obeys_the_group(dataset):
    """F(hR) = F(h)·exp(−2πi h·t) for every operator x → Rx + t, and the systematic absences are absent."""
    for ex in examples(dataset):
        group = SpaceGroup.of(ex["group"])
        elements = np.array([gemmi_symbol(z) for z in ex["z"]])
        atoms = Atoms(ex["xyz"], elements, ex["b"], np.ones(len(ex["z"])), ex["cell"].parameters, "P 1")
        batch = AtomBatch.from_atoms([atoms], ex["cell"], dtype=torch.float64)
        hkl = miller_indices(ex["cell"], 2.0)
        f = structure_factors(batch, hkl)[0].numpy()
        table = HklTable(hkl, f)
        scale = np.abs(f).max()
        for rot, tran in zip(group.rot, group.tran, strict=True):
            mate, found = table(hkl @ rot)
            assert found.all()
            np.testing.assert_allclose(mate, f * np.exp(-2j * np.pi * hkl @ tran), atol=1e-6 * scale)
        ops = group.gemmi.operations()
        absent = np.array([ops.is_systematically_absent(list(map(int, h))) for h in hkl])
        assert np.abs(f[absent]).max(initial=0) < 1e-6 * scale


def test_beta_stacks_repeat_the_strand_along_a_short_axis(pool):
    items = np.arange(len(pool))
    for i, group in enumerate(GROUPS):
        config = make_config("peptide-crystal", beta_fraction=1.0, space_groups=(group,))
        atoms, label, _, extra = peptide_example(pool, items, config, "train", i)
        cell, sg = Cell(*atoms.cell), SpaceGroup.of(group)
        assert extra["beta_stack"] and extra["spacegroup"] == sg.name
        short = int(np.argmin([cell.a, cell.b, cell.c]))
        assert 4.7 <= (cell.a, cell.b, cell.c)[short] <= 4.9
        if sg.gemmi.crystal_system_str() == "monoclinic":
            assert short == 1  # b, the unique axis, as in 1YJP
        mol = atoms.xyz[: len(atoms) // len(sg.rot)]  # the asymmetric unit: the identity's copy comes first
        ca = mol[np.cumsum([0] + residue_sizes(label)[:-1]) + 1]  # (R, 3)
        assert np.linalg.norm(ca[-1] - ca[0]) / (len(ca) - 1) > 3.2  # a straight strand
        strand = (ca[-1] - ca[0]) / np.linalg.norm(ca[-1] - ca[0])
        axis = cell.orth[:, short] / np.linalg.norm(cell.orth[:, short])
        assert abs(strand @ axis) <= np.sin(np.radians(25)) + 1e-6  # roughly perpendicular
        translate = mol + cell.orth[:, short]
        nearest = np.linalg.norm(mol[:, None] - translate[None], axis=-1).min()
        assert 2.8 - 1e-6 <= nearest < 4.5  # the next strand of the sheet touches it, no closer than 2.8 Å
        assert contact_distance(mol, cell.orth, sg, 2.8) >= 2.8 - 1e-6


def test_entries_are_split_disjointly(dataset):
    with h5py.File(dataset / "dataset.h5", "r") as fh:
        given = {s: set(json.loads(fh[s].attrs["entries"])) for s in ("train", "val", "test")}
    used = {s: set() for s in given}
    for ex in examples(dataset):
        used[ex["split"]].add(ex["label"].split("/")[0])
    for a, b in itertools.combinations(given, 2):
        assert not given[a] & given[b]
    assert all(used[s] <= given[s] for s in given)


def test_items_name_group_resolution_and_kind(dataset):
    ds = StoredDataset(dataset, "train", normalise=False)
    item = ds[0]
    assert item["input"].shape == (1, 64, 64, 64) and isinstance(item["spacegroup"], str)
    assert 0.8 <= item["d_min"] <= 2.0 and isinstance(item["beta_stack"], bool)
    assert ds.has_reflections
    ds.require_reflections()


def test_stored_reflections_are_the_exact_structure_factors_of_the_atoms(dataset):
    """Each example's own Friedel half to its own d_min: f_calc is F of its stored atoms (not read off a map), f_obs
    its noisy amplitudes, the missing ones 0 and absent from the input Patterson map; padding after them is 0."""
    config = make_config("peptide-crystal")
    with h5py.File(dataset / "dataset.h5", "r") as fh:
        for split in ("train", "val", "test"):
            g = fh[split]
            for i in range(len(g["n_atoms"])):
                n, m = int(g["n_atoms"][i]), int(g["n_reflections"][i])
                cell, d_min = Cell(*g["cell"][i]), float(g["d_min"][i])
                hkl = miller_indices(cell, d_min)
                assert m == len(hkl) and g["d_min"].dtype == np.float64 and in_friedel_half(hkl).all()
                elements = np.array([gemmi_symbol(z) for z in g["z"][i, :n]])
                atoms = Atoms(g["xyz"][i, :n].astype(np.float64), elements, g["b_iso"][i, :n].astype(np.float64),
                              g["occ"][i, :n].astype(np.float64), cell.parameters, "P 1")  # fmt: skip
                f = structure_factors(AtomBatch.from_atoms([atoms], cell, dtype=torch.float64), hkl)[0].numpy()
                f_calc, f_obs, measured = g["f_calc"][i], g["f_obs"][i], g["measured"][i]
                np.testing.assert_allclose(f_calc[:m], f, atol=1e-5 * np.abs(f).max())
                assert not f_calc[m:].any() and not f_obs[m:].any() and not measured[m:].any()
                assert np.all(f_obs[:m][~measured[:m]] == 0)  # missing: no amplitude at all
                absent = systematically_absent(SpaceGroup.of(g["spacegroup"][i].decode()), hkl)
                assert not measured[:m][absent].any()  # extinct by the group: not measured, as in real data
                assert np.abs(f[absent]).max(initial=0.0) < 1e-4 * np.abs(f).max()  # and truly zero
                assert 0.02 < 1 - measured[:m][~absent].mean() < 0.09  # missing 0.05 of the others
                strong = measured[:m] & (np.abs(f) > 1e-3 * np.abs(f).max())  # not the systematic absences
                ratio = f_obs[:m][strong] / np.abs(f[strong])
                assert abs(np.std(ratio) - config.noise) < 0.01 and abs(np.mean(ratio) - 1) < 0.005  # noise 3%
                amp = torch.as_tensor(f_obs[:m] * measured[:m], dtype=torch.complex128)[None]
                pat = patterson_from_f(amp, hkl, cell, (64, 64, 64))[0].numpy()
                scale = np.abs(pat).max()
                np.testing.assert_allclose(g["input"][i].astype(np.float64), pat, atol=1e-3 * scale)
                # the missing reflections are not in the input: with them the map would differ
                full = patterson_from_f(torch.as_tensor(np.abs(f))[None].to(torch.complex128), hkl, cell,
                                        (64, 64, 64))[0].numpy()  # fmt: skip
                assert np.abs(full - pat).max() > 1e-2 * scale


def test_a_phasing_method_evaluates_peptide_crystals_each_on_its_own_cell(dataset, tmp_path):
    """``patterson evaluate --method charge-flip``: one example at a time, on a grid of its cell and resolution,
    the stored amplitudes imposed; the map scored against the truth made from its exact structure factors."""
    from patterson.phasing import PhasingConfig
    from patterson.phasing.compare import split_maps
    from patterson.phasing.evaluate import EvaluateConfig, evaluate

    ds = StoredDataset(dataset, "train", normalise=False)
    item = ds[0]
    data = split_maps([item], 0.8, sample_rate=3.0)
    assert data.d_min == pytest.approx(item["d_min"]) and len(data.hkl) == len(item["f_obs"])
    assert data.shape == grid_shape(Cell(*item["cell"].tolist()), item["d_min"], 3.0)
    truth = density_from_f(item["f_calc"][None], data.hkl, data.cell, data.shape)
    torch.testing.assert_close(data.truth, truth)
    phasing = PhasingConfig(n_iter=5, n_starts=1)
    metrics = evaluate(EvaluateConfig(str(dataset), str(tmp_path / "ev"), "charge-flip", split="train",
                                      phasing=phasing, plots=False))  # fmt: skip
    assert metrics["n"] == 2 and (tmp_path / "ev" / "per_example.csv").is_file()


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(cell=(10.0, 10.0, 10.0)), "leave cell unset"),
        (dict(space_groups=("P 4",)), "triclinic, monoclinic"),
        (dict(space_groups=("P 1 1 21",)), "b unique"),
        (dict(grid=(63, 64, 64)), "grid"),
        (dict(k_min=10), "k_min"),
        (dict(d_min_range=(0.7, 2.0)), "d_min_range"),
        (dict(space_groups=("Q 9",)), "unknown space group"),
        (dict(noise_edge=0.01), "noise_edge"),
        (dict(waters=5.0), "waters"),
    ],
)
def test_bad_peptide_settings_are_one_line_errors(changes, message):
    with pytest.raises(PattersonError, match=message):
        make_config("peptide-crystal", **changes)


def test_realistic_crystals_hold_waters_on_hydration_sites(pool):
    """``waters``: the asymmetric unit's last atoms are O where the crystal has room — at least 2.6 Å from every
    atom of the crystal (their own images and the other waters included) and within 3.3 Å of an N or O — at most
    one per residue; the peptide is the one the same draw makes without them."""
    items, lo, hi = np.arange(len(pool)), *WATER_CONTACT
    realistic, placed = make_config("peptide-crystal-realistic"), 0
    for i in range(6):
        atoms, label, _, extra = peptide_example(pool, items, realistic, "train", i)
        k, n_pep = len(SpaceGroup.of(extra["spacegroup"]).rot), sum(residue_sizes(label))
        n_asu = len(atoms) // k
        n_water = n_asu - n_pep
        assert 0 <= n_water <= len(residue_sizes(label))
        bare = peptide_example(pool, items, make_config("peptide-crystal"), "train", i)[0]
        np.testing.assert_allclose(atoms.xyz[:n_pep], bare.xyz[:n_pep])  # waters come after the same peptide
        cell = Cell(*atoms.cell)
        shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3))) @ cell.orth.T  # (27, 3)
        inside = cell.to_cartesian(cell.to_fractional(atoms.xyz) % 1.0)
        around = (inside[None] + shifts[:, None]).reshape(-1, 3)  # the P1 cell and its 26 neighbours
        polar = np.tile(np.isin(atoms.elements, ("N", "O")), 27)
        for w in inside[n_pep:n_asu]:
            d = np.linalg.norm(around - w, axis=1)
            d = d[d > 1e-6]  # not itself
            assert d.min() >= lo - 1e-6
            to_polar = np.linalg.norm(around[polar] - w, axis=1)
            assert to_polar[to_polar > 1e-6].min() <= hi
        assert np.all(atoms.elements[n_pep:n_asu] == "O")
        placed += n_water
    assert placed > 0


def test_measurement_error_grows_to_its_edge_value_as_one_over_d_squared():
    """σ(|F|) is a fraction of its shell's r.m.s. |F| rising from edge/10 to ``edge`` at d_min; drawn into the
    amplitudes by ``noise_edge`` (per example between ``noise`` and ``noise_edge``)."""
    rng = np.random.default_rng(0)
    s2 = np.sort(rng.uniform(0.0, 0.4, 20_000))
    f = rng.rayleigh(size=len(s2)) * np.exp(-5 * s2)  # Wilson-like falling amplitudes
    sigma = measurement_error(f, s2, 0.3)
    top, bottom = slice(-2000, None), slice(0, 2000)
    assert abs(sigma[top].mean() / np.sqrt(np.mean(f[top] ** 2)) - 0.3) < 0.02
    assert sigma[bottom].mean() / np.sqrt(np.mean(f[bottom] ** 2)) < 0.05
    config = make_config("peptide-crystal-realistic", missing=0.0)
    amp = torch.as_tensor(f)[None]
    out, measured = degrade(amp, torch.ones(len(f), dtype=torch.bool), config, [np.random.default_rng(1)], s2)
    assert measured.all()
    edge = np.std((out[0] - amp[0]).numpy()[top]) / np.sqrt(np.mean(f[top] ** 2))
    assert config.noise - 0.02 <= edge <= config.noise_edge + 0.02  # the example's draw, within the preset's range
    assert np.std((out[0] - amp[0]).numpy()[bottom]) < np.std((out[0] - amp[0]).numpy()[top])


def gemmi_symbol(z: int) -> str:
    import gemmi

    return gemmi.Element(int(z)).name
