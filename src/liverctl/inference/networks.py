"""How the engine calls the networks: 2D networks slice by slice, the input multiple, a
pointwise head split off (SegResNet's ``split_head``), mirror test-time augmentation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from liverctl.device import autocast
from liverctl.errors import ConfigError
from liverctl.inference.config import DEFAULT_MIN_INPUT_MULTIPLE, Predictor, SlidingWindow

__all__: list[str] = []


class _SliceWise(torch.nn.Module):
    """Runs a 2D network on every z-slice of 3D windows: (B, C', z, y, x) -> (B, K, z, y, x).

    ``channels`` picks the window channels the network sees. A network with ``slice_context``
    k > 0 sees each slice with its k neighbours on each side as channels: the engine adds
    those stacks to the input volume once, from the whole volume (:func:`stack_neighbours`),
    so a slice at a window's edge still sees its true neighbours and only the volume's own
    edge slices are repeated. ``mirror_z`` reorders the stacked channels of a window mirrored
    along z (slice z-1 becomes z+1), so that z-mirroring TTA sees what a mirrored scan would give.
    """

    def __init__(self, net: torch.nn.Module, channels: slice | None = None, groups: int = 1) -> None:
        super().__init__()
        self.net = net
        self.channels = channels if channels is not None else slice(None)
        self.groups = groups  # 2k + 1 stacked slices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, self.channels]
        b, c, z, y, xx = x.shape
        out = self.net(x.permute(0, 2, 1, 3, 4).reshape(b * z, c, y, xx))
        return out.reshape(b, z, out.shape[1], y, xx).permute(0, 2, 1, 3, 4)

    def mirror_z(self, x: torch.Tensor) -> torch.Tensor:
        """A z-mirrored window with its stacked neighbour channels in mirrored order."""
        if self.groups == 1 or self.channels == slice(None):
            return x
        part = x[:, self.channels]
        b, c = part.shape[:2]
        part = part.reshape(b, self.groups, c // self.groups, *part.shape[2:]).flip(1).reshape(part.shape)
        out = x.clone()
        out[:, self.channels] = part
        return out


class _Channels(torch.nn.Module):
    """A 3D network fed only the first ``n`` channels of windows that also carry neighbour stacks."""

    def __init__(self, net: Predictor, n: int) -> None:
        super().__init__()
        self.net = net
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, : self.n])


def slice_context_of(models: Sequence[Any]) -> int:
    """The largest ``slice_context`` of the 2D networks among ``models`` (0: none needs neighbours)."""
    found = [int(getattr(m, "slice_context", 0) or 0) for m in models if int(getattr(m, "spatial_dims", 3)) == 2]
    return max(found, default=0)


def stack_neighbours(vol: torch.Tensor, context: int) -> torch.Tensor:
    """``(C, z, y, x)`` -> ``((2k+1)*C, z, y, x)``: slices ``z-k .. z+k`` as channels (ordered by
    slice offset, then channel; the volume's edge slices repeated), as
    :func:`liverctl.models.slices.slice_stacks` orders them."""
    from liverctl.models.slices import slice_stacks

    stacks = slice_stacks(vol[None], context)  # (z, (2k+1)*C, y, x)
    return stacks.permute(1, 0, 2, 3).contiguous()


def _model_multiple(models: Sequence[Any], config: SlidingWindow) -> tuple[int, int, int]:
    if config.min_input_multiple is not None:
        m = int(config.min_input_multiple)
        return (m, m, m)
    found = [int(getattr(mdl, "min_input_multiple", 0) or 0) for mdl in models]
    m = max(found) if any(found) else DEFAULT_MIN_INPUT_MULTIPLE
    two_d = all(int(getattr(mdl, "spatial_dims", 3)) == 2 for mdl in models)
    return (1 if two_d else m, m, m)


def _split_head(model: torch.nn.Module) -> tuple[Predictor, torch.nn.Conv3d] | None:
    """``model.split_head()`` when it offers one whose head is a plain 1x1x1 convolution."""
    split = getattr(model, "split_head", None)
    if split is None or int(getattr(model, "spatial_dims", 3)) != 3:
        return None
    parts = split()
    if parts is None:
        return None
    features, head = parts
    if not (
        isinstance(head, torch.nn.Conv3d)
        and tuple(head.kernel_size) == (1, 1, 1)
        and tuple(head.stride) == (1, 1, 1)
        and head.groups == 1
        and head.padding in ((0, 0, 0), "valid")
    ):
        return None
    return features, head


def _pointwise_weights(head: torch.nn.Conv3d, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(W, b)`` of a 1x1x1 convolution: ``W`` (K, C) and ``b`` (K,), float32 on ``device``."""
    weight = head.weight.detach().reshape(head.out_channels, head.in_channels).float().to(device)
    bias = None if head.bias is None else head.bias.detach().float().to(device)
    return weight, bias


def _run_flips(
    predict: Predictor, win: torch.Tensor, flips: list[tuple[int, ...]], device: torch.device, precision: str
) -> torch.Tensor:
    """Mean logits over the mirror combinations (spatial axes 0..2 -> tensor dims 2..4)."""
    total: torch.Tensor | None = None
    for axes in flips:
        dims = [a + 2 for a in axes]
        x = torch.flip(win, dims) if dims else win
        if 0 in axes and isinstance(predict, _SliceWise):
            x = predict.mirror_z(x)
        with autocast(device, precision):
            out = predict(x)
        if not isinstance(out, torch.Tensor):
            raise ConfigError(f"the model must return a tensor of logits, got {type(out).__name__}")
        if len(flips) > 1:  # one pass: the accumulator converts only the part it keeps
            out = out.float()
        if dims:
            out = torch.flip(out, dims)
        total = out if total is None else total.add_(out)
    assert total is not None
    if len(flips) > 1:
        total /= len(flips)
    if total.ndim != 5 or total.shape[0] != win.shape[0] or tuple(total.shape[2:]) != tuple(win.shape[2:]):
        raise ConfigError(
            f"the model must map (B, C, z, y, x) to (B, K, z, y, x); got {tuple(win.shape)} -> {tuple(total.shape)}"
        )
    return total
