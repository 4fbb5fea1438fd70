"""Accumulation: weighted window logits summed in z-slabs, each slab finished (averaged,
activated, reduced to the requested outputs) as soon as no window left touches it."""

from __future__ import annotations

import time

import numpy as np
import torch

from liverctl.device import synchronize
from liverctl.errors import ConfigError
from liverctl.inference.config import OUTSIDE_LOGIT, Box, InferenceResult, InferenceStats, SlidingWindow
from liverctl.inference.windows import Placement

__all__: list[str] = []

_FINISH_SLICES = 8
"""Slices of a finished slab turned into outputs at a time."""


class _SlabAccumulator:
    """Weighted logit sums in z-slabs of the cropped volume; finished slabs become outputs.

    Only the real (unpadded) part of each window is accumulated. The sums keep the memory
    layout of the network's output: channel-first, or channels-last (voxel-major, as oneDNN's
    bfloat16 convolutions produce it), so that adding a window never transposes it.
    """

    def __init__(
        self,
        *,
        n_models: int,
        z_cuts: list[int],
        crop_shape: tuple[int, ...],
        box: Box | None,
        full_shape: tuple[int, int, int],
        config: SlidingWindow,
        acc_device: torch.device,
        holes: bool,
        heads: list[tuple[torch.Tensor, torch.Tensor | None] | None],
    ) -> None:
        self.heads = heads  # per model: the pointwise head applied after blending, or None
        self.cuts = z_cuts
        self.crop_shape = crop_shape
        self.box = box
        self.full_shape = full_shape
        self.config = config
        self.device = acc_device
        self.holes = holes  # windows were skipped: some voxels may be covered by none
        self.head_seconds = 0.0  # time in the pointwise heads (part of the network's time)
        self.sums: list[dict[int, torch.Tensor]] = [{} for _ in range(n_models)]
        self.wsum: dict[int, torch.Tensor] = {}
        self.done = 0  # slabs [0, done) are finished
        self.num_classes: int | None = None
        self.layout = torch.contiguous_format
        self.channels: tuple[int, ...] = ()
        self.fill: torch.Tensor | None = None
        self.values: np.ndarray | None = None
        self.labels: np.ndarray | None = None

    def _slab_range(self, z0: int, z1: int) -> range:
        return range(self.cuts.index(z0), self.cuts.index(z1))

    def _slab(self, store: dict[int, torch.Tensor], i: int, channels: int | None) -> torch.Tensor:
        t = store.get(i)
        if t is None:
            dz = self.cuts[i + 1] - self.cuts[i]
            if channels is None:  # the weight sums
                t = torch.zeros((dz, *self.crop_shape[1:]), dtype=torch.float32, device=self.device)
            else:
                t = torch.empty(
                    (1, channels, dz, *self.crop_shape[1:]),
                    dtype=torch.float32,
                    device=self.device,
                    memory_format=self.layout,
                ).zero_()
            store[i] = t
        return t

    def add(self, m: int, logits: torch.Tensor, where: list[Placement], weights: torch.Tensor) -> None:
        """Blend the network outputs of one batch of windows (logits, or the features that
        model ``m``'s pointwise head turns into logits)."""
        width = int(logits.shape[1])
        head = self.heads[m]
        if head is not None and head[0].shape[1] != width:
            raise ConfigError(f"the model's features have {width} channels, its head takes {head[0].shape[1]}")
        k = width if head is None else int(head[0].shape[0])
        if self.num_classes is None:
            if width > 1 and not logits.is_contiguous() and logits.is_contiguous(memory_format=torch.channels_last_3d):
                self.layout = torch.channels_last_3d
            self._allocate(k)
        elif k != self.num_classes:
            raise ConfigError(f"ensemble models disagree on the number of channels: {self.num_classes} vs {k}")
        logits = logits.to(self.device).contiguous(memory_format=self.layout)
        for k, (real, local) in enumerate(where):
            for i in self._slab_range(real[0].start, real[0].stop):
                z0, z1 = self.cuts[i], self.cuts[i + 1]
                lz = slice(local[0].start + z0 - real[0].start, local[0].start + z1 - real[0].start)
                slab = self._slab(self.sums[m], i, width)
                part = logits[k : k + 1, :, lz, local[1], local[2]].float()
                slab[:, :, :, real[1], real[2]].addcmul_(part, weights[lz, local[1], local[2]])

    def add_weights(self, where: list[Placement], weights: torch.Tensor) -> None:
        for real, local in where:
            for i in self._slab_range(real[0].start, real[0].stop):
                z0, z1 = self.cuts[i], self.cuts[i + 1]
                lz = slice(local[0].start + z0 - real[0].start, local[0].start + z1 - real[0].start)
                self._slab(self.wsum, i, None)[:, real[1], real[2]] += weights[lz, local[1], local[2]]

    def _allocate(self, k: int) -> None:
        cfg = self.config
        self.num_classes = k
        if cfg.activation == "softmax" and cfg.output == "probabilities" and k < 2:
            raise ConfigError("softmax needs a model with at least 2 output channels; use activation='sigmoid'")
        channels = cfg.channels if cfg.channels is not None else tuple(range(k))
        if any(c >= k for c in channels):
            raise ConfigError(f"channels {list(channels)} out of range for a model with {k} output channels")
        self.channels = channels
        background = cfg.activation == "softmax"
        if cfg.output == "probabilities":
            fill = [1.0 if (c == 0 and background) else 0.0 for c in range(k)]
        else:
            fill = [0.0 if (c == 0 and background) else OUTSIDE_LOGIT for c in range(k)]
        self.fill = torch.tensor(fill, dtype=torch.float32, device=self.device)
        self.values = np.empty((len(channels), *self.full_shape), dtype=np.float32)
        for j, c in enumerate(channels):
            self.values[j] = fill[c]
        if cfg.argmax:
            self.labels = np.zeros(self.full_shape, dtype=np.uint8 if k <= 256 else np.int16)

    def finish_before(self, z: int) -> None:
        """Finish every slab that ends at or before z index ``z`` of the cropped volume."""
        while self.done < len(self.cuts) - 1 and self.cuts[self.done + 1] <= z:
            self._finish(self.done)
            self.done += 1

    def _finish(self, i: int) -> None:
        if i not in self.wsum:
            return
        wsum = self.wsum.pop(i)
        sums = [store.pop(i) for store in self.sums]
        # finish in thin sub-slabs so that softmax temporaries stay small
        for a in range(0, self.cuts[i + 1] - self.cuts[i], _FINISH_SLICES):
            b = min(a + _FINISH_SLICES, self.cuts[i + 1] - self.cuts[i])
            self._emit(wsum[a:b], [s[0, :, a:b] for s in sums], self.cuts[i] + a)

    def _emit(self, w: torch.Tensor, sums: list[torch.Tensor], z: int) -> None:
        """Turn the sums of cropped slices ``z, z + len(w)`` into outputs."""
        last = self.layout == torch.channels_last_3d  # channel axis last in memory: compute there
        cdim = -1 if last else 0
        hole = (w == 0) if self.holes else None
        if hole is not None:
            w = w.masked_fill(hole, 1.0)
        wb = w[..., None] if last else w[None]
        means = []
        for m, s in enumerate(sums):
            mean = (s.permute(1, 2, 3, 0) if last else s).div_(wb)
            head = self.heads[m]
            if head is not None:  # blended features -> logits, once per voxel (network time)
                t0 = time.perf_counter()
                weight, bias = head
                if last:  # (z, y, x, C) @ (C, K)
                    mean = mean @ weight.T
                    if bias is not None:
                        mean += bias
                else:  # (K, C) . (C, z, y, x)
                    mean = torch.tensordot(weight, mean, dims=([1], [0]))
                    if bias is not None:
                        mean += bias[:, None, None, None]
                synchronize(mean.device)
                self.head_seconds += time.perf_counter() - t0
            means.append(mean)
        index = torch.tensor(self.channels, device=means[0].device, dtype=torch.long)
        labels, kept = self._decide(means, cdim, index)
        if hole is not None and bool(hole.any()):
            assert self.fill is not None
            fill = self.fill.index_select(0, index)
            labels[hole] = 0
            if last:
                kept[hole] = fill
            else:
                kept[:, hole] = fill[:, None]
        # where this part lands in the full grid
        oz = (self.box[0].start if self.box is not None else 0) + z
        oy = self.box[1].start if self.box is not None else 0
        ox = self.box[2].start if self.box is not None else 0
        dest = (slice(oz, oz + w.shape[0]), slice(oy, oy + w.shape[1]), slice(ox, ox + w.shape[2]))
        assert self.values is not None
        if self.labels is not None:
            self.labels[dest] = labels.cpu().numpy().astype(self.labels.dtype)
        self.values[(slice(None), *dest)] = (kept.permute(3, 0, 1, 2) if last else kept).cpu().numpy()

    def _decide(self, means: list[torch.Tensor], cdim: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The label map and the kept channels (``index``) of the per-model mean logits."""
        cfg = self.config
        if cfg.ensemble == "vote" and len(means) > 1:
            return _vote(means, cdim, cfg.activation, index)
        if not self.channels and cfg.output == "probabilities" and (cfg.activation == "softmax" or len(means) == 1):
            # labels only: argmax of the (mean) logits needs no probabilities
            combined = means[0] if len(means) == 1 else None
            if combined is None:  # an ensemble averages probabilities
                combined = torch.stack([torch.softmax(mean, dim=cdim) for mean in means]).mean(0)
            return combined.argmax(dim=cdim), combined.index_select(cdim, index)
        if cfg.output == "logits":
            combined = means[0] if len(means) == 1 else torch.stack(means).mean(0)
            return combined.argmax(dim=cdim), combined.index_select(cdim, index)
        if cfg.activation == "softmax" and len(means) == 1:
            # one model: argmax of the logits, and only the kept probabilities exp(l - logsumexp)
            logits = means[0]
            kept = (logits.index_select(cdim, index) - torch.logsumexp(logits, dim=cdim, keepdim=True)).exp_()
            return logits.argmax(dim=cdim), kept
        combined = None
        for mean in means:
            p = torch.softmax(mean, dim=cdim) if cfg.activation == "softmax" else torch.sigmoid_(mean)
            combined = p if combined is None else combined.add_(p)
        assert combined is not None
        if len(means) > 1:
            combined /= len(means)
        return combined.argmax(dim=cdim), combined.index_select(cdim, index)

    def result(self, stats: InferenceStats) -> InferenceResult:
        assert self.values is not None and self.num_classes is not None
        probs = self.values if self.config.output == "probabilities" else None
        logits = self.values if self.config.output == "logits" else None
        return InferenceResult(probs, logits, self.labels, self.channels, self.num_classes, stats)


def _vote(
    means: list[torch.Tensor], cdim: int, activation: str, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Majority vote of an ensemble's decisions (``SlidingWindow.ensemble == "vote"``): the label
    map and the kept channels' vote fractions. Softmax: each model votes for its argmax label;
    the label with most votes wins, ties go to the higher mean probability (it adds less than
    one vote). Sigmoid: each channel's fraction of models with probability > 0.5."""
    n = len(means)
    if activation == "softmax":
        k = means[0].shape[cdim]
        counts = torch.zeros_like(means[0])
        mean_p = torch.zeros_like(means[0])
        for mean in means:
            p = torch.softmax(mean, dim=cdim)
            mean_p += p
            counts += torch.nn.functional.one_hot(p.argmax(dim=cdim), k).movedim(-1, cdim).to(counts.dtype)
        labels = (counts + 0.5 * mean_p / n).argmax(dim=cdim)
    else:
        counts = torch.stack([(torch.sigmoid(mean) > 0.5).to(means[0].dtype) for mean in means]).sum(0)
        labels = counts.argmax(dim=cdim)
    return labels, (counts / n).index_select(cdim, index)
