"""DenseUNet, the 2D and 3D halves of H-DenseUNet (Li et al. 2018, ``docs/studies/hdenseunet.md``).

The encoder is a DenseNet laid out exactly as torchvision's ``densenet*.features`` (module
names ``conv0, norm0, relu0, pool0, denseblock<i>.denselayer<j>.{norm1, conv1, norm2,
conv2}, transition<i>.{norm, conv, pool}, norm5``), so an ImageNet DenseNet-161 state dict
maps onto the 2D encoder key for key (:mod:`liverctl.models.densenet_init`):

- stem: ``stem_kernel`` convolution with stride 2 (7x7, 96 features in the paper), batch
  norm, ReLU, then a 3x3 max pooling with stride 2;
- dense blocks (BN-ReLU-1x1 conv to 4*growth, BN-ReLU-3x3 conv to ``growth``, concatenated)
  separated by transitions (BN-ReLU-1x1 conv halving the features, 2x average pooling);
- a final batch norm + ReLU (``norm5``).

The decoder has one upsampling level per downsampling (``len(blocks) + 1``): bilinear /
trilinear upsampling by 2, the sum with the encoder features of that size (the stem's output,
then the dense blocks' outputs, deepest first; a 1x1 convolution maps them when their width
differs, the paper's ``line0``), and a 3x3 convolution + BN + ReLU to ``decoder[k]`` channels.
The last level has no skip and ends at full size with ``decoder[-1]`` features. The default
``decoder`` gives each level the width of the skip the next level meets (the stem's width
for the level before the last), which for DenseNet-161
(blocks 6, 12, 36, 24, growth 48, 96-feature stem) is the paper's 768, 384, 96, 96, 64.

3D: ``z_pools`` of the downsamplings (counted from the stem) also halve z, the others keep
it. The paper's 3D DenseUNet sees 224x224x12 stacks: the stem and its max pooling take z to
12 -> 6 -> 3 and the transitions keep 3 slices (``z_pools=2``), so z must be a multiple of 4
while y and x are multiples of 32.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from liverctl.errors import ConfigError

__all__ = ["DenseUNet", "densenet_feature_parameters"]


def _ops(dims: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module], type[nn.Module]]:
    if dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d
    return nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.AvgPool3d


def _stride(dims: int, pool_z: bool) -> int | tuple[int, int, int]:
    return 2 if dims == 2 else (2 if pool_z else 1, 2, 2)


class _DenseLayer(nn.Module):
    def __init__(self, dims: int, cin: int, growth: int) -> None:
        super().__init__()
        conv, bn, _, _ = _ops(dims)
        self.norm1, self.relu1 = bn(cin), nn.ReLU(inplace=True)
        self.conv1 = conv(cin, 4 * growth, 1, bias=False)
        self.norm2, self.relu2 = bn(4 * growth), nn.ReLU(inplace=True)
        self.conv2 = conv(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.relu1(self.norm1(x)))
        return torch.cat([x, self.conv2(self.relu2(self.norm2(y)))], dim=1)


def densenet_feature_parameters(
    blocks: Sequence[int], growth: int, init_features: int, in_channels: int = 3, dims: int = 2, stem_kernel: int = 7
) -> int:
    """Parameter count of a DenseNet ``features`` module by the architecture's formula (no
    network built): stem conv + BN, per dense layer BN + 1x1 conv + BN + 3x3 conv, per
    transition BN + 1x1 conv, the final BN. 2D DenseNet-161 (6, 12, 36, 24; 48; 96): 26,472,000."""
    k3 = 3**dims
    n = in_channels * init_features * stem_kernel**dims + 2 * init_features
    ch = init_features
    for i, layers in enumerate(blocks):
        for _ in range(layers):
            n += 2 * ch + ch * 4 * growth + 2 * 4 * growth + 4 * growth * growth * k3
            ch += growth
        if i < len(blocks) - 1:
            n += 2 * ch + ch * (ch // 2)
            ch //= 2
    return n + 2 * ch


class DenseUNet(nn.Module):
    """2D or 3D DenseUNet returning (features at full size, class logits or ``None``).

    Args:
        dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes.
        blocks: dense layers per encoder block (DenseNet-161: 6, 12, 36, 24).
        growth: growth rate of the dense layers (DenseNet-161: 48).
        init_features: features of the stem convolution (DenseNet-161: 96).
        decoder: output channels of the ``len(blocks) + 1`` upsampling levels; ``None`` = the
            width of the next skip at each level and ``features`` at the last.
        features: channels of the full-size output features (the paper's 64); must equal
            ``decoder[-1]`` when ``decoder`` is given.
        with_head: add the 1x1 convolution to class logits.
        stem_kernel: kernel size of the stride-2 stem convolution (the paper's 7).
        z_pools: 3D: how many downsamplings, from the stem on, also halve z.
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
        decoder: Sequence[int] | None = None,
        stem_kernel: int = 7,
        z_pools: int = 2,
    ) -> None:
        super().__init__()
        if dims not in (2, 3) or not blocks or min(blocks) < 1 or stem_kernel < 1 or stem_kernel % 2 == 0:
            raise ConfigError("DenseUNet needs dims 2 or 3, at least one block of >= 1 layer and an odd stem kernel")
        conv, bn, maxpool, avgpool = _ops(dims)
        n = len(blocks)
        self.dims = dims
        self.pool_z = [dims == 3 and k < z_pools for k in range(n + 1)]  # downsampling k halves z?
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        stages["conv0"] = conv(
            in_channels, init_features, stem_kernel, _stride(dims, self.pool_z[0]), stem_kernel // 2, bias=False
        )
        stages["norm0"], stages["relu0"] = bn(init_features), nn.ReLU(inplace=True)
        stages["pool0"] = maxpool(3, _stride(dims, self.pool_z[1]), 1)
        ch, skip_ch = init_features, [init_features]
        for i, layers in enumerate(blocks, start=1):
            block = nn.Sequential()
            for j in range(1, layers + 1):
                block.add_module(f"denselayer{j}", _DenseLayer(dims, ch, growth))
                ch += growth
            stages[f"denseblock{i}"] = block
            if i < n:
                skip_ch.append(ch)
                stride = _stride(dims, self.pool_z[i + 1])
                stages[f"transition{i}"] = nn.Sequential(
                    OrderedDict(
                        norm=bn(ch),
                        relu=nn.ReLU(inplace=True),
                        conv=conv(ch, ch // 2, 1, bias=False),
                        pool=avgpool(stride, stride),
                    )
                )
                ch //= 2
        stages["norm5"] = bn(ch)
        self.features = nn.Sequential(stages)
        skips = skip_ch[::-1]  # the skip met at decoder level k (the last level has none)
        dec = list(decoder) if decoder is not None else [*skips[1:], skips[-1], features]
        if len(dec) != n + 1 or dec[-1] != features or min(dec) < 1:
            raise ConfigError(f"decoder needs {n + 1} positive widths ending in features={features}, got {dec}")
        ins = [ch, *dec[:-1]]
        self.skip_proj = nn.ModuleList(
            [nn.Identity() if skips[k] == ins[k] else conv(skips[k], ins[k], 1) for k in range(n)]
        )
        self.decoder = nn.ModuleList(
            [
                nn.Sequential(conv(ins[k], dec[k], 3, padding=1, bias=False), bn(dec[k]), nn.ReLU(inplace=True))
                for k in range(n + 1)
            ]
        )
        self.head = conv(features, out_channels, 1) if with_head else None
        self.n_features = features
        self.input_multiple_zyx = (2 ** sum(self.pool_z), 2 ** (n + 1), 2 ** (n + 1))
        self.min_input_multiple = 2 ** (n + 1)
        self.unet_connections = True  # False: the decoder without the encoder's skips (H-DenseUNet's warm-up)

    def encoder_parameters(self) -> int:
        """Parameters of the DenseNet encoder (``features``)."""
        return sum(p.numel() for p in self.features.parameters())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        mode = "bilinear" if self.dims == 2 else "trilinear"
        skips = []
        for name, module in self.features.named_children():
            if name.startswith("transition") or name == "pool0":
                skips.append(x)
            x = module(x)
        x = F.relu(x)
        skips = skips[::-1]
        for k, level in enumerate(self.decoder):
            scale = (2.0, 2.0) if self.dims == 2 else (2.0 if self.pool_z[len(skips) - k] else 1.0, 2.0, 2.0)
            x = F.interpolate(x, scale_factor=scale, mode=mode, align_corners=False)
            if k < len(skips) and self.unet_connections:
                x = x + self.skip_proj[k](skips[k])
            x = level(x)
        return x, (self.head(x) if self.head is not None else None)
