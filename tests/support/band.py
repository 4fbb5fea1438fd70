"""A pointwise stand-in for a liver network, for tests of everything around the network."""

from __future__ import annotations

import torch


class BandNet(torch.nn.Module):
    """Two-class pointwise 'network': liver where the input lies within ``width`` of ``centre``
    (HU for an unnormalised recipe, normalised values otherwise). It counts its forward calls
    (``calls``) and raises ``torch.OutOfMemoryError`` on the calls listed in ``fail_on`` (1-based),
    as a GPU out of memory would."""

    min_input_multiple = 1

    def __init__(self, centre: float, width: float, fail_on: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.centre, self.width = centre, width
        self.calls = 0
        self.fail_on = set(fail_on)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls in self.fail_on:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        liver = 4.0 * (1.0 - ((x - self.centre) / self.width) ** 2)
        return torch.cat([torch.zeros_like(liver), liver], dim=1)
