"""The networks: Patterson map(s) in, density map(s) out, both shaped (B, C, X, Y, Z) on the same grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from patterson.errors import PattersonError
from patterson.models.blocks import (
    ConvBNReLU,
    DilatedBlock,
    DoubleConv,
    Down,
    FourierLayer,
    ImposedAmplitudes,
    OctantPatterson,
    ResidualBlock,
    SharpenedPatterson,
    Up,
    conv3d,
    output_activation,
)
from patterson.models.configs import (
    DensityModifierConfig,
    FourierNetConfig,
    HurwitzCNNConfig,
    IntensityNetConfig,
    MLPConfig,
    ModelConfig,
    PattersonUNetConfig,
    UNet3DConfig,
)


def _grid3(grid: Sequence[int]) -> tuple[int, int, int]:
    try:
        values = tuple(int(n) for n in grid)
    except (TypeError, ValueError):
        raise PattersonError(f"a grid of three positive integers is needed, got {grid!r}") from None
    if len(values) != 3 or min(values) < 1:
        raise PattersonError(f"a grid of three positive integers is needed, got {tuple(grid)!r}")
    return values  # type: ignore[return-value]


def _check_circular(grid: tuple[int, ...], kernel: int, where: str) -> None:
    """Circular padding may wrap around at most once: kernel // 2 <= grid size."""
    if kernel // 2 > min(grid):
        raise PattersonError(f"grid {grid} is too small for circular kernel {kernel} in the {where}")


