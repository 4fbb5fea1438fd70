"""Model registry, checked weight loading, UNet3D (+ DCM) and the other architectures."""

from __future__ import annotations

import pytest
import torch

from liverctl.errors import ConfigError, WeightsError
from liverctl.models import available_models, build_model, load_state_dict_checked, model_info
from liverctl.models.unet3d import UNet3D

# ---------------------------------------------------------------- registry


def test_registry_lists_every_architecture() -> None:
    names = available_models()
    assert names == sorted(names)
    assert names == [
        "di2in",
        "di2in_discriminator",
        "hdenseunet",
        "hdenseunet_cascade",
        "pipofan",
        "resvnet",
        "segresnet",
        "unet3d",
        "vnet",
    ]


def test_unknown_name_is_a_one_line_config_error_listing_names() -> None:
    with pytest.raises(ConfigError) as exc:
        build_model("unet9d")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "unet9d" in msg
    for name in available_models():
        assert name in msg


def test_unaccepted_kwarg_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"does not accept bogus, colour") as exc:
        build_model("unet3d", bogus=1, colour="red")
    assert "\n" not in str(exc.value)
    assert "base_features" in str(exc.value)  # lists what is accepted


@pytest.mark.parametrize(
    "kwargs",
    [{"norm": "group"}, {"n_levels": 1}, {"dropout": 1.5}, {"dcm_from_level": 6}, {"n_datasets": 3}],
)
def test_bad_unet3d_values_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        build_model("unet3d", base_features=4, **kwargs)


def test_model_info_without_building() -> None:
    info = model_info("unet3d")
    assert info.cls is UNet3D
    assert info.spatial_dims == 3
    assert info.defaults["base_features"] == 32
    assert info.defaults["max_features"] == 320
    assert info.defaults["n_levels"] == 6
    assert info.summary
    with pytest.raises(ConfigError):
        model_info("nope")


# ---------------------------------------------------------------- UNet3D


@pytest.mark.parametrize(
    ("n_levels", "shape"),
    [(2, (1, 1, 4, 6, 8)), (3, (2, 1, 8, 12, 4)), (4, (1, 2, 16, 8, 24)), (6, (1, 1, 32, 32, 32))],
)
def test_unet3d_output_shape(n_levels: int, shape: tuple) -> None:
    net = UNet3D(in_channels=shape[1], out_channels=3, base_features=4, max_features=16, n_levels=n_levels).eval()
    assert net.min_input_multiple == 2 ** (n_levels - 1)
    with torch.no_grad():
        out = net(torch.randn(shape))
    assert out.shape == (shape[0], 3, *shape[2:])


def test_unet3d_rejects_sizes_that_are_not_a_multiple() -> None:
    net = UNet3D(base_features=4, n_levels=3)
    with pytest.raises(ConfigError, match="multiple of 4"):
        net(torch.randn(1, 1, 8, 8, 6))


def test_unet3d_level_numbering_features_and_sizes() -> None:
    """Level k has been downsampled k times and has min(base * 2**k, max) features."""
    net = UNet3D(base_features=4, max_features=20, n_levels=5).eval()
    assert net.features == [4, 8, 16, 20, 20]
    seen: dict[int, tuple] = {}
    for k, stage in enumerate(net.encoder):
        stage.register_forward_hook(lambda _m, _i, out, k=k: seen.__setitem__(k, tuple(out.shape)))
    with torch.no_grad():
        net(torch.randn(1, 1, 32, 16, 48))
    for k in range(5):
        s = 2**k
        assert seen[k] == (1, net.features[k], 32 // s, 16 // s, 48 // s)


def test_unet3d_deep_supervision_shapes() -> None:
    net = UNet3D(out_channels=2, base_features=4, n_levels=4, deep_supervision=True).train()
    outs = net(torch.randn(2, 1, 16, 16, 8))
    assert isinstance(outs, list)
    assert [tuple(o.shape) for o in outs] == [(2, 2, 16, 16, 8), (2, 2, 8, 8, 4), (2, 2, 4, 4, 2)]
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 16, 16, 8))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 2, 16, 16, 8)


def _conv3(cin: int, cout: int) -> int:
    return 27 * cin * cout + cout


def _convt2(cin: int, cout: int) -> int:
    return 8 * cin * cout + cout


