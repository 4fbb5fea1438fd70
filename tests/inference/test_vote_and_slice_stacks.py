"""Ensembles combined by majority vote (PIPO-FAN's five folds) vs the mean of probabilities, and
2D networks that see neighbouring slices (PIPO-FAN's 3-slice stacks) in the sliding-window engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from liverctl.errors import ConfigError
from liverctl.inference import SlidingWindow, predict_volume


class Constant(torch.nn.Module):
    """A "network" giving the same class logits at every voxel."""

    spatial_dims = 3
    min_input_multiple = 1

    def __init__(self, *logits: float) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, z, y, xx = x.shape
        return self.logits[None, :, None, None, None].expand(b, -1, z, y, xx).clone()


def _run(models, ensemble: str, **kw):
    cfg = SlidingWindow(roi=(4, 4, 4), argmax=True, skip_empty=False, ensemble=ensemble, **kw)
    return predict_volume(np.zeros((4, 4, 4), np.float32), models, cfg, "cpu")


def test_vote_and_mean_differ_on_a_hand_made_three_model_ensemble():
    # one confident "liver" model, two that lean (p = 0.38) towards background
    models = [Constant(0.0, 4.0), Constant(0.0, -0.5), Constant(0.0, -0.5)]
    p = 1 / (1 + np.exp(-np.array([4.0, -0.5, -0.5])))
    mean = _run(models, "mean")
    assert p.mean() > 0.5 and np.all(mean.labels == 1)  # the mean of probabilities says liver
    np.testing.assert_allclose(mean.probabilities[1], p.mean(), rtol=1e-6)
    vote = _run(models, "vote")
    assert np.all(vote.labels == 0)  # one vote of three: background
    np.testing.assert_allclose(vote.probabilities[1], 1 / 3, rtol=1e-6)  # the fraction of votes
    # labels only (no probabilities kept) votes too
    assert np.all(_run(models, "vote", channels=()).labels == 0)
    # a single model: vote and mean agree
    assert np.array_equal(_run(models[:1], "vote").labels, _run(models[:1], "mean").labels)


def test_a_tied_vote_goes_to_the_higher_mean_probability():
    # three models, three different labels; model 1 is by far the most confident
    models = [Constant(2.0, 0.0, 0.0), Constant(0.0, 5.0, 0.0), Constant(0.0, 0.0, 1.0)]
    vote = _run(models, "vote")
    assert np.all(vote.labels == 1)
    np.testing.assert_allclose(vote.probabilities, 1 / 3, rtol=1e-6)
    # sigmoid channels: each channel's fraction of models above 0.5
    sig = _run([Constant(1.0, -1.0), Constant(1.0, 1.0), Constant(-1.0, 1.0)], "vote", activation="sigmoid")
    np.testing.assert_allclose(sig.probabilities[:, 0, 0, 0], [2 / 3, 2 / 3], rtol=1e-6)


def test_vote_needs_probabilities():
    with pytest.raises(ConfigError, match="vote"):
        SlidingWindow(ensemble="vote", output="logits")
    with pytest.raises(ConfigError, match="ensemble"):
        SlidingWindow(ensemble="median")


def test_2d_network_sees_the_true_neighbours_of_every_slice():
    from liverctl.models import build_model

    torch.manual_seed(0)
    net = build_model("pipofan", base_features=4, n_scales=3, out_channels=3).eval()
    vol = torch.randn(1, 7, 16, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = net(vol[None])[0]  # every slice with its neighbours in the whole volume
    # windows of 2 slices: a slice at a window's edge still sees the slice beyond it
    cfg = SlidingWindow(roi=(2, 16, 12), overlap=0.0, mode="constant", output="logits", skip_empty=False)
    res = predict_volume(vol.numpy(), net, cfg, "cpu")
    np.testing.assert_allclose(res.logits, whole.numpy(), atol=1e-5, rtol=0)
    # mirroring along z: the mean of the network on the scan and on the z-mirrored scan
    with torch.no_grad():
        mirrored = net(vol[None].flip(2))[0].flip(1)
    cfg = SlidingWindow(roi=(3, 16, 12), overlap=0.5, mode="constant", output="logits", skip_empty=False, tta=(0,))
    res = predict_volume(vol.numpy(), net, cfg, "cpu")
    np.testing.assert_allclose(res.logits, ((whole + mirrored) / 2).numpy(), atol=1e-5, rtol=0)


def test_a_3d_network_beside_a_2d_one_gets_the_image_channels_only():
    from liverctl.models import build_model

    torch.manual_seed(0)
    net2d = build_model("pipofan", base_features=4, n_scales=3, out_channels=2).eval()
    seen: list[int] = []

    class Probe(Constant):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(int(x.shape[1]))
            return super().forward(x)

    cfg = SlidingWindow(roi=(4, 16, 16), argmax=True, skip_empty=False)
    res = predict_volume(np.zeros((4, 16, 16), np.float32), [net2d, Probe(0.0, 1.0)], cfg, "cpu")
    assert res.labels.shape == (4, 16, 16) and set(seen) == {1}
