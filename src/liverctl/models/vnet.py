"""V-Net and residual V-Net, the two co-trained 3D networks of SD-Net (``docs/studies/sdnet.md``).

SD-Net trains two *different* networks side by side so that their errors differ. Both
follow the V-Net layout used by the semi-supervised segmentation literature (Milletari
et al. 2016, as re-implemented in UA-MT / MC-Net): five levels with 1, 2, 3, 3, 3
convolutions (5x5x5 in the original, 3x3x3 here as in those re-implementations),
``base_features * 2**level`` features, a stride-2 2x2x2 convolution to go down, and skip
connections that are *added* to the upsampled decoder features (not concatenated).
The decoder levels have 3, 3, 2, 1 convolutions.

``vnet`` (:class:`VNet`)
    plain convolution stacks, transposed-convolution (2x2x2, stride 2) upsampling.
``resvnet`` (:class:`ResVNet`)
    every convolution stack is a residual unit (stack output + its input, then ReLU,
    with a 1x1x1 projection where the feature count changes), and upsampling is
    trilinear interpolation followed by a 3x3x3 convolution. The two decoders therefore
    differ in both their blocks and their upsampling, which is what makes their
    predictions disagree usefully.

Both return logits (B, out_channels, D, H, W); the input size must be a multiple of
``min_input_multiple`` (16).
"""

from __future__ import annotations

import torch
from torch import nn

from liverctl.errors import ConfigError
from liverctl.models.registry import register

__all__ = ["ResVNet", "VNet"]

_ENC_CONVS = (1, 2, 3, 3, 3)
_DEC_CONVS = (3, 3, 2, 1)  # decoder levels 3, 2, 1, 0


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(ch)
    if kind == "instance":
        return nn.InstanceNorm3d(ch, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, ch), ch) if ch % min(8, ch) == 0 else nn.GroupNorm(1, ch)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"norm must be batch, instance, group or none, got {kind!r}")


def _cna(cin: int, cout: int, norm: str, k: int = 3, stride: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv3d(cin, cout, k, stride=stride, padding=(k - 1) // 2 if stride == 1 else 0)]
    layers.append(_norm(norm, cout))
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ConvStack(nn.Module):
    """``n`` conv-norm-ReLU units; with ``residual`` the last ReLU comes after adding the input."""

    def __init__(self, n: int, cin: int, cout: int, norm: str, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.convs = nn.Sequential(
            *[_cna(cin if i == 0 else cout, cout, norm, act=not (residual and i == n - 1)) for i in range(n)]
        )
        self.skip = (nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()) if residual else None
        self.act = nn.ReLU(inplace=True) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x)
        if self.residual:
            assert self.skip is not None and self.act is not None
            y = self.act(y + self.skip(x))
        return y


@register("vnet", spatial_dims=3)
class VNet(nn.Module):
    """V-Net (plain convolution stacks, transposed-convolution upsampling), SD-Net's first network.

    Args:
        in_channels: input channels.
        out_channels: classes (logits).
        base_features: features at level 0 (16 in V-Net).
        norm: ``"batch"`` (default), ``"instance"``, ``"group"`` or ``"none"``.
        dropout: channel dropout on the bottleneck and before the output convolution
            (UA-MT uses 0.5 while training); 0 disables it.
    """

    spatial_dims = 3
    min_input_multiple = 16
    _residual = False
    _upsample = "deconv"

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        base_features: int = 16,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, base_features) < 1:
            raise ConfigError("in_channels, out_channels and base_features must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        _norm(norm, 8)  # validate early
        self.in_channels, self.out_channels = in_channels, out_channels
        f = [base_features * 2**k for k in range(5)]
        self.features = f
        res = self._residual
        self.encoder = nn.ModuleList(
            [ConvStack(_ENC_CONVS[k], in_channels if k == 0 else f[k], f[k], norm, res) for k in range(5)]
        )
        self.down = nn.ModuleList([_cna(f[k], f[k + 1], norm, k=2, stride=2) for k in range(4)])
        self.up = nn.ModuleList([self._make_up(f[k + 1], f[k], norm) for k in range(4)])
        self.decoder = nn.ModuleList([ConvStack(_DEC_CONVS[3 - k], f[k], f[k], norm, res) for k in range(4)])
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv3d(f[0], out_channels, 1)

    def _make_up(self, cin: int, cout: int, norm: str) -> nn.Module:
        if self._upsample == "deconv":
            return nn.Sequential(nn.ConvTranspose3d(cin, cout, 2, stride=2), _norm(norm, cout), nn.ReLU(inplace=True))
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False), _cna(cin, cout, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or any(s % 16 for s in x.shape[2:]):
            raise ConfigError(
                f"{type(self).__name__} expects (B, C, D, H, W) with sizes a multiple of 16, got {tuple(x.shape)}"
            )
        skips = []
        for k in range(5):
            x = self.encoder[k](x)
            skips.append(x)
            if k < 4:
                x = self.down[k](x)
        x = self.dropout(x)
        for k in range(3, -1, -1):
            x = self.decoder[k](self.up[k](x) + skips[k])
        return self.head(self.dropout(x))


@register("resvnet", spatial_dims=3)
class ResVNet(VNet):
    """Residual V-Net (residual stacks, trilinear upsampling + conv), SD-Net's second network.

    Same arguments as :class:`VNet`.
    """

    _residual = True
    _upsample = "trilinear"

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        base_features: int = 16,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_channels, out_channels, base_features, norm, dropout)
