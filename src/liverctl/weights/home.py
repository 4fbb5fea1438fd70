"""Where liverctl keeps its own state: one setting, ``$LIVERCTL_HOME``.

``$LIVERCTL_HOME`` when set, else ``$XDG_CACHE_HOME/liverctl``, else ``~/.cache/liverctl``.
It holds the trust-on-first-use pin store (``pins.json``, :mod:`liverctl.weights.pins`) and the
store of imported weights (``weights/``: its own ``weights.toml`` and one folder per model,
written by ``liverctl weights import``, :mod:`liverctl.weights.importing`). The store's entries
join the registry's (:func:`liverctl.weights.load_registry`), so ``predict --model NAME`` finds
an imported model without the network.

This module imports nothing of liverctl's, so every weights module can use it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HOME_ENV", "STORE_REGISTRY", "liverctl_home", "store_dir", "store_registry_path"]

#: Environment variable naming liverctl's own state folder (pin store, imported weights).
HOME_ENV = "LIVERCTL_HOME"
#: The registry file of the store of imported weights.
STORE_REGISTRY = "weights.toml"


def liverctl_home() -> Path:
    """``$LIVERCTL_HOME``, else ``$XDG_CACHE_HOME/liverctl``, else ``~/.cache/liverctl``."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "liverctl"


def store_dir() -> Path:
    """The store of imported weights: ``<liverctl home>/weights``."""
    return liverctl_home() / "weights"


def store_registry_path() -> Path:
    """The store's own registry: ``<liverctl home>/weights/weights.toml``."""
    return store_dir() / STORE_REGISTRY
