"""Frozen configuration dataclasses, one per network architecture.

A config holds everything needed to rebuild a network, so a checkpoint can store ``dataclasses.asdict(config)``
and rebuild the model with :func:`config_from_dict` (or ``Cls(**d)``) followed by
:func:`patterson.models.model_from_config`. Every config carries an ``arch`` field naming its architecture, which
is how a plain dict finds its class again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from patterson.errors import PattersonError

PADDING_MODES = ("zeros", "circular")
OUTPUT_ACTIVATIONS = ("tanh", "none")


def _require_int(cfg: object, name: str, low: int = 1) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise PattersonError(f"{type(cfg).__name__}.{name} must be an integer >= {low}, got {value!r}")


def _require_odd_kernel(cfg: object, name: str) -> None:
    _require_int(cfg, name)
    if getattr(cfg, name) % 2 == 0:
        raise PattersonError(
            f"{type(cfg).__name__}.{name} must be odd so that 'same' padding is symmetric, got {getattr(cfg, name)}"
        )


def _require_choice(cfg: object, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        raise PattersonError(f"{type(cfg).__name__}.{name} must be one of {choices}, got {value!r}")


def _require_bool(cfg: object, name: str) -> None:
    if not isinstance(getattr(cfg, name), bool):
        raise PattersonError(f"{type(cfg).__name__}.{name} must be True or False, got {getattr(cfg, name)!r}")


def _as_int_tuple(cfg: object, name: str, length: int | None = None, allow_empty: bool = False) -> None:
    """Turn a list (e.g. from JSON) into a tuple of positive ints in place on a frozen dataclass."""
    value = getattr(cfg, name)
    try:
        items = tuple(value)
    except TypeError:
        raise PattersonError(f"{type(cfg).__name__}.{name} must be a sequence of integers, got {value!r}") from None
    bad = [v for v in items if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if bad or (length is not None and len(items) != length) or (not items and not allow_empty):
        want = f"{length} positive integers" if length is not None else "positive integers"
        raise PattersonError(f"{type(cfg).__name__}.{name} must be {want}, got {value!r}")
    object.__setattr__(cfg, name, items)


@dataclass(frozen=True)
class ModelConfig:
    """Fields shared by every architecture.

    Attributes
    ----------
    arch : str
        Architecture name; fixed per subclass, stored so a plain dict can be turned back into its config.
    in_channels, out_channels : int
        Channels of the input map(s) and of the predicted map(s); tensors are shaped (B, C, X, Y, Z).
    output_activation : str
        ``'tanh'`` (targets normalised to [-1, 1], as in the paper) or ``'none'``.
    """

    ARCH: ClassVar[str] = ""

    arch: str = ""
    in_channels: int = 1
    out_channels: int = 1
    output_activation: str = "tanh"

    def __post_init__(self) -> None:
        if not self.ARCH:
            raise PattersonError("ModelConfig is abstract; use one of its architecture subclasses")
        if self.arch == "":
            object.__setattr__(self, "arch", self.ARCH)
        if self.arch != self.ARCH:
            raise PattersonError(f"{type(self).__name__}.arch must be {self.ARCH!r}, got {self.arch!r}")
        _require_int(self, "in_channels")
        _require_int(self, "out_channels")
        _require_choice(self, "output_activation", OUTPUT_ACTIVATIONS)
        self._validate()

    def _validate(self) -> None:
        """Subclass hook for architecture-specific checks."""

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a plain dict (same as ``dataclasses.asdict``)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PattersonUNetConfig(ModelConfig):
    """The paper's residual 3D U-Net (encode, pool, residual blocks, upsample, decode).

    Attributes
    ----------
    c1 : int
        Channels of the first encoder conv and of the hidden decoder conv (paper: 23, later 25).
    c2 : int
        Channels of the second encoder conv and of the residual stage (paper: 25, later 30).
    encoder_kernel, block_kernel, decoder_kernel : int
        Odd cubic kernel sizes of the encoder convs, the residual-block convs and the decoder convs.
    n_blocks : int
        Number of residual blocks at half resolution.
    use_se : bool
        Squeeze-and-excitation inside each residual block (before the skip is added).
    se_reduction : int
        Channel reduction factor of the squeeze-and-excitation bottleneck.
    padding_mode : str
        Padding of the encoder and residual-block convs, ``'circular'`` (periodic maps) or ``'zeros'``.
    decoder_padding_mode : str
        Padding of the two decoder convs.
    """

    ARCH: ClassVar[str] = "patterson-unet"

    arch: str = "patterson-unet"
    c1: int = 24
    c2: int = 32
    encoder_kernel: int = 5
    block_kernel: int = 5
    decoder_kernel: int = 5
    n_blocks: int = 6
    use_se: bool = True
    se_reduction: int = 2
    padding_mode: str = "circular"
    decoder_padding_mode: str = "circular"

    def _validate(self) -> None:
        for name in ("c1", "c2", "se_reduction"):
            _require_int(self, name)
        _require_int(self, "n_blocks", low=0)
        for name in ("encoder_kernel", "block_kernel", "decoder_kernel"):
            _require_odd_kernel(self, name)
        _require_bool(self, "use_se")
        _require_choice(self, "padding_mode", PADDING_MODES)
        _require_choice(self, "decoder_padding_mode", PADDING_MODES)
        if self.use_se and self.c2 // self.se_reduction < 1:
            raise PattersonError(f"PattersonUNetConfig.se_reduction={self.se_reduction} exceeds c2={self.c2}")


@dataclass(frozen=True)
class UNet3DConfig(ModelConfig):
    """A standard 3D U-Net with concatenation skips (the 2021 report's CNN).

    Attributes
    ----------
    base_channels : int
        Channels at full resolution; doubled at every level down.
    depth : int
        Number of 2x poolings (1 to 4). Inputs are periodically padded up to a multiple of ``2**depth`` and the
        output cropped back, so any grid works.
    kernel : int
        Odd kernel size of every conv in the double-conv units.
    batch_norm : bool
        BatchNorm3d after every conv of the double-conv units.
    padding_mode : str
        ``'zeros'`` (a standard U-Net, the default) or ``'circular'``.
    """

    ARCH: ClassVar[str] = "unet3d"

    arch: str = "unet3d"
    base_channels: int = 16
    depth: int = 3
    kernel: int = 3
    batch_norm: bool = True
    padding_mode: str = "zeros"

    def _validate(self) -> None:
        _require_int(self, "base_channels")
        _require_int(self, "depth")
        if self.depth > 4:
            raise PattersonError(f"UNet3DConfig.depth must be 1 to 4, got {self.depth}")
        _require_odd_kernel(self, "kernel")
        _require_bool(self, "batch_norm")
        _require_choice(self, "padding_mode", PADDING_MODES)


@dataclass(frozen=True)
class MLPConfig(ModelConfig):
    """Fully connected regressor: flattened map -> hidden layer(s) -> map (the report's MLP regressor).

    Attributes
    ----------
    grid : tuple[int, int, int]
        The one input/output grid (X, Y, Z) the network accepts.
    hidden : tuple[int, ...]
        Widths of the hidden layers (ReLU); ``(100,)`` is scikit-learn's ``MLPRegressor`` default.
    dropout : float
        Dropout probability after each hidden layer.
    """

    ARCH: ClassVar[str] = "mlp"

    arch: str = "mlp"
    grid: tuple[int, int, int] = (24, 24, 24)
    hidden: tuple[int, ...] = (100,)
    dropout: float = 0.0

    def _validate(self) -> None:
        _as_int_tuple(self, "grid", length=3)
        _as_int_tuple(self, "hidden", allow_empty=True)
        if not isinstance(self.dropout, int | float) or not 0.0 <= float(self.dropout) < 1.0:
            raise PattersonError(f"MLPConfig.dropout must be in [0, 1), got {self.dropout!r}")


@dataclass(frozen=True)
class HurwitzCNNConfig(ModelConfig):
    """Plain stack of same-padded 3D convolutions, no pooling and no residuals (after Hurwitz, 2020).

    Attributes
    ----------
    channels : int
        Channels of every hidden conv.
    n_layers : int
        Total number of convs (>= 2); ReLU between them.
    kernel : int
        Odd cubic kernel size.
    batch_norm : bool
        BatchNorm3d after every hidden conv.
    padding_mode : str
        ``'circular'`` (default) or ``'zeros'``.
    """

    ARCH: ClassVar[str] = "hurwitz-cnn"

    arch: str = "hurwitz-cnn"
    channels: int = 32
    n_layers: int = 6
    kernel: int = 5
    batch_norm: bool = False
    padding_mode: str = "circular"

    def _validate(self) -> None:
        _require_int(self, "channels")
        _require_int(self, "n_layers", low=2)
        _require_odd_kernel(self, "kernel")
        _require_bool(self, "batch_norm")
        _require_choice(self, "padding_mode", PADDING_MODES)


@dataclass(frozen=True)
class DensityModifierConfig(ModelConfig):
    """The learned real-space step of the phasing loop: a density with partly wrong phases -> a better density.

    Full-resolution residual blocks of dilated circular convolutions (no pooling, so the network commutes with every
    grid translation) and a global skip: the network predicts a correction to its input. Maps are in units of the
    input's own r.m.s. (see :class:`~patterson.models.nets.DensityModifier`), so no dataset constant is needed.

    Attributes
    ----------
    channels : int
        Channels of every hidden conv.
    n_blocks : int
        Residual blocks, each two convs of one dilation; the dilations cycle through ``dilations``.
    kernel : int
        Odd cubic kernel size.
    dilations : tuple[int, ...]
        Dilation of each block in turn (1, 2, 4, 1 with 4 blocks of 3³ kernels: a receptive field of 37 voxels).
    """

    ARCH: ClassVar[str] = "density-modifier"

    arch: str = "density-modifier"
    output_activation: str = "none"
    channels: int = 16
    n_blocks: int = 4
    kernel: int = 3
    dilations: tuple[int, ...] = (1, 2, 4)

    def _validate(self) -> None:
        _require_int(self, "channels")
        _require_int(self, "n_blocks")
        _require_odd_kernel(self, "kernel")
        _as_int_tuple(self, "dilations")
        if self.in_channels != self.out_channels:
            raise PattersonError("DensityModifierConfig needs in_channels == out_channels (it corrects its input)")


@dataclass(frozen=True)
class FourierNetConfig(ModelConfig):
    """A Fourier neural operator (Li et al. 2021) on the periodic cell: every layer mixes the whole cell at once.

    A Patterson map's interatomic vectors span the whole cell, while a stack of 3×3×3 convolutions sees a few Å per
    layer; a spectral layer multiplies the lowest ``modes`` frequencies along each axis by learned complex weights
    (a global convolution), and a pointwise convolution beside it keeps the local detail.

    Attributes
    ----------
    width : int
        Channels of every hidden layer.
    modes : int
        Frequencies kept per axis and sign (at most half the grid); 24³ maps at 0.5 Å hold 12.
    n_layers : int
        Fourier layers.
    sharpen : bool
        Give the network the sharpened, origin-removed Patterson beside the map
        (:class:`~patterson.models.blocks.SharpenedPatterson`, a fixed transform; one input channel).
    recycle : int
        Passes after the first: each feeds the previous pass's map, with the amplitudes of the input Patterson
        imposed (:class:`~patterson.models.blocks.ImposedAmplitudes`), back as an extra input channel (zero on the
        first pass); the same weights every pass, trained through all of them. 0: one pass.
    """

    ARCH: ClassVar[str] = "fourier-net"

    arch: str = "fourier-net"
    width: int = 16
    modes: int = 6
    n_layers: int = 4
    sharpen: bool = False
    recycle: int = 0

    def _validate(self) -> None:
        _require_int(self, "width")
        _require_int(self, "modes")
        _require_int(self, "n_layers")
        _require_int(self, "recycle", low=0)
        if (self.sharpen or self.recycle) and self.in_channels != 1:
            raise PattersonError("sharpen and recycle need one input channel (a Patterson map)")
        if self.recycle and self.out_channels != 1:
            raise PattersonError("recycle needs one output channel (a density map)")


@dataclass(frozen=True)
class IntensityNetConfig(FourierNetConfig):
    """The 2021 report's task with physics in front: intensities of one octant (h, k, l = 0 … n−1) → their
    Patterson on a finer grid (a fixed transform, :class:`~patterson.models.blocks.OctantPatterson`) → a Fourier
    neural operator → the density, sampled back on the n³ grid of the target.

    Attributes
    ----------
    oversample : int
        The Patterson's grid is this many times finer than the input's along each axis (2: no aliasing of
        the indices up to n − 1).
    """

    ARCH: ClassVar[str] = "intensity-net"

    arch: str = "intensity-net"
    oversample: int = 2

    def _validate(self) -> None:
        super()._validate()
        _require_int(self, "oversample")


CONFIG_CLASSES: dict[str, type[ModelConfig]] = {
    cls.ARCH: cls
    for cls in (
        PattersonUNetConfig, UNet3DConfig, MLPConfig, HurwitzCNNConfig, DensityModifierConfig, FourierNetConfig,
        IntensityNetConfig,
    )
}  # fmt: skip


def check_keys(cls: type[ModelConfig], keys: Mapping[str, Any] | list[str]) -> None:
    """Raise PattersonError naming the first key that is not a field of ``cls``."""
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in keys:
        if key not in fields:
            raise PattersonError(
                f"unknown config key {key!r} for {cls.__name__}; known keys: {', '.join(sorted(fields))}"
            )


def config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """Rebuild a config from a plain dict such as ``dataclasses.asdict(config)``.

    Parameters
    ----------
    data : Mapping[str, Any]
        Must contain ``'arch'``; other keys must be fields of that architecture's config.

    Returns
    -------
    ModelConfig
        The config instance; unknown keys or architectures raise PattersonError.
    """
    if not isinstance(data, Mapping):
        raise PattersonError(f"a model config dict is needed, got {type(data).__name__}")
    arch = data.get("arch")
    if arch not in CONFIG_CLASSES:
        raise PattersonError(f"unknown model arch {arch!r}; known: {', '.join(sorted(CONFIG_CLASSES))}")
    cls = CONFIG_CLASSES[arch]
    check_keys(cls, list(data))
    return cls(**data)
