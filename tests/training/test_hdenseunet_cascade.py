"""H-DenseUNet's cascade: the fine stages train inside the coarse network's predicted liver box
(not the label's), the coarse net is trained first and exported with the fine one, and
``predict`` crops to the coarse box and pastes the result back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tomllib
import torch
from torch import nn

from liverctl.errors import ConfigError
from liverctl.io import Geometry, Image
from liverctl.models.hdenseunet_cascade import CoarseLiverNet, HDenseUNetCascade, liver_box
from liverctl.training import ArrayDataset, TrainConfig, train_hdenseunet
from liverctl.training.common import make_batch_fn
from liverctl.training.data import TrainingData
from liverctl.training.recipes.cascade import RoiData, case_boxes

SPACING = (2.0, 2.0, 3.0)
HD_KW = {"features": 8, "blocks_2d": [1, 1, 1], "growth_2d": 4, "blocks_3d": [1, 1], "growth_3d": 4}


def phantoms(n: int = 2, shape=(8, 32, 32), tumour: bool = True) -> ArrayDataset:
    """Bright ellipsoid livers (1) with a tumour core (2), normalised intensities."""
    rng = np.random.default_rng(0)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    images, labels = {}, {}
    for i in range(n):
        c = np.array(shape) / 2 + rng.uniform(-1, 1, 3)
        d = np.sqrt(((zz - c[0]) * 1.5) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
        lab = (d < 7).astype(np.uint8)
        if tumour:
            lab[d < 3] = 2
        img = 1.5 * (lab > 0) + 1.0 * (lab == 2) + rng.normal(0, 0.3, shape)
        images[f"c{i}"], labels[f"c{i}"] = (
            Image(img.astype(np.float32), Geometry(SPACING)),
            Image(lab, Geometry(SPACING)),
        )
    names = {"background": 0, "liver": 1, "tumour": 2} if tumour else {"background": 0, "liver": 1}
    plan = {"labels": names, "target_spacing": list(SPACING), "window": [-200.0, 250.0], "mean": 50.0, "std": 50.0}
    return ArrayDataset(images, labels, plan)


class _Bright(nn.Module):
    """A stand-in U-Net: 'liver' wherever the (pooled) image is above 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5], 1)


def test_liver_box_known_answer() -> None:
    mask = np.zeros((4, 8, 8), bool)
    mask[1:3, 2:4, 5:7] = True
    mask[0, 0, 0] = True  # a smaller second component: ignored
    assert liver_box(mask, (2, 4, 4), (8, 32, 30), (1, 2, 3)) == (slice(1, 7), slice(6, 18), slice(17, 30))
    assert liver_box(np.zeros((2, 2, 2), bool), (1, 1, 1), (2, 2, 2), (0, 0, 0)) is None
    # low-resolution voxels beyond the volume (the coarse net's padding) are not liver
    padded = np.zeros((4, 4, 4), bool)
    padded[3, 3, 3] = True
    assert liver_box(padded, (2, 2, 2), (5, 5, 5), (0, 0, 0)) is None


def test_training_box_is_the_coarse_nets_prediction_not_the_label() -> None:
    # the image is bright in one corner, the label's liver lies in the opposite one
    img = np.zeros((8, 32, 32), np.float32)
    img[0:4, 0:8, 0:8] = 2.0
    lab = np.zeros((8, 32, 32), np.uint8)
    lab[4:8, 20:30, 20:30] = 1
    ds = ArrayDataset({"a": Image(img, Geometry(SPACING))}, {"a": Image(lab, Geometry(SPACING))})
    data = TrainingData([ds])
    net = CoarseLiverNet(scale=(2, 4, 4))
    net.unet = _Bright()
    boxes = case_boxes(net, data, torch.device("cpu"), margin=(0, 2, 2))
    assert boxes == {(0, "a"): (slice(0, 4), slice(0, 10), slice(0, 10))}  # the bright corner + margin
    roi = RoiData(data, boxes)
    image, label = roi.load_arrays(0, "a")
    assert image.shape == (4, 10, 10) and not label.any()  # the label's liver is outside the coarse box
    assert len(roi.info[0][0].foreground) == 0 and len(data.info[0][0].foreground) == 400
    cfg = TrainConfig(method="hdenseunet", patch_size=(4, 16, 16), batch_size=2, augment=False)
    x, y, _ = make_batch_fn(roi, cfg)(0)
    assert x.shape == (2, 1, 4, 16, 16) and int(y.sum()) == 0
    assert set(np.unique(x.numpy()).tolist()) <= {0.0, 2.0} and float(x.max()) == 2.0


