"""H-DenseUNet at the paper's sizes: parameter counts against the architecture's formula,
12-slice inputs, and the ImageNet DenseNet-161 encoder initialisation (synthetic weights)."""

from __future__ import annotations

import itertools
import re

import pytest
import torch

from liverctl.errors import ConfigError
from liverctl.models.densenet_init import DENSENET161_FILE, load_densenet161_encoder, map_torchvision_keys
from liverctl.models.denseunet import DenseUNet, densenet_feature_parameters
from liverctl.models.hdenseunet import PAPER_KWARGS, HDenseUNet, parameter_counts


@pytest.fixture(scope="module")
def paper() -> HDenseUNet:
    torch.manual_seed(0)
    return HDenseUNet(**PAPER_KWARGS)


def test_densenet_formula_known_answers() -> None:
    # torchvision: densenet161 has 28,681,000 parameters, its classifier 2208 * 1000 + 1000;
    # densenet121 7,978,856 with a 1024 * 1000 + 1000 classifier
    assert densenet_feature_parameters((6, 12, 36, 24), 48, 96) == 28_681_000 - 2_209_000 == 26_472_000
    assert densenet_feature_parameters((6, 12, 24, 16), 32, 64) == 7_978_856 - 1_025_000


def test_paper_sizes_parameter_counts(paper: HDenseUNet) -> None:
    counts = parameter_counts(paper)
    assert counts["2d_encoder"] == 26_472_000  # DenseNet-161's features
    # decoder by hand: line0 (1x1, 2112 -> 2208, bias), five 3x3 conv + BN levels, the head
    levels = [(2208, 768), (768, 384), (384, 96), (96, 96), (96, 64)]
    decoder = 2112 * 2208 + 2208 + sum(a * b * 9 + 2 * b for a, b in levels) + 64 * 3 + 3
    assert counts["2d"] == 26_472_000 + decoder
    assert 49.4e6 < counts["2d"] < 49.6e6
    # 3D: the DenseUNet-65 encoder by formula (4 input channels: the image and the 2D class
    # probabilities, as the paper), 1x1 skip projections where widths differ, five 3x3x3 conv + BN levels
    enc3d = densenet_feature_parameters((3, 4, 12, 8), 32, 96, in_channels=4, dims=3)
    widths = [504, 504, 224, 192, 96, 64]  # the encoder's output, then the decoder levels
    skips = [496, 224, 192, 96]  # dense blocks 3, 2, 1 and the stem
    proj = sum(s * w + w for s, w in zip(skips, widths[:4], strict=True) if s != w)
    dec3d = sum(a * b * 27 + 2 * b for a, b in itertools.pairwise(widths))
    assert counts["3d"] == enc3d + proj + dec3d == 16_401_936
    assert counts["hff"] == 64 * 64 * 27 + 2 * 64 + 64 * 3 + 3
    assert counts["total"] == counts["2d"] + counts["3d"] + counts["hff"]
    enc3d = paper.net3d.features
    assert enc3d.conv0.weight.shape == (96, 1 + 3, 7, 7, 7)  # image + 2D probabilities (not the 2D features)
    assert [len(getattr(enc3d, f"denseblock{i}")) for i in range(1, 5)] == [3, 4, 12, 8]
    assert [lv[0].out_channels for lv in paper.net3d.decoder] == [504, 224, 192, 96, 64]
    assert paper.input_multiple_zyx == (4, 32, 32)  # 224 x 224 x 12 fits
    # --arch-kwargs '{"preset": "paper"}' builds the same network
    from liverctl.models import build_model

    assert parameter_counts(build_model("hdenseunet", preset="paper", features=4)) == counts
    with pytest.raises(ConfigError, match="preset"):
        build_model("hdenseunet", preset="tiny")
    # the earlier layout, one argument away: the 64 2D feature channels enter the 3D stem too (+2.1 M)
    with torch.device("meta"):
        wide = build_model("hdenseunet", preset="paper", context_features=True)
    assert wide.net3d.features.conv0.weight.shape == (96, 1 + 64 + 3, 7, 7, 7)
    assert parameter_counts(wide)["3d"] - counts["3d"] == 96 * 64 * 7**3 == 2_107_392


