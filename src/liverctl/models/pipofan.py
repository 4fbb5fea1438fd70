"""PIPO-FAN: pyramid-input pyramid-output 2D network with adaptive fusion (``../shared/docs/METHODS.md`` §5).

Input: a 2D batch (B, (2*context_slices+1) * in_channels, H, W) holding each slice with its
neighbours as channels (3 consecutive slices by default), or a volume batch
(B, in_channels, Z, H, W), which the network cuts into such stacks itself
(:func:`liverctl.models.slices.slice_stacks`, edge slices repeated), runs slice by slice
and stacks back: outputs are then (B, K, Z, H, W) (and (B, K, Z, H/2**s, W/2**s) for the
pyramid outputs). ``slice_context`` (= ``context_slices``) tells a caller how many
neighbouring slices on each side the network needs.

Pyramid input
    The image is average-pooled to ``n_scales`` scales (1, 1/2, ..., 1/2**(S-1)). The main
    path runs a stem convolution and a residual block at full size, then at each level s
    max-pools, concatenates the features of scale s's own path and applies a residual
    block. Scale s's own path is a stem convolution followed by s residual blocks at that
    scale, so both streams have gone through the same number of convolutional units when
    they are fused ("equal convolutional depth").

Pyramid output
    The decoder upsamples with transposed convolutions (2x2, stride 2), concatenates the
    encoder features of the level and applies a residual block; every decoder level s
    (and the bottleneck) predicts class scores with a 1x1 convolution: S outputs,
    output s at 1/2**s of the input size (to be supervised against labels pooled to that
    size: deep pyramid supervision).

Adaptive fusion
    Each output is upsampled (bilinear) to the input size; one shared conv block
    (3x3 conv, ReLU, 1x1 conv to one channel) scores it; global average + global max
    pooling of that map give one number per scale; a softmax over the scales turns them
    into weights, and the final output is the weighted sum of the upsampled score maps.

``forward`` returns the fused logits (B, out_channels, H, W); in training mode (with
``deep_supervision``) the list ``[fused, out_0 (full size), out_1 (1/2), ...,
out_{S-1}]`` (``loss_weights``: 1 each, our choice). The fusion weights of the last
call are kept in ``last_fusion_weights`` (B, S) for inspection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from liverctl.errors import ConfigError
from liverctl.models.registry import register
from liverctl.models.slices import slice_stacks, unstack_slices

__all__ = ["PIPOFAN", "ResBlock2d"]


class ResBlock2d(nn.Module):
    """conv3-BN-ReLU-conv3-BN plus the (1x1-projected if needed) input, then ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity() if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


