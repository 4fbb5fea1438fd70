"""H-DenseUNet: hybrid 2D/3D densely connected U-Net (Li et al. 2018, ``docs/studies/hdenseunet.md``).

The fine stage of the cascade, as one module working on a volume crop (B, 1, Z, Y, X):

1. 2D DenseUNet (``net2d``): every slice z is seen with its two neighbours as a 3-channel
   image (edge slices repeat themselves), giving per-slice features (``features``
   channels at full size) and class logits.
2. Both are stacked back into volumes; the 3D DenseUNet (``net3d``, inter-slice context)
   sees the image concatenated with the 2D network's class probabilities (1 +
   ``out_channels`` channels: "concatenating the original volumes I with the contextual
   information"); the 2D feature maps enter only the HFF sum. ``context_features=True`` also
   feeds them to the 3D network (1 + ``features`` + ``out_channels`` channels, the earlier layout).
3. Hybrid feature fusion (``hff``): the 2D and 3D feature volumes are summed and refined
   by a 3x3x3 convolution, dropout, batch norm, ReLU, and a 1x1x1 convolution to the
   class logits.

Both DenseUNets (:mod:`liverctl.models.denseunet`) have the paper's layout: a stride-2
stem convolution (7x7) + max pooling, DenseNet blocks and transitions, and one upsampling
level per downsampling back to full size. :data:`PAPER_KWARGS` rebuilds the paper's sizes
(2D: DenseNet-161, blocks 6-12-36-24, growth 48, 96-feature stem, decoder 768-384-96-96-64;
3D: DenseUNet-65, blocks 3-4-12-8, growth 32, 96-feature stem, decoder 504-224-192-96-64;
64 fused features): 2D 49.5 M, 3D 18.5 M and HFF 0.11 M parameters
(:func:`parameter_counts`). ``preset="small"`` (:data:`SMALL_KWARGS`, the size arguments'
defaults) is a small network for CPU demos and tests; ``liverctl train --method hdenseunet``
trains the paper preset unless a size is given.

Input sizes: the 3D network pools z only in its stem and max pooling (12 -> 6 -> 3 for the
paper's 224x224x12 stacks; the transitions keep z), so Z must be a multiple of 4
(``input_multiple_zyx[0]``) and Y, X of ``2**(len(blocks)+1)`` (32 for four blocks);
``min_input_multiple`` is the y / x one.

``forward`` returns the hybrid logits (B, out_channels, Z, Y, X); in training mode the
list ``[hybrid, logits_2d]`` (``logits_2d`` restacked to (B, C, Z, Y, X)) for the loss
``0.5 * L(2D) + L(hybrid)`` (``loss_weights = (1.0, 0.5)``). ``freeze_2d()`` freezes the
2D part for the second training stage (3D + HFF with the 2D part fixed). Three classes by
default: background, liver, tumour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from liverctl.errors import ConfigError
from liverctl.models.denseunet import DenseUNet
from liverctl.models.registry import register
from liverctl.models.slices import slice_stacks, unstack_slices

__all__ = ["PAPER_KWARGS", "SMALL_KWARGS", "DenseUNet", "HDenseUNet", "parameter_counts"]

PAPER_KWARGS: dict[str, Any] = {
    "features": 64,
    "blocks_2d": (6, 12, 36, 24),
    "growth_2d": 48,
    "init_features_2d": 96,
    "blocks_3d": (3, 4, 12, 8),
    "growth_3d": 32,
    "init_features_3d": 96,
    "decoder_3d": (504, 224, 192, 96, 64),
    "dropout": 0.3,
}
"""The paper's sizes (Table I): the 2D DenseNet-161 encoder with its 768-384-96-96-64
decoder, the 3D DenseUNet-65 with 504-224-192-96-64, 64 fused features, HFF dropout 0.3."""
SMALL_KWARGS: dict[str, Any] = {
    "features": 32,
    "blocks_2d": (3, 4, 6, 4),
    "growth_2d": 16,
    "blocks_3d": (2, 3, 3),
    "growth_3d": 8,
    "dropout": 0.3,
}
"""``preset="small"``: a small H-DenseUNet for CPU demos and tests (not the paper's)."""
_PRESETS = {"paper": PAPER_KWARGS, "small": SMALL_KWARGS}


@register("hdenseunet", spatial_dims=3)
class HDenseUNet(nn.Module):
    """H-DenseUNet: 2D DenseUNet on 3-slice stacks + 3D DenseUNet + hybrid feature fusion.

    Args:
        in_channels: image channels (1 for CT); the 2D part sees 3 * in_channels.
        out_channels: classes (3: background, liver, tumour).
        features: channels of the 2D and 3D full-size feature maps that HFF sums.
        blocks_2d: dense blocks of the 2D DenseUNet
            (:class:`~liverctl.models.denseunet.DenseUNet`).
        growth_2d: its growth rate.
        init_features_2d: its stem features (``None`` = ``2 * growth_2d``).
        decoder_2d: its decoder widths (``None`` = the default widths).
        blocks_3d: dense blocks of the 3D DenseUNet.
        growth_3d: its growth rate.
        init_features_3d: its stem features (``None`` = ``2 * growth_3d``).
        decoder_3d: its decoder widths (``None`` = the default widths).
        dropout: dropout of the HFF layer (the paper uses 0.3).
        stem_kernel: kernel of both stride-2 stem convolutions (the paper's 7).
        z_pools_3d: downsamplings of the 3D network that halve z (the paper's 2).
        context_features: the 3D network also sees the 2D feature maps (``False``: image +
            2D class probabilities only, as the paper).
        preset: ``"paper"`` (:data:`PAPER_KWARGS`) or ``"small"`` (:data:`SMALL_KWARGS`) instead of
            the size arguments (``--arch-kwargs '{"preset": "small"}'``).
    """

    spatial_dims = 3

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        features: int = 32,
        blocks_2d: Sequence[int] = (3, 4, 6, 4),
        growth_2d: int = 16,
        blocks_3d: Sequence[int] = (2, 3, 3),
        growth_3d: int = 8,
        dropout: float = 0.3,
        init_features_2d: int | None = None,
        init_features_3d: int | None = None,
        decoder_2d: Sequence[int] | None = None,
        decoder_3d: Sequence[int] | None = None,
        stem_kernel: int = 7,
        z_pools_3d: int = 2,
        preset: str | None = None,
        context_features: bool = False,
    ) -> None:
        super().__init__()
        sizes: dict[str, Any] = {
            "features": features,
            "blocks_2d": blocks_2d,
            "growth_2d": growth_2d,
            "blocks_3d": blocks_3d,
            "growth_3d": growth_3d,
            "dropout": dropout,
            "init_features_2d": init_features_2d,
            "init_features_3d": init_features_3d,
            "decoder_2d": decoder_2d,
            "decoder_3d": decoder_3d,
        }
        if preset is not None:  # a preset's sizes; the size arguments are ignored
            if preset not in _PRESETS:
                raise ConfigError(f"hdenseunet preset must be 'paper' or 'small', got {preset!r}")
            blank = {"init_features_2d": None, "init_features_3d": None, "decoder_2d": None, "decoder_3d": None}
            sizes = {**sizes, **blank, **_PRESETS[preset]}
        self.context_features = bool(context_features)
        self._build(in_channels, out_channels, stem_kernel=stem_kernel, z_pools_3d=z_pools_3d, **sizes)

    def _build(
        self,
        in_channels: int,
        out_channels: int,
        features: int,
        blocks_2d: Sequence[int],
        growth_2d: int,
        blocks_3d: Sequence[int],
        growth_3d: int,
        dropout: float,
        init_features_2d: int | None,
        init_features_3d: int | None,
        decoder_2d: Sequence[int] | None,
        decoder_3d: Sequence[int] | None,
        stem_kernel: int,
        z_pools_3d: int,
    ) -> None:
        if not blocks_2d or not blocks_3d or min([*blocks_2d, *blocks_3d]) < 1:
            raise ConfigError("blocks_2d and blocks_3d need at least one block of >= 1 layer")
        if min(in_channels, out_channels, features, growth_2d, growth_3d) < 1:
            raise ConfigError("channel, feature and growth counts must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.net2d = DenseUNet(
            2,
            3 * in_channels,
            out_channels,
            blocks_2d,
            growth_2d,
            init_features_2d or 2 * growth_2d,
            features,
            decoder=decoder_2d,
            stem_kernel=stem_kernel,
        )
        self.net3d = DenseUNet(
            3,
            in_channels + (features if self.context_features else 0) + out_channels,
            out_channels,
            blocks_3d,
            growth_3d,
            init_features_3d or 2 * growth_3d,
            features,
            with_head=False,
            decoder=decoder_3d,
            stem_kernel=stem_kernel,
            z_pools=z_pools_3d,
        )
        self.hff = nn.Sequential(
            nn.Conv3d(features, features, 3, padding=1, bias=False),
            nn.Dropout3d(dropout) if dropout > 0 else nn.Identity(),
            nn.BatchNorm3d(features),
            nn.ReLU(inplace=True),
            nn.Conv3d(features, out_channels, 1),
        )
        m2, m3 = self.net2d.min_input_multiple, self.net3d.min_input_multiple
        # z only passes through the 3D network; y and x through both
        self.input_multiple_zyx = (self.net3d.input_multiple_zyx[0], max(m2, m3), max(m2, m3))
        self.min_input_multiple = max(m2, m3)  # one number for all axes (conservative)
        self.loss_weights = (1.0, 0.5)  # loss = L(hybrid) + 0.5 * L(2D)

    def freeze_2d(self, frozen: bool = True) -> None:
        """Stop (or restart) gradient updates of the 2D DenseUNet (training stage 2)."""
        for p in self.net2d.parameters():
            p.requires_grad_(not frozen)

    @staticmethod
    def slice_stacks(x: torch.Tensor) -> torch.Tensor:
        """(B, C, Z, Y, X) → (B*Z, 3*C, Y, X): slice z with z-1 and z+1 (edges repeated)."""
        return slice_stacks(x, context=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        m = self.input_multiple_zyx
        if x.ndim != 5 or any(s % k for s, k in zip(x.shape[2:], m, strict=True)):
            raise ConfigError(
                f"H-DenseUNet expects (B, C, Z, Y, X) with Z, Y, X multiples of {m}, got {tuple(x.shape)}"
            )
        b = x.shape[0]
        feat2d, logits2d = self.net2d(slice_stacks(x, context=1))
        assert logits2d is not None
        feat2d_v, logits2d_v = unstack_slices(feat2d, b), unstack_slices(logits2d, b)
        context = [feat2d_v] if self.context_features else []
        feat3d, _ = self.net3d(torch.cat([x, *context, torch.softmax(logits2d_v, dim=1)], dim=1))
        hybrid = self.hff(feat2d_v + feat3d)
        if self.training:
            return [hybrid, logits2d_v]
        return hybrid


def parameter_counts(model: HDenseUNet) -> dict[str, int]:
    """Parameters of the parts of an H-DenseUNet: ``2d`` (with ``2d_encoder``, the DenseNet
    features), ``3d``, ``hff`` and ``total``."""

    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    return {
        "2d": count(model.net2d),
        "2d_encoder": model.net2d.encoder_parameters(),
        "3d": count(model.net3d),
        "hff": count(model.hff),
        "total": count(model),
    }
