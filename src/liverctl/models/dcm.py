"""Dataset-wise convolution module (DCM) of the cross-dataset U-Net study (``docs/studies/he2021.md``).

A :class:`DatasetWise` module holds one independent copy of a sub-network per training
dataset and routes every sample through the copy of the dataset it came from. In
:class:`~liverctl.models.unet3d.UNet3D` it wraps whole encoder levels ("GELN_DCM").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from liverctl.errors import ConfigError

__all__ = ["DatasetBranch", "DatasetIndex", "DatasetWise", "normalize_dataset_index"]

DatasetIndex = int | torch.Tensor | None


def normalize_dataset_index(dataset_index: DatasetIndex, batch: int, n_datasets: int) -> int | torch.Tensor:
    """Check ``dataset_index`` and return an ``int`` (whole batch) or a (batch,) long tensor.

    ``None`` means dataset 0 and is only allowed for a model with one dataset. A tensor whose
    entries are all equal collapses to an ``int`` (the common case with the DOS/RSD samplers).

    Raises:
        ConfigError: missing index with several datasets, wrong length, or out of range.
    """
    if dataset_index is None:
        if n_datasets > 1:
            raise ConfigError(
                f"this dataset-wise (DCM) model has {n_datasets} branches: choose one with --dataset NAME"
            )
        return 0
    if isinstance(dataset_index, torch.Tensor):
        idx = dataset_index.reshape(-1).long()
        if idx.numel() == 1:
            dataset_index = int(idx.item())
        else:
            if idx.numel() != batch:
                raise ConfigError(f"dataset_index has {idx.numel()} entries for a batch of {batch}")
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= n_datasets:
                raise ConfigError(f"dataset_index values must be in 0..{n_datasets - 1}, got {lo}..{hi}")
            return lo if lo == hi else idx
    index = int(dataset_index)
    if not 0 <= index < n_datasets:
        raise ConfigError(f"dataset_index must be in 0..{n_datasets - 1}, got {index}")
    return index


class DatasetWise(nn.Module):
    """One copy of a sub-network per dataset; each sample goes through its dataset's copy.

    Args:
        factory: builds one fresh copy of the sub-network (called ``n_datasets`` times, so
            the copies are independently initialised and share no parameter).
        n_datasets: number of training datasets.

    The copies live in ``self.branches`` (state-dict keys ``...branches.<d>.<...>``).
    A batch mixing datasets is split, each part runs through its branch (normalisation
    statistics are therefore computed per dataset), and the outputs are put back in the
    original order.
    """

    def __init__(self, factory: Callable[[], nn.Module], n_datasets: int) -> None:
        super().__init__()
        if n_datasets < 1:
            raise ConfigError(f"n_datasets must be >= 1, got {n_datasets}")
        self.n_datasets = n_datasets
        self.branches = nn.ModuleList([factory() for _ in range(n_datasets)])

    def forward(self, x: torch.Tensor, dataset_index: DatasetIndex = None) -> torch.Tensor:
        idx = normalize_dataset_index(dataset_index, x.shape[0], self.n_datasets)
        if isinstance(idx, int):
            return self.branches[idx](x)
        outputs: torch.Tensor | None = None
        for d in torch.unique(idx).tolist():
            sel = (idx == d).nonzero(as_tuple=True)[0].to(x.device)
            y = self.branches[d](x.index_select(0, sel))
            if outputs is None:
                outputs = y.new_zeros((x.shape[0], *y.shape[1:]))
            outputs = outputs.index_copy(0, sel, y)
        assert outputs is not None
        return outputs


class DatasetBranch(nn.Module):
    """A dataset-wise network with one branch chosen: ``DatasetBranch(net, 2)(x)`` is
    ``net(x, dataset_index=2)``. Being a module, it lets the inference engine move and lay
    out the weights of ``net``; it shares them (no copy)."""

    def __init__(self, net: nn.Module, index: int) -> None:
        super().__init__()
        self.net = net
        self.index = int(index)
        self.min_input_multiple = getattr(net, "min_input_multiple", None)
        self.spatial_dims = getattr(net, "spatial_dims", 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, dataset_index=self.index)
