"""SegResNet (Myronenko 2018), state-dict compatible with MONAI's ``SegResNet``.

liverctl does not depend on MONAI; this is an independent implementation whose module
tree (and therefore every state-dict key and shape) is the one of
``monai.networks.nets.SegResNet`` (MONAI 1.3-1.6), so a MONAI Model Zoo checkpoint such as
the whole-body CT bundle (``wholeBody_ct_segmentation``, 105 classes) loads with
``strict=True`` and gives the same outputs (checked against MONAI in the test suite).

The whole-body CT bundle's ``configs/inference.json`` builds::

    SegResNet(spatial_dims=3, in_channels=1, out_channels=105, init_filters=32,
              blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1], dropout_prob=0.2)

which is ``build_model("segresnet", in_channels=1, out_channels=105, init_filters=32,
dropout_prob=0.2)`` here.

Layout (MONAI's names): ``convInit`` (3x3x3 conv) → optional dropout → ``down_layers.<i>``
(for i > 0 a stride-2 3x3x3 conv, then ``blocks_down[i]`` pre-activation residual blocks at
``init_filters * 2**i`` features) → ``up_samples.<i>`` (1x1x1 conv halving the features +
2x upsampling) + the matching encoder output → ``up_layers.<i>`` (``blocks_up[i]`` residual
blocks) → ``conv_final`` (norm, activation, 1x1x1 conv with bias).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from liverctl.errors import ConfigError
from liverctl.models.registry import register

__all__ = ["ResBlock", "SegResNet"]

_ACTS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leakyrelu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "relu6": nn.ReLU6,
    "selu": nn.SELU,
    "celu": nn.CELU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "mish": nn.Mish,
    "swish": nn.SiLU,  # MONAI's Swish with its default alpha=1 is x * sigmoid(x)
    "silu": nn.SiLU,
}


def _split(spec: tuple | str) -> tuple[str, dict[str, Any]]:
    """MONAI-style layer spec: ``"name"`` or ``("name", {kwargs})``."""
    if isinstance(spec, str):
        return spec.lower(), {}
    if isinstance(spec, Sequence) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], dict):
        return spec[0].lower(), dict(spec[1])
    raise ConfigError(f"layer spec must be 'name' or ('name', {{args}}), got {spec!r}")


def _act(spec: tuple | str) -> nn.Module:
    name, kwargs = _split(spec)
    if name == "":
        return nn.Identity()
    if name not in _ACTS:
        raise ConfigError(f"unknown activation {name!r}; known: {', '.join(_ACTS)}")
    return _ACTS[name](**kwargs)


def _norm(spec: tuple | str, spatial_dims: int, channels: int) -> nn.Module:
    name, kwargs = _split(spec)
    if name == "":
        return nn.Identity()
    if name == "group":
        kwargs.setdefault("num_groups", 8)
        kwargs.setdefault("num_channels", channels)
        return nn.GroupNorm(**kwargs)
    if name == "batch":
        cls: type[nn.Module] = nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d
    elif name == "instance":
        cls = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d
    else:
        raise ConfigError(f"unknown norm {name!r}; known: group, batch, instance")
    kwargs.setdefault("num_features", channels)
    return cls(**kwargs)


def _conv_cls(spatial_dims: int, transposed: bool = False) -> type[nn.Module]:
    if transposed:
        return nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d
    return nn.Conv3d if spatial_dims == 3 else nn.Conv2d


class _Conv(nn.Sequential):
    """MONAI ``Convolution(..., conv_only=True)``: a Sequential with one child named ``conv``."""

    def __init__(
        self, spatial_dims: int, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, bias: bool = False
    ) -> None:
        super().__init__()
        conv = _conv_cls(spatial_dims)(
            in_ch, out_ch, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, bias=bias
        )
        self.add_module("conv", conv)


def _pixelshuffle(x: torch.Tensor, spatial_dims: int, factor: int) -> torch.Tensor:
    """Sub-pixel shuffle in 2D/3D (channel blocks of factor**dims become spatial blocks)."""
    b, c = x.shape[:2]
    sizes = list(x.shape[2:])
    out_c = c // factor**spatial_dims
    x = x.reshape([b, out_c] + [factor] * spatial_dims + sizes)
    # (b, oc, f1..fd, s1..sd) -> (b, oc, s1, f1, s2, f2, ...)
    perm = [0, 1]
    for i in range(spatial_dims):
        perm += [2 + spatial_dims + i, 2 + i]
    return x.permute(perm).reshape([b, out_c] + [s * factor for s in sizes])


class _Subpixel(nn.Module):
    """MONAI ``SubpixelUpsample`` with its default conv block and pad+avg-pool smoothing."""

    def __init__(self, spatial_dims: int, channels: int, factor: int = 2) -> None:
        super().__init__()
        self.dimensions = spatial_dims
        self.scale_factor = factor
        self.conv_block = _conv_cls(spatial_dims)(channels, channels * factor**spatial_dims, 3, padding=1, bias=True)
        pad = nn.ConstantPad3d if spatial_dims == 3 else nn.ConstantPad2d
        pool = nn.AvgPool3d if spatial_dims == 3 else nn.AvgPool2d
        self.pad_pool = nn.Sequential(pad((factor - 1, 0) * spatial_dims, 0.0), pool(kernel_size=factor, stride=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pad_pool(_pixelshuffle(self.conv_block(x), self.dimensions, self.scale_factor))


def _upsample(spatial_dims: int, channels: int, mode: str) -> nn.Sequential:
    """MONAI ``UpSample`` as SegResNet uses it (scale 2, in = out channels, linear, align_corners=False)."""
    up = nn.Sequential()
    if mode == "deconv":
        up.add_module("deconv", _conv_cls(spatial_dims, transposed=True)(channels, channels, 2, stride=2, bias=True))
    elif mode == "nontrainable":
        interp = "trilinear" if spatial_dims == 3 else "bilinear"
        up.add_module("upsample_non_trainable", nn.Upsample(scale_factor=2.0, mode=interp, align_corners=False))
    elif mode == "pixelshuffle":
        up.add_module("pixelshuffle", _Subpixel(spatial_dims, channels))
    else:
        raise ConfigError(f"upsample_mode must be deconv, nontrainable or pixelshuffle, got {mode!r}")
    return up


class ResBlock(nn.Module):
    """Pre-activation residual block: norm → act → conv → norm → act → conv, plus the input."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        norm: tuple | str,
        kernel_size: int = 3,
        act: tuple | str = ("RELU", {"inplace": True}),
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ConfigError("kernel_size should be an odd number")
        self.norm1 = _norm(norm, spatial_dims, in_channels)
        self.norm2 = _norm(norm, spatial_dims, in_channels)
        self.act = _act(act)
        self.conv1 = _Conv(spatial_dims, in_channels, in_channels, kernel_size)
        self.conv2 = _Conv(spatial_dims, in_channels, in_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        x = self.conv1(self.act(self.norm1(x)))
        x = self.conv2(self.act(self.norm2(x)))
        x += identity  # in place, as MONAI (saves one feature-map allocation)
        return x


@register("segresnet", spatial_dims=3)
class SegResNet(nn.Module):
    """SegResNet encoder-decoder whose state dict is that of MONAI's ``SegResNet``.

    Args (MONAI's names, order and defaults):
        spatial_dims: 2 or 3.
        init_filters: features of the first level (doubling per level).
        in_channels: input channels.
        out_channels: output channels (logits).
        dropout_prob: dropout after the first convolution; ``None`` for none.
        act: activation, ``"name"`` or ``("name", {args})`` (relu, leakyrelu, prelu, elu, ...).
        norm: normalisation, ``"name"`` or ``("name", {args})``: group (``num_groups`` 8
            unless given), batch or instance.
        norm_name: deprecated MONAI option; only ``"group"`` (uses ``num_groups``).
        num_groups: group count for ``norm_name="group"``.
        use_conv_final: end with norm, act and a 1x1 conv to ``out_channels``; without it the
            output has ``init_filters`` channels.
        blocks_down: residual blocks per encoder level.
        blocks_up: residual blocks per decoder level.
        upsample_mode: ``"nontrainable"`` (trilinear), ``"deconv"`` or ``"pixelshuffle"``.

    The spatial input size must be a multiple of ``min_input_multiple = 2**(len(blocks_down)-1)``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        init_filters: int = 8,
        in_channels: int = 1,
        out_channels: int = 2,
        dropout_prob: float | None = None,
        act: tuple | str = ("RELU", {"inplace": True}),
        norm: tuple | str = ("GROUP", {"num_groups": 8}),
        norm_name: str = "",
        num_groups: int = 8,
        use_conv_final: bool = True,
        blocks_down: Sequence[int] = (1, 2, 2, 4),
        blocks_up: Sequence[int] = (1, 1, 1),
        upsample_mode: str = "nontrainable",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(blocks_up) != len(blocks_down) - 1:
            raise ConfigError(
                f"blocks_up needs len(blocks_down) - 1 = {len(blocks_down) - 1} entries, got {len(blocks_up)}"
            )
        if norm_name:
            if norm_name.lower() != "group":
                raise ConfigError(f"deprecated option norm_name={norm_name!r}; use norm instead")
            norm = ("group", {"num_groups": num_groups})
        upsample_mode = str(getattr(upsample_mode, "value", upsample_mode)).lower()

        self.spatial_dims = spatial_dims
        self.init_filters = init_filters
        self.in_channels = in_channels
        self.out_channels = out_channels if use_conv_final else init_filters
        self.blocks_down = tuple(blocks_down)
        self.blocks_up = tuple(blocks_up)
        self.dropout_prob = dropout_prob
        self.act = act
        self.norm = norm
        self.upsample_mode = upsample_mode
        self.use_conv_final = use_conv_final
        self.min_input_multiple = 2 ** (len(self.blocks_down) - 1)

        # Registration order as in MONAI, so state_dict() lists the keys in the same order.
        self.act_mod = _act(act)
        self.convInit = _Conv(spatial_dims, in_channels, init_filters)
        self.down_layers = nn.ModuleList()
        for i, n_blocks in enumerate(self.blocks_down):
            ch = init_filters * 2**i
            pre = _Conv(spatial_dims, ch // 2, ch, stride=2) if i > 0 else nn.Identity()
            self.down_layers.append(
                nn.Sequential(pre, *[ResBlock(spatial_dims, ch, norm=norm, act=act) for _ in range(n_blocks)])
            )
        self.up_layers = nn.ModuleList()
        self.up_samples = nn.ModuleList()
        n_up = len(self.blocks_up)
        for i in range(n_up):
            ch = init_filters * 2 ** (n_up - i)
            self.up_layers.append(
                nn.Sequential(*[ResBlock(spatial_dims, ch // 2, norm=norm, act=act) for _ in range(self.blocks_up[i])])
            )
            self.up_samples.append(
                nn.Sequential(
                    _Conv(spatial_dims, ch, ch // 2, kernel_size=1), _upsample(spatial_dims, ch // 2, upsample_mode)
                )
            )
        self.conv_final = nn.Sequential(
            _norm(norm, spatial_dims, init_filters),
            self.act_mod,
            _Conv(spatial_dims, init_filters, out_channels, kernel_size=1, bias=True),
        )
        if dropout_prob is not None:
            self.dropout = (nn.Dropout3d if spatial_dims == 3 else nn.Dropout2d)(dropout_prob)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encoder: the bottleneck features and the outputs of every level (full size first)."""
        x = self.convInit(x)
        if self.dropout_prob is not None:
            x = self.dropout(x)
        down_x = []
        for down in self.down_layers:
            x = down(x)
            down_x.append(x)
        return x, down_x

    def decode(self, x: torch.Tensor, down_x: list[torch.Tensor]) -> torch.Tensor:
        """Decoder; ``down_x`` is the encoder outputs deepest first."""
        for i, (up, upl) in enumerate(zip(self.up_samples, self.up_layers, strict=True)):
            x = upl(up(x) + down_x[i + 1])
        if self.use_conv_final:
            x = self.conv_final(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, down_x = self.encode(x)
        down_x.reverse()
        return self.decode(x, down_x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The input of the final pointwise convolution: ``forward(x) == head(forward_features(x))``
        with ``head`` from :meth:`split_head`."""
        x, down_x = self.encode(x)
        down_x.reverse()
        for i, (up, upl) in enumerate(zip(self.up_samples, self.up_layers, strict=True)):
            x = upl(up(x) + down_x[i + 1])
        return self.conv_final[1](self.conv_final[0](x))

    def split_head(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module] | None:
        """``(features, head)`` with ``forward(x) == head(features(x))`` and ``head`` the final
        1x1 convolution, a linear map per voxel. The sliding-window engine averages the windows'
        features (``init_filters`` channels instead of ``out_channels``) and applies ``head``
        once per voxel: the same result, since a weighted mean commutes with a linear map.
        ``None`` without the final convolution."""
        if not self.use_conv_final:
            return None
        return self.forward_features, self.conv_final[2].conv
