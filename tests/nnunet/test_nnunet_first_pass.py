"""Windows only where the liver can be, for nnU-Net results folders (liverctl.nnunet.first_pass)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nnunet_cases import FOLDER, dice

from liverctl.io import Image
from liverctl.nnunet import NnUNetModel
from liverctl.phantoms import make_phantom

LEVEL_HU = 0.0


class _SoftTissueIsLiver(torch.nn.Module):
    """A fold's network with its liver (and tumour) logits raised where the input is above ``LEVEL_HU`` (after
    nnU-Net's CT normalisation) and lowered below: liver only in the abdomen's soft tissue, none in
    fat, while the probabilities still depend on every window's content (instance norm)."""

    def __init__(self, net: torch.nn.Module, level: float, liver: list[int]) -> None:
        super().__init__()
        self.net, self.level, self.liver = net, level, liver

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x).clone()
        out[:, self.liver] += 200.0 * (x[:, 0] - self.level)
        return out


def _long_scan() -> Image:
    """The phantom abdomen above two copies of its body outline filled with fat (a lower body
    without liver): 120 slices, the abdomen in the last 40."""
    ct, _ = make_phantom(domain="tumour", seed=915, case=0, shape=(40, 48, 38), spacing=(10.0, 8.0, 8.0))
    lower = np.where(ct.array > -500, np.int16(-100), ct.array).astype(ct.array.dtype)
    return Image(np.concatenate([lower, lower, ct.array], axis=0), ct.geometry)


@pytest.fixture
def model() -> NnUNetModel:
    model = NnUNetModel.load(FOLDER, folds=(0,), device="cpu")
    level = (LEVEL_HU - model.plans.intensity["mean"]) / model.plans.intensity["std"]
    model.networks = [_SoftTissueIsLiver(n, level, list(model.plans.liver_labels)).eval() for n in model.networks]
    return model


def test_the_first_pass_skips_windows_and_keeps_the_full_runs_liver(model: NnUNetModel) -> None:
    scan = _long_scan()
    full = model.predict(scan, mirroring=False, first_pass_allowed=False)
    part = model.predict(scan, mirroring=False)
    first = part.stats["first_pass"]
    assert first["box_network_grid"] is not None and first["windows"] >= 1
    assert part.stats["windows"] < full.stats["windows"]  # windows were skipped
    assert "first_pass" not in full.stats
    liver_full = np.isin(full.labels.array, full.stats["liver_labels"])
    liver_part = np.isin(part.labels.array, part.stats["liver_labels"])
    assert liver_full[80:].sum() > 1000 and not liver_full[:70].any()  # the abdomen only
    assert dice(liver_part, liver_full) >= 0.9999
    # wherever either run gives the liver a probability worth the name, the two are the same
    where = (full.liver_probability.array > 0.01) | (part.liver_probability.array > 0.01)
    np.testing.assert_allclose(
        part.liver_probability.array[where], full.liver_probability.array[where], rtol=0, atol=1e-6
    )


def test_no_first_pass_where_no_window_could_be_skipped(model: NnUNetModel) -> None:
    ct, _ = make_phantom(domain="tumour", seed=915, case=0, shape=(20, 20, 20), spacing=(10.0, 8.0, 8.0))
    assert "first_pass" not in model.predict(ct, mirroring=False).stats
