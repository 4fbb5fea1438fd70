"""Name registry of the network architectures and a checked state-dict loader.

Every architecture module decorates its ``torch.nn.Module`` class with :func:`register`;
:func:`build_model` then builds one by name from keyword arguments (for instance the
``[model]`` table of a training config), turning unknown names and unaccepted arguments
into a one-line :class:`~liverctl.errors.ConfigError`.

Every registered model exposes two attributes the inference engine relies on:

``spatial_dims``
    2 for networks that see one (multi-channel) slice at a time, 3 for volumetric ones.
``min_input_multiple``
    every spatial size of the input must be a multiple of this number (the product of
    the downsampling strides); the inference engine pads to it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from liverctl.errors import ConfigError, WeightsError

__all__ = [
    "ModelInfo",
    "available_models",
    "build_model",
    "load_state_dict_checked",
    "model_info",
    "register",
]

_T = TypeVar("_T", bound=type)


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about an architecture without building it.

    Attributes:
        name: registry name (``build_model(name)``).
        cls: the ``torch.nn.Module`` subclass.
        spatial_dims: 2 or 3 with the default arguments (``segresnet`` can be built 2D too;
            the built model's ``spatial_dims`` attribute is authoritative).
        summary: first line of the class docstring.
        defaults: keyword arguments the constructor accepts, with their default values.
    """

    name: str
    cls: type
    spatial_dims: int
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelInfo] = {}


def _defaults(cls: type) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    out: dict[str, Any] = {}
    for pname, p in params.items():
        if pname == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[pname] = None if p.default is inspect.Parameter.empty else p.default
    return out


def register(name: str, *, spatial_dims: int = 3) -> Callable[[_T], _T]:
    """Class decorator adding an architecture to the registry under ``name``.

    The class gets a ``registry_name`` attribute (used in error messages).

    Args:
        name: the registry name, lower case.
        spatial_dims: 2 or 3 for the default configuration.
    """

    def deco(cls: _T) -> _T:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"model name {name!r} is already registered")
        doc = inspect.getdoc(cls) or ""
        summary = doc.strip().splitlines()[0] if doc.strip() else cls.__name__
        cls.registry_name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = ModelInfo(name, cls, spatial_dims, summary, _defaults(cls))
        return cls

    return deco


def available_models() -> list[str]:
    """Sorted names of all registered architectures."""
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    """Registry entry of ``name``; :class:`ConfigError` listing the known names when unknown."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(available_models())}") from None


def build_model(name: str, **kwargs: Any) -> torch.nn.Module:
    """Build the architecture registered as ``name`` with keyword arguments ``kwargs``.

    Raises:
        ConfigError: unknown name, an argument the architecture does not accept, or a value
            it rejects (one line each).
    """
    info = model_info(name)
    unknown = sorted(set(kwargs) - set(info.defaults))
    if unknown:
        raise ConfigError(f"model {name!r} does not accept {', '.join(unknown)}; accepted: {', '.join(info.defaults)}")
    try:
        return info.cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build model {name!r}: {exc}") from None


_WRAPPER_KEYS = ("state_dict", "model", "network", "model_state_dict", "net")
_PREFIXES = ("module.", "_orig_mod.")


def _unwrap(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    sd: Any = state_dict
    for _ in range(3):  # {"state_dict": {"model": ...}} and the like
        if isinstance(sd, Mapping) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
            for key in _WRAPPER_KEYS:
                if isinstance(sd.get(key), Mapping):
                    sd = sd[key]
                    break
            else:
                break
    if not isinstance(sd, Mapping):
        raise WeightsError(f"weights are not a state dict (got {type(sd).__name__})")
    out = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not out:
        raise WeightsError("weights hold no tensors (not a state dict)")
    for prefix in _PREFIXES:  # DDP / torch.compile wrappers
        if all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def _examples(items: list[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return f"e.g. {shown}" + (", ..." if len(items) > n else "")


def _prefixes(keys: Any) -> set[str]:
    return {k.split(".", 1)[0] for k in keys}


def guess_architecture(state_dict: Mapping[str, Any]) -> str | None:
    """The registered architecture whose top-level module names best match ``state_dict``'s
    keys (more than half of them shared), else ``None``. Networks are built on the ``meta``
    device: no memory, no weights; used only to explain a misfit."""
    found = _prefixes(_unwrap(state_dict))
    best, best_score = None, 0.5
    for name in available_models():
        try:
            with torch.device("meta"):
                own = _prefixes(build_model(name).state_dict())
        except Exception:  # an architecture that needs arguments to be built: no guess from it
            continue
        score = len(found & own) / max(len(found | own), 1)
        if score > best_score:
            best, best_score = name, score
    return best


def load_state_dict_checked(model: torch.nn.Module, state_dict: Mapping[str, Any]) -> torch.nn.Module:
    """Load ``state_dict`` into ``model`` strictly, explaining any misfit in one line.

    Accepts a bare state dict or one wrapped as ``{"state_dict": ...}``, ``{"model": ...}``
    (MONAI bundles, Lightning, most training scripts), with or without the ``module.``
    prefix of ``DistributedDataParallel`` / ``_orig_mod.`` of ``torch.compile``.
    Non-tensor entries (epoch counters, ...) are ignored.

    Returns:
        ``model``, with the weights loaded.

    Raises:
        WeightsError: "weights do not fit architecture X: 12 missing keys (e.g. ...),
            3 unexpected keys (e.g. ...), 2 shape mismatches (e.g. k: (3, 1) vs (3, 2))".
    """
    sd = _unwrap(state_dict)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k}: weights {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_examples(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_examples(unexpected)})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches ({_examples(mismatched, 2)})")
        arch = getattr(model, "registry_name", type(model).__name__)
        guess = guess_architecture(sd)
        hint = f"; they look like --arch {guess}" if guess is not None and guess != arch else ""
        raise WeightsError(f"weights do not fit architecture {arch}: {'; '.join(parts)}{hint}")
    model.load_state_dict(sd, strict=True)
    return model
