"""The likelihood of a placed fragment and its restrained refinement (#30)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patterson.ideal import ideal_strand
from patterson.phasing.likelihood import centric_reflections, likelihood_target, llg, refine_likelihood, refine_rigid
from patterson.phasing.placement import placed_frac, search_target
from patterson.structures import atomic_numbers
from patterson.symmetry import SpaceGroup
from test_placement import CELL, GROUP, _crystal, _rmsd_modulo_origin


def _target(hkl, f, work=None):
    return search_target(hkl, f, CELL, GROUP, work, None)


def test_centric_reflections_of_p21_are_h0l():
    hkl = np.array([[1, 0, 2], [1, 1, 2], [0, 3, 0], [2, 0, -1], [0, 1, 1]])
    assert centric_reflections(hkl, GROUP.rot).tolist() == [True, False, False, True, False]
    assert not centric_reflections(hkl, SpaceGroup.of("P 1").rot).any()


def test_true_placement_has_the_highest_likelihood():
    model, true, hkl, f = _crystal()
    z = atomic_numbers(model.atoms.elements)
    lik = likelihood_target(_target(hkl, f), z, n_atoms=len(z))
    xyz = torch.as_tensor(model.atoms.xyz - model.atoms.xyz.mean(0))
    rng = np.random.default_rng(0)
    others = placed_frac(xyz, torch.as_tensor(np.stack([np.eye(3)] * 20)), torch.as_tensor(rng.random((20, 3))),
                         CELL).numpy()  # fmt: skip
    gains = llg(lik, np.concatenate([true[None], others]))
    assert gains[0] > 0 and gains[0] > gains[1:].max() + 10
    assert llg(lik, true)[0] == pytest.approx(gains[0])


def test_refinement_brings_a_misplaced_strand_back():
    model, true, hkl, f = _crystal(1.5)
    z = atomic_numbers(model.atoms.elements)
    lik = likelihood_target(_target(hkl, f), z, n_atoms=len(z))
    truth = CELL.to_cartesian(true)
    angle = np.radians(6.0)  # the strand turned about its centre and moved: its geometry stays ideal
    turn = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(angle), -np.sin(angle)], [0.0, np.sin(angle), np.cos(angle)]])
    xyz = (truth - truth.mean(0)) @ turn.T + truth.mean(0) + np.array([0.3, 0.0, -0.2])
    before = llg(lik, CELL.to_fractional(xyz))[0]
    refined, gain = refine_likelihood(lik, xyz, n_iter=80)
    assert gain > before
    assert _rmsd_modulo_origin(CELL.to_fractional(refined), true) < 0.5 * _rmsd_modulo_origin(CELL.to_fractional(xyz),
                                                                                               true)  # fmt: skip
    bonds = np.linalg.norm(np.diff(refined[ideal_strand("AAAA").names == "CA"], axis=0), axis=1)
    assert np.allclose(bonds, 3.8, atol=0.15)  # the geometry is kept


def _turned(xyz, degrees, axis, shift):
    """xyz (N, 3) turned about its centre by ``degrees`` about coordinate ``axis`` and shifted by ``shift`` Å."""
    a, (i, j) = np.radians(degrees), [k for k in range(3) if k != axis]
    turn = np.eye(3)
    turn[[i, i, j, j], [i, j, i, j]] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    return (xyz - xyz.mean(0)) @ turn.T + xyz.mean(0) + np.asarray(shift)


def test_rigid_refinement_brings_poses_back_at_once_and_keeps_their_shape():
    model, true, hkl, f = _crystal(1.5)
    z = atomic_numbers(model.atoms.elements)
    lik = likelihood_target(_target(hkl, f), z, n_atoms=len(z))
    truth = CELL.to_cartesian(true)
    poses = np.stack([_turned(truth, 5.0, 0, [0.3, 0.0, -0.2]), _turned(truth, -4.0, 2, [-0.2, 0.25, 0.1])])
    refined, gains = refine_rigid(lik, poses, n_iter=60)
    assert refined.shape == poses.shape
    assert np.allclose(gains, llg(lik, CELL.to_fractional(refined)))
    assert (gains > llg(lik, CELL.to_fractional(poses))).all()
    for pose, out in zip(poses, refined, strict=True):
        assert _rmsd_modulo_origin(CELL.to_fractional(out), true) < 0.3 * _rmsd_modulo_origin(
            CELL.to_fractional(pose), true)
        inner = np.linalg.norm(out[:, None] - out[None], axis=-1)
        assert np.allclose(inner, np.linalg.norm(pose[:, None] - pose[None], axis=-1), atol=1e-9)  # rigid
    alone, gain = refine_rigid(lik, poses[1:], n_iter=60)  # one pose alone comes to the same place
    assert np.abs(alone[0] - refined[1]).max() < 0.05 and gain[0] == pytest.approx(gains[1], abs=0.05)


def test_free_reflections_are_never_read():
    model, true, hkl, f = _crystal(2.0)
    z = atomic_numbers(model.atoms.elements)
    free = np.random.default_rng(1).random(len(hkl)) < 0.1
    scrambled = f.copy()
    scrambled[free] = np.random.default_rng(2).random(int(free.sum())) * f.max()
    start = CELL.to_cartesian(true) + 0.2
    runs = [refine_likelihood(likelihood_target(_target(hkl, amp, ~free), z), start, n_iter=10)
            for amp in (f, scrambled)]  # fmt: skip
    assert np.array_equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
