"""What predict returns: :class:`Segmentation` for one scan in memory, :class:`CaseResult` for one
input of a batch (what was written, or why it failed) and :class:`PredictResult` for the batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liverctl.io import Image

__all__ = ["CaseResult", "PredictResult", "Segmentation"]


@dataclass
class Segmentation:
    """The result of :meth:`LiverModel.segment` for one scan, on the scan's own grid."""

    mask: Image
    probabilities: Image | None
    report: dict[str, Any]


@dataclass
class CaseResult:
    """One input of a :func:`predict` run: what was written, or why it failed."""

    input: str
    mask: Path | None = None
    report_path: Path | None = None
    probabilities: Path | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    skipped: bool = False
    """``resume``: the mask and report of an earlier run with the same model and options were kept."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class PredictResult:
    """What a :func:`predict` run did: one :class:`CaseResult` per input and the summary CSV."""

    cases: list[CaseResult] = field(default_factory=list)
    summary_csv: Path | None = None

    @property
    def failures(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.ok]
