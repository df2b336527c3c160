"""Tests for patterson.models: shapes, presets, configs, losses and origin/hand alignment."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from patterson.errors import PattersonError
from patterson.maps import invert_map
from patterson.models import (
    MODEL_CONFIGS,
    HurwitzCNNConfig,
    MLPConfig,
    PattersonUNetConfig,
    ResidualBlock,
    SqueezeExcitation3d,
    align_to_target,
    apply_alignment,
    build_model,
    config_from_dict,
    count_parameters,
    invariant_loss,
    model_config,
    model_from_config,
    paper_loss,
    pearson_cc,
)

torch.set_num_threads(1)

# Reduced sizes so that every architecture runs quickly on 40^3 as well.
SMALL = {
    "patterson-unet": dict(c1=4, c2=6, n_blocks=2, encoder_kernel=3, block_kernel=3, decoder_kernel=3),
    "paper-original": dict(c1=4, c2=4, n_blocks=1),
    "paper-se": dict(c1=4, c2=4, n_blocks=1),
    "unet3d": dict(base_channels=2),
    "hurwitz-cnn": dict(channels=4, n_layers=3, kernel=3),
    "mlp": dict(hidden=(8,)),
    "density-modifier": dict(channels=4, n_blocks=2),
    "fourier-net": dict(width=4, modes=4, n_layers=2),
    "intensity-net": dict(width=4, modes=4, n_layers=2),
}
MAPPERS = sorted(n for n in SMALL if n != "density-modifier")  # Patterson → density nets (tanh, any channels)
GRIDS = [(12, 12, 12), (20, 20, 20), (24, 24, 24), (40, 40, 40)]
DIMS = (-3, -2, -1)


def small_model(name: str, grid: tuple[int, int, int] = (12, 12, 12), **extra) -> torch.nn.Module:
    overrides = dict(SMALL[name], **extra)
    if name == "mlp":
        overrides["grid"] = grid
    return build_model(name, **overrides)


def test_every_preset_has_small_overrides():
    assert set(SMALL) == set(MODEL_CONFIGS)


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}cubed")
@pytest.mark.parametrize("name", MAPPERS)
def test_output_shape_equals_input_shape(name, grid):
    torch.manual_seed(0)
    model = small_model(name, grid)
    x = torch.randn(2, 1, *grid)
    y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert y.abs().max() <= 1.0  # tanh output
    assert y.std() > 0


@pytest.mark.parametrize("name", MAPPERS)
def test_in_and_out_channels_are_configurable(name):
    model = small_model(name, in_channels=2, out_channels=3)
    y = model(torch.randn(1, 2, 12, 12, 12))
    assert y.shape == (1, 3, 12, 12, 12)
    with pytest.raises(PattersonError, match="channels"):
        model(torch.randn(1, 1, 12, 12, 12))


def test_non_cubic_grid():
    x = torch.randn(1, 1, 12, 20, 24)
    for name in ("patterson-unet", "unet3d", "hurwitz-cnn"):
        assert small_model(name)(x).shape == x.shape
    assert small_model("mlp", grid=(12, 20, 24))(x).shape == x.shape


def test_fourier_net_mixes_the_whole_cell_and_commutes_with_translations():
    """#17: one spectral layer reaches across the cell (a 3×3×3 conv reaches one voxel), and a periodic shift of
    the Patterson shifts the output by the same amount."""
    torch.manual_seed(0)
    model = small_model("fourier-net")
    x = torch.randn(2, 1, 12, 12, 12)
    y = model(x)
    assert torch.allclose(model(torch.roll(x, (3, 5, 7), DIMS)), torch.roll(y, (3, 5, 7), DIMS), atol=1e-5)
    layer = model.layers[0].spectral
    poke = torch.zeros(1, 4, 12, 12, 12)
    poke[0, :, 0, 0, 0] = 1.0
    assert (layer(poke)[0, 0, 6, 6, 6]).abs() > 1e-6  # the far corner of the cell feels a single voxel
    with pytest.raises(PattersonError, match="too small"):
        small_model("fourier-net")(torch.randn(1, 1, 6, 6, 6))


def test_octant_patterson_is_the_patterson_of_an_mmm_crystal():
    """#17: for a crystal with mmm symmetry (atoms at every (±x, ±y, ±z)) the octant of intensities the report's
    task gives holds all of |F|², and OctantPatterson is exactly the crystal's Patterson (all h, k, l in the cube
    |h| < n) on the finer grid; the intensity network maps the n³ input to the n³ target grid."""
    from itertools import product

    from patterson.cells import Cell
    from patterson.maps import intensity_grid
    from patterson.models.blocks import OctantPatterson
    from patterson.physics import AtomBatch, structure_factors
    from patterson.structures import Atoms

    cell, n = Cell(7.0, 8.0, 9.0, 90.0, 90.0, 90.0), 5
    base = np.array([[0.11, 0.23, 0.31], [0.37, 0.05, 0.19]])
    frac = np.unique(np.concatenate([base * s for s in product((1, -1), repeat=3)]) % 1.0, axis=0)
    atoms = Atoms(cell.to_cartesian(frac), np.array(["O"] * len(frac)), np.zeros(len(frac)), np.ones(len(frac)),
                  cell.parameters, "P 1", "mmm")  # fmt: skip
    batch = AtomBatch.from_atoms([atoms], cell)
    octant = intensity_grid(batch, n)  # (1, n, n, n): h, k, l = 0 … n-1
    p = OctantPatterson(2)(octant[:, None].double())[0, 0]  # (2n, 2n, 2n)
    axis = np.arange(-(n - 1), n)
    hkl = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    intensity = structure_factors(batch, hkl, form="z", b_iso=0.0)[0].abs().double() ** 2  # (M,) every sign
    x = np.stack(np.meshgrid(*[np.arange(2 * n) / (2 * n)] * 3, indexing="ij"), axis=-1)  # (2n, 2n, 2n, 3)
    direct = (intensity.numpy() * np.cos(2 * np.pi * x @ hkl.T)).sum(-1)
    direct = (direct - direct.mean()) / np.sqrt(((direct - direct.mean()) ** 2).mean())
    assert np.abs(p.numpy() - direct).max() < 1e-5
    assert small_model("intensity-net")(octant[:, None].float()).shape == (1, 1, n, n, n)


def test_the_sharpened_patterson_forgets_the_b_factor_and_the_origin_peak():
    """#17: the second input channel of ``fourier-net --set model.sharpen=true`` is nearly the same for one
    structure at B = 10 and 40 Å² (|F|² divided by its shell mean), the raw Patterson much less so, and its origin
    peak is gone."""
    from patterson.cells import Cell
    from patterson.maps import patterson_from_f
    from patterson.models.blocks import SharpenedPatterson
    from patterson.physics import AtomBatch, grid_shape, miller_indices, structure_factors
    from patterson.structures import Atoms

    cell, rng = Cell.cubic(12.0), np.random.default_rng(0)
    xyz, hkl, shape = rng.uniform(3, 9, (12, 3)), miller_indices(cell, 1.5), grid_shape(cell, 1.5)
    maps = []
    for b in (10.0, 40.0):
        atoms = Atoms(xyz, np.array(["C"] * 12), np.full(12, b), np.ones(12), cell.parameters, "P 1", "x")
        f = structure_factors(AtomBatch.from_atoms([atoms], cell), hkl)
        maps.append(patterson_from_f(f.abs().to(f.dtype), hkl, cell, shape))
    out = SharpenedPatterson()(torch.cat(maps)[:, None].float())  # (2, 2, X, Y, Z)
    raw_cc, sharp_cc = float(pearson_cc(out[:1, 0], out[1:, 0])), float(pearson_cc(out[:1, 1], out[1:, 1]))
    assert sharp_cc > 0.95 and sharp_cc > raw_cc + 0.03, (raw_cc, sharp_cc)
    assert (out[:, 0, 0, 0, 0] == out[:, 0].flatten(1).amax(1)).all()  # the raw map peaks at the origin ...
    assert (out[:, 1, 0, 0, 0] < 0.1 * out[:, 1].flatten(1).amax(1)).all()  # ... the sharpened one does not
    model = small_model("fourier-net", sharpen=True)
    assert model(torch.cat(maps)[:, None].float()).shape == (2, 1, *shape)


def test_imposed_amplitudes_keep_the_phases_and_take_the_pattersons_amplitudes():
    """#17: the recycling step of ``fourier-net --set model.recycle=1``. The true density is a fixed point; any
    other map keeps its phases and takes the amplitudes of the Patterson (up to one scale), F000 unchanged."""
    from patterson.cells import Cell
    from patterson.maps import density_from_f, patterson_from_f
    from patterson.models.blocks import ImposedAmplitudes
    from patterson.physics import AtomBatch, grid_shape, miller_indices, structure_factors
    from patterson.structures import Atoms

    cell, rng = Cell.cubic(12.0), np.random.default_rng(1)
    hkl, shape = miller_indices(cell, 1.5), grid_shape(cell, 1.5)
    atoms = Atoms(rng.uniform(3, 9, (10, 3)), np.array(["C"] * 10), np.full(10, 20.0), np.ones(10), cell.parameters,
                  "P 1", "x")  # fmt: skip
    f = structure_factors(AtomBatch.from_atoms([atoms], cell), hkl)  # (1, M)
    rho, p = density_from_f(f, hkl, cell, shape)[:, None], patterson_from_f(f, hkl, cell, shape)[:, None]
    impose = ImposedAmplitudes()
    assert torch.allclose(impose(rho, p), rho, atol=1e-6 * float(rho.abs().max()))  # the truth is a fixed point
    phases = torch.exp(2j * torch.pi * torch.as_tensor(rng.random(f.shape)))
    guess = density_from_f(f.abs() ** 0.5 * phases, hkl, cell, shape)[:, None]  # wrong amplitudes and phases
    out = impose(guess, p)
    fo, fg, ft = (torch.fft.rfftn(m.double(), dim=(-3, -2, -1)) for m in (out, guess, rho))
    measured = ft.abs() > 1e-6 * ft.abs().max()
    measured[..., 0, 0, 0] = False
    ratio = fo.abs()[measured] / ft.abs()[measured]
    assert float(ratio.std() / ratio.mean()) < 1e-4  # the Patterson's amplitudes, one scale
    assert torch.allclose(torch.angle(fo[measured] / fg[measured]), torch.zeros(1, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(fo[..., 0, 0, 0], fg[..., 0, 0, 0], atol=1e-6 * float(fg.abs().max()))
    assert float((fo.abs() ** 2)[measured].sum()) == pytest.approx(float((fg.abs() ** 2)[measured].sum()), rel=1e-4)


def test_a_recycled_fourier_net_starts_as_its_one_pass_network():
    """#17: recycling adds one input channel; with its weights zero the recycled network is the one-pass network
    (so a trained one-pass network is a warm start), and every pass shares the same weights."""
    one, rec = small_model("fourier-net"), small_model("fourier-net", recycle=2)
    assert rec.lift.in_channels == one.lift.in_channels + 1
    assert count_parameters(rec) == count_parameters(one) + rec.lift.out_channels
    rec.load_state_dict(rec.warm_start_weights(one.config.to_dict(), one.state_dict()))
    # only a one-pass network of the same shape carries over; other networks are left to the trainer's check
    assert rec.warm_start_weights(small_model("fourier-net", width=6).config.to_dict(), one.state_dict()) is None
    assert one.warm_start_weights(rec.config.to_dict(), rec.state_dict()) is None
    x = torch.fft.irfftn(torch.fft.rfftn(torch.randn(2, 1, 12, 12, 12), dim=DIMS).abs(), s=(12, 12, 12), dim=DIMS)
    with torch.no_grad():
        assert torch.allclose(rec(x), one(x), atol=1e-6)
        rec.lift.weight[:, -1].fill_(10.0)  # the recycled channel now counts
        assert float((rec(x) - one(x)).abs().max()) > 1e-3


def test_paper_preset_parameter_counts():
    original = build_model("paper-original")
    se = build_model("paper-se")
    # exact counts of this implementation (conv biases included), near the paper's "about 3M" and "5.3M"
    assert count_parameters(original) == 3_152_014
    assert count_parameters(se) == 5_311_141
    assert 2.8e6 < count_parameters(original) < 3.3e6
    assert 5.2e6 < count_parameters(se) < 5.4e6
    # architecture details of the presets
    assert sum(isinstance(m, ResidualBlock) for m in original.modules()) == 7
    assert sum(isinstance(m, SqueezeExcitation3d) for m in original.modules()) == 0
    assert sum(isinstance(m, ResidualBlock) for m in se.modules()) == 8
    assert sum(isinstance(m, SqueezeExcitation3d) for m in se.modules()) == 8
    assert se.enc1[0].kernel_size == (7, 7, 7) and original.enc1[0].kernel_size == (5, 5, 5)
    assert se.blocks[0].conv2.padding_mode == "circular" and se.dec2.padding_mode == "zeros"


def test_count_parameters_by_hand():
    model = build_model("hurwitz-cnn", channels=2, n_layers=2, kernel=3)
    # conv 1->2 (54 + 2) and conv 2->1 (54 + 1)
    assert count_parameters(model) == 111
    for p in model.net[0].parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == 55
    assert count_parameters(model, trainable_only=False) == 111


def test_paper_se_runs_on_the_paper_grid_size():
    torch.manual_seed(0)
    model = build_model("paper-se").eval()
    with torch.no_grad():
        y = model(torch.randn(1, 1, 12, 12, 12))
    assert y.shape == (1, 1, 12, 12, 12)


def test_circular_padding_makes_the_nets_shift_equivariant():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 12, 12, 12)
    unet = small_model("patterson-unet", decoder_padding_mode="circular").eval()
    cnn = small_model("hurwitz-cnn").eval()
    with torch.no_grad():
        # one 2x pooling: equivariant to even shifts
        assert torch.allclose(unet(torch.roll(x, (2, 4, 6), DIMS)), torch.roll(unet(x), (2, 4, 6), DIMS), atol=1e-5)
        assert torch.allclose(cnn(torch.roll(x, (1, 3, 5), DIMS)), torch.roll(cnn(x), (1, 3, 5), DIMS), atol=1e-5)
        zero = small_model("hurwitz-cnn", padding_mode="zeros").eval()
        assert not torch.allclose(zero(torch.roll(x, 3, 2)), torch.roll(zero(x), 3, 2), atol=1e-5)


def test_config_round_trip_through_dict_and_json():
    for name, cfg in MODEL_CONFIGS.items():
        d = dataclasses.asdict(cfg)
        assert d["arch"] == cfg.arch
        assert type(cfg)(**d) == cfg
        assert config_from_dict(d) == cfg
        assert config_from_dict(json.loads(json.dumps(d))) == cfg, name  # lists come back as tuples
    cfg = model_config("mlp", grid=[6, 8, 10], hidden=[5, 4])
    assert cfg.grid == (6, 8, 10) and cfg.hidden == (5, 4)


def test_model_rebuilds_from_its_stored_config():
    torch.manual_seed(0)
    model = small_model("patterson-unet").eval()
    state = {"config": model.config.to_dict(), "weights": model.state_dict()}
    again = model_from_config(state["config"]).eval()
    assert again.config == model.config
    again.load_state_dict(state["weights"])
    x = torch.randn(1, 1, 12, 12, 12)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert isinstance(model_from_config(model.config), type(model))


def test_model_config_applies_overrides_and_keeps_presets_frozen():
    cfg = model_config("paper-se", n_blocks=2)
    assert cfg.n_blocks == 2 and cfg.c2 == 30 and MODEL_CONFIGS["paper-se"].n_blocks == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_blocks = 3


def test_odd_grid_is_rejected():
    model = small_model("patterson-unet")
    with pytest.raises(PattersonError, match="divisible by 2") as info:
        model(torch.randn(1, 1, 13, 12, 12))
    assert "\n" not in str(info.value)
    with pytest.raises(PattersonError):
        model.check_grid((12, 12, 11))
    model.check_grid((12, 20, 40))  # fine


def test_bad_inputs_raise_patterson_error():
    with pytest.raises(PattersonError, match="no-such-net"):
        build_model("no-such-net")
    with pytest.raises(PattersonError, match="'channels'"):
        model_config("paper-se", channels=3)
    with pytest.raises(PattersonError, match="'colour'"):
        config_from_dict({**dataclasses.asdict(MLPConfig()), "colour": "red"})
    with pytest.raises(PattersonError, match="arch"):
        config_from_dict({"c1": 3})
    with pytest.raises(PattersonError, match="padding_mode"):
        PattersonUNetConfig(padding_mode="reflect")
    with pytest.raises(PattersonError, match="odd"):
        HurwitzCNNConfig(kernel=4)
    with pytest.raises(PattersonError, match="arch"):
        MLPConfig(arch="unet3d")
    with pytest.raises(PattersonError, match="grid"):
        small_model("mlp", grid=(12, 12, 12))(torch.randn(1, 1, 20, 20, 20))
    with pytest.raises(PattersonError, match="B, C, X, Y, Z"):
        small_model("hurwitz-cnn")(torch.randn(1, 12, 12, 12))
    with pytest.raises(PattersonError, match="too small"):
        build_model("paper-se")(torch.randn(1, 1, 4, 4, 4))


# ---------------------------------------------------------------- losses


def test_pearson_cc_per_map():
    torch.manual_seed(0)
    a = torch.randn(3, 1, 6, 6, 6)
    cc = pearson_cc(a, torch.stack([2 * a[0] + 1, -a[1], torch.randn(1, 6, 6, 6)]))
    assert cc.shape == (3,)
    assert cc[0].item() == pytest.approx(1.0, abs=1e-6)
    assert cc[1].item() == pytest.approx(-1.0, abs=1e-6)
    assert abs(cc[2].item()) < 0.3


def test_paper_loss_formula():
    torch.manual_seed(0)
    p, t = torch.randn(2, 1, 6, 6, 6), torch.randn(2, 1, 6, 6, 6)
    mse = ((p - t) ** 2).flatten(1).mean(1)
    expected = (0.9 * mse + 0.1 * (1 - pearson_cc(p, t))).mean()
    assert paper_loss(p, t, w=0.1).item() == pytest.approx(expected.item(), rel=1e-6)
    assert paper_loss(p, t, reduction="none").shape == (2,)
    assert paper_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(PattersonError, match="shape"):
        paper_loss(p, t[:1])


def _random_shifts(generator: torch.Generator, b: int, grid: tuple[int, ...]) -> torch.Tensor:
    return torch.stack([torch.randint(0, n, (b,), generator=generator) for n in grid], dim=1)


def test_apply_alignment_matches_roll_and_inversion():
    torch.manual_seed(0)
    x = torch.randn(2, 2, 6, 8, 10)
    shift = torch.tensor([[1, 7, 3], [5, 0, 9]])
    inverted = torch.tensor([False, True])
    out = apply_alignment(x, shift, inverted)
    assert torch.equal(out[0], torch.roll(x[0], tuple(shift[0].tolist()), DIMS))
    assert torch.equal(out[1], torch.roll(invert_map(x[1]), tuple(shift[1].tolist()), DIMS))
    inv = invert_map(x)
    assert torch.equal(inv[..., 0, 0, 0], x[..., 0, 0, 0]) and torch.equal(inv[..., 1, 2, 3], x[..., 5, 6, 7])


def test_alignment_finds_shift_and_hand():
    gen = torch.Generator().manual_seed(1)
    grid = (8, 10, 12)  # non-cubic, to exercise the flat-index decoding
    pred = torch.randn(4, 1, *grid, generator=gen)
    shifts = _random_shifts(gen, 4, grid)
    hands = torch.tensor([False, True, False, True])
    target = torch.stack(
        [
            torch.roll(invert_map(pred[i]) if hands[i] else pred[i], tuple(shifts[i].tolist()), DIMS)
            for i in range(4)
        ]
    )
    aligned, shift, inverted = align_to_target(pred, target)
    assert torch.equal(shift, shifts) and torch.equal(inverted, hands)
    assert torch.allclose(aligned, target)
    # without the hand search the inverted maps cannot be matched
    _, _, inv_off = align_to_target(pred, target, allow_inversion=False)
    assert not inv_off.any()
    per_map = invariant_loss(pred, target, allow_inversion=False, base=lambda a, b: paper_loss(a, b, reduction="none"))
    assert (per_map[hands] > 0.1).all() and (per_map[~hands] < 1e-6).all()


def test_invariant_loss_is_zero_for_shifted_inverted_copy():
    gen = torch.Generator().manual_seed(2)
    pred = torch.rand(3, 1, 12, 12, 12, generator=gen, requires_grad=True)
    shifts = _random_shifts(gen, 3, (12, 12, 12))
    target = torch.stack(
        [torch.roll(invert_map(p), tuple(s.tolist()), DIMS) for p, s in zip(pred, shifts, strict=True)]
    )
    target = target.detach()
    assert paper_loss(pred, target).item() > 0.05
    loss = invariant_loss(pred, target)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # also for 4-D maps (B, X, Y, Z)
    assert invariant_loss(pred[:, 0], target[:, 0]).item() == pytest.approx(0.0, abs=1e-6)


def test_invariant_loss_equals_plain_loss_when_no_shift_helps():
    gen = torch.Generator().manual_seed(3)
    target = torch.randn(2, 1, 10, 10, 10, generator=gen)
    pred = target + 0.05 * torch.randn(2, 1, 10, 10, 10, generator=gen)
    _, shift, inverted = align_to_target(pred, target)
    assert not shift.any() and not inverted.any()
    assert invariant_loss(pred, target).item() == pytest.approx(paper_loss(pred, target).item(), rel=1e-7)
    assert invariant_loss(target, target).item() == pytest.approx(0.0, abs=1e-7)
    _, shift, inverted = align_to_target(target, target)
    assert not shift.any() and not inverted.any()


def test_gradient_flows_through_alignment():
    gen = torch.Generator().manual_seed(4)
    base = torch.randn(2, 1, 8, 8, 8, generator=gen)
    target = torch.roll(invert_map(base), (3, 1, 6), DIMS) + 0.1 * torch.randn(2, 1, 8, 8, 8, generator=gen)
    pred = base.clone().requires_grad_(True)
    invariant_loss(pred, target).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    # same gradient as aligning by hand with roll + inversion
    ref = base.clone().requires_grad_(True)
    paper_loss(torch.roll(invert_map(ref), (3, 1, 6), DIMS), target).backward()
    assert torch.allclose(pred.grad, ref.grad, atol=1e-7)


def test_small_unet_overfits_one_batch():
    torch.manual_seed(0)
    g = 12
    ax = torch.arange(g, dtype=torch.float32)
    xx, yy, zz = torch.meshgrid(ax, ax, ax, indexing="ij")

    def blobs(n: int) -> torch.Tensor:
        d = torch.zeros(g, g, g)
        for c in torch.rand(n, 3) * g:
            d += torch.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2 + (zz - c[2]) ** 2) / 2)
        return 0.8 * d / d.max()

    target = torch.stack([blobs(4), blobs(5)])[:, None]  # (2, 1, 12, 12, 12) in [0, 0.8]
    x = torch.randn(2, 1, g, g, g)
    model = build_model("patterson-unet", c1=12, c2=12, n_blocks=1, encoder_kernel=3, block_kernel=3, decoder_kernel=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(100):
        opt.zero_grad()
        loss = paper_loss(model(x), target)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    with torch.no_grad():
        pred = model(x)
    assert first > 0.1
    final = paper_loss(pred, target).item()
    assert final < 2e-3 and final < 0.01 * first
    assert (pearson_cc(pred, target) > 0.95).all()
