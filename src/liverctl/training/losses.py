"""Segmentation losses for training.

All losses take raw network outputs (logits, ``(B, K, z, y, x)``) and an integer label
map (``(B, z, y, x)`` or ``(B, 1, z, y, x)``) holding class indices ``0..K-1``.

- :class:`DiceCELoss`: soft Dice + cross-entropy (nnU-Net; He et al. 2021). The Dice term is
  the "batch Dice" of nnU-Net: numerator and denominator are summed over the whole batch
  and all voxels, per foreground class, then ``1 - mean`` over the foreground classes
  (background excluded). ``smooth`` (1e-5) is added to numerator and denominator.
- :class:`DeepSupervisionLoss`: the same loss at every output scale of a deep-supervised
  network, weights ``1, 1/2, 1/4, ...`` normalised to sum to 1 (or the weights given, as
  PIPO-FAN's), labels downsampled by nearest neighbour.
- :class:`TargetAdaptiveLoss` (TAL, PIPO-FAN): for a dataset that labels only
  some classes, the probabilities of its unlabelled classes are merged into background
  before the cross-entropy (optionally plus a Dice term), so each dataset supervises only what it labels.
- :func:`sharpen`, :func:`masked_mse`, :func:`consistency_mse` (SD-Net):
  temperature sharpening of probabilities and the MSE terms of semi-supervised training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DeepSupervisionLoss",
    "DiceCELoss",
    "TargetAdaptiveLoss",
    "consistency_mse",
    "deep_supervision_weights",
    "masked_mse",
    "sharpen",
    "soft_dice_loss",
]


def _labels(target: torch.Tensor) -> torch.Tensor:
    if target.ndim >= 2 and target.shape[1] == 1 and target.ndim == 5:
        target = target[:, 0]
    return target.long()


def soft_dice_loss(
    probs: torch.Tensor, target: torch.Tensor, *, include_background: bool = False, smooth: float = 1e-5
) -> torch.Tensor:
    """``1 - mean_k Dice_k`` of softmax probabilities against a label map (batch Dice).

    ``Dice_k = (2 * sum(p_k * y_k) + smooth) / (sum(p_k) + sum(y_k) + smooth)`` summed over the
    batch and all voxels; the mean runs over classes ``1..K-1`` (``0..K-1`` with background).
    """
    target = _labels(target)
    k = probs.shape[1]
    onehot = F.one_hot(target, k).movedim(-1, 1).to(probs.dtype)
    dims = (0, *range(2, probs.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    if not include_background:
        dice = dice[1:]
    return 1 - dice.mean()


class DiceCELoss(nn.Module):
    """Soft (batch) Dice + cross-entropy on softmax outputs, each weighted 1 (nnU-Net)."""

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, smooth: float = 1e-5) -> None:
        super().__init__()
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _labels(target)
        logits = logits.float()
        ce = F.cross_entropy(logits, target)
        dice = soft_dice_loss(logits.softmax(1), target, smooth=self.smooth)
        return self.ce_weight * ce + self.dice_weight * dice


class TargetAdaptiveLoss(nn.Module):
    """PIPO-FAN's target adaptive loss (TAL) for partially labelled data.

    ``labelled`` lists the class indices (besides background 0) that the batch's dataset
    annotates. The softmax probabilities of all other classes are added to background, and
    the loss is the cross-entropy of these merged probabilities (``class_weights``: weights of
    the K full classes; background's weight and the labelled classes' weights are used); the
    label map is expected to hold only 0 and the labelled classes. This is the paper's loss;
    ``dice_weight`` > 0 adds that multiple of the soft (batch) Dice loss of the merged
    probabilities (not in the paper: He et al.'s Dice + CE recipe with ``--loss tal`` uses 1).
    With every class labelled and no Dice term this is plain (weighted) cross-entropy.
    """

    def __init__(
        self,
        labelled: Sequence[int],
        smooth: float = 1e-5,
        *,
        dice_weight: float = 0.0,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.labelled = sorted({int(c) for c in labelled if int(c) != 0})
        self.smooth = smooth
        self.dice_weight = float(dice_weight)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _labels(target)
        probs = logits.float().softmax(1)
        k = probs.shape[1]
        keep = [0, *self.labelled]
        if any(c >= k for c in keep):
            raise ValueError(f"labelled classes {self.labelled} exceed the {k} output channels")
        unlabelled = [c for c in range(k) if c not in keep]
        background = probs[:, :1] + probs[:, unlabelled].sum(1, keepdim=True) if unlabelled else probs[:, :1]
        merged = torch.cat([background, probs[:, self.labelled]], 1)
        # remap labels 0, c1, c2, ... -> 0, 1, 2, ...
        lut = torch.zeros(k, dtype=torch.long, device=target.device)
        for new, old in enumerate(self.labelled, start=1):
            lut[old] = new
        mapped = lut[target]
        weight = None
        if self.class_weights is not None:
            if len(self.class_weights) != k:
                raise ValueError(f"{len(self.class_weights)} class weights for {k} output channels")
            weight = torch.tensor([self.class_weights[c] for c in keep], dtype=merged.dtype, device=merged.device)
        loss = F.nll_loss(torch.log(merged.clamp_min(1e-8)), mapped, weight=weight)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(merged, mapped, smooth=self.smooth)
        return loss


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net's weights for ``n`` outputs (full resolution first): ``1/2^i``, the coarsest
    output gets 0 when ``n > 1``, normalised to sum 1."""
    w = [1 / 2**i for i in range(n)]
    if n > 1:
        w[-1] = 0.0
    total = sum(w)
    return [x / total for x in w]


class DeepSupervisionLoss(nn.Module):
    """Apply ``loss`` to each output of a deep-supervised network (full resolution first).

    ``weights``: one per output, used as given (PIPO-FAN's ``loss_weights``); ``None`` =
    nnU-Net's :func:`deep_supervision_weights`. A single tensor output is passed through
    unchanged. Labels are downsampled with nearest-neighbour interpolation to each output's
    spatial size.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        target = _labels(target)
        weights = deep_supervision_weights(len(outputs)) if self.weights is None else self.weights
        if len(weights) != len(outputs):
            raise ValueError(f"{len(weights)} deep supervision weights for {len(outputs)} outputs")
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for w, out in zip(weights, outputs, strict=True):
            if w == 0:
                continue
            t = target
            if tuple(out.shape[2:]) != tuple(target.shape[1:]):
                t = F.interpolate(target[:, None].float(), size=out.shape[2:], mode="nearest")[:, 0].long()
            total = total + w * self.loss(out, t)
        return total


def sharpen(probs: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SD-Net sharpening of a foreground probability map: ``p^(1/T) / (p^(1/T) + (1-p)^(1/T))``.

    Computed in log space so that small ``T`` does not underflow.
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    p = probs.float().clamp(1e-7, 1 - 1e-7)
    return torch.sigmoid((torch.log(p) - torch.log1p(-p)) / temperature)


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of ``a`` and ``b`` over the voxels where ``mask`` is true (0 if none)."""
    mask = mask.bool()
    if not mask.any():
        return (a * 0).sum()
    return ((a.float() - b.float())[mask] ** 2).mean()


def consistency_mse(student_probs: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SD-Net's unsupervised term: MSE of the student towards the teacher's sharpened,
    detached probabilities."""
    target = sharpen(teacher_probs.detach(), temperature)
    return F.mse_loss(student_probs.float(), target)
