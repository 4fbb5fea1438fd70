"""The weights a prediction uses, and loading them safely.

:func:`resolve_weights` picks the file (``--weights PATH``, a local registry entry, or the
Hub download of an entry, checked by :mod:`liverctl.weights.pins`); :func:`load_state_dict`
is the only way liverctl loads weights: ``torch.load(weights_only=True)`` or safetensors,
after the sha256 check.

Example::

    from liverctl import weights
    r = weights.resolve_weights()           # the registry's default model, downloaded once
    state = weights.load_state_dict(r.path, expected_sha256=r.sha256)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liverctl.errors import WeightsError
from liverctl.progress import ProgressCallback
from liverctl.weights.download import local_file
from liverctl.weights.nnunet_entry import NnUNetEntry
from liverctl.weights.pins import accept, sha256_file
from liverctl.weights.registry import WEIGHT_SUFFIXES, ModelEntry, Registry, get_entry
from liverctl.weights.transfer import hub_download

if TYPE_CHECKING:
    import torch

__all__ = ["ResolvedWeights", "load_failure_reason", "load_state_dict", "local_weights", "resolve_weights"]


@dataclass(frozen=True)
class ResolvedWeights:
    """The weights file a prediction uses: the registry entry that describes the network and
    preprocessing, the file, its sha256 and where it came from (``"hub"`` or ``"local"``)."""

    entry: ModelEntry
    path: Path
    sha256: str
    source: str

    @property
    def matches_registry_pin(self) -> bool | None:
        """For a local file: whether it is byte-identical to the registry's pinned file."""
        return (self.sha256 == self.entry.sha256) if self.entry.sha256 else None


def local_weights(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """Check a user-supplied weights file (``--weights PATH``) and return it with its sha256.

    No pin applies to a local file; its sha256 is computed so that it can be reported.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise WeightsError(f"weights file not found: {p}")
    if not p.is_file():
        raise WeightsError(f"weights path is not a file: {p}")
    if not p.name.endswith(WEIGHT_SUFFIXES):
        raise WeightsError(f"{p.name}: weights must be a {', '.join(WEIGHT_SUFFIXES)} file")
    return p, sha256_file(p)


def resolve_weights(
    model: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    *,
    progress: ProgressCallback | None = None,
    registry: Registry | None = None,
) -> ResolvedWeights:
    """The weights file for ``predict``: ``weights`` (a local file) when given, otherwise the
    registry entry ``model`` (default model when ``None``) downloaded and verified.

    The entry always supplies architecture, preprocessing and label map; with a local file it
    only describes how to use it: no pin applies, except when the file is the very file a local
    entry names (``liverctl train``'s ``model.safetensors`` beside its ``weights.toml``), whose
    pinned sha256 it must then match.
    """
    entry = get_entry(model, registry=registry)
    if isinstance(entry, NnUNetEntry):
        raise WeightsError(
            f"model '{entry.name}' is an nnU-Net results folder, not one weights file: load it with "
            "liverctl.predict.LiverModel.load(model=...) or `liverctl predict --model`"
        )
    if weights is not None:
        path, sha = local_weights(weights)
        if entry.local and entry.sha256 and path.resolve() == entry.local_path.resolve() and sha != entry.sha256:
            raise WeightsError(
                f"sha256 mismatch for local weights '{entry.name}' ({path}): got {sha}, "
                f"expected {entry.sha256} (weights.toml beside it); not using it"
            )
        return ResolvedWeights(entry, path, sha, "local")
    if entry.local:
        path = local_file(entry)
        return ResolvedWeights(entry, path, accept(entry, path), "local")
    path = hub_download(entry, force=False, progress=progress)
    sha = accept(entry, path)
    return ResolvedWeights(entry, path, sha, "hub")


_UNSAFE_ADVICE = re.compile(
    r"weights_only|safe_globals|trust(ed)? (the )?source|arbitrary code|two options|following error message"
    r"|documentation of torch\.load",
    re.IGNORECASE,
)


def load_failure_reason(exc: BaseException, limit: int = 200) -> str:
    """One line saying why ``torch.load(weights_only=True)`` failed, *without* torch's advice to
    load the file with ``weights_only=False`` (or to allow-list its classes): liverctl never loads
    a file that way, and never suggests it (that would run the file's code)."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())
    culprit = _unsupported_global(text)
    if culprit is not None:
        reason = f"it holds Python objects other than tensors ({culprit})"
    else:
        sentences = re.split(r"(?<=[.!?])\s+|\s+\(\d\)\s+", text)
        reason = " ".join(s for s in sentences if s and not _UNSAFE_ADVICE.search(s)).strip()
    reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _unsupported_global(message: str) -> str | None:
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    return match.group(1) if match else None


def load_state_dict(path: str | os.PathLike[str], expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a state dict safely: sha256 check first (when ``expected_sha256`` is given), then
    ``safetensors`` for ``.safetensors`` files and ``torch.load(weights_only=True)`` otherwise.

    A checkpoint dict that wraps the weights under ``"state_dict"``, ``"model"`` or
    ``"network"`` (MONAI ``CheckpointSaver``, Lightning) is unwrapped. A pickle that needs
    anything beyond tensors and plain containers is refused with a one-line
    :class:`WeightsError`; arbitrary code is never run.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    if expected_sha256:
        actual = sha256_file(p)
        if actual != expected_sha256.lower():
            raise WeightsError(f"sha256 mismatch for {p}: got {actual}, expected {expected_sha256}; not loading it")
    import torch

    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(p), device="cpu")
        except Exception as exc:
            raise WeightsError(f"{p.name}: not a readable safetensors file ({' '.join(str(exc).split())})") from None
    else:
        import pickle

        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            culprit = _unsupported_global(str(exc))
            if culprit is None and re.search(r"Unsupported operand|invalid load key", str(exc)):
                raise WeightsError(f"{p.name}: not a readable PyTorch weights file (corrupt or not a pickle)") from None
            what = f" ({culprit})" if culprit else ""
            raise WeightsError(
                f"{p.name}: refusing to load: the file holds Python objects other than tensors{what}, "
                "which torch.load(weights_only=True) does not execute; convert it to a plain state_dict or safetensors"
            ) from None
        except (RuntimeError, EOFError, ValueError, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if _UNSAFE_ADVICE.search(first):
                first = load_failure_reason(exc)
            raise WeightsError(f"{p.name}: not a readable PyTorch weights file ({first})") from None
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "network"):
            inner = obj.get(key)
            if isinstance(inner, dict):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{p.name}: holds {type(obj).__name__}, not a state_dict (a dict of tensors)")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{p.name}: not a state_dict: entry {bad[0]!r} is not a tensor")
    return dict(obj)
