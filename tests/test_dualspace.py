"""Dual-space direct methods (SHELXD-like): small atomic-resolution structures solved in P1 and in their space group,
the free set never read (bit for bit), bad options refused in one line, and ``solve --refine dual-space``."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest
import torch

from patterson.cells import Cell, expand_to_p1
from patterson.errors import PattersonError
from patterson.evaluation import align
from patterson.phasing import METHOD_OPTIONS, DualSpaceOptions, PhasingConfig, dual_space, method_options, phase
from patterson.phasing.dualspace import e_map, expand, make_problem, map_peaks, point_structure_factors
from patterson.physics import AtomBatch, grid_shape, miller_indices, structure_factors
from patterson.solving.symmetry import is_permitted_shift
from patterson.structures import Atoms
from patterson.symmetry import SpaceGroup

D_MIN = 1.0
QUICK = dict(n_iter=20, n_starts=8, n_trials=16, n_extend=10, max_seconds=0)  # no time budget: deterministic


def spread_atoms(cell: Cell, n: int, seed: int, spacegroup: str = "P 1") -> Atoms:
    """n C/N/O atoms (B = 3 Å²) at random positions at least 1.3 Å from each other and from their symmetry
    images."""
    group, rng, frac = SpaceGroup.of(spacegroup), np.random.default_rng(seed), []
    while len(frac) < n:
        x = rng.random(3)
        placed = np.array([x, *frac])
        d = np.concatenate([placed @ r.T + t for r, t in zip(group.rot, group.tran, strict=True)])[1:] - x  # not x
        if len(d) == 0 or np.linalg.norm(cell.to_cartesian(d - np.round(d)), axis=1).min() > 1.3:
            frac.append(x)
    elements = np.array(["C", "N", "O", "C"] * n)[:n]
    return Atoms(cell.to_cartesian(np.array(frac)), elements, np.full(n, 3.0), np.ones(n), cell.parameters, spacegroup)


def problem_of(atoms: Atoms, cell: Cell):
    """Exact |F| of the whole cell on the P1 Friedel half to D_MIN: (hkl (M, 3), F (1, M) complex, grid)."""
    hkl = miller_indices(cell, D_MIN)
    f = structure_factors(AtomBatch.from_atoms([expand_to_p1(atoms)], cell), hkl)
    return hkl, f, grid_shape(cell, D_MIN)


def map_cc(result, f: torch.Tensor, hkl: np.ndarray, cell: Cell) -> float:
    """CC of the true F and |F| with the result's phases after the origin and hand search."""
    return float(align(f, torch.polar(f.abs(), result.phi_rad), hkl, cell).score[0])


P1_CELL = Cell(9.0, 10.0, 11.0, 90.0, 90.0, 90.0)
P212121_CELL = Cell(8.0, 9.0, 10.0, 90.0, 90.0, 90.0)


@pytest.fixture(scope="module")
def p1_problem():
    atoms = spread_atoms(P1_CELL, 16, seed=1)
    return problem_of(atoms, P1_CELL)


def test_dual_space_solves_a_p1_structure(p1_problem):
    hkl, f, shape = p1_problem
    result = dual_space(f.abs(), hkl, P1_CELL, shape, DualSpaceOptions(**QUICK), f000=16 * 6.75)
    assert result.method == "dual-space" and result.rho.shape == (1, *shape) and result.phi_rad.shape == f.shape
    assert map_cc(result, f, hkl, P1_CELL) > 0.9
    assert float(result.r_free[0]) < 0.5 * float(result.validation.r_free_random[0])


def test_dual_space_solves_in_the_space_group():
    atoms = spread_atoms(P212121_CELL, 6, seed=2, spacegroup="P 21 21 21")
    hkl, f, shape = problem_of(atoms, P212121_CELL)
    group = SpaceGroup.of("P 21 21 21")
    options = DualSpaceOptions(symmetry="group", patterson=False, **QUICK)
    result = dual_space(f.abs(), hkl, P212121_CELL, shape, options, f000=24 * 6.75, group=group)
    assert map_cc(result, f, hkl, P212121_CELL) > 0.9
    # worked in the group: the phases obey it at one of its own origins
    found = align(f, torch.polar(f.abs(), result.phi_rad), hkl, P212121_CELL)
    assert is_permitted_shift(group, found.shift_frac[0].numpy(), tol=0.02)


def test_the_free_set_is_never_imposed_bit_for_bit(p1_problem):
    hkl, f, shape = p1_problem
    free = torch.zeros(f.shape, dtype=torch.bool)
    free[0, ::17] = True
    changed = torch.where(free, 3.0 * f.abs() + 1.0, f.abs())
    options = DualSpaceOptions(n_iter=8, n_starts=4, n_trials=4, n_extend=4, max_seconds=0)
    first = dual_space(f.abs(), hkl, P1_CELL, shape, options, free=free)  # no F(000): the atom count from Wilson
    second = dual_space(changed, hkl, P1_CELL, shape, options, free=free)
    assert torch.equal(first.phi_rad, second.phi_rad) and torch.equal(first.rho, second.rho)
    assert torch.equal(first.free, free) and not torch.equal(first.r_free, second.r_free)  # only R-free sees them


