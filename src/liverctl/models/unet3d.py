"""nnU-Net-style 3D U-Net of the cross-dataset study (He et al. 2021, ``docs/studies/he2021.md``).

Levels are numbered by how often the input has been downsampled: level 0 works at full
size, level ``n_levels - 1`` (level 5 by default) is the bottleneck. Features are
``min(base_features * 2**level, max_features)`` (32, 64, 128, 256, 320, 320 by default).

Encoder level k (``encoder.<k>``): two 3x3x3 convolutions, each followed by
normalisation, LeakyReLU(0.01) and (optional) channel dropout; for k > 0 the first
convolution has stride 2 and does the downsampling (no pooling), as in nnU-Net.

Decoder level k (``decoder.<k>``, k = n_levels-2 ... 0): a transposed convolution
(kernel 2, stride 2) from level k+1, concatenation with the encoder skip of level k,
then two 3x3x3 conv blocks. A 1x1x1 convolution (``heads.0``) maps decoder level 0 to the
class logits; with deep supervision every decoder level k has its own head ``heads.<k>``.

Dataset-wise convolution module (DCM, "GELN_DCM" with N = ``dcm_from_level``): every
encoder level >= N holds one copy per dataset of *all* its layers (the convolutions and
their normalisation layers: normalisation statistics are a property of the dataset's
intensity distribution, which is exactly what these levels are meant to absorb). The
decoder, the heads and the encoder levels < N are shared. ``forward`` then needs
``dataset_index``.
"""

from __future__ import annotations

import torch
from torch import nn

from liverctl.errors import ConfigError
from liverctl.models.dcm import DatasetIndex, DatasetWise, normalize_dataset_index
from liverctl.models.registry import register

__all__ = ["ConvNormAct", "UNet3D"]

_NORMS = {"batch": nn.BatchNorm3d, "instance": nn.InstanceNorm3d}


