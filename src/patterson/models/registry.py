"""Named presets and the config -> model factory (nanoGPT style: a config dataclass fully defines a model)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from torch import nn

from patterson.errors import PattersonError
from patterson.models.configs import (
    DensityModifierConfig,
    FourierNetConfig,
    HurwitzCNNConfig,
    IntensityNetConfig,
    MLPConfig,
    ModelConfig,
    PattersonUNetConfig,
    UNet3DConfig,
    check_keys,
    config_from_dict,
)
from patterson.models.nets import MODEL_CLASSES, PattersonModel

logger = logging.getLogger(__name__)

# The paper's presets keep the paper's padding: circular in the encoder and residual blocks, zeros in the decoder.
_PAPER = dict(block_kernel=7, decoder_kernel=5, padding_mode="circular", decoder_padding_mode="zeros")

MODEL_CONFIGS: Mapping[str, ModelConfig] = MappingProxyType(
    {
        # our default: the paper's SE design, CPU-sized (kernels 5, 6 blocks), circular padding everywhere
        "patterson-unet": PattersonUNetConfig(),
        # first paper version: 23/25 channels, conv5 encoder, 7 plain residual blocks (3,152,014 parameters)
        "paper-original": PattersonUNetConfig(c1=23, c2=25, encoder_kernel=5, n_blocks=7, use_se=False, **_PAPER),
        # later paper version: 25/30 channels, conv7 encoder, 8 SE residual blocks (5,311,141 parameters)
        "paper-se": PattersonUNetConfig(c1=25, c2=30, encoder_kernel=7, n_blocks=8, use_se=True, **_PAPER),
        "unet3d": UNet3DConfig(),
        "mlp": MLPConfig(),
        "hurwitz-cnn": HurwitzCNNConfig(),
        # the learned real-space step of the phasing loop (``patterson evaluate --method learned``)
        "density-modifier": DensityModifierConfig(),
        "fourier-net": FourierNetConfig(),
        # the 2021 report's task: an octant of intensities → Gaussian atoms (Patterson in front, then fourier-net)
        "intensity-net": IntensityNetConfig(),
    }
)


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """Return the named preset config with some fields replaced.

    Parameters
    ----------
    name : str
        A key of :data:`MODEL_CONFIGS`.
    **overrides
        Config fields to change, e.g. ``c1=8, n_blocks=1``.

    Returns
    -------
    ModelConfig
        A new frozen config; an unknown name or key raises PattersonError.
    """
    if name not in MODEL_CONFIGS:
        raise PattersonError(f"unknown model {name!r}; known: {', '.join(MODEL_CONFIGS)}")
    base = MODEL_CONFIGS[name]
    check_keys(type(base), list(overrides))
    return dataclasses.replace(base, **overrides)


def model_from_config(config: ModelConfig | Mapping[str, Any]) -> PattersonModel:
    """Build the network a config (or its plain-dict form from a checkpoint) describes.

    Parameters
    ----------
    config : ModelConfig or Mapping
        A config instance, or ``dataclasses.asdict(config)``.

    Returns
    -------
    PattersonModel
        A freshly initialised ``nn.Module`` whose ``.config`` equals the config.
    """
    if not isinstance(config, ModelConfig):
        config = config_from_dict(config)
    model = MODEL_CLASSES[config.arch](config)
    logger.debug("built %s with %d parameters", config.arch, count_parameters(model))
    return model


def build_model(name: str, **overrides: Any) -> PattersonModel:
    """Build a named preset network, e.g. ``build_model("paper-se")`` or ``build_model("mlp", grid=(12, 12, 12))``.

    Parameters
    ----------
    name : str
        A key of :data:`MODEL_CONFIGS`.
    **overrides
        Config fields to change.

    Returns
    -------
    PattersonModel
        The network, with its config in ``model.config``.
    """
    return model_from_config(model_config(name, **overrides))


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
