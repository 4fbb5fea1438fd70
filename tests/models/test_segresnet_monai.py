"""liverctl's SegResNet against MONAI's: identical state-dict keys/shapes and identical outputs."""

from __future__ import annotations

import pytest
import torch

from liverctl.models import build_model, load_state_dict_checked
from liverctl.models.segresnet import SegResNet

monai_nets = pytest.importorskip("monai.networks.nets")


# (MONAI SegResNet kwargs, input shape)
CONFIGS = [
    pytest.param({}, (2, 1, 16, 16, 16), id="defaults"),
    pytest.param(
        # MONAI/wholeBody_ct_segmentation configs/inference.json network_def
        {
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 105,
            "init_filters": 32,
            "blocks_down": [1, 2, 2, 4],
            "blocks_up": [1, 1, 1],
            "dropout_prob": 0.2,
        },
        (1, 1, 32, 32, 32),
        id="wholebody-ct-105",
    ),
    pytest.param({"upsample_mode": "deconv"}, (1, 1, 16, 16, 16), id="deconv"),
    pytest.param({"upsample_mode": "pixelshuffle", "init_filters": 8}, (1, 1, 16, 16, 16), id="pixelshuffle"),
    pytest.param(
        {"spatial_dims": 2, "in_channels": 3, "out_channels": 4, "norm": "batch", "act": ("prelu", {})},
        (2, 3, 32, 32),
        id="2d-batch-prelu",
    ),
    pytest.param(
        {
            "norm": ("instance", {"affine": True}),
            "act": ("leakyrelu", {"negative_slope": 0.1, "inplace": True}),
            "blocks_down": (1, 1, 1),
            "blocks_up": (1, 1),
            "use_conv_final": False,
        },
        (1, 1, 8, 8, 8),
        id="instance-leaky-noconvfinal",
    ),
    pytest.param(
        {"norm_name": "group", "num_groups": 4, "init_filters": 8}, (1, 1, 8, 8, 8), id="deprecated-norm-name"
    ),
]


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Random weights *and* running statistics / affine norm parameters (not the init values)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            noise = torch.randn(t.shape, generator=gen) * 0.2
            if name.endswith("running_var"):
                t.copy_(1.0 + noise.abs())
            elif t.ndim == 1 and name.endswith("weight"):
                t.copy_(1.0 + noise)
            else:
                t.copy_(noise)


@pytest.mark.parametrize(("cfg", "shape"), CONFIGS)
def test_monai_state_dict_loads_strictly_and_outputs_match(cfg: dict, shape: tuple) -> None:
    torch.manual_seed(0)
    theirs = monai_nets.SegResNet(**cfg).eval()
    _randomize(theirs, seed=1)
    ours = build_model("segresnet", **cfg).eval()
    ref_sd = theirs.state_dict()
    assert list(ours.state_dict()) == list(ref_sd)  # same keys in the same order
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in ref_sd.items()}
    ours.load_state_dict(ref_sd, strict=True)

    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = theirs(x)
        got = ours(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6, rtol=0), (got - expected).abs().max()


def test_bundle_checkpoint_layout_loads_through_checked_loader() -> None:
    """A MONAI bundle saves {"model": state_dict} (CheckpointSaver) - possibly from DDP."""
    theirs = monai_nets.SegResNet(init_filters=8, out_channels=3).eval()
    _randomize(theirs, seed=3)
    wrapped = {"model": {f"module.{k}": v for k, v in theirs.state_dict().items()}, "epoch": 7}
    ours = load_state_dict_checked(SegResNet(init_filters=8, out_channels=3).eval(), wrapped)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-6, rtol=0)


def test_training_mode_matches_monai_with_same_seed() -> None:
    """Group norm + dropout in train mode: same RNG stream, same outputs."""
    cfg = {"init_filters": 8, "dropout_prob": 0.5}
    theirs = monai_nets.SegResNet(**cfg).train()
    ours = SegResNet(**cfg).train()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 1, 8, 8, 8)
    torch.manual_seed(5)
    a = theirs(x)
    torch.manual_seed(5)
    b = ours(x)
    assert torch.allclose(a, b, atol=1e-6, rtol=0)


def test_min_input_multiple_and_spatial_dims() -> None:
    net = SegResNet(init_filters=8, blocks_down=(1, 1, 1, 1, 1), blocks_up=(1, 1, 1, 1))
    assert net.min_input_multiple == 16
    assert net.spatial_dims == 3
    assert SegResNet(spatial_dims=2, init_filters=8).spatial_dims == 2
