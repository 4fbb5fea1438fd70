"""Former name of :mod:`liverctl.phantoms` (synthetic abdominal CT phantoms), kept for one release.

Import from :mod:`liverctl.phantoms` instead; this module re-exports its public API.
"""

from __future__ import annotations

from liverctl.phantoms import (
    DOMAINS,
    GENERATOR_VERSION,
    LABELS,
    ORGAN_LABELS,
    Domain,
    PhantomConfig,
    case_name,
    make_phantom,
    phantom,
    write_dataset,
)

__all__ = [
    "DOMAINS",
    "GENERATOR_VERSION",
    "LABELS",
    "ORGAN_LABELS",
    "Domain",
    "PhantomConfig",
    "case_name",
    "make_phantom",
    "phantom",
    "write_dataset",
]
