"""Small named 3D building blocks. All tensors are shaped (B, C, X, Y, Z)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv3d(in_ch: int, out_ch: int, kernel: int, padding_mode: str = "zeros", bias: bool = True) -> nn.Conv3d:
    """Same-padded cubic 3D convolution (odd ``kernel``), output grid equal to the input grid."""
    return nn.Conv3d(in_ch, out_ch, kernel, padding=kernel // 2, padding_mode=padding_mode, bias=bias)


class ConvBNReLU(nn.Sequential):
    """conv(k) -> BatchNorm3d -> ReLU; (B, in_ch, X, Y, Z) -> (B, out_ch, X, Y, Z)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, padding_mode: str = "zeros") -> None:
        super().__init__(
            conv3d(in_ch, out_ch, kernel, padding_mode),
            nn.BatchNorm3d(out_ch),
            nn.ReLU(inplace=True),
        )


class SqueezeExcitation3d(nn.Module):
    """Channel reweighting (Hu et al. 2018): global mean -> FC(C -> C/r) -> ReLU -> FC(C/r -> C) -> sigmoid."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3, 4))  # (B, C)
        s = torch.sigmoid(self.excite(torch.relu(self.squeeze(s))))  # (B, C)
        return x * s[:, :, None, None, None]  # (B, C, X, Y, Z)


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN [-SE] + identity skip -> ReLU, at constant channels and grid."""

    def __init__(
        self, channels: int, kernel: int, padding_mode: str = "circular", use_se: bool = False, se_reduction: int = 2
    ) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(channels, channels, kernel, padding_mode)
        self.conv2 = conv3d(channels, channels, kernel, padding_mode)
        self.bn2 = nn.BatchNorm3d(channels)
        self.se = SqueezeExcitation3d(channels, se_reduction) if use_se else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)  # (B, C, X, Y, Z)
        h = self.bn2(self.conv2(h))  # (B, C, X, Y, Z), no activation before the skip
        h = self.se(h)
        return torch.relu(h + x)


class DilatedBlock(nn.Module):
    """conv(dilation d) ReLU conv(dilation d) + identity skip -> ReLU, circular padding, no normalisation (the
    maps it sees are already in σ units); constant channels and grid."""

    def __init__(self, channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        pad = dilation * (kernel // 2)
        self.conv1 = nn.Conv3d(channels, channels, kernel, padding=pad, dilation=dilation, padding_mode="circular")
        self.conv2 = nn.Conv3d(channels, channels, kernel, padding=pad, dilation=dilation, padding_mode="circular")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))  # (B, C, X, Y, Z)


class DoubleConv(nn.Sequential):
    """Two same-padded convs with optional BatchNorm and ReLU: the unit of a standard U-Net level."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int = 3, padding_mode: str = "zeros", batch_norm: bool = True
    ) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_ch, out_ch):
            layers.append(conv3d(c_in, out_ch, kernel, padding_mode, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm3d(out_ch))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Down(nn.Sequential):
    """MaxPool3d(2) then DoubleConv: (B, in_ch, X, Y, Z) -> (B, out_ch, X/2, Y/2, Z/2)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, padding_mode: str, batch_norm: bool) -> None:
        super().__init__(nn.MaxPool3d(2), DoubleConv(in_ch, out_ch, kernel, padding_mode, batch_norm))


