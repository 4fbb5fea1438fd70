"""A preview picture per scan: three orthogonal slices through the liver with the mask outline.

:func:`write_preview` writes a PNG (what TotalSegmentator's ``--preview`` gives): axial,
coronal and sagittal planes through the centre of the liver (the scan's centre when the mask
is empty), shown in the radiological convention (patient's right on the left of the picture,
anterior up in the axial plane, superior up in the others) at their true aspect ratio, CT in a
soft-tissue window (W 400, L 40), the mask's outline drawn over it; the caption names the
scan, the liver volume and the QC flags of its report.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from liverctl.io import Image

__all__ = ["write_preview"]

WINDOW_HU = (-160.0, 240.0)


def _planes(ct: np.ndarray, mask: np.ndarray, centre: Sequence[int]):
    """(title, CT plane, mask plane) for an LPS array (z, y, x): axial (rows: y, anterior up),
    coronal and sagittal (rows: z flipped, so that superior is up)."""
    z, y, x = centre
    return [
        ("axial", ct[z], mask[z]),
        ("coronal", ct[::-1, y, :], mask[::-1, y, :]),
        ("sagittal", ct[::-1, :, x], mask[::-1, :, x]),
    ]


def caption(title: str, volume_ml: float | None, flags: Sequence[str] = (), lower_bound: bool = False) -> str:
    """The preview's caption: the scan, the liver volume ("≥" where it is a lower bound: the
    liver touches the scan's edge) and the QC flags."""
    if volume_ml is None:
        volume = "no liver found"
    else:
        volume = (
            f"liver ≥ {volume_ml:.0f} mL (cut off at the scan's edge)" if lower_bound else f"liver {volume_ml:.0f} mL"
        )
    qc = "QC: " + (", ".join(flags) if flags else "no flags")
    return "   ".join(t for t in (title, volume, qc) if t)


def write_preview(
    image: Image,
    mask: np.ndarray | Image,
    path: str | os.PathLike[str],
    *,
    title: str = "",
    volume_ml: float | None = None,
    flags: Sequence[str] = (),
    lower_bound: bool = False,
) -> Path:
    """Write the preview PNG of ``mask`` (on ``image``'s grid) to ``path`` (atomically);
    ``lower_bound``: the liver touches the scan's edge, so its volume is at least ``volume_ml``."""
    from liverctl.plots import _pyplot, _save
    from liverctl.spatial import reorient

    mask_image = mask if isinstance(mask, Image) else Image(np.asarray(mask).astype(np.uint8), image.geometry)
    ct = reorient(image, "LPS")  # array (z, y, x) = superior, posterior, left: viewer conventions below
    liver = reorient(Image(mask_image.array.astype(np.uint8), image.geometry), "LPS").array > 0
    points = np.argwhere(liver)
    centre = points.mean(axis=0).round().astype(int) if len(points) else np.asarray(liver.shape) // 2
    sz, sy, sx = ct.geometry.spacing_zyx
    aspects = {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), facecolor="black")
    try:
        for ax, (name, plane, outline) in zip(axes, _planes(ct.array, liver, centre), strict=True):
            ax.imshow(plane, cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], aspect=aspects[name])
            if outline.any():
                ax.contour(outline.astype(float), levels=[0.5], colors=["#00ff66"], linewidths=1.2)
            ax.set_title(name, color="white", fontsize=10)
            ax.set_axis_off()
        text = caption(title, volume_ml if len(points) else None, flags, lower_bound)
        fig.suptitle(text, color="white", fontsize=11)
        note = "radiological view: patient's right on the left; sagittal: anterior on the left"
        fig.text(0.5, 0.02, note, color="#bbbbbb", fontsize=8, ha="center")
        return _save(fig, path)
    finally:
        plt.close(fig)
