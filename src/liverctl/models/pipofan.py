"""PIPO-FAN: pyramid-input pyramid-output 2D network with adaptive fusion (``docs/studies/pipofan.md``).

Input: a 2D batch (B, (2*context_slices+1) * in_channels, H, W) holding each slice with its
neighbours as channels (3 consecutive slices by default), or a volume batch
(B, in_channels, Z, H, W), which the network cuts into such stacks itself
(:func:`liverctl.models.slices.slice_stacks`, edge slices repeated), runs slice by slice
and stacks back: outputs are then (B, K, Z, H, W) (and (B, K, Z, H/2**s, W/2**s) for the
pyramid outputs). ``slice_context`` (= ``context_slices``) tells a caller how many
neighbouring slices on each side the network needs.

Widths: ``f[s] = min(base_features * 2**s, max_features)`` at level s (1/2**s of the input
size); the decoder of level s >= 1 has width ``f[s-1]`` (256, 128, 64, 64 for the paper's
settings), the widths of the authors' released code. At the paper's settings
(``base_features=64``, ``max_features=512``, S = 5) the network has 27,907,101 parameters for two
classes (:func:`paper_parameter_count`, measured). The paper's Table I gives 28,270,986: the
authors' code builds 28,271,005, of which :data:`UNUSED_IN_AUTHORS_CODE` (363,904) sit in 1x1
"bridge" convolutions it creates in every residual block but never calls where the widths match
(liverctl does not create them), and Table I leaves out the 19 parameters of the fusion block:
27,907,101 + 363,904 - 19 = 28,270,986. The paper's list of widths "64, 128, 256, 512, 512,
512, 256, 128, 64" reads as the feature maps entering each upsampling (512, 256, 128, 64 from
below), which is what the code (and this module) does.

Pyramid input (equal convolutional depth)
    The image is average-pooled to the S scales 1, 1/2, ..., 1/2**(S-1). **One** input
    convolution (``stem``: conv3-BN-ReLU-conv3) is shared by all scales. The main path is
    ``stem(image)``; at level s >= 1 it is max-pooled and merged with scale s's own path,
    ``stem(pooled image)`` followed by s-1 residual blocks (``side_paths.<s-1>``, widths
    f[1], ..., f[s-1]), so both have gone through the same number of convolutional units;
    a residual block (``encoder.<s-1>``) takes the merged features to f[s]. ``input_merge``
    says how the two are merged: ``"concat"`` (channel concatenation, the authors' released
    code, the layout of the paper's count) or ``"sum"`` (element-wise sum, 23,644,573 parameters).

Pyramid output
    The decoder upsamples bilinearly (x2), concatenates the encoder features of the level
    and applies a residual block: decoder width ``f[s-1]`` at level s >= 1, ``f[0]`` at
    level 0. Every level s (the bottleneck included) predicts class scores after s residual
    blocks that bring it down to f[0] channels (equal depth on the output side) and a
    BN-ReLU-1x1 conv head: S outputs, output s at 1/2**s of the input size, supervised
    against the labels downsampled (nearest neighbour) to that size (deep pyramid supervision).

Adaptive fusion (``scorer``, the only part trained in phase 2 of
:mod:`liverctl.training.pipofan`)
    Each output is upsampled (bilinear) to the input size; one shared block (BN-ReLU-1x1 conv
    to one channel-BN-ReLU-3x3 conv) scores it; global average + global max pooling of that
    map give one number per scale; a softmax over the scales turns them into weights, and the
    final output is the weighted sum of the upsampled score maps.

Residual blocks are pre-activation (BN-ReLU-conv3-BN-ReLU-conv3) plus the input, through a
BN-ReLU-1x1 conv where the width changes. ``blocks="plain"`` drops the residual addition (the
two convolutions alone): the paper's network for KiTS.

``forward`` returns the fused logits (B, out_channels, H, W); in training mode (with
``deep_supervision``) the list ``[fused, out_0 (full size), out_1 (1/2), ...,
out_{S-1}]``, supervised with ``loss_weights`` (1 each: the authors' code sums the S
pyramid losses unweighted). The fusion weights of the last call are kept in
``last_fusion_weights`` (B, S) for inspection.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from liverctl.errors import ConfigError
from liverctl.models.registry import register
from liverctl.models.slices import slice_stacks, unstack_slices

__all__ = ["PAPER_PARAMETERS", "PIPOFAN", "UNUSED_IN_AUTHORS_CODE", "ResBlock2d", "paper_parameter_count"]

PAPER_PARAMETERS = 28_270_986
"""The parameter count of Fang & Yan's Table I for PIPO-FAN."""
UNUSED_IN_AUTHORS_CODE = 363_904
"""Parameters of the 1x1 bridge convolutions the authors' code builds but never calls (module docs)."""

