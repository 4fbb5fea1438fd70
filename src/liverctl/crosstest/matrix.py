"""The S x T matrices of a cross test: per-metric means, the best source per target, CSV, heatmaps.

Step 4 of the protocol in :mod:`liverctl.crosstest`. Rows are sources (trained on), columns
targets (tested on); the diagonal and cells without a usable scan are NaN.
"""

from __future__ import annotations

import csv
import io as _io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.io import write_text_atomic

__all__ = ["best_sources", "cell_matrix", "matrix_csv", "write_heatmaps", "write_matrices"]


def best_sources(matrix: np.ndarray, names: Sequence[str], metric: str) -> dict[str, str | None]:
    """The best source (row) per target (column): highest value for metrics where higher
    is better, lowest for the others (lowest absolute value for the signed RVD). Ties go to
    the first source in order; a column without any value gets ``None``."""
    from liverctl.metrics import HIGHER_IS_BETTER

    out: dict[str, str | None] = {}
    for j, target in enumerate(names):
        col = np.asarray(matrix[:, j], dtype=float)
        if metric == "rvd":
            col = np.abs(col)
        if not np.isfinite(col).any():
            out[target] = None
            continue
        score = np.where(np.isfinite(col), col, -np.inf if metric in HIGHER_IS_BETTER else np.inf)
        i = int(np.argmax(score) if metric in HIGHER_IS_BETTER else np.argmin(score))
        out[target] = names[i]
    return out


def matrix_csv(matrix: np.ndarray, names: Sequence[str], digits: int = 6) -> str:
    """The matrix as CSV: header ``source\\target,<T1>,...``, one row per source; empty
    fields for the diagonal and for cells without a value."""
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["source\\target", *names])
    for i, s in enumerate(names):
        writer.writerow([s, *("" if not math.isfinite(v) else f"{v:.{digits}g}" for v in matrix[i])])
    return buf.getvalue()


def cell_matrix(cells: dict[tuple[str, str], dict[str, Any]], names: Sequence[str], metric: str) -> np.ndarray:
    """The S x T matrix of one metric's cell means (NaN where a cell has none)."""
    n = len(names)
    mat = np.full((n, n), np.nan)
    for (sn, tn), cell in cells.items():
        value = ((cell.get("summary") or {}).get(metric) or {}).get("mean")
        if value is not None:
            mat[names.index(sn), names.index(tn)] = float(value)
    return mat


def write_matrices(result: Any, out: Path) -> None:
    """Fill ``result.matrices`` and ``result.best`` from ``result.cells``; write ``matrix_<metric>.csv``."""
    for m in result.metrics:
        mat = cell_matrix(result.cells, result.names, m)
        result.matrices[m] = mat
        result.best[m] = best_sources(mat, result.names, m)
        result.files[f"csv:{m}"] = write_text_atomic(out / f"matrix_{m}.csv", matrix_csv(mat, result.names))


def write_heatmaps(result: Any, out: Path) -> None:
    """One heatmap PNG per metric, the best source per target boxed (``result.files["png:<metric>"]``)."""
    from liverctl.metrics import HIGHER_IS_BETTER
    from liverctl.plots import heatmap

    names = result.names
    for m in result.metrics:
        best = result.best[m]
        marks = [names.index(b) if b is not None else None for b in (best[t] for t in names)]
        result.files[f"png:{m}"] = heatmap(
            result.matrices[m],
            names,
            names,
            out / f"matrix_{m}.png",
            best=marks,
            title=f"Cross test: {m} (rows: trained on, columns: tested on)",
            cmap="viridis" if m in HIGHER_IS_BETTER else "viridis_r",
            value_label=m,
        )
