"""Pretrained weights (``liverctl weights``): the ``weights.toml`` registry, Hub downloads,
sha256 pins and safe loading.

- :mod:`~liverctl.weights.registry`: :class:`ModelEntry`, :class:`IntensityRecipe`,
  :class:`WindowRecipe`, the ``weights.toml`` schema (:func:`load_registry` reads it,
  :func:`save_registry` writes it; ``liverctl train`` exports its entry through it);
- :mod:`~liverctl.weights.nnunet_entry`: :class:`NnUNetEntry`, the ``format = "nnunetv2"``
  entries (an nnU-Net v2 results folder on the Hub, every file pinned);
  :mod:`~liverctl.weights.nnunet_files` downloads and verifies their files;
  :mod:`~liverctl.weights.add`: :func:`add_nnunet` (``liverctl weights add``) writes one;
- :mod:`~liverctl.weights.recipes`: :class:`IntensityRecipe`, :class:`WindowRecipe`;
- :mod:`~liverctl.weights.pins`: :func:`sha256_file` and the trust-on-first-use pin store;
- :mod:`~liverctl.weights.download`: :func:`download` (Hugging Face cache, resumable),
  :func:`weights_path`, :func:`verify`, :func:`list_weights`;
- :mod:`~liverctl.weights.resolve`: :func:`resolve_weights` (the file ``predict`` uses),
  :func:`local_weights`, :func:`load_state_dict`;
- :mod:`~liverctl.weights.archive` (``liverctl weights pack``) and
  :mod:`~liverctl.weights.importing` (``liverctl weights import``): models carried to machines
  without internet, registered in the store under :mod:`~liverctl.weights.home`
  (``$LIVERCTL_HOME/weights``), whose entries :func:`load_registry` adds to the registry's.

How the Hub is reached and tested offline: ``tests/support/hub_server.py``.

Example::

    from liverctl import weights
    entry = weights.get_entry()             # the registry's default model
    path = weights.download(entry)          # cached after the first call
    state = weights.load_state_dict(path, expected_sha256=weights.sha256_file(path))
"""

from __future__ import annotations

from liverctl.weights.add import add_nnunet
from liverctl.weights.download import (
    WeightsInfo,
    download,
    list_weights,
    verify,
    verify_all,
    weights_path,
)
from liverctl.weights.nnunet_entry import NnUNetEntry
from liverctl.weights.pins import HOME_ENV, VerifyResult, pins_path, sha256_file
from liverctl.weights.registry import (
    DECISIONS,
    INTENSITY_METHODS,
    INTERPOLATIONS,
    NETWORK_AXES,
    PADDING_MODES,
    REGISTRY_ENV,
    WEIGHT_SUFFIXES,
    WINDOW_MODES,
    IntensityRecipe,
    ModelEntry,
    Registry,
    WindowRecipe,
    format_registry,
    get_entry,
    load_registry,
    registry_path,
    save_registry,
)
from liverctl.weights.resolve import ResolvedWeights, load_state_dict, local_weights, resolve_weights
from liverctl.weights.transfer import PARTIAL_SUFFIX

__all__ = [
    "DECISIONS",
    "HOME_ENV",
    "INTENSITY_METHODS",
    "INTERPOLATIONS",
    "NETWORK_AXES",
    "PADDING_MODES",
    "PARTIAL_SUFFIX",
    "REGISTRY_ENV",
    "WEIGHT_SUFFIXES",
    "WINDOW_MODES",
    "IntensityRecipe",
    "ModelEntry",
    "NnUNetEntry",
    "Registry",
    "ResolvedWeights",
    "VerifyResult",
    "WeightsInfo",
    "WindowRecipe",
    "add_nnunet",
    "download",
    "format_registry",
    "get_entry",
    "list_weights",
    "load_registry",
    "load_state_dict",
    "local_weights",
    "pins_path",
    "registry_path",
    "resolve_weights",
    "save_registry",
    "sha256_file",
    "verify",
    "verify_all",
    "weights_path",
]
