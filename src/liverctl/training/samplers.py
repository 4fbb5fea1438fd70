"""Which cases make up each training batch when several datasets are trained at once.

The three hybrid-training samplers of He et al. 2021, per iteration:

- :class:`DOS` (dataset-order sampling): the whole batch from one dataset; datasets
  follow a fixed round-robin order ``0, 1, ..., D-1, 0, 1, ...`` by iteration number.
- :class:`RSD` (random sample's dataset): pick one training case uniformly from the
  pool of all training cases; the whole batch is drawn from that case's dataset.
- :class:`RS` (random sampling): every batch element drawn uniformly from the pool,
  so a batch may mix datasets.

Within the chosen dataset, cases are drawn uniformly with replacement. A sampler is a
pure function of ``(iteration, rng)``: the caller passes a generator seeded from
``(seed, rank, iteration)``, so the data order needs no saved state, is the same after a
resume, and differs between DDP ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from liverctl.errors import ConfigError

__all__ = ["DOS", "RS", "RSD", "BatchPlan", "Sampler", "make_sampler"]


@dataclass(frozen=True)
class BatchPlan:
    """The cases of one batch: ``items`` are ``(dataset_index, case_index)`` pairs;
    ``dataset_index`` is the single dataset of the batch, or ``None`` if it mixes datasets."""

    dataset_index: int | None
    items: tuple[tuple[int, int], ...]


class Sampler:
    """Base class. ``sizes[d]`` is the number of training cases of dataset ``d``."""

    name = "base"
    single_dataset_batches = True

    def __init__(self, sizes: Sequence[int], batch_size: int) -> None:
        self.sizes = [int(s) for s in sizes]
        if not self.sizes or any(s < 1 for s in self.sizes):
            raise ConfigError(f"every dataset needs at least one training case (got {self.sizes})")
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1 (got {batch_size})")
        self.batch_size = int(batch_size)

    def _from_dataset(self, d: int, rng: np.random.Generator) -> BatchPlan:
        cases = rng.integers(0, self.sizes[d], size=self.batch_size)
        return BatchPlan(d, tuple((d, int(c)) for c in cases))

    def __call__(self, iteration: int, rng: np.random.Generator) -> BatchPlan:
        raise NotImplementedError


class DOS(Sampler):
    """Dataset-order sampling: dataset ``iteration % D``, round robin."""

    name = "dos"

    def __call__(self, iteration: int, rng: np.random.Generator) -> BatchPlan:
        return self._from_dataset(iteration % len(self.sizes), rng)


class RSD(Sampler):
    """Random sample's dataset: a uniformly drawn case picks the dataset of the batch, so
    datasets are chosen in proportion to their number of training cases."""

    name = "rsd"

    def __call__(self, iteration: int, rng: np.random.Generator) -> BatchPlan:
        pick = int(rng.integers(0, sum(self.sizes)))
        d = int(np.searchsorted(np.cumsum(self.sizes), pick, side="right"))
        return self._from_dataset(d, rng)


class RS(Sampler):
    """Random sampling: each batch element drawn uniformly from the pool of all cases."""

    name = "rs"
    single_dataset_batches = False

    def __call__(self, iteration: int, rng: np.random.Generator) -> BatchPlan:
        offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        picks = rng.integers(0, offsets[-1], size=self.batch_size)
        items = []
        for p in picks:
            d = int(np.searchsorted(offsets, p, side="right") - 1)
            items.append((d, int(p - offsets[d])))
        ds = {d for d, _ in items}
        return BatchPlan(ds.pop() if len(ds) == 1 else None, tuple(items))


_SAMPLERS: dict[str, type[Sampler]] = {"dos": DOS, "rsd": RSD, "rs": RS}


def make_sampler(name: str, sizes: Sequence[int], batch_size: int) -> Sampler:
    """Build a sampler by name (``dos``, ``rsd`` or ``rs``)."""
    try:
        cls = _SAMPLERS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(_SAMPLERS)}") from None
    return cls(sizes, batch_size)