class ConvNormAct(nn.Sequential):
    """Conv3d(k3) → BatchNorm3d / InstanceNorm3d(affine) → LeakyReLU(0.01) → Dropout3d (if p > 0)."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int = 1, norm: str = "batch", dropout: float = 0.0):
        layers: list[nn.Module] = [
            nn.Conv3d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=True),
            _NORMS[norm](out_ch, affine=True) if norm == "instance" else _NORMS[norm](out_ch),
            nn.LeakyReLU(0.01, inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout3d(dropout))
        super().__init__(*layers)


def _stage(in_ch: int, out_ch: int, stride: int, norm: str, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        ConvNormAct(in_ch, out_ch, stride=stride, norm=norm, dropout=dropout),
        ConvNormAct(out_ch, out_ch, norm=norm, dropout=dropout),
    )


@register("unet3d", spatial_dims=3)
class UNet3D(nn.Module):
    """nnU-Net-style 3D U-Net with optional deep supervision and dataset-wise encoder levels.

    Args:
        in_channels: input channels (1 for CT).
        out_channels: classes (logits, no softmax); 2 for background/liver.
        base_features: features at level 0 (32 in nnU-Net).
        max_features: cap on the features of any level (320 in nnU-Net).
        n_levels: number of levels (6: levels 0..5); the input size must be a multiple of
            ``2 ** (n_levels - 1)``.
        norm: ``"batch"`` (``docs/studies/he2021.md``) or ``"instance"`` (nnU-Net's default).
        dropout: channel-dropout probability after every conv block (0 disables it).
        deep_supervision: in training mode return one output per decoder level.
        dcm_from_level: N of "GELN_DCM": encoder levels N..n_levels-1 get one copy per
            dataset; ``None`` for a fully shared network.
        n_datasets: number of datasets (copies) for the DCM levels.

    Forward:
        ``forward(x, dataset_index=None)`` with ``x`` of shape (B, in_channels, D, H, W).
        ``dataset_index`` is an int (whole batch) or a (B,) tensor of per-sample dataset
        indices; needed only when ``dcm_from_level`` is set and ``n_datasets > 1``, ignored
        without DCM.
        Returns logits (B, out_channels, D, H, W); with deep supervision in training mode a
        list of logits ``[level 0 (full size), level 1 (half size), ..., level n_levels-2]``.
    """

    spatial_dims = 3

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        base_features: int = 32,
        max_features: int = 320,
        n_levels: int = 6,
        norm: str = "batch",
        dropout: float = 0.0,
        deep_supervision: bool = False,
        dcm_from_level: int | None = None,
        n_datasets: int = 1,
    ) -> None:
        super().__init__()
        if norm not in _NORMS:
            raise ConfigError(f"norm must be one of {', '.join(_NORMS)}, got {norm!r}")
        if n_levels < 2:
            raise ConfigError(f"n_levels must be >= 2, got {n_levels}")
        if min(in_channels, out_channels, base_features, max_features) < 1:
            raise ConfigError("in_channels, out_channels, base_features and max_features must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        if n_datasets < 1:
            raise ConfigError(f"n_datasets must be >= 1, got {n_datasets}")
        if dcm_from_level is not None and not 0 <= dcm_from_level < n_levels:
            raise ConfigError(f"dcm_from_level must be in 0..{n_levels - 1} or None, got {dcm_from_level}")
        if dcm_from_level is None and n_datasets > 1:
            raise ConfigError("n_datasets > 1 needs dcm_from_level (which encoder levels are dataset-wise)")

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.n_levels = n_levels
        self.deep_supervision = deep_supervision
        self.dcm_from_level = dcm_from_level
        self.n_datasets = n_datasets
        self.features = [min(base_features * 2**k, max_features) for k in range(n_levels)]
        self.min_input_multiple = 2 ** (n_levels - 1)

        f = self.features
        self.encoder = nn.ModuleList()
        for k in range(n_levels):
            cin, stride = (in_channels, 1) if k == 0 else (f[k - 1], 2)
            if dcm_from_level is not None and k >= dcm_from_level:

                def factory(cin: int = cin, cout: int = f[k], stride: int = stride) -> nn.Module:
                    return _stage(cin, cout, stride, norm, dropout)

                self.encoder.append(DatasetWise(factory, n_datasets))
            else:
                self.encoder.append(_stage(cin, f[k], stride, norm, dropout))

        # decoder.<k> / upsample.<k> for k = 0..n_levels-2 (index = level number)
        self.upsample = nn.ModuleList(
            [nn.ConvTranspose3d(f[k + 1], f[k], kernel_size=2, stride=2, bias=True) for k in range(n_levels - 1)]
        )
        self.decoder = nn.ModuleList([_stage(2 * f[k], f[k], 1, norm, dropout) for k in range(n_levels - 1)])
        n_heads = n_levels - 1 if deep_supervision else 1
        self.heads = nn.ModuleList([nn.Conv3d(f[k], out_channels, kernel_size=1, bias=True) for k in range(n_heads)])

    def dataset_wise_levels(self) -> list[int]:
        """Encoder levels that hold one copy per dataset (empty without DCM)."""
        return [k for k, m in enumerate(self.encoder) if isinstance(m, DatasetWise)]

    def forward(self, x: torch.Tensor, dataset_index: DatasetIndex = None) -> torch.Tensor | list[torch.Tensor]:
        if x.ndim != 5:
            raise ConfigError(f"UNet3D expects a (B, C, D, H, W) tensor, got shape {tuple(x.shape)}")
        bad = [s for s in x.shape[2:] if s % self.min_input_multiple]
        if bad:
            raise ConfigError(
                f"input size {tuple(x.shape[2:])} is not a multiple of {self.min_input_multiple} (pad it first)"
            )
        # without DCM, dataset_index is ignored (trainers may pass it to every model alike)
        idx = 0 if self.dcm_from_level is None else normalize_dataset_index(dataset_index, x.shape[0], self.n_datasets)
        skips: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x, idx) if isinstance(stage, DatasetWise) else stage(x)
            skips.append(x)
        x = skips.pop()
        outputs: list[torch.Tensor] = []
        for k in range(self.n_levels - 2, -1, -1):
            x = self.upsample[k](x)
            x = self.decoder[k](torch.cat([skips[k], x], dim=1))
            if self.deep_supervision and self.training:
                outputs.append(self.heads[k](x))
        if self.deep_supervision and self.training:
            return outputs[::-1]
        return self.heads[0](x)