def test_unet3d_parameter_count_by_hand() -> None:
    # in 1, out 2, features [2, 3, 3]; batch norm: 2 parameters per channel
    enc = [
        _conv3(1, 2) + 4 + _conv3(2, 2) + 4,  # level 0: 56+4+110+4 = 174
        _conv3(2, 3) + 6 + _conv3(3, 3) + 6,  # level 1: 165+6+246+6 = 423
        _conv3(3, 3) + 6 + _conv3(3, 3) + 6,  # level 2: 504
    ]
    up = [_convt2(3, 2), _convt2(3, 3)]  # 50, 75
    dec = [_conv3(4, 2) + 4 + _conv3(2, 2) + 4, _conv3(6, 3) + 6 + _conv3(3, 3) + 6]  # 336, 747
    head = 2 * 2 + 2
    expected = sum(enc) + sum(up) + sum(dec) + head
    assert expected == 2315
    net = UNet3D(in_channels=1, out_channels=2, base_features=2, max_features=3, n_levels=3)
    assert sum(p.numel() for p in net.parameters()) == expected
    # DCM from level 1 with 2 datasets duplicates levels 1 and 2 only
    dcm = UNet3D(
        in_channels=1, out_channels=2, base_features=2, max_features=3, n_levels=3, dcm_from_level=1, n_datasets=2
    )
    assert sum(p.numel() for p in dcm.parameters()) == expected + enc[1] + enc[2]
    # instance norm (affine) has the same parameter count, but no running statistics
    inst = UNet3D(in_channels=1, out_channels=2, base_features=2, max_features=3, n_levels=3, norm="instance")
    assert sum(p.numel() for p in inst.parameters()) == expected
    assert not any("running_mean" in k for k in inst.state_dict())


def test_unet3d_nnunet_default_size() -> None:
    """He et al. 2021's network: 6 levels, 32..320 features, about 31 M parameters."""
    net = UNet3D()
    assert net.features == [32, 64, 128, 256, 320, 320]
    assert net.min_input_multiple == 32
    assert 30_000_000 < sum(p.numel() for p in net.parameters()) < 32_000_000


def _tiny_dcm(**kw) -> UNet3D:
    torch.manual_seed(0)
    return UNet3D(base_features=4, max_features=8, n_levels=3, dcm_from_level=1, n_datasets=2, **kw)


def test_dcm_levels_and_parameter_sharing() -> None:
    net = _tiny_dcm()
    assert net.dataset_wise_levels() == [1, 2]
    assert UNet3D(base_features=4, n_levels=6, dcm_from_level=5, n_datasets=3).dataset_wise_levels() == [5]
    assert UNet3D(base_features=4, n_levels=3).dataset_wise_levels() == []
    # the two copies of a DCM level are distinct tensors with distinct values
    b0, b1 = net.encoder[1].branches
    for p0, p1 in zip(b0.parameters(), b1.parameters(), strict=True):
        assert p0 is not p1
    assert not torch.equal(b0[0][0].weight, b1[0][0].weight)

    # one backward pass through dataset 0: its branch, the shared encoder level 0 and the whole decoder get
    # gradients, dataset 1's branches get none
    net.train()
    net(torch.randn(2, 1, 8, 8, 8), dataset_index=0).sum().backward()
    for name, p in net.named_parameters():
        if ".branches.1." in name:
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dcm_datasets_give_different_outputs_and_mixed_batches_route_per_sample() -> None:
    net = _tiny_dcm().eval()
    x = torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():
        y0 = net(x, 0)
        y1 = net(x, torch.tensor([1, 1]))
        mixed = net(x, torch.tensor([1, 0]))
    assert not torch.allclose(y0, y1)
    assert torch.allclose(mixed[0], y1[0], atol=1e-6)
    assert torch.allclose(mixed[1], y0[1], atol=1e-6)


@pytest.mark.parametrize("bad", [None, 2, -1, torch.tensor([0, 1, 0])])
def test_dcm_bad_dataset_index(bad) -> None:
    net = _tiny_dcm().eval()
    with pytest.raises(ConfigError):
        net(torch.randn(2, 1, 8, 8, 8), bad)


def test_dataset_index_is_ignored_without_dcm() -> None:
    net = UNet3D(base_features=4, n_levels=2).eval()
    x = torch.randn(1, 1, 4, 4, 4)
    with torch.no_grad():
        assert torch.equal(net(x), net(x, 5))


