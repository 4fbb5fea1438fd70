"""Network architectures of liverctl, built by name.

>>> from liverctl.models import build_model, available_models
>>> net = build_model("unet3d", base_features=8, n_levels=4)
>>> net.spatial_dims, net.min_input_multiple
(3, 8)

Registered names (see :func:`available_models`):

``unet3d``
    nnU-Net-style 3D U-Net with optional dataset-wise convolution modules (``docs/studies/he2021.md``).
``segresnet``
    MONAI-compatible SegResNet: MONAI Model Zoo state dicts load unchanged.
``vnet`` / ``resvnet``
    V-Net and residual V-Net, the two networks of SD-Net (``docs/studies/sdnet.md``).
``di2in`` / ``di2in_discriminator``
    DI2IN generator with deep supervision and its adversarial discriminator (``docs/studies/di2in-an.md``).
``pipofan``
    2D pyramid-input pyramid-output network with adaptive fusion (``docs/studies/pipofan.md``).
``hdenseunet``
    H-DenseUNet: 2D DenseUNet over 3-slice stacks + 3D DenseUNet + hybrid fusion (``docs/studies/hdenseunet.md``).

Importing this package imports torch and defines the classes; nothing is built.
"""

from __future__ import annotations

from liverctl.models.registry import (
    ModelInfo,
    available_models,
    build_model,
    load_state_dict_checked,
    model_info,
    register,
)

# Architecture modules register themselves on import.
from liverctl.models import unet3d as unet3d  # isort: skip
from liverctl.models import segresnet as segresnet  # isort: skip
from liverctl.models import vnet as vnet  # isort: skip
from liverctl.models import di2in as di2in  # isort: skip
from liverctl.models import pipofan as pipofan  # isort: skip
from liverctl.models import hdenseunet as hdenseunet  # isort: skip
from liverctl.models import hdenseunet_cascade as hdenseunet_cascade  # isort: skip

__all__ = [
    "ModelInfo",
    "available_models",
    "build_model",
    "load_state_dict_checked",
    "model_info",
    "register",
]