class Up(nn.Module):
    """Transposed-conv upsampling x2, concatenation with the skip, DoubleConv.

    (B, in_ch, X, Y, Z) and skip (B, skip_ch, 2X, 2Y, 2Z) -> (B, out_ch, 2X, 2Y, 2Z).
    """

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, kernel: int, padding_mode: str, batch_norm: bool) -> None:
        super().__init__()
        self.up = nn.ConvTranspose3d(in_ch, out_ch, kernel_size=2, stride=2)
        self.conv = DoubleConv(out_ch + skip_ch, out_ch, kernel, padding_mode, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # (B, out_ch, 2X, 2Y, 2Z)
        return self.conv(torch.cat([skip, x], dim=1))  # (B, out_ch, 2X, 2Y, 2Z)


def output_activation(name: str) -> nn.Module:
    """``'tanh'`` -> nn.Tanh, ``'none'`` -> nn.Identity."""
    return nn.Tanh() if name == "tanh" else nn.Identity()


class SpectralConv3d(nn.Module):
    """A global periodic convolution by FFT: the lowest ``modes`` frequencies along each axis (both signs of the
    first two, the non-negative half of the last, as ``rfftn`` keeps them) are multiplied by learned complex
    weights (C_in → C_out); the others are dropped. Commutes with every translation of the periodic grid."""

    def __init__(self, c_in: int, c_out: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1.0 / (c_in * c_out)
        # one weight tensor per corner of the kept (±kx, ±ky, +kz) block: (4, C_in, C_out, m, m, m) complex
        self.weight = nn.Parameter(scale * torch.randn(4, c_in, c_out, modes, modes, modes, dtype=torch.cfloat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, nx, ny, nz = x.shape
        m = self.modes
        spec = torch.fft.rfftn(x.float(), dim=(-3, -2, -1))  # (B, C_in, X, Y, Z/2+1)
        out = spec.new_zeros(b, self.weight.shape[2], nx, ny, nz // 2 + 1)
        corners = [(slice(0, m), slice(0, m)), (slice(-m, None), slice(0, m)), (slice(0, m), slice(-m, None)),
                   (slice(-m, None), slice(-m, None))]  # fmt: skip
        for k, (sx, sy) in enumerate(corners):
            block = spec[:, :, sx, sy, :m]  # (B, C_in, m, m, m)
            out[:, :, sx, sy, :m] = torch.einsum("bixyz,ioxyz->boxyz", block, self.weight[k])
        return torch.fft.irfftn(out, s=(nx, ny, nz), dim=(-3, -2, -1)).to(x.dtype)  # (B, C_out, X, Y, Z)


class OctantPatterson(nn.Module):
    """A fixed, exact transform: intensities I(h, k, l) at h, k, l = 0 … n−1 (the 2021 report's input, one octant
    of reciprocal space) → their Patterson P(x) = Σ I(|h|, |k|, |l|) cos 2π(hx + ky + lz) on a grid of
    ``oversample`` × n per axis, each map divided by its r.m.s. about the mean.

    The octant holds both signs of every index only where the crystal has mmm symmetry, so this is the Patterson of
    the intensities with mmm imposed: what can be computed from the input alone, as a real-space map on which
    translation-equivariant layers can work. (B, 1, n, n, n) → (B, 1, N, N, N), N = oversample × n.
    """

    def __init__(self, oversample: int = 2) -> None:
        super().__init__()
        self.oversample = oversample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-3:]
        big = tuple(self.oversample * k for k in n)
        full = x.new_zeros(*x.shape[:2], *big)
        index = [(torch.arange(k), (-torch.arange(k)) % m) for k, m in zip(n, big, strict=True)]  # (+h, −h)
        for sx in index[0]:
            for sy in index[1]:
                for sz in index[2]:
                    full[:, :, sx[:, None, None], sy[None, :, None], sz[None, None, :]] = x
        p = torch.fft.ifftn(full.float(), dim=(-3, -2, -1)).real.to(x.dtype)  # real: the array is symmetric
        p = p - p.mean(dim=(-3, -2, -1), keepdim=True)
        return p / p.pow(2).mean(dim=(-3, -2, -1), keepdim=True).sqrt().clamp_min(1e-12)


class SharpenedPatterson(nn.Module):
    """A fixed transform of a Patterson map (B, 1, X, Y, Z) → (B, 2, X, Y, Z): the map itself and its sharpened,
    origin-removed version, the Patterson of |E|² − ⟨|E|²⟩ (each |F|² divided by its mean in shells of the grid
    frequency |(h, k, l)|: exact shells for cubic cells), both divided by their r.m.s. Sharp interatomic vectors
    with the origin peak gone: what can be computed from the amplitudes alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = (-3, -2, -1)
        spec = torch.fft.rfftn(x.float(), dim=dims).real  # (B, 1, X, Y, Z/2+1): |F|² (the map is centrosymmetric)
        n = x.shape[-3:]
        freqs = [torch.fft.fftfreq(k, 1 / k) for k in n[:2]] + [torch.fft.rfftfreq(n[2], 1 / n[2])]  # h, k, l
        radius = torch.stack(torch.meshgrid(*freqs, indexing="ij")).pow(2).sum(0).sqrt().round().long().to(x.device)
        shell, n_shells = radius.flatten(), int(radius.max()) + 1
        sums = spec.new_zeros(*spec.shape[:2], n_shells).index_add_(-1, shell, spec.flatten(-3))
        counts = spec.new_zeros(n_shells).index_add_(0, shell, torch.ones_like(shell, dtype=spec.dtype))
        shells = sums / counts  # (B, 1, S) ⟨|F|²⟩; shells beyond the data's d_min hold only rounding noise
        shells = torch.where(shells > 1e-6 * shells[..., 1:].amax(-1, keepdim=True), shells, torch.zeros_like(shells))
        mean = shells.index_select(-1, shell).reshape(spec.shape)  # each reflection's shell mean
        e2 = torch.where(mean > 0, spec / mean.clamp_min(1e-30) - 1.0, torch.zeros_like(spec))  # |E|² − 1
        e2 = torch.where(radius == 0, torch.zeros_like(e2), e2)
        sharp = torch.fft.irfftn(e2, s=n, dim=dims).to(x.dtype)
        both = torch.cat([x, sharp], dim=1)  # (B, 2, X, Y, Z)
        both = both - both.mean(dim=dims, keepdim=True)
        return both / both.pow(2).mean(dim=dims, keepdim=True).sqrt().clamp_min(1e-12)


class ImposedAmplitudes(nn.Module):
    """A fixed, exact transform, the step every iterative phasing method takes: a map ρ (B, 1, X, Y, Z) and the
    Patterson P (B, 1, X, Y, Z) it should explain → the map with ρ's phases and P's amplitudes (|F| = √ of P's
    Fourier coefficients, which are |F|² up to one constant), scaled to ρ's power over those reflections so that
    the map keeps ρ's units. F000 is ρ's; frequencies P lacks (beyond its resolution) are dropped. How a network's
    own estimate is recycled as an input (PhAI, RecCrysFormer). It works on the grid's own FFT (the network knows no
    hkl list) and divides by |F| clamped away from 0 instead of taking the angle, so that its gradient stays finite
    at F = 0: why it does not call :func:`patterson.maps.impose_amplitudes`."""

    def forward(self, rho: torch.Tensor, patterson: torch.Tensor) -> torch.Tensor:
        dims, n = (-3, -2, -1), rho.shape[-3:]
        f = torch.fft.rfftn(rho.float(), dim=dims)  # (B, 1, X, Y, Z/2+1)
        i2 = torch.fft.rfftn(patterson.float(), dim=dims).real.clamp_min(0)  # |F|² × const (P is centrosymmetric)
        origin = torch.zeros_like(i2, dtype=torch.bool)
        origin[..., 0, 0, 0] = True
        keep = (i2 > 1e-6 * i2.amax(dim=dims, keepdim=True)) & ~origin  # the measured reflections
        amp = torch.where(keep, i2, torch.zeros_like(i2)).sqrt()
        power = torch.where(keep, f.abs().pow(2), torch.zeros_like(i2)).sum(dims, keepdim=True)
        scale = (power / amp.pow(2).sum(dims, keepdim=True).clamp_min(1e-30)).sqrt()
        g = scale * amp * f / f.abs().clamp_min(1e-12)
        g = torch.where(origin, f, torch.where(keep, g, torch.zeros_like(g)))
        return torch.fft.irfftn(g, s=n, dim=dims).to(rho.dtype)


class FourierLayer(nn.Module):
    """x → GELU(spectral(x) + pointwise(x)): global mixing beside local detail, channels preserved."""

    def __init__(self, width: int, modes: int) -> None:
        super().__init__()
        self.spectral = SpectralConv3d(width, width, modes)
        self.pointwise = nn.Conv3d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.spectral(x) + self.pointwise(x))