# ---------------------------------------------------------------- checked weight loading


def test_load_state_dict_checked_unwraps_and_strips_ddp_prefix() -> None:
    torch.manual_seed(1)
    src = UNet3D(base_features=4, n_levels=3).eval()
    dst = UNet3D(base_features=4, n_levels=3).eval()
    x = torch.randn(1, 1, 8, 8, 8)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}
    assert load_state_dict_checked(dst, wrapped) is dst
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_load_state_dict_checked_wrong_architecture_is_one_line() -> None:
    net = UNet3D(base_features=4, n_levels=3)
    deeper = UNet3D(base_features=4, n_levels=4).state_dict()
    with pytest.raises(WeightsError) as exc:
        load_state_dict_checked(net, deeper)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("weights do not fit architecture unet3d:")
    assert "30 unexpected keys (e.g. encoder.3." in msg  # encoder.3 (14) + upsample.2 (2) + decoder.2 (14)

    wider = UNet3D(base_features=8, n_levels=3).state_dict()
    with pytest.raises(WeightsError, match=r"\d+ shape mismatches \(e\.g\. encoder\.0\.0\.0\.weight"):
        load_state_dict_checked(net, wider)

    segresnet = build_model("segresnet", init_filters=8)
    with pytest.raises(WeightsError, match=r"architecture segresnet: \d+ missing keys \(e\.g\. "):
        load_state_dict_checked(segresnet, net.state_dict())


@pytest.mark.parametrize("bad", [{"epoch": 3}, {"model": {"a": 1}}, [1, 2]])
def test_load_state_dict_checked_rejects_non_state_dicts(bad) -> None:
    with pytest.raises(WeightsError):
        load_state_dict_checked(UNet3D(base_features=4, n_levels=2), bad)


# ---------------------------------------------------------------- every architecture: contract, shapes, one step

# name -> (tiny kwargs, input shape)
TINY: dict[str, tuple[dict, tuple]] = {
    "unet3d": ({"base_features": 4, "n_levels": 3, "deep_supervision": True}, (2, 1, 8, 8, 4)),
    "segresnet": ({"init_filters": 8, "blocks_down": (1, 1, 1), "blocks_up": (1, 1)}, (1, 1, 8, 8, 4)),
    "vnet": ({"base_features": 2}, (2, 1, 16, 16, 16)),
    "resvnet": ({"base_features": 2}, (2, 1, 16, 16, 16)),
    "di2in": ({"base_features": 4, "n_levels": 3}, (2, 1, 8, 4, 8)),
    "di2in_discriminator": ({"in_channels": 2, "base_features": 4, "n_layers": 3}, (3, 2, 9, 13, 7)),
    "pipofan": ({"base_features": 4, "n_scales": 3, "out_channels": 3}, (2, 3, 16, 12)),  # 3 slices as channels
    "hdenseunet": (
        {"features": 4, "blocks_2d": (1, 2), "growth_2d": 4, "blocks_3d": (1, 1), "growth_3d": 2},
        (1, 1, 8, 8, 8),
    ),
    "hdenseunet_cascade": (
        {
            "fine": {"features": 4, "blocks_2d": (1, 2), "growth_2d": 4, "blocks_3d": (1, 1), "growth_3d": 2},
            "coarse": {"base_features": 2, "n_levels": 2},
        },
        (1, 1, 8, 8, 8),
    ),
}


def test_every_registered_model_has_a_tiny_test_config() -> None:
    assert set(TINY) == set(available_models())


def _outputs(out) -> list[torch.Tensor]:
    return out if isinstance(out, list) else [out]


