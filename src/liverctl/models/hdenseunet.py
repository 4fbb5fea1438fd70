"""H-DenseUNet: hybrid 2D/3D densely connected U-Net (Li et al. 2018, ``../shared/docs/METHODS.md`` §4).

The fine stage of the cascade, as one module working on a volume crop (B, 1, Z, Y, X):

1. 2D DenseUNet (``net2d``): every slice z is seen with its two neighbours as a 3-channel
   image (edge slices repeat themselves), giving per-slice features (``features``
   channels at full size) and class logits.
2. Both are stacked back into volumes and fed, concatenated with the image
   (1 + ``features`` + ``out_channels`` channels), to a lighter 3D DenseUNet
   (``net3d``) for inter-slice context.
3. Hybrid feature fusion (``hff``): the 2D and 3D feature volumes are summed and refined
   by a 3x3x3 convolution, dropout, batch norm, ReLU, and a 1x1x1 convolution to the
   class logits.

Both DenseUNets are built from dense blocks (BN-ReLU-1x1 conv to 4*growth, BN-ReLU-3x3
conv to ``growth`` features, concatenated), transitions (BN-ReLU-1x1 conv halving the
features, 2x average pooling) and a decoder that upsamples (bilinear / trilinear), adds
the (1x1-projected) encoder features of the level and applies conv-BN-ReLU. The paper's
2D network is DenseNet-161 (blocks 6, 12, 36, 24, growth 48) on 224x224 slices and the
3D one has blocks 3, 4, 12, 8 on 224x224x12 stacks; the defaults here are smaller, and
``blocks_2d`` / ``blocks_3d`` / ``growth_2d`` / ``growth_3d`` rebuild the paper's sizes.
Deviation: the paper's 2D stem is a 7x7 stride-2 convolution + max-pooling; here the
stem keeps full size (a 3x3 convolution), which keeps the decoder symmetric.

Input sizes: Z must be a multiple of ``input_multiple_zyx[0]`` (the 3D network's
``2**(len(blocks_3d)-1)``, 4 by default, so the paper's 12-slice stacks work), Y and X of
``input_multiple_zyx[1]`` (8 by default); ``min_input_multiple`` is the larger one.

``forward`` returns the hybrid logits (B, out_channels, Z, Y, X); in training mode the
list ``[hybrid, logits_2d]`` (``logits_2d`` restacked to (B, C, Z, Y, X)) for the loss
``0.5 * L(2D) + L(hybrid)`` (``loss_weights = (1.0, 0.5)``). ``freeze_2d()`` freezes the
2D part for the second training stage (3D + HFF with the 2D part fixed). Three classes by
default: background, liver, tumour.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from liverctl.errors import ConfigError
from liverctl.models.registry import register
from liverctl.models.slices import slice_stacks, unstack_slices

__all__ = ["DenseUNet", "HDenseUNet"]


def _layers(dims: int) -> tuple[type[nn.Module], type[nn.Module]]:
    return (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)


class _DenseLayer(nn.Module):
    def __init__(self, dims: int, cin: int, growth: int) -> None:
        super().__init__()
        conv, bn = _layers(dims)
        self.body = nn.Sequential(
            bn(cin),
            nn.ReLU(inplace=True),
            conv(cin, 4 * growth, 1, bias=False),
            bn(4 * growth),
            nn.ReLU(inplace=True),
            conv(4 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


class DenseUNet(nn.Module):
    """2D or 3D DenseUNet returning (features at full size, class logits).

    Args:
        dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes.
        blocks: dense layers per encoder block; one 2x downsampling between blocks.
        growth: growth rate of the dense layers.
        init_features: features of the stem convolution.
        features: channels of the full-size output features.
        with_head: add the 1x1 convolution to class logits (else the logits are ``None``).
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        blocks: Sequence[int],
        growth: int,
        init_features: int,
        features: int,
        with_head: bool = True,
    ) -> None:
        super().__init__()
        conv, bn = _layers(dims)
        self.dims = dims
        self.stem = nn.Sequential(
            conv(in_channels, init_features, 3, padding=1, bias=False), bn(init_features), nn.ReLU(inplace=True)
        )
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        ch = init_features
        skip_ch = []
        for i, n in enumerate(blocks):
            layers = []
            for _ in range(n):
                layers.append(_DenseLayer(dims, ch, growth))
                ch += growth
            self.blocks.append(nn.Sequential(*layers))
            skip_ch.append(ch)
            if i < len(blocks) - 1:
                out = ch // 2
                self.transitions.append(nn.Sequential(bn(ch), nn.ReLU(inplace=True), conv(ch, out, 1, bias=False)))
                ch = out
        # decoder level i (i = len-2 .. 0): upsample, add projected skip i, conv-BN-ReLU to dec_ch[i]
        n_lv = len(blocks)
        dec_ch = [max(features, min(skip_ch[i], features * 2**i)) for i in range(n_lv)]
        dec_ch[0] = features
        self.bottleneck = nn.Sequential(conv(ch, dec_ch[-1], 1, bias=False), bn(dec_ch[-1]), nn.ReLU(inplace=True))
        self.skip_proj = nn.ModuleList([conv(skip_ch[i], dec_ch[i + 1], 1, bias=False) for i in range(n_lv - 1)])
        self.decoder = nn.ModuleList(
            [
                nn.Sequential(
                    conv(dec_ch[i + 1], dec_ch[i], 3, padding=1, bias=False), bn(dec_ch[i]), nn.ReLU(inplace=True)
                )
                for i in range(n_lv - 1)
            ]
        )
        self.head = conv(features, out_channels, 1) if with_head else None
        self.features = features
        self.min_input_multiple = 2 ** (n_lv - 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        pool = F.avg_pool2d if self.dims == 2 else F.avg_pool3d
        mode = "bilinear" if self.dims == 2 else "trilinear"
        x = self.stem(x)
        skips = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            skips.append(x)
            if i < len(self.transitions):
                x = pool(self.transitions[i](x), 2)
        x = self.bottleneck(x)
        for i in range(len(self.blocks) - 2, -1, -1):
            x = F.interpolate(x, scale_factor=2.0, mode=mode, align_corners=False)
            x = self.decoder[i](x + self.skip_proj[i](skips[i]))
        return x, (self.head(x) if self.head is not None else None)


@register("hdenseunet", spatial_dims=3)
class HDenseUNet(nn.Module):
    """H-DenseUNet: 2D DenseUNet on 3-slice stacks + 3D DenseUNet + hybrid feature fusion.

    Args:
        in_channels: image channels (1 for CT); the 2D part sees 3 * in_channels.
        out_channels: classes (3: background, liver, tumour).
        features: channels of the 2D and 3D full-size feature maps that HFF sums.
        blocks_2d: dense layers per block of the 2D DenseUNet.
        growth_2d: growth rate of the 2D DenseUNet.
        blocks_3d: dense layers per block of the 3D DenseUNet.
        growth_3d: growth rate of the 3D DenseUNet.
        dropout: dropout of the HFF layer (the paper uses 0.3).
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
    ) -> None:
        super().__init__()
        if not blocks_2d or not blocks_3d or min([*blocks_2d, *blocks_3d]) < 1:
            raise ConfigError("blocks_2d and blocks_3d need at least one block of >= 1 layer")
        if min(in_channels, out_channels, features, growth_2d, growth_3d) < 1:
            raise ConfigError("channel, feature and growth counts must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.net2d = DenseUNet(2, 3 * in_channels, out_channels, blocks_2d, growth_2d, 2 * growth_2d, features)
        self.net3d = DenseUNet(
            3,
            in_channels + features + out_channels,
            out_channels,
            blocks_3d,
            growth_3d,
            2 * growth_3d,
            features,
            with_head=False,
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
        self.input_multiple_zyx = (m3, max(m2, m3), max(m2, m3))
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
        feat3d, _ = self.net3d(torch.cat([x, feat2d_v, torch.softmax(logits2d_v, dim=1)], dim=1))
        hybrid = self.hff(feat2d_v + feat3d)
        if self.training:
            return [hybrid, logits2d_v]
        return hybrid