def _stem(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@register("pipofan", spatial_dims=2)
class PIPOFAN(nn.Module):
    """PIPO-FAN 2D network: pyramid input, pyramid output, adaptive fusion of the scales.

    Args:
        in_channels: image channels per slice (1 for CT).
        context_slices: neighbouring slices on each side seen as extra channels (1: three
            consecutive slices, as in the paper).
        out_channels: classes (logits).
        base_features: features at full size, doubling per scale.
        max_features: cap on the features of any scale.
        n_scales: S, the number of input / output scales (5 in the paper).
        deep_supervision: in training mode also return the per-scale outputs.
        fusion_features: channels of the shared scoring conv block.
    """

    spatial_dims = 2

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        base_features: int = 32,
        max_features: int = 512,
        n_scales: int = 5,
        deep_supervision: bool = True,
        fusion_features: int = 16,
        context_slices: int = 1,
    ) -> None:
        super().__init__()
        if n_scales < 2:
            raise ConfigError(f"n_scales must be >= 2, got {n_scales}")
        if min(in_channels, out_channels, base_features, max_features, fusion_features) < 1:
            raise ConfigError("channel and feature counts must be >= 1")
        if context_slices < 0:
            raise ConfigError(f"context_slices must be >= 0, got {context_slices}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.slice_context = context_slices
        self.stack_channels = in_channels * (2 * context_slices + 1)
        self.n_scales = n_scales
        self.deep_supervision = deep_supervision
        self.min_input_multiple = 2 ** (n_scales - 1)
        f = [min(base_features * 2**s, max_features) for s in range(n_scales)]
        self.features = f
        S = n_scales
        self.stem = _stem(self.stack_channels, f[0])
        # encoder.<s>: residual block of level s (input: main path, concatenated with scale s's path if s > 0)
        self.encoder = nn.ModuleList(
            [ResBlock2d(f[0], f[0])] + [ResBlock2d(f[s - 1] + f[s], f[s]) for s in range(1, S)]
        )
        # side_paths.<s-1>: scale s's own path: stem + s residual blocks (equal convolutional depth)
        self.side_paths = nn.ModuleList(
            [
                nn.Sequential(_stem(self.stack_channels, f[s]), *[ResBlock2d(f[s], f[s]) for _ in range(s)])
                for s in range(1, S)
            ]
        )
        self.up = nn.ModuleList([nn.ConvTranspose2d(f[s + 1], f[s], 2, stride=2) for s in range(S - 1)])
        self.decoder = nn.ModuleList([ResBlock2d(2 * f[s], f[s]) for s in range(S - 1)])
        self.heads = nn.ModuleList([nn.Conv2d(f[s], out_channels, 1) for s in range(S)])
        self.scorer = nn.Sequential(
            nn.Conv2d(out_channels, fusion_features, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(fusion_features, 1, 1),
        )
        self.last_fusion_weights: torch.Tensor | None = None
        # fused output and every pyramid output supervised with the same weight (the paper gives none)
        self.loss_weights = (1.0,) * (n_scales + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.ndim == 5 and x.shape[1] == self.in_channels:
            b = x.shape[0]
            out = self._forward_2d(slice_stacks(x, self.slice_context))
            if isinstance(out, list):
                return [unstack_slices(o, b) for o in out]
            return unstack_slices(out, b)
        return self._forward_2d(x)

    def _forward_2d(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.stack_channels or any(s % self.min_input_multiple for s in x.shape[2:]):
            raise ConfigError(
                f"PIPO-FAN expects (B, {self.stack_channels}, H, W) slice stacks or (B, {self.in_channels}, Z, H, W) "
                f"volumes with H, W multiples of {self.min_input_multiple}, got {tuple(x.shape)}"
            )
        size = x.shape[2:]
        image = x
        h = self.encoder[0](self.stem(x))
        skips = [h]
        for s in range(1, self.n_scales):
            scaled = F.avg_pool2d(image, kernel_size=2**s)
            side = self.side_paths[s - 1](scaled)
            h = self.encoder[s](torch.cat([F.max_pool2d(h, 2), side], dim=1))
            skips.append(h)
        outputs: list[torch.Tensor] = [None] * self.n_scales  # type: ignore[list-item]
        outputs[-1] = self.heads[-1](h)
        for s in range(self.n_scales - 2, -1, -1):
            h = self.decoder[s](torch.cat([self.up[s](h), skips[s]], dim=1))
            outputs[s] = self.heads[s](h)

        ups = [
            o if s == 0 else F.interpolate(o, size=size, mode="bilinear", align_corners=False)
            for s, o in enumerate(outputs)
        ]
        stacked = torch.stack(ups, dim=1)  # (B, S, C, H, W)
        b = stacked.shape[0]
        score_maps = self.scorer(stacked.flatten(0, 1))  # (B*S, 1, H, W)
        scores = score_maps.mean(dim=(1, 2, 3)) + score_maps.amax(dim=(1, 2, 3))
        weights = torch.softmax(scores.view(b, self.n_scales), dim=1)
        self.last_fusion_weights = weights.detach()
        fused = (weights[:, :, None, None, None] * stacked).sum(dim=1)
        if self.deep_supervision and self.training:
            return [fused, *outputs]
        return fused