_MERGES = ("concat", "sum")
_BLOCKS = ("residual", "plain")


def _pre_act(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(cin), nn.ReLU(inplace=False), nn.Conv2d(cin, cout, kernel, padding=kernel // 2)]


class ResBlock2d(nn.Module):
    """Pre-activation residual block: (BN-ReLU-conv3) x 2 plus the input (BN-ReLU-1x1 conv
    when the width changes, or always with ``project``); ``residual=False``: the two
    convolutions alone (a plain block)."""

    def __init__(self, cin: int, cout: int, project: bool = False, residual: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(*_pre_act(cin, cout, 3), *_pre_act(cout, cout, 3))
        self.residual = residual
        if not residual:
            self.skip: nn.Module | None = None
        else:
            self.skip = nn.Sequential(*_pre_act(cin, cout, 1)) if (project or cin != cout) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x) if self.skip is not None else self.body(x)


def _chain(widths: list[int], residual: bool = True) -> nn.Sequential:
    """Blocks taking ``widths[0]`` channels through ``widths[1]``, ``widths[2]``, ..."""
    return nn.Sequential(*[ResBlock2d(a, b, residual=residual) for a, b in itertools.pairwise(widths)])


@register("pipofan", spatial_dims=2)
class PIPOFAN(nn.Module):
    """PIPO-FAN 2D network: pyramid input, pyramid output, adaptive fusion of the scales.

    Args:
        in_channels: image channels per slice (1 for CT).
        out_channels: classes (logits).
        base_features: features at full size, doubling per scale (64 in the paper).
        max_features: cap on the features of any scale (512 in the paper).
        n_scales: S, the number of input / output scales (5 in the paper).
        deep_supervision: in training mode also return the per-scale outputs.
        context_slices: neighbouring slices on each side seen as extra channels (1: three
            consecutive slices, as in the paper).
        input_merge: ``"concat"`` (the authors' code) or ``"sum"``.
        blocks: ``"residual"`` (the paper's) or ``"plain"`` (no residual addition: the paper's
            blocks on KiTS).
    """

    spatial_dims = 2

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        base_features: int = 64,
        max_features: int = 512,
        n_scales: int = 5,
        deep_supervision: bool = True,
        context_slices: int = 1,
        input_merge: str = "concat",
        blocks: str = "residual",
    ) -> None:
        super().__init__()
        if n_scales < 2:
            raise ConfigError(f"n_scales must be >= 2, got {n_scales}")
        if min(in_channels, out_channels, base_features, max_features) < 1:
            raise ConfigError("channel and feature counts must be >= 1")
        if context_slices < 0:
            raise ConfigError(f"context_slices must be >= 0, got {context_slices}")
        if input_merge not in _MERGES:
            raise ConfigError(f"input_merge must be one of {', '.join(_MERGES)}, got {input_merge!r}")
        if blocks not in _BLOCKS:
            raise ConfigError(f"blocks must be one of {', '.join(_BLOCKS)}, got {blocks!r}")
        res = blocks == "residual"
        self.blocks = blocks
        self.in_channels, self.out_channels = in_channels, out_channels
        self.slice_context = context_slices
        self.stack_channels = in_channels * (2 * context_slices + 1)
        self.n_scales = n_scales
        self.deep_supervision = deep_supervision
        self.input_merge = input_merge
        self.min_input_multiple = 2 ** (n_scales - 1)
        f = [min(base_features * 2**s, max_features) for s in range(n_scales)]
        self.features = f
        S = n_scales
        merged = 2 if input_merge == "concat" else 1
        # the one input convolution every scale shares
        self.stem = nn.Sequential(
            nn.Conv2d(self.stack_channels, f[0], 3, padding=1),
            nn.BatchNorm2d(f[0]),
            nn.ReLU(inplace=False),
            nn.Conv2d(f[0], f[0], 3, padding=1),
        )
        # side_paths.<s-1>: scale s's own residual blocks after the shared stem, widths f[0] .. f[s-1]
        self.side_paths = nn.ModuleList([_chain(f[:s], res) for s in range(1, S)])
        # encoder.<s-1>: level s, the merged main path + scale s features -> f[s]
        self.encoder = nn.ModuleList([ResBlock2d(merged * f[s - 1], f[s], residual=res) for s in range(1, S)])
        dec = [f[max(s - 1, 0)] for s in range(S - 1)] + [f[S - 1]]
        self.decoder_features = dec
        # decoder.<s>: level s, upsampled level s+1 concatenated with the encoder's level s
        self.decoder = nn.ModuleList(
            [ResBlock2d(dec[s + 1] + f[s], dec[s], project=True, residual=res) for s in range(S - 1)]
        )
        # branches.<s>: s residual blocks from the decoder width of level s down to f[0]
        self.branches = nn.ModuleList(
            [_chain([dec[s], *[f[j] for j in range(s - 2, -1, -1)], f[0]] if s else [dec[0]], res) for s in range(S)]
        )
        self.heads = nn.ModuleList([nn.Sequential(*_pre_act(f[0], out_channels, 1)) for _ in range(S)])
        self.scorer = nn.Sequential(
            *_pre_act(out_channels, 1, 1), nn.BatchNorm2d(1), nn.ReLU(inplace=False), nn.Conv2d(1, 1, 3, padding=1)
        )
        self.last_fusion_weights: torch.Tensor | None = None
        # fused output, then every pyramid output (full size first): the authors sum them unweighted
        self.loss_weights = (1.0,) * (n_scales + 1)

    def fusion_parameters(self) -> list[nn.Parameter]:
        """The parameters of the adaptive fusion (trained alone in phase 2)."""
        return list(self.scorer.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.ndim == 5 and x.shape[1] == self.in_channels:
            b = x.shape[0]
            out = self._forward_2d(slice_stacks(x, self.slice_context))
            if isinstance(out, list):
                return [unstack_slices(o, b) for o in out]
            return unstack_slices(out, b)
        return self._forward_2d(x)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The S pyramid outputs of a 2D batch, output s at 1/2**s of the input size."""
        if x.ndim != 4 or x.shape[1] != self.stack_channels or any(s % self.min_input_multiple for s in x.shape[2:]):
            raise ConfigError(
                f"PIPO-FAN expects (B, {self.stack_channels}, H, W) slice stacks or (B, {self.in_channels}, Z, H, W) "
                f"volumes with H, W multiples of {self.min_input_multiple}, got {tuple(x.shape)}"
            )
        h = self.stem(x)
        skips = [h]
        for s in range(1, self.n_scales):
            side = self.side_paths[s - 1](self.stem(F.avg_pool2d(x, kernel_size=2**s)))
            main = F.max_pool2d(h, 2)
            h = self.encoder[s - 1](torch.cat([main, side], dim=1) if self.input_merge == "concat" else main + side)
            skips.append(h)
        levels: list[torch.Tensor] = [None] * self.n_scales  # type: ignore[list-item]
        levels[-1] = h
        for s in range(self.n_scales - 2, -1, -1):
            up = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True)
            h = self.decoder[s](torch.cat([skips[s], up], dim=1))
            levels[s] = h
        return [self.heads[s](self.branches[s](levels[s])) for s in range(self.n_scales)]

    def fuse(self, outputs: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """The adaptive fusion of the pyramid outputs: softmax-over-scales weighted sum of the
        outputs upsampled to ``size`` (weights kept in ``last_fusion_weights``)."""
        ups = [
            o if tuple(o.shape[2:]) == tuple(size) else F.interpolate(o, size=size, mode="bilinear", align_corners=True)
            for o in outputs
        ]
        stacked = torch.stack(ups, dim=1)  # (B, S, C, H, W)
        b = stacked.shape[0]
        score_maps = self.scorer(stacked.flatten(0, 1))  # (B*S, 1, H, W)
        scores = score_maps.mean(dim=(1, 2, 3)) + score_maps.amax(dim=(1, 2, 3))
        weights = torch.softmax(scores.view(b, self.n_scales), dim=1)
        self.last_fusion_weights = weights.detach()
        return (weights[:, :, None, None, None] * stacked).sum(dim=1)

    def _forward_2d(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        outputs = self.pyramid(x)
        fused = self.fuse(outputs, tuple(x.shape[2:]))
        if self.deep_supervision and self.training:
            return [fused, *outputs]
        return fused


def paper_parameter_count(out_channels: int = 2, input_merge: str = "concat", blocks: str = "residual") -> int:
    """Parameters of PIPO-FAN at the paper's settings (3 slices, widths 64..512, S = 5),
    counted on the meta device (no memory, no initialisation)."""
    with torch.device("meta"):
        net = PIPOFAN(out_channels=out_channels, input_merge=input_merge, blocks=blocks)
    return sum(p.numel() for p in net.parameters())