def test_3d_network_sees_the_image_and_the_2d_probabilities_only() -> None:
    from liverctl.models import build_model

    torch.manual_seed(0)
    net = build_model("hdenseunet", preset="small").eval()
    assert net.net3d.features.conv0.in_channels == 1 + 3
    seen = {}
    hook = net.net3d.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    x = torch.randn(1, 1, 4, 32, 32)
    with torch.no_grad():
        net(x)
        _, logits2d = net.net2d(net.slice_stacks(x))
    hook.remove()
    assert seen["x"].shape == (1, 4, 4, 32, 32)
    assert torch.equal(seen["x"][:, :1], x)  # the image
    probs = torch.softmax(logits2d, dim=1).reshape(1, 4, 3, 32, 32).permute(0, 2, 1, 3, 4)
    assert torch.allclose(seen["x"][:, 1:], probs, atol=1e-6)  # then the 2D class probabilities


def test_twelve_slices_run_and_z_pooled_as_the_paper() -> None:
    # the paper's topology (4 dense blocks, 7x7 stride-2 stem + max pooling, z pooled twice)
    # at reduced widths: a 12-slice stack goes 12 -> 6 -> 3 and stays at 3 slices
    torch.manual_seed(0)
    net = HDenseUNet(
        features=8, blocks_2d=(1, 1, 1, 1), growth_2d=4, blocks_3d=(1, 1, 1, 1), growth_3d=4, out_channels=3
    ).eval()
    x = torch.randn(1, 1, 12, 32, 32)
    sizes = []
    hook = net.net3d.features.norm5.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[2:])))
    with torch.no_grad():
        out = net(x)
    hook.remove()
    assert out.shape == (1, 3, 12, 32, 32)
    assert sizes == [(3, 1, 1)]
    with pytest.raises(ConfigError, match="multiples of"):
        net(torch.randn(1, 1, 10, 32, 32))


def _torchvision_style(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict laid out as torchvision's old densenet161 file: ``features.`` prefix,
    ``norm.1``-style dense-layer names, no ``num_batches_tracked``, a classifier."""
    sd = {}
    for k, v in encoder.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        k = re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k)
        sd["features." + k] = torch.randn_like(v.float()) if v.is_floating_point() else v
    sd["classifier.weight"] = torch.randn(1000, encoder.norm5.num_features)
    sd["classifier.bias"] = torch.zeros(1000)
    return sd


def test_key_map_renames_old_names() -> None:
    mapped = map_torchvision_keys(
        {"features.denseblock1.denselayer3.norm.1.weight": 1, "features.norm5.bias": 2, "classifier.weight": 3}
    )
    assert mapped == {"denseblock1.denselayer3.norm1.weight": 1, "norm5.bias": 2}


def test_encoder_init_loads_densenet161_weights(paper: HDenseUNet, tmp_path, monkeypatch) -> None:
    sd = _torchvision_style(paper.net2d.features)
    path = tmp_path / DENSENET161_FILE
    torch.save(sd, path)
    decoder_before = paper.net2d.decoder[0][0].weight.clone()
    assert load_densenet161_encoder(paper, str(path)) == path
    enc = paper.net2d.features
    assert torch.equal(enc.denseblock3.denselayer36.conv2.weight, sd["features.denseblock3.denselayer36.conv.2.weight"])
    assert torch.equal(enc.norm0.running_var, sd["features.norm0.running_var"])
    assert torch.equal(enc.conv0.weight, sd["features.conv0.weight"])
    assert torch.equal(paper.net2d.decoder[0][0].weight, decoder_before)  # the decoder keeps its init
    # 'imagenet' = the torch hub cache: refused with the file to place, then found there
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(ConfigError, match=re.escape(DENSENET161_FILE)) as err:
        load_densenet161_encoder(paper, "imagenet")
    assert "\n" not in str(err.value) and str(tmp_path / "hub" / "hub" / "checkpoints") in str(err.value)
    (tmp_path / "hub" / "hub" / "checkpoints").mkdir(parents=True)
    path.rename(tmp_path / "hub" / "hub" / "checkpoints" / DENSENET161_FILE)
    assert load_densenet161_encoder(paper, "imagenet").name == DENSENET161_FILE


def test_encoder_init_refuses_what_does_not_fit(tmp_path) -> None:
    small = HDenseUNet(features=4, blocks_2d=(1, 2), growth_2d=4, blocks_3d=(1, 1), growth_3d=2)
    other = DenseUNet(2, 3, 3, (1, 3), 4, 8, 4).features  # another DenseNet: one layer more
    torch.save(_torchvision_style(other), tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="does not fit the 2D encoder"):
        load_densenet161_encoder(small, str(tmp_path / "other.pth"))
    with pytest.raises(ConfigError, match="no such file"):
        load_densenet161_encoder(small, str(tmp_path / "absent.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="unreadable"):
        load_densenet161_encoder(small, str(tmp_path / "junk.pth"))