def test_point_atoms_and_peaks_round_trip():
    atoms = spread_atoms(P212121_CELL, 5, seed=3, spacegroup="P 21 21 21")
    hkl, f, _ = problem_of(atoms, P212121_CELL)
    group = SpaceGroup.of("P 21 21 21")
    problem = make_problem(f.abs()[0], torch.ones(f.shape[1], dtype=torch.bool), hkl, P212121_CELL,
                           DualSpaceOptions(e_min=0.0), 20.0, group)  # fmt: skip
    frac = torch.as_tensor(P212121_CELL.to_fractional(atoms.xyz), dtype=torch.float32)[None]
    e_calc = point_structure_factors(*expand(problem, frac, torch.ones(1, 5)), problem.hkl_strong)  # (1, S)
    assert float((e_calc.abs() ** 2).mean()) == pytest.approx(1.0, abs=0.2)  # normalised like E
    peaks, height = map_peaks(problem, e_map(problem, torch.polar(torch.ones_like(e_calc.real), e_calc.angle())), 5)
    images = torch.remainder(torch.einsum("gij,nj->gni", problem.rot, frac[0]) + problem.tran[:, None], 1.0)
    d = peaks[0][:, None, None] - images[None]  # (5, G, 5, 3)
    dist = torch.matmul(d - torch.round(d), problem.orth.T).norm(dim=-1).amin(dim=(1, 2))
    assert dist.max() < 0.2 and (height > 0).all()  # one peak per atom, none a symmetry image of another


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"omit_fraction": 1.0}, "omit_fraction"),
        ({"weights": "tanh"}, "unknown E-map weights 'tanh'"),
        ({"atom_weights": "z"}, "unknown atom weights 'z'"),
        ({"symmetry": "p2"}, "unknown symmetry 'p2'"),
        ({"n_trials": 0}, "n_trials"),
        ({"n_atoms": 1}, "n_atoms"),
        ({"max_seconds": -1.0}, "max_seconds"),
        ({"n_polish": 0}, "n_polish"),
        ({"stop_cc": 2.0}, "stop_cc"),
        ({"n_tangent": -1}, "n_tangent"),
        ({"patience": -1}, "patience"),
        ({"fixed_fraction": 0.0}, "fixed_fraction"),
    ],
)
def test_bad_options_are_one_line_errors(changes, message):
    with pytest.raises(PattersonError, match=message) as err:
        DualSpaceOptions(**changes)
    assert "\n" not in str(err.value)


def test_registered_by_name_and_for_solve(p1_problem):
    hkl, f, shape = p1_problem
    assert isinstance(METHOD_OPTIONS["dual-space"], DualSpaceOptions)
    assert PhasingConfig(refine="dual-space").options("dual-space").seed == 0
    options = method_options("dual-space", n_iter=4, n_starts=2, n_trials=2, n_extend=2, max_seconds=0)
    assert phase("dual-space", f.abs(), hkl, P1_CELL, shape, options).method == "dual-space"
    with pytest.raises(PattersonError, match="dual-space takes DualSpaceOptions"):
        dual_space(f.abs(), hkl, P1_CELL, shape, METHOD_OPTIONS["charge-flip"])


def test_solve_runs_dual_space_in_the_space_group(tmp_path, monkeypatch):
    from patterson.solving.solve import SolveConfig, solve

    atoms = spread_atoms(P212121_CELL, 6, seed=2, spacegroup="P 21 21 21")
    hkl, f, _ = problem_of(atoms, P212121_CELL)
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.SpaceGroup("P 21 21 21")
    mtz.set_cell_for_all(P212121_CELL.to_gemmi())
    mtz.add_dataset("test")
    mtz.add_column("FP", "F")
    mtz.set_data(np.column_stack([hkl, f.abs()[0].numpy()]).astype(np.float32))  # P1 half: merged on reading
    mtz.write_to_file(str(tmp_path / "p212121.mtz"))
    monkeypatch.setitem(METHOD_OPTIONS, "dual-space", DualSpaceOptions(**QUICK))
    config = SolveConfig(str(tmp_path / "p212121.mtz"), phasing=PhasingConfig(refine="dual-space"), progress=False,
                         composition="C8 N8 O8")  # fmt: skip
    solution = solve(config)
    assert solution.summary["method"] == "dual-space" and solution.summary["networks_tried"] == []
    assert solution.summary["symmetry"]["written_in"] == "P 21 21 21"
    m = {tuple(h): i for i, h in enumerate(hkl)}
    idx = [m.get(tuple(h), m.get(tuple(-h))) for h in solution.hkl]
    truth = f[:, idx]
    truth = torch.where(torch.as_tensor([tuple(h) in m for h in solution.hkl])[None], truth, truth.conj())
    cc = float(align(truth, torch.polar(truth.abs(), torch.as_tensor(solution.phi)[None]), solution.hkl,
                     P212121_CELL).score[0])  # fmt: skip
    assert cc > 0.9