@pytest.mark.parametrize("name", sorted(TINY))
def test_model_contract_shapes_and_one_training_step(name: str) -> None:
    kwargs, shape = TINY[name]
    torch.manual_seed(0)
    net = build_model(name, **kwargs)
    info = model_info(name)
    assert net.spatial_dims == info.spatial_dims
    assert net.spatial_dims == len(shape) - 2 or name.startswith("hdenseunet")
    assert isinstance(net.min_input_multiple, int) and net.min_input_multiple >= 1
    assert all(s % net.min_input_multiple == 0 for s in shape[2:]) or name == "di2in_discriminator"
    x = torch.randn(shape)

    net.eval()
    with torch.no_grad():
        y = net(x)
    assert isinstance(y, torch.Tensor)
    if name == "di2in_discriminator":
        assert y.shape == (shape[0], 1)
    else:
        assert y.shape[0] == shape[0] and y.shape[2:] == shape[2:]

    # one SGD step on a fixed batch: every parameter gets a finite gradient and the loss goes down
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)

    def loss_fn() -> torch.Tensor:
        outputs = _outputs(net(x))
        if name == "hdenseunet_cascade":  # the coarse stage runs apart from forward (inference.roi)
            outputs.append(net.coarse(x))
        return sum(((o - 0.5) ** 2).mean() for o in outputs)

    before = loss_fn()
    weights = getattr(net, "loss_weights", None)
    if weights is not None:  # one weight per training-mode output
        assert len(weights) == len(_outputs(net(x)))
    opt.zero_grad()
    before.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{name}: {pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), pname
    opt.step()
    with torch.no_grad():
        after = loss_fn()
    assert after < before


@pytest.mark.parametrize("name", ["vnet", "resvnet"])
def test_vnet_shapes(name: str) -> None:
    net = build_model(name, base_features=2, out_channels=3).eval()
    assert net.min_input_multiple == 16
    with torch.no_grad():
        assert net(torch.randn(1, 1, 16, 32, 48)).shape == (1, 3, 16, 32, 48)
    with pytest.raises(ConfigError, match="multiple of 16"):
        net(torch.randn(1, 1, 16, 16, 8))


def test_vnet_and_resvnet_are_different_networks() -> None:
    v, r = build_model("vnet", base_features=2), build_model("resvnet", base_features=2)
    v_keys, r_keys = set(v.state_dict()), set(r.state_dict())
    assert v_keys != r_keys
    assert any(".skip." in k for k in r_keys) and not any(".skip." in k for k in v_keys)
    assert isinstance(v.up[0][0], torch.nn.ConvTranspose3d)
    assert isinstance(r.up[0][0], torch.nn.Upsample)


def test_di2in_final_output_is_a_conv_over_the_full_size_side_outputs() -> None:
    torch.manual_seed(0)
    net = build_model("di2in", base_features=4, n_levels=4, out_channels=1).train()
    x = torch.randn(2, 1, 8, 16, 8)
    final, *sides = net(x)
    assert len(sides) == 3
    assert all(s.shape == (2, 1, 8, 16, 8) for s in sides)
    assert torch.allclose(final, net.fuse(torch.cat(sides, dim=1)), atol=1e-6)


def test_pipofan_pyramid_outputs_and_adaptive_fusion() -> None:
    torch.manual_seed(0)
    net = build_model("pipofan", base_features=4, n_scales=4, out_channels=2).train()
    # equal convolutional depth: scale s's own path is the shared stem + s - 1 residual blocks
    assert [len(p) for p in net.side_paths] == [0, 1, 2]
    x = torch.randn(2, 3, 32, 16)
    fused, *outs = net(x)
    assert [tuple(o.shape) for o in outs] == [(2, 2, 32, 16), (2, 2, 16, 8), (2, 2, 8, 4), (2, 2, 4, 2)]
    w = net.last_fusion_weights
    assert w.shape == (2, 4)
    assert torch.allclose(w.sum(dim=1), torch.ones(2), atol=1e-6)
    ups = [torch.nn.functional.interpolate(o, size=(32, 16), mode="bilinear", align_corners=True) for o in outs]
    expected = sum(w[:, s, None, None, None] * ups[s] for s in range(4))
    assert torch.allclose(fused, expected, atol=1e-5)
    assert model_info("pipofan").spatial_dims == 2