class PattersonModel(nn.Module):
    """Base class: keeps ``config`` and validates input tensors (B, in_channels, X, Y, Z)."""

    config: ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def check_grid(self, grid: Sequence[int]) -> None:
        """Raise PattersonError if this network cannot map a (X, Y, Z) grid to itself."""
        _grid3(grid)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise PattersonError unless ``x`` is (B, in_channels, X, Y, Z) on an acceptable grid."""
        if not isinstance(x, torch.Tensor) or x.dim() != 5:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise PattersonError(f"input must be a tensor shaped (B, C, X, Y, Z), got {shape}")
        if x.shape[1] != self.config.in_channels:
            raise PattersonError(f"input has {x.shape[1]} channels, the model expects {self.config.in_channels}")
        self.check_grid(tuple(x.shape[2:]))

    def warm_start_weights(
        self, saved: Mapping[str, Any], weights: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor] | None:
        """Weights of another configuration of this network (``saved``: its config as a dict) turned into a start
        for this one, or None where they do not carry over (the default: only the same network starts training)."""
        return None


class PattersonUNet(PattersonModel):
    """The paper's residual 3D U-Net (Pan et al., IUCrJ 2023, Fig. 2).

    encode:  conv(in -> c1) BN ReLU, conv(c1 -> c2) BN ReLU, max-pool 2     (full grid -> half grid)
    learn:   n_blocks x [conv BN ReLU, conv BN, (SE), + skip, ReLU] at c2   (half grid)
    decode:  nearest upsample 2, conv(c2 -> c1) BN ReLU, conv(c1 -> out), tanh   (full grid)

    Every grid dimension must be even.
    """

    def __init__(self, config: PattersonUNetConfig) -> None:
        super().__init__(config)
        cfg = config
        # Encoding phase
        self.enc1 = ConvBNReLU(cfg.in_channels, cfg.c1, cfg.encoder_kernel, cfg.padding_mode)
        self.enc2 = ConvBNReLU(cfg.c1, cfg.c2, cfg.encoder_kernel, cfg.padding_mode)
        self.pool = nn.MaxPool3d(2)
        # Learning-features phase
        self.blocks = nn.Sequential(
            *(
                ResidualBlock(cfg.c2, cfg.block_kernel, cfg.padding_mode, cfg.use_se, cfg.se_reduction)
                for _ in range(cfg.n_blocks)
            )
        )
        # Decoding phase
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec1 = ConvBNReLU(cfg.c2, cfg.c1, cfg.decoder_kernel, cfg.decoder_padding_mode)
        self.dec2 = conv3d(cfg.c1, cfg.out_channels, cfg.decoder_kernel, cfg.decoder_padding_mode)
        self.act = output_activation(cfg.output_activation)
        self._init_weights()

    def _init_weights(self) -> None:
        # as in the paper: He (kaiming) normal init of every conv
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def check_grid(self, grid: Sequence[int]) -> None:
        """Every dimension must be even (one 2x pooling) and large enough for circular kernels."""
        g = _grid3(grid)
        if any(n % 2 for n in g):
            raise PattersonError(f"patterson-unet needs every grid dimension divisible by 2, got {g}")
        cfg = self.config
        if cfg.padding_mode == "circular":
            _check_circular(g, cfg.encoder_kernel, "encoder")
            if cfg.n_blocks:
                _check_circular(tuple(n // 2 for n in g), cfg.block_kernel, "residual blocks")
        if cfg.decoder_padding_mode == "circular":
            _check_circular(g, cfg.decoder_kernel, "decoder")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        h = self.enc1(x)  # (B, c1, X, Y, Z)
        h = self.enc2(h)  # (B, c2, X, Y, Z)
        h = self.pool(h)  # (B, c2, X/2, Y/2, Z/2)
        h = self.blocks(h)  # (B, c2, X/2, Y/2, Z/2)
        h = self.up(h)  # (B, c2, X, Y, Z)
        h = self.dec1(h)  # (B, c1, X, Y, Z)
        return self.act(self.dec2(h))  # (B, out, X, Y, Z)


class UNet3D(PattersonModel):
    """Standard 3D U-Net with concatenation skips (Ronneberger/Cicek style), ``depth`` poolings.

    The input is periodically wrapped up to a multiple of ``2**depth`` on each axis (maps are periodic) and the
    output cropped back to the input grid, so any grid (12, 20, 24, 40, odd sizes too) is accepted.
    """

    def __init__(self, config: UNet3DConfig) -> None:
        super().__init__(config)
        cfg = config
        chans = [cfg.base_channels * 2**i for i in range(cfg.depth + 1)]  # channels per level
        args = (cfg.kernel, cfg.padding_mode, cfg.batch_norm)
        self.inc = DoubleConv(cfg.in_channels, chans[0], *args)
        self.downs = nn.ModuleList(Down(chans[i], chans[i + 1], *args) for i in range(cfg.depth))
        self.ups = nn.ModuleList(Up(chans[i + 1], chans[i], chans[i], *args) for i in reversed(range(cfg.depth)))
        self.head = nn.Conv3d(chans[0], cfg.out_channels, kernel_size=1)
        self.act = output_activation(cfg.output_activation)

    def check_grid(self, grid: Sequence[int]) -> None:
        """Any grid: it is wrapped internally; circular convs need the coarsest level big enough."""
        g = _grid3(grid)
        if self.config.padding_mode == "circular":
            m = 2**self.config.depth
            _check_circular(tuple(-(-n // m) for n in g), self.config.kernel, "bottleneck")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        grid = tuple(x.shape[2:])
        x = _wrap_to_multiple(x, 2**self.config.depth)  # (B, C, X', Y', Z'), X' = X rounded up
        skips = [self.inc(x)]  # level 0: (B, base, X', Y', Z')
        for down in self.downs:
            skips.append(down(skips[-1]))  # level i: (B, base*2^i, X'/2^i, ...)
        h = skips.pop()  # bottleneck
        for up in self.ups:
            h = up(h, skips.pop())  # one level up, channels halved
        h = self.act(self.head(h))  # (B, out, X', Y', Z')
        return h[:, :, : grid[0], : grid[1], : grid[2]]  # (B, out, X, Y, Z)


def _wrap_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """Periodically extend the last three axes of (B, C, X, Y, Z) to the next multiple of ``m``."""
    for axis in (2, 3, 4):
        n = x.shape[axis]
        target = -(-n // m) * m
        if target != n:
            index = torch.arange(target, device=x.device) % n
            x = x.index_select(axis, index)
    return x


class MLP(PattersonModel):
    """Flattened map -> hidden Linear+ReLU layer(s) -> flattened map, for one fixed grid."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__(config)
        cfg = config
        n_vox = cfg.grid[0] * cfg.grid[1] * cfg.grid[2]
        widths = [cfg.in_channels * n_vox, *cfg.hidden]
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(w_in, w_out), nn.ReLU(inplace=True)]
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
        layers.append(nn.Linear(widths[-1], cfg.out_channels * n_vox))
        self.net = nn.Sequential(*layers)
        self.act = output_activation(cfg.output_activation)

    def check_grid(self, grid: Sequence[int]) -> None:
        """The grid must equal ``config.grid``."""
        g = _grid3(grid)
        if g != tuple(self.config.grid):
            raise PattersonError(f"mlp was built for grid {tuple(self.config.grid)}, got {g}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        b = x.shape[0]
        h = self.net(x.reshape(b, -1))  # (B, in*X*Y*Z) -> (B, out*X*Y*Z)
        return self.act(h).reshape(b, self.config.out_channels, *self.config.grid)  # (B, out, X, Y, Z)


class HurwitzCNN(PattersonModel):
    """Plain stacked same-padded 3D convs with ReLU (no pooling, no residuals), grid preserved."""

    def __init__(self, config: HurwitzCNNConfig) -> None:
        super().__init__(config)
        cfg = config
        layers: list[nn.Module] = []
        c_in = cfg.in_channels
        for _ in range(cfg.n_layers - 1):
            layers.append(conv3d(c_in, cfg.channels, cfg.kernel, cfg.padding_mode, bias=not cfg.batch_norm))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm3d(cfg.channels))
            layers.append(nn.ReLU(inplace=True))
            c_in = cfg.channels
        layers.append(conv3d(c_in, cfg.out_channels, cfg.kernel, cfg.padding_mode))
        self.net = nn.Sequential(*layers)
        self.act = output_activation(cfg.output_activation)

    def check_grid(self, grid: Sequence[int]) -> None:
        """Any grid at least as large as the circular padding."""
        g = _grid3(grid)
        if self.config.padding_mode == "circular":
            _check_circular(g, self.config.kernel, "convolutions")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.act(self.net(x))  # (B, in, X, Y, Z) -> (B, out, X, Y, Z)


