"""ImageNet initialisation of H-DenseUNet's 2D encoder (``train --encoder-init imagenet|PATH``).

The paper initialises its 2D DenseUNet's encoder with the ImageNet-trained DenseNet-161.
:func:`load_densenet161_encoder` reads torchvision's ``densenet161`` state dict from a local
file (torchvision itself is not needed and never imported, and nothing is downloaded):

- ``imagenet``: the torch hub cache, ``<torch.hub.get_dir()>/checkpoints/densenet161-8d451a50.pth``
  (``~/.cache/torch/hub/checkpoints/...`` by default; where ``torchvision.models.densenet161(
  weights="IMAGENET1K_V1")`` leaves it);
- a path: that file.

It is read with ``torch.load(weights_only=True)``; the ``features.*`` keys are mapped onto
``net2d.features`` (the encoder has torchvision's module names, :mod:`liverctl.models.denseunet`),
with the renames torchvision applies to its own old checkpoints (``denselayerN.norm.1.weight``
-> ``denselayerN.norm1.weight``, likewise ``conv.1``, ``norm.2``, ``conv.2``); the classifier is
dropped. Every encoder tensor must be present with the right shape (only the batch-norm
``num_batches_tracked`` counters may be missing), else a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liverctl.errors import ConfigError

__all__ = [
    "DENSENET161_FILE",
    "densenet161_cache_path",
    "load_densenet161_encoder",
    "map_torchvision_keys",
    "resolve_encoder_file",
]

DENSENET161_FILE = "densenet161-8d451a50.pth"
"""torchvision's file name of the ImageNet DenseNet-161 weights."""

_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def densenet161_cache_path() -> Path:
    """Where torchvision caches the ImageNet DenseNet-161 weights (the torch hub folder)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / DENSENET161_FILE


def map_torchvision_keys(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """torchvision DenseNet keys -> this encoder's: ``features.`` stripped, old ``norm.1`` style
    names renamed, everything else (the classifier) dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith("features."):
            continue
        key = key[len("features.") :]
        m = _OLD_KEY.match(key)
        if m:
            key = m.group(1) + m.group(2)  # norm.1.weight -> norm1.weight
        out[key] = value
    return out


def resolve_encoder_file(source: str) -> Path:
    """The file ``--encoder-init SOURCE`` reads (``imagenet``: the hub cache); refused when absent."""
    if source == "imagenet":
        path = densenet161_cache_path()
        if not path.is_file():
            raise ConfigError(
                f"--encoder-init imagenet: no {path}; place torchvision's ImageNet DenseNet-161 weights "
                f"({DENSENET161_FILE}) there or pass --encoder-init PATH"
            )
        return path
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError(f"--encoder-init: no such file {path} (torchvision's {DENSENET161_FILE} or 'imagenet')")
    return path


def load_densenet161_encoder(model: nn.Module, source: str) -> Path:
    """Load torchvision's ImageNet DenseNet-161 weights into ``model.net2d.features`` (an
    ``hdenseunet`` built with the paper's 2D encoder). Returns the file read.

    Raises:
        ConfigError: no such file, an unreadable one, or tensors missing / of other shapes
            (another DenseNet, or an encoder that is not DenseNet-161 with 3 input channels).
    """
    path = resolve_encoder_file(source)
    encoder = getattr(getattr(model, "net2d", None), "features", None)
    if not isinstance(encoder, nn.Module):
        raise ConfigError("--encoder-init needs an hdenseunet network (its 2D DenseNet encoder)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"--encoder-init: unreadable weights {path}: {type(exc).__name__}") from None
    if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping):
        raise ConfigError(f"--encoder-init: {path} holds no state dict")
    mapped = map_torchvision_keys(raw)
    own = encoder.state_dict()
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    wrong = [k for k in own if k in mapped and tuple(mapped[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        what = f"{len(missing)} missing (e.g. {missing[0]})" if missing else ""
        if wrong:
            k = wrong[0]
            shapes = f"{tuple(mapped[k].shape)} vs {tuple(own[k].shape)}"
            what += ("; " if what else "") + f"{len(wrong)} of another shape (e.g. {k}: {shapes})"
        raise ConfigError(
            f"--encoder-init: {path} does not fit the 2D encoder (DenseNet-161, 3 input channels): {what}"
        )
    encoder.load_state_dict({k: mapped[k] for k in own if k in mapped}, strict=False)
    return path