def test_pipofan_on_volumes_runs_slice_wise_with_neighbours() -> None:
    torch.manual_seed(0)
    net = build_model("pipofan", base_features=4, n_scales=3, out_channels=2).eval()
    assert net.slice_context == 1
    vol = torch.randn(2, 1, 5, 8, 12)
    with torch.no_grad():
        out = net(vol)
        assert out.shape == (2, 2, 5, 8, 12)
        # slice 3 of volume 1 = the 2D network on slices 2, 3, 4 of that volume
        ref = net(vol[1:2, 0, 2:5])
        assert torch.allclose(out[1:2, :, 3], ref, atol=1e-5)
        # first slice: slice 0 repeated below
        ref0 = net(vol[0:1, 0, [0, 0, 1]])
        assert torch.allclose(out[0:1, :, 0], ref0, atol=1e-5)
    net.train()
    fused, *outs = net(vol)
    assert fused.shape == (2, 2, 5, 8, 12)
    assert [tuple(o.shape) for o in outs] == [(2, 2, 5, 8, 12), (2, 2, 5, 4, 6), (2, 2, 5, 2, 3)]
    with pytest.raises(ConfigError, match="slice stacks"):
        net(torch.randn(1, 2, 8, 8))


def test_slice_stacks_multichannel_order_and_round_trip() -> None:
    from liverctl.models.slices import slice_stacks, unstack_slices

    x = torch.randn(2, 2, 3, 4, 5)
    st = slice_stacks(x, context=1)
    assert st.shape == (6, 6, 4, 5)
    # sample b*Z + z, channel offset*C + c
    assert torch.equal(st[1 * 3 + 1, 0 * 2 + 1], x[1, 1, 0])
    assert torch.equal(st[1 * 3 + 1, 2 * 2 + 0], x[1, 0, 2])
    assert torch.equal(st[0 * 3 + 2, 2 * 2 + 1], x[0, 1, 2])  # beyond the last slice: repeated
    centre = st[:, 2:4]  # offset 0
    assert torch.equal(unstack_slices(centre, 2), x)
    assert torch.equal(unstack_slices(slice_stacks(x, context=0), 2), x)


def test_hdenseunet_slice_stacks_known_answer() -> None:
    from liverctl.models.hdenseunet import HDenseUNet

    z = torch.arange(4.0).view(1, 1, 4, 1, 1).expand(2, 1, 4, 3, 2)  # voxel value = slice index
    stacks = HDenseUNet.slice_stacks(z)
    assert stacks.shape == (8, 3, 3, 2)
    expected = torch.tensor([[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]], dtype=torch.float32)
    assert torch.equal(stacks[:4, :, 0, 0], expected)  # batch item 0, edges repeated
    assert torch.equal(stacks[4:, :, 1, 1], expected)  # batch item 1


def test_hdenseunet_2d_branch_and_freezing() -> None:
    from liverctl.models.hdenseunet import HDenseUNet

    kwargs, shape = TINY["hdenseunet"]
    torch.manual_seed(0)
    net = build_model("hdenseunet", **kwargs).train()
    x = torch.randn(shape)
    hybrid, logits2d = net(x)
    assert hybrid.shape == logits2d.shape == (1, 3, *shape[2:])
    default = build_model("hdenseunet")
    assert default.input_multiple_zyx == (4, 32, 32)  # z pooled by the stem and its max pooling only
    assert default.min_input_multiple == 32
    with pytest.raises(ConfigError, match="multiples of"):
        net(torch.randn(1, 1, 3, 8, 6))
    # training-mode outputs but batch norm on running statistics, so slices do not interact:
    # the 2D logits of slice 2 are the 2D DenseUNet run on slices (1, 2, 3) as channels
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    with torch.no_grad():
        _, logits2d = net(x)
        _, ref = net.net2d(x[:, :, 1:4].reshape(1, 3, *shape[3:]))
    assert torch.allclose(logits2d[:, :, 2], ref, atol=1e-5)
    assert torch.equal(HDenseUNet.slice_stacks(x)[2], x[0, :, 1:4].reshape(3, *shape[3:]))

    net.train()
    net.freeze_2d()
    hybrid, _ = net(x)
    hybrid.sum().backward()
    assert all(p.grad is None for p in net.net2d.parameters())
    assert all(p.grad is not None for p in net.hff.parameters())
    assert all(p.grad is not None for p in net.net3d.parameters())


def test_segresnet_split_head_composes_to_forward() -> None:
    torch.manual_seed(0)
    net = build_model("segresnet", init_filters=8, out_channels=5).eval()
    features, head = net.split_head()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(head(features(x)), net(x), atol=1e-6)
    assert isinstance(head, torch.nn.Conv3d) and head.kernel_size == (1, 1, 1)
    assert build_model("segresnet", init_filters=8, use_conv_final=False).split_head() is None
