"""Neighbouring-slice stacks: how the 2D networks (PIPO-FAN, H-DenseUNet's 2D part) see a volume.

A 2D network with ``context`` slices of context on each side sees slice z as the
channels of slices ``z - context ... z + context`` (slices beyond the volume repeat the
edge slice). :func:`slice_stacks` turns a volume batch into that 2D batch and
:func:`unstack_slices` turns the 2D network's per-slice output back into a volume.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["slice_stacks", "unstack_slices"]


def slice_stacks(x: torch.Tensor, context: int = 1) -> torch.Tensor:
    """(B, C, Z, Y, X) → (B*Z, (2*context+1)*C, Y, X), channels ordered by slice offset then channel.

    Sample ``b*Z + z`` holds slices ``z-context .. z+context`` of volume ``b`` (edges repeated).
    """
    if x.ndim != 5:
        raise ValueError(f"slice_stacks expects (B, C, Z, Y, X), got shape {tuple(x.shape)}")
    b, c, z, y, xx = x.shape
    if context == 0:
        return x.transpose(1, 2).reshape(b * z, c, y, xx)
    padded = F.pad(x, (0, 0, 0, 0, context, context), mode="replicate")
    stacks = padded.unfold(2, 2 * context + 1, 1)  # (B, C, Z, Y, X, 2k+1)
    return stacks.permute(0, 2, 5, 1, 3, 4).reshape(b * z, (2 * context + 1) * c, y, xx)


def unstack_slices(t: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*Z, K, Y, X) → (B, K, Z, Y, X): per-slice 2D outputs back into volumes."""
    bz = t.shape[0]
    if bz % batch:
        raise ValueError(f"{bz} slices do not split into {batch} volumes")
    return t.reshape(batch, bz // batch, *t.shape[1:]).transpose(1, 2)
