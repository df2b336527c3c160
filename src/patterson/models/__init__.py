"""Neural networks that turn Patterson maps into electron density, their configs and their losses.

Tensors are shaped (B, C, X, Y, Z). Typical use::

    model = build_model("paper-se")                  # or model_config(...) -> model_from_config(...)
    state = {"config": model.config.to_dict(), "weights": model.state_dict()}
    again = model_from_config(state["config"])       # rebuilds the same architecture
    loss = invariant_loss(model(patterson), density)  # forgives origin shift and hand
"""

from patterson.models.blocks import ConvBNReLU, DoubleConv, ResidualBlock, SqueezeExcitation3d
from patterson.models.configs import (
    CONFIG_CLASSES,
    DensityModifierConfig,
    FourierNetConfig,
    HurwitzCNNConfig,
    IntensityNetConfig,
    MLPConfig,
    ModelConfig,
    PattersonUNetConfig,
    UNet3DConfig,
    config_from_dict,
)
from patterson.models.losses import (
    align_to_target,
    apply_alignment,
    invariant_loss,
    paper_loss,
    pearson_cc,
)
from patterson.models.nets import (
    MLP,
    DensityModifier,
    FourierNet,
    HurwitzCNN,
    IntensityNet,
    PattersonModel,
    PattersonUNet,
    UNet3D,
)
from patterson.models.registry import (
    MODEL_CONFIGS,
    build_model,
    count_parameters,
    model_config,
    model_from_config,
)

__all__ = [
    "CONFIG_CLASSES",
    "MLP",
    "MODEL_CONFIGS",
    "ConvBNReLU",
    "DensityModifier",
    "DensityModifierConfig",
    "DoubleConv",
    "FourierNet",
    "FourierNetConfig",
    "HurwitzCNN",
    "HurwitzCNNConfig",
    "IntensityNet",
    "IntensityNetConfig",
    "MLPConfig",
    "ModelConfig",
    "PattersonModel",
    "PattersonUNet",
    "PattersonUNetConfig",
    "ResidualBlock",
    "SqueezeExcitation3d",
    "UNet3D",
    "UNet3DConfig",
    "align_to_target",
    "apply_alignment",
    "build_model",
    "config_from_dict",
    "count_parameters",
    "invariant_loss",
    "model_config",
    "model_from_config",
    "paper_loss",
    "pearson_cc",
]
