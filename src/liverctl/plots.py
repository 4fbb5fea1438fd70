"""Figures: training loss curves, cross-test heatmaps and contour overlays (matplotlib, Agg).

matplotlib is imported inside each function, with the non-interactive ``Agg`` backend,
so importing :mod:`liverctl.plots` costs nothing and works without a display.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from liverctl.io import atomic_path

__all__ = ["heatmap", "loss_curve", "overlay"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _floats(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key, "")
        if v in ("", None):
            continue
        try:
            xs.append(float(r["epoch"]))
            ys.append(float(v))
        except (TypeError, ValueError):
            continue
    return xs, ys


def loss_curve(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], title: str = "") -> Path:
    """Plot the mean training loss per epoch (left axis) and the validation Dice (right axis)
    of ``train_log.csv`` rows (dicts with ``epoch``, ``train_loss``, ``val_dice``, ``lr``) to a
    PNG written atomically at ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        ex, loss = _floats(rows, "train_loss")
        ax.plot(ex, loss, color="tab:blue", marker="." if len(ex) < 50 else None, label="training loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (Dice + CE)", color="tab:blue")
        vx, dice = _floats(rows, "val_dice")
        if vx:
            ax2 = ax.twinx()
            ax2.plot(vx, dice, color="tab:red", marker="o", label="validation Dice")
            ax2.set_ylabel("validation Dice (liver)", color="tab:red")
            ax2.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        if title:
            ax.set_title(title)
        return _save(fig, path)
    finally:
        plt.close(fig)


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Lay out ``fig`` and write it as PNG atomically (temporary file + rename)."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def heatmap(
    matrix: Any,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | os.PathLike[str],
    *,
    best: Sequence[int | None] | None = None,
    title: str = "",
    cmap: str = "viridis",
    value_label: str = "",
    digits: int = 3,
) -> Path:
    """Plot a matrix (rows x columns, NaN = no value, drawn grey with "n/a") with each
    value written in its cell, to a PNG written atomically at ``path``.

    ``best[j]`` is the row of the best value of column ``j`` (or ``None``): that cell is
    boxed and its value set in bold (the cross test's best source per target). Rows are
    labelled on the left ("trained on"), columns at the top ("tested on").
    """
    import numpy as np

    plt = _pyplot()
    values = np.asarray(matrix, dtype=float)
    n_rows, n_cols = values.shape
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * n_cols, 1.4 + 0.8 * n_rows), dpi=100)
    try:
        masked = np.ma.masked_invalid(values)
        colormap = plt.get_cmap(cmap).with_extremes(bad="#d9d9d9")
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        im = ax.imshow(masked, cmap=colormap, vmin=lo, vmax=hi, aspect="auto")
        ax.set_xticks(range(n_cols), labels=list(col_labels), rotation=30, ha="left")
        ax.set_yticks(range(n_rows), labels=list(row_labels))
        ax.xaxis.tick_top()
        ax.xaxis.set_label_position("top")
        ax.set_xlabel("tested on (target)")
        ax.set_ylabel("trained on (source)")
        norm = im.norm
        for i in range(n_rows):
            for j in range(n_cols):
                v = values[i, j]
                is_best = best is not None and j < len(best) and best[j] == i
                if not np.isfinite(v):
                    ax.text(j, i, "n/a", ha="center", va="center", color="#555555", fontsize=9)
                    continue
                shade = colormap(norm(v))
                light = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] > 0.55
                ax.text(
                    j,
                    i,
                    f"{v:.{digits}f}",
                    ha="center",
                    va="center",
                    color="black" if light else "white",
                    fontweight="bold" if is_best else "normal",
                    fontsize=10 if is_best else 9,
                )
                if is_best:
                    ax.add_patch(
                        plt.Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, edgecolor="red", linewidth=2.5)
                    )
        cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if value_label:
            cbar.set_label(value_label)
        if title:
            fig.suptitle(title, fontsize=10)
        return _save(fig, path)
    finally:
        plt.close(fig)


def overlay(
    image: Any,
    reference: Any | None,
    prediction: Any | None,
    path: str | os.PathLike[str],
    *,
    slice_index: int | None = None,
    window: tuple[float, float] = (-200.0, 250.0),
    title: str = "",
) -> Path:
    """An axial slice of a CT :class:`~liverctl.io.Image` with the contours of a reference
    (green) and a predicted (red, dashed) mask on the same grid, to a PNG written
    atomically at ``path``.

    The slice is ``slice_index`` (array z index) or, by default, the slice through the
    centre of mass of the reference (of the prediction when there is no reference; the
    middle slice when both are empty). Pixels are drawn with their physical aspect ratio
    (x/y spacing), array row 0 at the top, as ``imshow`` shows an LPS scan: radiological
    convention (patient's right on the left, anterior at the top) for an identity direction.
    Intensities are shown through the HU ``window``.
    """
    import numpy as np

    plt = _pyplot()
    ct = np.asarray(image.array)
    masks = [
        None if m is None else np.asarray(m.array if hasattr(m, "array") else m) != 0 for m in (reference, prediction)
    ]
    for m in masks:
        if m is not None and m.shape != ct.shape:
            from liverctl.errors import GeometryError

            raise GeometryError(f"overlay: mask shape {m.shape} differs from the image shape {ct.shape}")
    if slice_index is None:
        slice_index = ct.shape[0] // 2
        for m in masks:
            if m is not None and m.any():
                slice_index = round(float(np.nonzero(m)[0].mean()))
                break
    if not 0 <= slice_index < ct.shape[0]:
        from liverctl.errors import ConfigError

        raise ConfigError(f"overlay: slice {slice_index} outside 0..{ct.shape[0] - 1}")
    sx, sy = float(image.geometry.spacing[0]), float(image.geometry.spacing[1])
    fig, ax = plt.subplots(figsize=(6, 6 * (ct.shape[1] * sy) / max(ct.shape[2] * sx, 1e-6) + 0.5), dpi=110)
    try:
        ax.imshow(ct[slice_index], cmap="gray", vmin=window[0], vmax=window[1], aspect=sy / sx, interpolation="nearest")
        handles = []
        from matplotlib.lines import Line2D

        for m, color, style, name in (
            (masks[0], "lime", "solid", "reference"),
            (masks[1], "red", "dashed", "prediction"),
        ):
            if m is None:
                continue
            plane = m[slice_index].astype(float)
            if plane.any() and not plane.all():
                ax.contour(plane, levels=[0.5], colors=[color], linewidths=1.6, linestyles=style)
            handles.append(Line2D([0], [0], color=color, linestyle=style, lw=1.6, label=name))
        if handles:
            ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.7)
        ax.set_axis_off()
        ax.set_title(title or f"axial slice {slice_index}", fontsize=9)
        return _save(fig, path)
    finally:
        plt.close(fig)
