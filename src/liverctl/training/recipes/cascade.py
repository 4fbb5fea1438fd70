"""H-DenseUNet's cascade at training time (``train --method hdenseunet --coarse-iterations N``).

1. :func:`train_coarse`: the coarse liver-ROI network
   (:class:`~liverctl.models.hdenseunet_cascade.CoarseLiverNet`) is trained first, for
   ``config.coarse_iterations`` iterations: each iteration one whole training case (chosen
   from ``(seed, iteration)``), its image average-pooled by the network's ``scale``, loss
   cross-entropy + soft Dice against the liver region (liver and tumour classes) pooled the
   same way (a low-resolution voxel is liver when at least half of it is); Adam, lr 1e-3.
2. :func:`case_boxes`: the trained network predicts the liver box of every case (training
   and validation; :func:`~liverctl.models.hdenseunet_cascade.liver_box`, margin included).
   The label is never read for the box: the fine stages see what they will see at predict
   time. A case where the coarse network finds no liver keeps its whole volume.
3. :class:`RoiData`: the training data seen through those boxes: every case is cropped to
   its box (patches, foreground sampling and validation all work on the crops), so the 2D
   and 3D stages train inside the coarse ROI (validation Dice is then the Dice inside it).

The coarse network's weights go into ``last.pt`` (a resumed run does not retrain it) and,
with the fine network, into the exported ``hdenseunet_cascade`` model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from liverctl.models.hdenseunet_cascade import DEFAULT_MARGIN, CoarseLiverNet, liver_box
from liverctl.progress import ProgressCallback
from liverctl.training.common import seed_int
from liverctl.training.config import TrainConfig
from liverctl.training.data import TrainingData, _CaseInfo, _foreground

__all__ = ["RoiData", "case_boxes", "coarse_stage", "train_coarse"]

Box = tuple[slice, slice, slice]
_COARSE_STREAM = 7  # the seed stream of the coarse stage (apart from the fine stages')


def _region(data: TrainingData, d: int, label: np.ndarray) -> np.ndarray:
    return np.isin(data.luts[d][np.asarray(label)], data.liver_channels)


def train_coarse(
    data: TrainingData,
    config: TrainConfig,
    device: torch.device,
    kwargs: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> CoarseLiverNet:
    """Train the coarse liver-ROI network for ``config.coarse_iterations`` iterations (module docs)."""
    torch.manual_seed(seed_int(config.seed, _COARSE_STREAM))
    net = CoarseLiverNet(**dict(kwargs or {})).to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    cases = [(d, info.name) for d, infos in enumerate(data.info) for info in infos]
    n = int(config.coarse_iterations)
    for i in range(n):
        rng = np.random.default_rng([config.seed, _COARSE_STREAM, i])
        d, name = cases[int(rng.integers(0, len(cases)))]
        image, label = data.load_arrays(d, name)
        x = torch.from_numpy(np.asarray(image, np.float32))[None, None].to(device)
        y = torch.from_numpy(_region(data, d, label).astype(np.float32))[None, None].to(device)
        target = (F.avg_pool3d(net.pad(y, 0.0), net.scale) >= 0.5).long()[:, 0]
        logits = net.low_res(x)
        prob = torch.softmax(logits, 1)[:, 1]
        fg = (target == 1).float()
        dice = (2 * (prob * fg).sum() + 1) / (prob.sum() + fg.sum() + 1)
        loss = F.cross_entropy(logits, target) + (1 - dice)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress("coarse network", i + 1, n)
    return net.eval()


def case_boxes(
    net: Any, data: TrainingData, device: torch.device, margin: tuple[int, int, int] = DEFAULT_MARGIN
) -> dict[tuple[int, str], Box]:
    """The coarse network's liver box of every training and validation case (``None``-free:
    cases without a predicted liver are left out, and keep their whole volume)."""
    boxes: dict[tuple[int, str], Box] = {}
    names = [(d, info.name) for d, infos in enumerate(data.info) for info in infos]
    names += [(d, n) for split in (data.val, data.select) for d, cases in enumerate(split) for n in cases]
    was_training = net.training
    net.eval()
    try:
        for d, name in names:
            if data.is_bad(d, name):
                continue
            image, _ = data.load_arrays(d, name)
            x = torch.from_numpy(np.asarray(image, np.float32))[None, None].to(device)
            with torch.no_grad():
                mask = net.low_res(x).argmax(1)[0].cpu().numpy() == 1
            box = liver_box(mask, net.scale, image.shape, margin)
            if box is not None:
                boxes[(d, name)] = box
    finally:
        net.train(was_training)
    return boxes


class RoiData:
    """:class:`~liverctl.training.data.TrainingData` with every case cropped to its coarse box
    (``boxes``; cases without one stay whole); everything else is the wrapped data's."""

    def __init__(self, data: TrainingData, boxes: Mapping[tuple[int, str], Box]) -> None:
        self._data = data
        self.boxes = dict(boxes)
        self.info = [
            [
                _CaseInfo(d, info.name, self._foreground(d, info.name)) if (d, info.name) in self.boxes else info
                for info in infos
            ]
            for d, infos in enumerate(data.info)
        ]

    def _foreground(self, d: int, name: str) -> np.ndarray:
        _, label = self.load_arrays(d, name)
        return _foreground(label, self._data.luts[d])

    def load_arrays(self, d: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        image, label = self._data.load_arrays(d, name)
        box = self.boxes.get((d, name))
        return (image, label) if box is None else (image[box], label[box])

    @property
    def sizes(self) -> list[int]:
        return [len(i) for i in self.info]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._data, name)


def coarse_stage(
    data: TrainingData,
    config: TrainConfig,
    device: torch.device,
    state: dict[str, Any] | None,
    progress: ProgressCallback | None = None,
) -> tuple[CoarseLiverNet, RoiData]:
    """The coarse network (trained, or loaded from a resumed run's ``state["coarse"]``) and the
    data cropped to its boxes."""
    if state is not None and state.get("coarse") is not None:
        net = CoarseLiverNet().to(device)
        net.load_state_dict(state["coarse"])
        net.eval()
    else:
        net = train_coarse(data, config, device, progress=progress)
    return net, RoiData(data, case_boxes(net, data, device))