def test_cascade_trains_coarse_first_exports_both_and_predicts_in_the_roi(tmp_path) -> None:
    from liverctl.predict import LiverModel

    data = phantoms(3)
    cfg = TrainConfig(
        method="hdenseunet",
        arch_kwargs=dict(HD_KW),
        patch_size=(8, 32, 32),
        iterations_per_epoch=1,
        epochs=3,
        stage_iterations=(1, 1),
        coarse_iterations=3,
        folds=3,
        val_every=1,
        device="cpu",
        seed=1,
    )
    result = train_hdenseunet([data], tmp_path / "run", cfg)
    assert result.val_dice is not None and 0.0 <= result.val_dice <= 1.0  # monitored inside the coarse box
    entry = tomllib.loads(result.toml_path.read_text())["models"]["run"]
    assert entry["architecture"] == "hdenseunet_cascade" and entry["kwargs"]["fine"]["blocks_2d"] == [1, 1, 1]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert 0 < saved["parameter_counts"]["coarse"] < 400_000
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert state["coarse"] is not None
    # predict end to end (the cascade, the label map, the report and summary.csv)
    from liverctl.io import read_label, write_image
    from liverctl.predict import PredictOptions, predict

    zz, yy, xx = np.meshgrid(np.arange(8), np.arange(32), np.arange(32), indexing="ij")
    hu = np.where((zz - 4) ** 2 * 2 + (yy - 16) ** 2 + (xx - 16) ** 2 < 49, 60, -100).astype(np.int16)
    hu[:, :, :2] = -1000
    for name in ("s1", "s2"):
        write_image(Image(hu, Geometry(SPACING)), tmp_path / "scans" / f"{name}.nii.gz")
    done = predict(
        tmp_path / "scans", tmp_path / "pred", weights=result.model_path, options=PredictOptions(device="cpu")
    )
    assert all(c.ok for c in done.cases), [c.error for c in done.cases]
    labels = read_label(tmp_path / "pred" / "s1.nii.gz").array
    assert labels.shape == hu.shape and set(np.unique(labels).tolist()) <= {0, 1, 2}
    header = (tmp_path / "pred" / "summary.csv").read_text().splitlines()[0].split(",")
    assert "tumour_volume_ml" in header and "tumour_burden" in header
    assert "tumour_volume_ml" in done.cases[0].report

    model = LiverModel.load(weights=result.model_path, device="cpu")
    net = model.networks[0]
    assert isinstance(net, HDenseUNetCascade)
    exported = net.coarse.state_dict()
    assert exported.keys() == state["coarse"].keys() and all(
        torch.equal(exported[k], state["coarse"][k]) for k in exported
    )

    # predict: the fine network runs on the coarse box only, background outside it
    net.coarse.unet = _Bright()
    calls = []
    hook = net.fine.register_forward_pre_hook(lambda m, a: calls.append(tuple(a[0].shape[2:])))
    box = (slice(2, 6), slice(20, 36), slice(24, 40))
    vol = np.full((8, 64, 64), -1.0, np.float32)
    vol[box] = 1.0  # what the stand-in coarse net calls liver
    res = model.infer(vol, Image(np.zeros(vol.shape, np.int16), Geometry(SPACING)), _options(), None)
    hook.remove()
    roi = ((0, 8), (12, 44), (16, 48))  # the box + the (2, 8, 8) margin, clipped
    assert tuple(res.stats.body_box) == roi
    assert tuple((s.start, s.stop) for s in net.roi(torch.from_numpy(vol)[None, None])) == roi
    assert calls and all(c[1] <= 32 and c[2] <= 32 for c in calls)  # windows inside the 32 x 32 box
    outside = np.ones(vol.shape, bool)
    outside[tuple(slice(*r) for r in roi)] = False
    assert res.labels.shape == vol.shape and not res.labels[outside].any()


def test_resumed_run_loads_the_coarse_net_instead_of_training_it() -> None:
    from liverctl.training.recipes.cascade import coarse_stage

    data = TrainingData([phantoms(1)])
    cfg = TrainConfig(method="hdenseunet", coarse_iterations=50, seed=3)
    torch.manual_seed(5)
    saved = CoarseLiverNet().state_dict()
    net, roi = coarse_stage(data, cfg, torch.device("cpu"), {"coarse": saved})
    assert all(torch.equal(v, saved[k]) for k, v in net.state_dict().items())  # loaded, not retrained
    assert isinstance(roi, RoiData) and not net.training


def _options():
    from liverctl.predict.options import PredictOptions

    return PredictOptions(device="cpu")


def test_cascade_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="H-DenseUNet's"):
        TrainConfig(method="he2021", coarse_iterations=2)
    with pytest.raises(ConfigError, match="coarse-iterations must be"):
        TrainConfig(method="hdenseunet", coarse_iterations=-1)
    with pytest.raises(ConfigError, match="margin"):
        HDenseUNetCascade(margin=(1, 2))


def test_cli_encoder_init_refused_before_any_work(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from liverctl.cli import app

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setenv("LIVERCTL_NO_PROGRESS", "1")
    args = ["train", str(tmp_path / "absent"), "-o", str(tmp_path / "run"), "--method", "hdenseunet"]
    result = CliRunner().invoke(app, [*args, "--encoder-init", "imagenet"])
    assert result.exit_code != 0
    assert "densenet161-8d451a50.pth" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
