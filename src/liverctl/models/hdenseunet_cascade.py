"""H-DenseUNet's cascade (Li et al. 2018, ``docs/studies/hdenseunet.md``): a coarse liver-ROI
network in front of the fine H-DenseUNet.

- :class:`CoarseLiverNet`: a small 3D U-Net (``unet3d``, 8 base features, 4 levels: 0.35 M
  parameters) on the volume average-pooled by ``scale`` (2, 4, 4) (z, y, x); two classes,
  background and the liver region (liver and tumour). It sees whole volumes, padded to its
  input multiple, so it needs no sliding window. :meth:`CoarseLiverNet.low_res` gives the
  low-resolution logits (what it is trained on and what the box is taken from),
  ``forward`` the logits upsampled to the input's size.
- :func:`liver_box`: the box of the largest connected component of the coarse liver mask,
  scaled back to the full grid and grown by ``margin`` voxels (z, y, x), clipped to the
  volume; ``None`` when the coarse network finds no liver.
- :class:`HDenseUNetCascade` (``hdenseunet_cascade``): both networks in one module, what
  ``train --method hdenseunet --coarse-iterations N`` exports. ``forward`` is the fine
  network's (so the sliding window runs it on crops); :mod:`liverctl.inference.roi` first
  runs ``coarse`` on the whole scan, crops to :func:`liver_box` and pastes the fine result
  back into the full grid (background outside the box).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from liverctl.errors import ConfigError
from liverctl.models.hdenseunet import HDenseUNet
from liverctl.models.registry import register
from liverctl.models.unet3d import UNet3D

__all__ = ["DEFAULT_MARGIN", "CoarseLiverNet", "HDenseUNetCascade", "liver_box"]

DEFAULT_MARGIN = (2, 8, 8)
"""Voxels (z, y, x) the coarse liver box is grown by on each side."""

Box = tuple[slice, slice, slice]


class CoarseLiverNet(nn.Module):
    """The coarse liver-ROI network: a small 3D U-Net on a downsampled volume (module docs).

    Args:
        in_channels: image channels.
        scale: average-pooling factors (z, y, x) before the U-Net.
        base_features: base features of the ``unet3d`` inside.
        n_levels: levels of the ``unet3d`` inside.
    """

    def __init__(
        self, in_channels: int = 1, scale: Sequence[int] = (2, 4, 4), base_features: int = 8, n_levels: int = 4
    ) -> None:
        super().__init__()
        self.scale = tuple(int(s) for s in scale)
        if len(self.scale) != 3 or min(self.scale) < 1:
            raise ConfigError(f"coarse scale must be three integers >= 1 (z, y, x), got {tuple(scale)}")
        self.unet = UNet3D(in_channels, 2, base_features=base_features, n_levels=n_levels)
        self.multiple = tuple(s * self.unet.min_input_multiple for s in self.scale)

    def pad(self, x: torch.Tensor, value: float | None = None) -> torch.Tensor:
        """``x`` (B, C, Z, Y, X) padded at the end (with its minimum) to the network's multiples,
        and to at least two of them (so the U-Net's deepest level keeps 2 voxels a side for
        its batch norm)."""
        pads = [max(2 * m, n + (-n) % m) - n for n, m in zip(x.shape[2:], self.multiple, strict=True)]
        if not any(pads):
            return x
        fill = float(x.amin()) if value is None else value
        return F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), value=fill)

    def low_res(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2, ceil(Z/sz), ceil(Y/sy), ceil(X/sx)) of the downsampled volume (padded)."""
        return self.unet(F.avg_pool3d(self.pad(x), self.scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.low_res(x)
        up = F.interpolate(low, scale_factor=tuple(float(s) for s in self.scale), mode="trilinear")
        return up[(..., *(slice(0, n) for n in x.shape[2:]))]


def liver_box(mask: np.ndarray, scale: Sequence[int], shape: Sequence[int], margin: Sequence[int]) -> Box | None:
    """The full-grid box (z, y, x slices) of the largest component of the low-resolution liver
    ``mask``, each voxel covering ``scale`` full voxels, grown by ``margin`` and clipped to
    ``shape``; ``None`` for an empty mask. Low-resolution voxels beyond the volume (padding)
    are ignored."""
    from scipy import ndimage

    # only the low-resolution voxels that cover the volume (the rest is the network's padding)
    inside = tuple(slice(0, -(-int(n) // int(s))) for n, s in zip(shape, scale, strict=True))
    labels, n = ndimage.label(np.asarray(mask, bool)[inside], structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return None
    largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    where = np.nonzero(labels == largest)
    box = []
    for axis, (s, n_full, m) in enumerate(zip(scale, shape, margin, strict=True)):
        lo, hi = int(where[axis].min()) * s, (int(where[axis].max()) + 1) * s
        box.append(slice(max(0, lo - int(m)), min(int(n_full), hi + int(m))))
    return tuple(box)  # type: ignore[return-value]


@register("hdenseunet_cascade", spatial_dims=3)
class HDenseUNetCascade(nn.Module):
    """H-DenseUNet with its coarse liver-ROI network (the paper's cascade).

    Args:
        in_channels: image channels.
        out_channels: classes of the fine network (3: background, liver, tumour).
        fine: arguments of the fine :class:`~liverctl.models.hdenseunet.HDenseUNet`.
        coarse: arguments of the :class:`CoarseLiverNet`.
        margin: voxels (z, y, x) the coarse box is grown by.
    """

    spatial_dims = 3

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        fine: Mapping[str, Any] | None = None,
        coarse: Mapping[str, Any] | None = None,
        margin: Sequence[int] = DEFAULT_MARGIN,
    ) -> None:
        super().__init__()
        self.fine = HDenseUNet(in_channels=in_channels, out_channels=out_channels, **dict(fine or {}))
        self.coarse = CoarseLiverNet(in_channels=in_channels, **dict(coarse or {}))
        self.margin = tuple(int(m) for m in margin)
        if len(self.margin) != 3 or min(self.margin) < 0:
            raise ConfigError(f"margin must be three integers >= 0 (z, y, x), got {tuple(margin)}")
        self.min_input_multiple = self.fine.min_input_multiple
        self.input_multiple_zyx = self.fine.input_multiple_zyx
        self.in_channels, self.out_channels = in_channels, out_channels

    def roi(self, volume: torch.Tensor) -> Box | None:
        """The coarse liver box of ``volume`` (B=1, C, Z, Y, X), or ``None`` (no liver found)."""
        with torch.no_grad():
            mask = self.coarse.low_res(volume).argmax(1)[0].cpu().numpy() == 1
        return liver_box(mask, self.coarse.scale, volume.shape[2:], self.margin)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.fine(x)