class DensityModifier(PattersonModel):
    """The learned real-space step D of the phasing loop (density modification by a network).

    scale:   ρ → (ρ − mean ρ) / rms(ρ − mean ρ) per map     (the network sees and returns maps in σ units)
    learn:   conv(in → C) ReLU, n_blocks × [dilated conv ReLU dilated conv + skip, ReLU], conv(C → out)
    correct: output = input + correction, scaled back by the same σ and mean

    Circular padding and no pooling: shifting the input on the grid shifts the output the same way, so the loss
    needs no origin search, and the absolute scale of the amplitudes (arbitrary for measured data) does not matter.
    """

    def __init__(self, config: DensityModifierConfig) -> None:
        super().__init__(config)
        cfg = config
        self.stem = nn.Conv3d(
            cfg.in_channels, cfg.channels, cfg.kernel, padding=cfg.kernel // 2, padding_mode="circular"
        )
        dilations = [cfg.dilations[i % len(cfg.dilations)] for i in range(cfg.n_blocks)]
        self.blocks = nn.Sequential(*(DilatedBlock(cfg.channels, cfg.kernel, d) for d in dilations))
        self.head = nn.Conv3d(
            cfg.channels, cfg.out_channels, cfg.kernel, padding=cfg.kernel // 2, padding_mode="circular"
        )
        nn.init.zeros_(self.head.weight)  # starts as the identity map: D(ρ) = ρ
        nn.init.zeros_(self.head.bias)

    def check_grid(self, grid: Sequence[int]) -> None:
        """Any grid larger than the widest circular padding."""
        g = _grid3(grid)
        _check_circular(g, (self.config.kernel // 2) * 2 * max(self.config.dilations) + 1, "dilated convolutions")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        mean = x.mean(dim=(2, 3, 4), keepdim=True)  # (B, C, 1, 1, 1)
        sigma = (x - mean).square().mean(dim=(2, 3, 4), keepdim=True).sqrt().clamp_min(1e-12)
        h = (x - mean) / sigma  # (B, C, X, Y, Z) in σ units
        h = h + self.head(self.blocks(torch.relu(self.stem(h))))  # (B, C, X, Y, Z)
        return h * sigma + mean


class FourierNet(PattersonModel):
    """A Fourier neural operator: global mixing from the first layer, as a Patterson's vectors span the cell.

    inputs:  the map (or, with ``sharpen``, the map and its sharpened origin-removed Patterson: SharpenedPatterson)
    recycle: (with ``recycle``) one more channel: the previous pass's map with the Patterson's amplitudes imposed
             (ImposedAmplitudes), zero on the first pass; the passes below run 1 + recycle times
    lift:    pointwise conv (in → width)
    layers:  n_layers × FourierLayer: GELU(spectral conv over the lowest ``modes`` frequencies + pointwise conv)
    project: pointwise conv (width → width) GELU, pointwise conv (width → out), output activation

    Every operation commutes with translations of the periodic grid, so a shifted Patterson gives a shifted map.
    """

    def __init__(self, config: FourierNetConfig) -> None:
        super().__init__(config)
        cfg = config
        self.inputs = SharpenedPatterson() if cfg.sharpen else nn.Identity()
        self.impose = ImposedAmplitudes()
        n_in = (2 if cfg.sharpen else cfg.in_channels) + (1 if cfg.recycle else 0)
        self.lift = nn.Conv3d(n_in, cfg.width, 1)
        self.layers = nn.Sequential(*(FourierLayer(cfg.width, cfg.modes) for _ in range(cfg.n_layers)))
        self.project = nn.Sequential(
            nn.Conv3d(cfg.width, cfg.width, 1), nn.GELU(), nn.Conv3d(cfg.width, cfg.out_channels, 1)
        )
        self.act = output_activation(cfg.output_activation)

    def warm_start_weights(
        self, saved: Mapping[str, Any], weights: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor] | None:
        """A one-pass network's weights for the same network with ``recycle``: zero weights on the recycled
        channel, so that it starts as the one-pass network (every pass gives the one-pass map)."""
        wanted = self.config.to_dict()
        if not wanted["recycle"] or saved.get("recycle") != 0 or dict(saved) | {"recycle": wanted["recycle"]} != wanted:
            return None
        lift = weights["lift.weight"]  # (width, in, 1, 1, 1)
        return dict(weights) | {"lift.weight": torch.cat([lift, lift.new_zeros(lift.shape[0], 1, 1, 1, 1)], 1)}

    def one_pass(self, x: torch.Tensor) -> torch.Tensor:
        """lift → layers → project → activation: (B, in, X, Y, Z) → (B, out, X, Y, Z)."""
        return self.act(self.project(self.layers(self.lift(x))))

    def check_grid(self, grid: Sequence[int]) -> None:
        """Any grid that holds ``modes`` frequencies of each sign along every axis."""
        g = _grid3(grid)
        if min(g[0], g[1]) < 2 * self.config.modes or g[2] // 2 + 1 < self.config.modes:
            raise PattersonError(f"grid {g} is too small for {self.config.modes} Fourier modes per axis")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        h = self.inputs(x)  # (B, in, X, Y, Z)
        if not self.config.recycle:
            return self.one_pass(h)  # (B, out, X, Y, Z)
        rho = self.one_pass(torch.cat([h, torch.zeros_like(x)], dim=1))
        for _ in range(self.config.recycle):
            rho = self.one_pass(torch.cat([h, self.impose(rho, x)], dim=1))
        return rho  # (B, 1, X, Y, Z)


class IntensityNet(PattersonModel):
    """The 2021 report's task (an intensity grid → atoms as Gaussians on the n³ fractional grid of the cell).

    patterson: OctantPatterson (intensities → their Patterson on an (s·n)³ grid: fixed, exact, no weights)
    operator:  FourierNet on the Patterson (lift, n_layers Fourier layers, project)
    sample:    every s-th grid point: the density on the target's n³ grid
    """

    def __init__(self, config: IntensityNetConfig) -> None:
        super().__init__(config)
        self.patterson = OctantPatterson(config.oversample)
        self.operator = FourierNet(config)

    def check_grid(self, grid: Sequence[int]) -> None:
        """Any grid whose oversampled Patterson holds the operator's modes."""
        self.operator.check_grid([self.config.oversample * g for g in _grid3(grid)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        s = self.config.oversample
        return self.operator(self.patterson(x))[..., ::s, ::s, ::s]  # (B, 1, n, n, n) -> (B, out, n, n, n)


MODEL_CLASSES: dict[str, type[PattersonModel]] = {
    PattersonUNetConfig.ARCH: PattersonUNet,
    UNet3DConfig.ARCH: UNet3D,
    MLPConfig.ARCH: MLP,
    HurwitzCNNConfig.ARCH: HurwitzCNN,
    DensityModifierConfig.ARCH: DensityModifier,
    FourierNetConfig.ARCH: FourierNet,
    IntensityNetConfig.ARCH: IntensityNet,
}
