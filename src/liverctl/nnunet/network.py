"""Build an nnU-Net v2 network from its plans with ``dynamic-network-architectures``.

nnU-Net's plans name the network class and the classes its arguments need as dotted strings
(``architecture.network_class_name``, ``arch_kwargs`` and ``_kw_requires_import``), and nnU-Net
imports whatever they name (``pydoc.locate``). liverctl imports only what is in
:data:`NETWORK_CLASSES` (nnU-Net's own architectures, from ``dynamic-network-architectures``,
the package nnU-Net builds them with) and :data:`LAYER_CLASSES` (the torch layers the default
planners write); anything else is refused with a one-line
:class:`~liverctl.errors.WeightsError`. No copy of the architectures lives in liverctl.

``dynamic-network-architectures`` is the optional extra ``liverctl[nnunet]``, pinned to
``>=0.3.1,<0.4`` (what nnU-Net 2.5 requires; 0.4.1 and later pull ``timm`` and ``torchvision``).
"""

from __future__ import annotations

import importlib
from typing import Any

from liverctl.errors import WeightsError
from liverctl.nnunet.plans import NnUNetPlans

__all__ = ["LAYER_CLASSES", "NETWORK_CLASSES", "build_network", "load_weights"]

_DNA = "dynamic_network_architectures.architectures"

NETWORK_CLASSES: dict[str, tuple[str, ...]] = {
    "PlainConvUNet": (f"{_DNA}.unet",),
    "ResidualEncoderUNet": (f"{_DNA}.unet", f"{_DNA}.residual_unet"),
    "ResidualUNet": (f"{_DNA}.unet", f"{_DNA}.residual_unet"),
}
"""nnU-Net architectures liverctl builds: class name -> modules of dynamic_network_architectures
that define it (the plans' dotted name must be one of these modules + the class name)."""

LAYER_CLASSES: dict[str, tuple[str, str]] = {
    name: ("torch.nn", cls)
    for name, cls in {
        "torch.nn.modules.conv.Conv3d": "Conv3d",
        "torch.nn.Conv3d": "Conv3d",
        "torch.nn.modules.instancenorm.InstanceNorm3d": "InstanceNorm3d",
        "torch.nn.InstanceNorm3d": "InstanceNorm3d",
        "torch.nn.modules.batchnorm.BatchNorm3d": "BatchNorm3d",
        "torch.nn.BatchNorm3d": "BatchNorm3d",
        "torch.nn.modules.dropout.Dropout3d": "Dropout3d",
        "torch.nn.Dropout3d": "Dropout3d",
        "torch.nn.modules.dropout.Dropout": "Dropout",
        "torch.nn.Dropout": "Dropout",
        "torch.nn.LeakyReLU": "LeakyReLU",
        "torch.nn.modules.activation.LeakyReLU": "LeakyReLU",
        "torch.nn.ReLU": "ReLU",
        "torch.nn.modules.activation.ReLU": "ReLU",
        "torch.nn.GELU": "GELU",
        "torch.nn.modules.activation.GELU": "GELU",
    }.items()
}
"""Dotted names of torch layers that ``_kw_requires_import`` arguments may name."""


def _network_class(dotted: str) -> type:
    module_name, _, name = dotted.rpartition(".")
    modules = NETWORK_CLASSES.get(name)
    if modules is None or module_name not in modules:
        allowed = ", ".join(sorted(NETWORK_CLASSES))
        raise WeightsError(f"network class {dotted!r} is not an nnU-Net architecture liverctl builds ({allowed})")
    try:
        importlib.import_module("dynamic_network_architectures")
    except ImportError:
        raise WeightsError(
            "nnU-Net models need dynamic-network-architectures: pip install 'liverctl[nnunet]'"
        ) from None
    for candidate in modules:  # the class may live in another allowed module of this version
        try:
            found = getattr(importlib.import_module(candidate), name, None)
        except ImportError:
            continue
        if isinstance(found, type):
            return found
    raise WeightsError(f"network class {name} not found in the installed dynamic-network-architectures")


def _layer(arg: str, dotted: Any) -> Any:
    if dotted is None:
        return None
    target = LAYER_CLASSES.get(dotted) if isinstance(dotted, str) else None
    if target is None:
        raise WeightsError(f"architecture argument {arg} = {dotted!r} is not a layer liverctl imports")
    module, name = target
    return getattr(importlib.import_module(module), name)


def build_network(plans: NnUNetPlans) -> Any:
    """The plans' network (``torch.nn.Module``), without deep supervision, in eval mode.

    Raises:
        WeightsError: a class outside the allowlists, or arguments the class does not take.
    """
    kwargs = dict(plans.arch_kwargs)
    for key in plans.kw_requires_import:  # every name is checked before anything is imported
        if key not in kwargs:
            raise WeightsError(f"architecture._kw_requires_import names '{key}', which arch_kwargs lacks")
        kwargs[key] = _layer(key, kwargs[key])
    cls = _network_class(plans.network_class)
    kwargs["deep_supervision"] = False
    try:
        network = cls(input_channels=1, num_classes=plans.num_classes, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, IndexError) as exc:
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise WeightsError(f"cannot build {cls.__name__} from the plans' arch_kwargs: {first}") from None
    return network.eval()


def load_weights(network: Any, state_dict: dict[str, Any], source: str) -> Any:
    """Load ``state_dict`` into ``network`` strictly; a mismatch is one :class:`WeightsError` line."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise WeightsError(f"{source}: the weights do not fit the plans' network ({what})")
    for key, value in expected.items():
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise WeightsError(
                f"{source}: the weights do not fit the plans' network "
                f"({key}: {tuple(state_dict[key].shape)} vs {tuple(value.shape)})"
            )
    network.load_state_dict(state_dict, strict=True)
    return network.eval()
