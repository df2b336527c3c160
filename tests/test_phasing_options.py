"""The phasing options: one frozen class per family, validated once, one table of defaults that the CLI help and the
demo report read; and golden numbers of short runs, so that a refactoring of the methods keeps their maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_atoms
from patterson.cells import Cell
from patterson.errors import PattersonError
from patterson.phasing import (
    METHOD_OPTIONS,
    FlipOptions,
    LearnedOptions,
    PhasingConfig,
    SupportOptions,
    charge_flip,
    hio,
    learned,
    method_options,
    phase,
)
from patterson.physics import AtomBatch, electron_count, grid_shape, miller_indices, structure_factors

CELL = Cell.cubic(10.0)

# (Σρ, Σ|ρ|, R-work per structure, R-free per structure) of short runs on the two 12-atom structures of
# tests/test_phasing.py, computed with the methods before their options were gathered into classes (#28)
SHORT = dict(n_iter=12, n_starts=2, n_polish=4)
GOLDEN = {
    "hio": (4213.535065768911, 4213.535065768911, [0.2679639919957459, 0.16004203103230083],
            [0.3183892144307113, 0.19992743236124433]),
    "rrr-E": (6848.684846773241, 6848.684846773241, [0.15735453280038567, 0.15695607671348338],
              [0.36779029356666476, 0.3203694600355404]),
    "flip-F": (16270.37541024743, 17333.341164328558, [0.050941058400253654, 0.05544182721564412],
               [0.40865195535606774, 0.4684764640505249]),
    "flip-E-lde": (4182.404139776947, 7505.6865091955715, [0.21527215675225908, 0.09692806565551361],
                   [0.27147307286820316, 0.11837721542264909]),
    "histogram": (11136.220595470673, 14171.6840402584, [0.10444803300425999, 0.10030477586435403],
                  [0.4946294661348759, 0.4984206628875515]),
}  # fmt: skip


@pytest.fixture(scope="module")
def problem():
    structures = []
    for seed in (1, 2):
        atoms = random_atoms(Cell.cubic(5.0), 12, seed=seed, elements=["C", "N", "O"])
        structures.append(atoms.replace(xyz=atoms.xyz + 2.5, b_iso=np.full(12, 5.0), occ=np.ones(12)))
    batch = AtomBatch.from_atoms(structures, CELL)
    hkl = miller_indices(CELL, 1.0)
    return structure_factors(batch, hkl).abs(), hkl, grid_shape(CELL, 1.0), electron_count(batch)


def _run(name: str, amp, hkl, shape, f000):
    support = SupportOptions(seed=3, shrink_every=4, **SHORT)
    if name == "hio":
        return hio(amp, hkl, CELL, shape, support, f000=f000)
    if name == "rrr-E":
        return hio(amp, hkl, CELL, shape, support.replace(scheme="rrr", amplitudes="E"), f000=f000)
    if name == "flip-F":
        return charge_flip(amp, hkl, CELL, shape, FlipOptions(seed=1, **SHORT))
    if name == "flip-E-lde":
        return charge_flip(amp, hkl, CELL, shape, FlipOptions(seed=1, amplitudes="E", polish="lde", **SHORT))
    return learned(amp, hkl, CELL, shape, "histogram", LearnedOptions(n_iter=3, n_finish=2, n_starts=2, seed=4),
                   f000=f000)  # fmt: skip


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_short_runs_give_the_golden_maps(problem, name):
    amp, hkl, shape, f000 = problem
    res = _run(name, amp, hkl, shape, f000)
    total, absolute, r_work, r_free = GOLDEN[name]
    assert float(res.rho.double().sum()) == pytest.approx(total, rel=1e-5)
    assert float(res.rho.double().abs().sum()) == pytest.approx(absolute, rel=1e-5)
    assert res.r_work.tolist() == pytest.approx(r_work, rel=1e-5)
    assert res.r_free.tolist() == pytest.approx(r_free, rel=1e-5)


def test_phase_by_name_is_the_method_with_its_defaults(problem):
    amp, hkl, shape, f000 = problem
    options = method_options("raar", **SHORT)
    assert isinstance(options, SupportOptions) and options.scheme == "raar" and options.feedback == 0.85
    by_name = phase("raar", amp, hkl, CELL, shape, options, f000=f000)
    direct = hio(amp, hkl, CELL, shape, SupportOptions(scheme="raar", **SHORT), f000=f000)
    assert by_name.method == "raar" and torch.equal(by_name.rho, direct.rho)
    with pytest.raises(PattersonError, match="charge-flip takes FlipOptions, not SupportOptions"):
        phase("charge-flip", amp, hkl, CELL, shape, options)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SupportOptions(n_iter=0), "n_iter and n_starts must be at least 1"),
        (lambda: FlipOptions(n_starts=0), "n_iter and n_starts must be at least 1"),
        (lambda: SupportOptions(select="best"), "unknown selection 'best'"),
        (lambda: SupportOptions(free_fraction=0.9), "free"),
        (lambda: SupportOptions(scheme="er"), "unknown update scheme 'er'"),
        (lambda: SupportOptions(amplitudes="U"), "unknown amplitudes 'U'"),
        (lambda: SupportOptions(support_fraction=0.0), "support_fraction"),
        (lambda: SupportOptions(beta=-1.0), "beta must be > 0"),
        (lambda: FlipOptions(polish="none"), "unknown polish 'none'"),
        (lambda: FlipOptions(delta_fraction=1.5), "delta_fraction"),
        (lambda: FlipOptions(n_polish=-1), "n_polish"),
        (lambda: LearnedOptions(relax=0.0), "0 < relax <= 1"),
        (lambda: LearnedOptions(scheme="hio"), "unknown loop scheme 'hio'"),
        (lambda: FlipOptions().replace(beta=0.5), "FlipOptions has no option beta"),
        (lambda: method_options("er"), "unknown phasing method 'er'"),
        (lambda: PhasingConfig(n_iter=0), "at least 1"),
    ],
)
def test_bad_options_are_one_line_errors(make, message):
    with pytest.raises(PattersonError, match=message) as err:
        make()
    assert "\n" not in str(err.value)


def test_options_are_frozen_and_keyword_only():
    options = SupportOptions()
    with pytest.raises(AttributeError):
        options.n_iter = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        SupportOptions(10)  # type: ignore[misc]


def test_one_table_of_defaults_and_the_config_builds_from_it():
    assert METHOD_OPTIONS["hio"] == SupportOptions() and METHOD_OPTIONS["charge-flip"] == FlipOptions()
    assert (METHOD_OPTIONS["hio"].n_iter, METHOD_OPTIONS["charge-flip"].n_iter, METHOD_OPTIONS["learned"].n_iter) == (
        400, 300, 40
    )  # fmt: skip
    config = PhasingConfig(n_starts=2, seed=5, amplitudes="E")
    flip = config.options("charge-flip")
    assert flip == FlipOptions(n_starts=2, seed=5, amplitudes="E")  # n_iter: the table's
    assert config.options("learned") == LearnedOptions(n_starts=2, seed=5)  # no amplitudes in the loop
    assert config.options("rrr").scheme == "rrr"


def test_cli_help_and_demo_report_show_the_table(monkeypatch, capsys):
    from patterson.cli import main
    from patterson.demo.report import _budget_text

    monkeypatch.setitem(METHOD_OPTIONS, "hio", SupportOptions(n_iter=123))
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "hio 123" in shown and f"charge-flip {FlipOptions().n_iter}" in shown
    text = _budget_text({"phasing": {"n_iter": None, "n_starts": None}})
    assert "HIO 4 × 123 iterations" in text and f"then {LearnedOptions().n_finish} of positivity" in text
