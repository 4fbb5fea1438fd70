"""DI2IN-AN: deep image-to-image network and its adversarial discriminator (``docs/studies/di2in-an.md``).

Generator (:class:`DI2IN`, ``di2in``)
    Encoder of 3x3x3 convolutions only (the first convolution of every level after level 0
    has stride 2; no pooling); decoder of 3x3x3 convolutions and trilinear 2x
    upsampling; encoder features are concatenated into the decoder at every level; batch
    norm + LeakyReLU after every convolution. Deep supervision: the decoder levels of
    ``side_levels`` have a side branch (1x1x1 convolution to ``out_channels``) upsampled
    trilinearly to full size, and the final output is a convolution with LeakyReLU over all
    side outputs concatenated (initialised as the mean of the side logits). Level k works
    at 1/2**k of the input size; the paper's branches come from decoder blocks 10, 11, 12 with "Upscaling factors are 16,4,1", so the
    default for five levels is ``side_levels=(4, 2, 0)`` (the level-4 branch taps the
    bottleneck block that opens the decoder, at 1/16). In training mode ``forward`` returns
    ``[final, side_a, side_b, ...]`` (all full size, the coarsest branch first, as
    ``side_levels``) so the loss can be
    ``sum_i w_i * l_i + w_final * l_final`` (``loss_weights``: all 1, as in the paper);
    in eval mode only ``final``.

Discriminator (:class:`DI2INDiscriminator`, ``di2in_discriminator``)
    A 3D CNN that scores a label map (probabilities, or a one-hot reference) as real
    (reference, logit > 0) or fake (prediction): strided 3x3x3 convolutions with batch norm
    (none on the first) and LeakyReLU(0.2), global average pooling and a linear layer to
    one logit per sample. Pass ``in_channels = out_channels (+ image channels)`` to
    condition it on the image as well. Not used at inference.

Both output logits; DI2IN uses sigmoid + BCE, hence ``out_channels=1`` by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from liverctl.errors import ConfigError
from liverctl.models.registry import register

__all__ = ["DI2IN", "DI2INDiscriminator", "paper_side_levels"]


def _cbl(cin: int, cout: int, stride: int = 1, slope: float = 0.01, norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm3d(cout))
    layers.append(nn.LeakyReLU(slope, inplace=True))
    return nn.Sequential(*layers)


@register("di2in", spatial_dims=3)
class DI2IN(nn.Module):
    """DI2IN generator: convolutional 3D encoder-decoder with deep-supervision side outputs.

    Args:
        in_channels: input channels.
        out_channels: output channels (1 for liver vs background with BCE).
        base_features: features at level 0.
        max_features: cap on the features of any level.
        n_levels: levels 0..n_levels-1 (the input size must be a multiple of
            ``2**(n_levels-1)``).
        deep_supervision: return the side outputs too in training mode.
        side_levels: the levels with a deep-supervision branch (level k at 1/2**k, upscaled by
            2**k); ``None`` = :func:`paper_side_levels` (``(4, 2, 0)`` for five levels: the paper's
            factors 16, 4, 1). ``(2, 1, 0)`` gives the three finest levels (factors 4, 2, 1), the earlier default.
        fuse_features: features of the fusion convolution.
    """

    spatial_dims = 3

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_features: int = 32,
        max_features: int = 512,
        n_levels: int = 5,
        deep_supervision: bool = True,
        side_levels: tuple[int, ...] | list[int] | None = None,
        fuse_features: int = 8,
    ) -> None:
        super().__init__()
        if n_levels < 2:
            raise ConfigError(f"n_levels must be >= 2, got {n_levels}")
        if min(in_channels, out_channels, base_features, max_features) < 1:
            raise ConfigError("in_channels, out_channels, base_features and max_features must be >= 1")
        levels = paper_side_levels(n_levels) if side_levels is None else tuple(int(k) for k in side_levels)
        if not levels or len(set(levels)) != len(levels) or not all(0 <= k < n_levels for k in levels):
            raise ConfigError(f"side_levels must be distinct levels in 0..{n_levels - 1}, got {side_levels}")
        self.side_levels = tuple(sorted(levels, reverse=True))
        n_sides = len(self.side_levels)
        if fuse_features < 1:
            raise ConfigError(f"fuse_features must be >= 1, got {fuse_features}")
        self.n_sides = n_sides
        self.in_channels, self.out_channels = in_channels, out_channels
        self.n_levels = n_levels
        self.deep_supervision = deep_supervision
        self.min_input_multiple = 2 ** (n_levels - 1)
        f = [min(base_features * 2**k, max_features) for k in range(n_levels)]
        self.features = f
        self.encoder = nn.ModuleList(
            [
                nn.Sequential(
                    _cbl(in_channels if k == 0 else f[k - 1], f[k], stride=1 if k == 0 else 2), _cbl(f[k], f[k])
                )
                for k in range(n_levels)
            ]
        )
        # decoder.<k>: level k, input = upsampled level k+1 features concatenated with encoder level k
        self.decoder = nn.ModuleList(
            [nn.Sequential(_cbl(f[k + 1] + f[k], f[k]), _cbl(f[k], f[k])) for k in range(n_levels - 1)]
        )
        # side.<k>: decoder level k (the bottleneck for k = n_levels - 1), upsampled by 2**k to full size
        self.side = nn.ModuleDict({str(k): nn.Conv3d(f[k], out_channels, 1) for k in self.side_levels})
        self.fuse = nn.Sequential(
            nn.Conv3d(n_sides * out_channels, fuse_features, 3, padding=1),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(fuse_features, out_channels, 1),
        )
        # docs/studies/di2in-an.md: total loss = sum_i w_i * l_i + w_final * l_final with every w = 1
        self.loss_weights = (1.0,) * (n_sides + 1)
        self._init_fuse()

    def _init_fuse(self) -> None:
        """Start the fusion as the mean of the side logits (our choice: the paper gives no
        initialisation): hidden channels 2c and 2c+1 carry +mean and -mean of class c's side logits
        through the LeakyReLU, and the output takes their difference (exactly the mean, for either
        sign); the other hidden channels start with a zero output weight. A randomly initialised
        fusion lags far behind the side branches in short runs."""
        conv, out = self.fuse[0], self.fuse[2]
        oc, n = self.out_channels, self.n_sides
        if conv.out_channels < 2 * oc:
            return
        slope = self.fuse[1].negative_slope
        with torch.no_grad():
            out.weight.zero_()
            out.bias.zero_()
            for c in range(oc):
                for h, sign in ((2 * c, 1.0), (2 * c + 1, -1.0)):
                    conv.weight[h].zero_()
                    conv.bias[h] = 0.0
                    for j in range(n):
                        conv.weight[h, j * oc + c, 1, 1, 1] = sign / n
                    out.weight[c, h] = sign / (1.0 + slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.ndim != 5 or any(s % self.min_input_multiple for s in x.shape[2:]):
            raise ConfigError(
                f"DI2IN expects (B, C, D, H, W) with sizes a multiple of {self.min_input_multiple}, got {tuple(x.shape)}"
            )
        size = x.shape[2:]
        skips = []
        for enc in self.encoder:
            x = enc(x)
            skips.append(x)
        x = skips.pop()
        sides = [self._side(self.n_levels - 1, x, size)] if self.n_levels - 1 in self.side_levels else []
        for k in range(self.n_levels - 2, -1, -1):
            x = F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)
            x = self.decoder[k](torch.cat([x, skips[k]], dim=1))
            if k in self.side_levels:
                sides.append(self._side(k, x, size))
        final = self.fuse(torch.cat(sides, dim=1))
        if self.deep_supervision and self.training:
            return [final, *sides]
        return final

    def _side(self, k: int, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """The branch of level ``k``, upsampled (factor 2**k) to the input ``size``."""
        s = self.side[str(k)](x)
        return s if k == 0 else F.interpolate(s, size=size, mode="trilinear", align_corners=False)


def paper_side_levels(n_levels: int) -> tuple[int, ...]:
    """The default deep-supervision levels: the coarsest, the middle and the finest level,
    ``(4, 2, 0)`` for five levels (the paper's upscaling factors 16, 4, 1)."""
    return tuple(sorted({n_levels - 1, (n_levels - 1) // 2, 0}, reverse=True))


@register("di2in_discriminator", spatial_dims=3)
class DI2INDiscriminator(nn.Module):
    """DI2IN-AN discriminator: label map (+ optional image) → one real/fake logit per sample.

    Args:
        in_channels: channels of the label map (+ image) it scores.
        base_features: features of the first convolution, doubling per layer.
        n_layers: number of stride-2 convolutions.
        max_features: cap on the features of any layer.
    """

    spatial_dims = 3
    min_input_multiple = 1  # global pooling: any size works

    def __init__(
        self, in_channels: int = 1, base_features: int = 32, n_layers: int = 4, max_features: int = 256
    ) -> None:
        super().__init__()
        if n_layers < 1 or min(in_channels, base_features, max_features) < 1:
            raise ConfigError("in_channels, base_features, max_features and n_layers must be >= 1")
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(n_layers):
            cout = min(base_features * 2**i, max_features)
            layers.append(_cbl(cin, cout, stride=2, slope=0.2, norm=i > 0))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (B, 1): > 0 means "looks like a reference annotation"."""
        if x.ndim != 5:
            raise ConfigError(f"the discriminator expects (B, C, D, H, W), got {tuple(x.shape)}")
        return self.classifier(self.features(x).mean(dim=(2, 3, 4)))
