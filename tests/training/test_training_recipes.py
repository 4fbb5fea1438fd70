"""The training recipes of SD-Net, DI2IN-AN and H-DenseUNet on tiny hand-made volumes: SD-Net (pseudo-label
direction, sharpening, lr steps, exact resume), DI2IN-AN (each step changes only its own
network, export as a sigmoid model) and H-DenseUNet (stage 2 leaves the 2D part
bit-identical, stage 3 trains it again), each exported model segmenting a scan."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tomllib
import torch

from liverctl.errors import ConfigError
from liverctl.io import Geometry, Image
from liverctl.training import ArrayDataset, TrainConfig, train, train_di2in_an, train_hdenseunet, train_sdnet
from liverctl.training.recipes.di2in_an import (
    AdversarialSteps,
    discriminator_loss,
    generator_adversarial_loss,
    segmentation_bce,
)
from liverctl.training.recipes.hdenseunet import poly_lr, stage_lengths, stage_of
from liverctl.training.recipes.sdnet import labelled_split, sdnet_losses, sdnet_lr

SPACING = (2.0, 2.0, 3.0)  # x, y, z


def make_dataset(n: int = 4, shape=(16, 32, 32), tumour: bool = False, seed: int = 0, name: str = "toy"):
    """Ellipsoidal "livers" (label 1, optionally a tumour core, label 2) brighter than a noisy
    background, already normalised (mean 0, std 1 in the plan)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    images, labels = {}, {}
    for i in range(n):
        c = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
        r = rng.uniform(5, 7)
        d = np.sqrt(((zz - c[0]) * 1.5) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
        lab = (d < r).astype(np.uint8)
        if tumour:
            lab[d < r / 2.5] = 2
        img = 1.5 * (lab > 0) + 1.0 * (lab == 2) + rng.normal(0, 0.3, shape)
        g = Geometry(SPACING)
        images[f"c{i}"] = Image(img.astype(np.float32), g)
        labels[f"c{i}"] = Image(lab, g)
    names = {"background": 0, "liver": 1, "tumour": 2} if tumour else {"background": 0, "liver": 1}
    plan = {"labels": names, "target_spacing": list(SPACING), "window": [-200.0, 250.0], "mean": 50.0, "std": 50.0}
    return ArrayDataset(images, labels, plan, name=name)


def ct_scan(shape=(16, 32, 32)) -> Image:
    """A CT-like scan in HU: a 60 HU ellipsoid in -100 HU fat, air outside a body disc."""
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    body = (yy - shape[1] / 2) ** 2 + (xx - shape[2] / 2) ** 2 < (shape[1] / 2 - 1) ** 2
    organ = ((zz - shape[0] / 2) * 1.5) ** 2 + (yy - shape[1] / 2) ** 2 + (xx - shape[2] / 2) ** 2 < 36
    hu = np.where(body, -100.0, -1000.0) + np.where(organ, 160.0, 0.0)
    return Image(hu.astype(np.int16), Geometry(SPACING))


def _state(path, key="model"):
    return torch.load(path, map_location="cpu", weights_only=True)[key]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _segments(model_path) -> np.ndarray:
    from liverctl.predict import LiverModel

    model = LiverModel.load(weights=model_path, device="cpu")
    scan = ct_scan()
    seg = model.segment(scan)
    assert seg.mask.array.shape == scan.array.shape
    tumour = model.tumour_channel is not None  # liver + tumour models write label maps (liver 1, tumour 2)
    assert set(np.unique(seg.mask.array).tolist()) <= ({0, 1, 2} if tumour else {0, 1})
    assert tumour == ("tumour_burden" in seg.report)
    return seg.mask.array


# ---------------------------------------------------------------------------- SD-Net


def test_sdnet_pseudo_labels_come_from_the_network_with_lower_dice_loss():
    torch.manual_seed(0)
    y = torch.zeros(1, 2, 4, 4, dtype=torch.long)
    y[0, :, 1:3, 1:3] = 1
    good = torch.stack([torch.zeros(2, 4, 4), torch.where(y[0] == 1, 6.0, -6.0)])[None]  # (1, 2, z, y, x)
    bad = torch.zeros(1, 2, 2, 4, 4)
    unl_a, unl_b = torch.randn(1, 2, 2, 4, 4), torch.randn(1, 2, 2, 4, 4)
    for a_is_good in (True, False):
        la = torch.cat([good if a_is_good else bad, unl_a]).requires_grad_(True)
        lb = torch.cat([bad if a_is_good else good, unl_b]).requires_grad_(True)
        out = sdnet_losses(la, lb, y, n_labelled=1, temperature=0.1)
        assert int(out["teacher"]) == (0 if a_is_good else 1)
        assert (float(out["dice_a"]) < float(out["dice_b"])) == a_is_good
        # known answer: MSE of the student's foreground probability to the teacher's sharpened one
        teacher, student = (unl_a, unl_b) if a_is_good else (unl_b, unl_a)
        p = 1 - teacher.softmax(1)[:, 0].double()
        sharp = p**10 / (p**10 + (1 - p) ** 10)
        expected = ((1 - student.softmax(1)[:, 0].double() - sharp) ** 2).mean()
        assert float(out["unsupervised_mse"].detach()) == pytest.approx(float(expected), rel=1e-5)
        # the gradient of the unsupervised term reaches only the student, on the unlabelled half
        ga, gb = torch.autograd.grad(out["unsupervised_mse"], [la, lb], allow_unused=True)
        g_teacher, g_student = (ga, gb) if a_is_good else (gb, ga)
        assert g_teacher is None  # the teacher's probabilities are detached
        assert torch.count_nonzero(g_student[1:]) > 0 and torch.count_nonzero(g_student[:1]) == 0


def test_sdnet_disagreement_term_counts_only_disagreeing_voxels():
    y = torch.tensor([[[[0, 1]]]])  # (1, 1, 1, 2)
    la = torch.tensor([[[[[2.0, 1.0]]], [[[0.0, 0.0]]]]])  # (1, 2, 1, 1, 2): background, background
    lb = torch.tensor([[[[[2.0, 0.0]]], [[[0.0, 3.0]]]]])  # background, liver
    out = sdnet_losses(la, lb, y, n_labelled=1)
    fa, fb = 1 - la.softmax(1)[0, 0, 0, 0, 1], 1 - lb.softmax(1)[0, 0, 0, 0, 1]  # only voxel 1 disagrees
    assert float(out["disagreement_mse"]) == pytest.approx(float((fa - 1) ** 2 + (fb - 1) ** 2), rel=1e-6)


def test_sdnet_lr_steps_and_labelled_split():
    assert [sdnet_lr(0.01, g) for g in (0, 199, 200, 399, 400)] == pytest.approx([0.01, 0.01, 1e-3, 1e-3, 1e-4])
    names = [f"case{i:02d}" for i in range(10)]
    lab, unl = labelled_split(names, 0.2, seed=3)
    assert len(lab) == 2 and len(unl) == 8 and sorted(lab + unl) == names
    assert labelled_split(list(reversed(names)), 0.2, seed=3) == (lab, unl)
    with pytest.raises(ConfigError, match="no unlabelled"):
        labelled_split(names[:2], 0.8, seed=0)


def sdnet_config(**kw) -> TrainConfig:
    base = dict(
        method="sdnet",
        arch_kwargs={"base_features": 4},
        patch_size=(16, 32, 32),
        epochs=2,
        iterations_per_epoch=2,
        val_every=0,
        device="cpu",
        seed=5,
        select_on="iteration:3",  # SD-Net exports an iteration's model (the paper's 1000; 3 of these 4)
    )
    base.update(kw)
    return TrainConfig(**base)


def test_sdnet_end_to_end_resume_is_exact_and_export_segments(tmp_path):
    data, unl = make_dataset(2), [make_dataset(2, seed=9, name="unl")]
    full = train([data], tmp_path / "full", sdnet_config(), unlabelled=unl)  # through train()'s dispatch
    assert full.iterations == 4 and len(full.train_losses) == 2
    header = (tmp_path / "full" / "train_log.csv").read_text().splitlines()[0].split(",")
    assert {"supervised", "disagreement_mse", "unsupervised_mse", "teacher_b"} <= set(header)
    saved = json.loads((tmp_path / "full" / "config.json").read_text())
    assert saved["config"]["architecture"] == "vnet" and len(saved["labelled_cases"][0]) == 2
    assert saved["unlabelled_cases"] == [["c0", "c1"]]

    class Stop(Exception):
        pass

    def stop_in_epoch_two(desc, done, total):
        if desc == "training" and done == 3:
            raise Stop

    with pytest.raises(Stop):
        train_sdnet([data], tmp_path / "resumed", sdnet_config(), unlabelled=unl, progress=stop_in_epoch_two)
    assert _state(tmp_path / "resumed" / "last.pt", "global_iteration") == 2
    resumed = train_sdnet([data], tmp_path / "resumed", TrainConfig(device="cpu"), unlabelled=unl, resume=True)
    assert resumed.iterations == 4
    for key in ("model", "model_b"):  # both networks bit-identical to the uninterrupted run
        assert _same(_state(tmp_path / "full" / "last.pt", key), _state(tmp_path / "resumed" / "last.pt", key))
    from safetensors.torch import load_file

    exported = [load_file(str(tmp_path / run / "model.safetensors")) for run in ("full", "resumed")]
    assert _same(*exported)
    # the export is network A after iteration 3 (selected.pt), not the final weights
    selected = _state(tmp_path / "full" / "selected.pt", "model")
    assert _same(exported[0], selected)
    assert not _same(exported[0], _state(tmp_path / "full" / "last.pt", "model"))
    saved = json.loads((tmp_path / "full" / "config.json").read_text())
    assert saved["model_selection"] == "iteration:3" and full.selected_epoch == 2

    entry = tomllib.loads(full.toml_path.read_text())["models"]["full"]
    assert entry["architecture"] == "vnet" and entry["decision"] == "argmax" and entry["liver_channel"] == 1
    assert "SD-Net" in entry["citation"]
    _segments(full.model_path)


def test_sdnet_unlabelled_datasets_and_an_inner_split_pick_the_exported_network(tmp_path):
    labelled, unlabelled = make_dataset(4, seed=1), make_dataset(2, seed=2, name="extra")
    result = train_sdnet(
        [labelled],
        tmp_path / "run",
        sdnet_config(epochs=1, folds=2, val_every=1, select_on="inner:0.5"),
        unlabelled=[unlabelled],
    )
    best = torch.load(tmp_path / "run" / "selected.pt", map_location="cpu", weights_only=True)
    dices = best["select_dice"]
    assert best["network"] == (1 if dices[1] > dices[0] else 0)
    assert result.selection_dice == pytest.approx(max(dices)) and result.val_dice is not None
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert len(saved["model_selection"]) == 1 and not set(saved["model_selection"]) & set(saved["held_out"])
    entry = tomllib.loads(result.toml_path.read_text())["models"]["run"]
    assert entry["architecture"] == ("resvnet" if best["network"] == 1 else "vnet")


# ---------------------------------------------------------------------------- DI2IN-AN


def test_adversarial_loss_known_answers():
    zeros = [torch.zeros(2, 1, 2, 2, 2)] * 3
    target = torch.ones(2, 2, 2, 2)
    assert float(segmentation_bce(zeros, target)) == pytest.approx(3 * math.log(2), rel=1e-6)
    assert float(segmentation_bce(zeros, target, [1.0, 0.5, 0.0])) == pytest.approx(1.5 * math.log(2), rel=1e-6)
    assert float(discriminator_loss(torch.zeros(3, 1), torch.zeros(3, 1))) == pytest.approx(math.log(2))
    assert float(discriminator_loss(torch.full((3, 1), 20.0), torch.full((3, 1), -20.0))) < 1e-8
    assert float(generator_adversarial_loss(torch.zeros(2, 1))) == pytest.approx(math.log(2))  # -log D, D = 1/2
    assert float(generator_adversarial_loss(torch.tensor([[math.log(3)]]))) == pytest.approx(-math.log(0.75))


def _steps(adv_weight: float = 0.01, with_image: bool = False) -> AdversarialSteps:
    from liverctl.models import build_model

    torch.manual_seed(0)
    gen = build_model("di2in", base_features=4, n_levels=2)
    disc = build_model("di2in_discriminator", in_channels=2 if with_image else 1, base_features=4, n_layers=2)
    data = make_dataset(2, shape=(8, 16, 16))
    x = torch.stack([torch.from_numpy(data.images[n].array) for n in ("c0", "c1")])[:, None]
    y = torch.stack([torch.from_numpy(data.labels[n].array.astype(np.int64)) for n in ("c0", "c1")])

    def batch(index):
        return x, y, torch.zeros(2, dtype=torch.long)

    cfg = TrainConfig(method="di2in-an", adv_weight=adv_weight, disc_with_image=with_image, seed=0)
    return AdversarialSteps(
        gen,
        disc,
        torch.optim.Adam(gen.parameters(), lr=1e-3),
        torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999)),
        cfg,
        torch.device("cpu"),
        "fp32",
        batch,
        batch,
        [1],
    )


def _copy(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("with_image", [False, True])
def test_discriminator_steps_change_only_d_and_generator_steps_only_g(with_image):
    steps = _steps(with_image=with_image)
    g0, d0 = _copy(steps.gen), _copy(steps.disc)
    steps.discriminator_step(0)
    assert _same(_copy(steps.gen), g0)  # parameters and batch-norm statistics
    d1 = _copy(steps.disc)
    assert any(not torch.equal(d0[k], d1[k]) for k in d0 if "weight" in k)
    steps.generator_step(0, adversarial=True)
    assert _same(_copy(steps.disc), d1)
    g2 = _copy(steps.gen)
    assert any(not torch.equal(g0[k], g2[k]) for k in g0 if "weight" in k)


def test_adversarial_term_reaches_the_generator():
    params = {}
    for name, weight, adversarial in (("plain", 0.0, True), ("off", 5.0, False), ("strong", 5.0, True)):
        steps = _steps(adv_weight=weight)
        steps.discriminator_step(0)
        steps.generator_step(0, adversarial=adversarial)
        params[name] = _copy(steps.gen)
    assert _same(params["plain"], params["off"])  # lambda 0 == no adversarial term
    assert not _same(params["plain"], params["strong"])


def test_di2in_an_end_to_end_exports_a_sigmoid_generator(tmp_path):
    cfg = TrainConfig(
        method="di2in-an",
        arch_kwargs={"base_features": 4, "n_levels": 3},
        disc_kwargs={"base_features": 4, "n_layers": 2},
        patch_size=(16, 32, 32),
        epochs=1,
        iterations_per_epoch=3,
        pretrain_iterations=1,
        d_steps=2,
        d_batch_size=2,
        batch_size=2,
        folds=2,
        val_every=1,
        device="cpu",
        seed=2,
    )
    result = train([make_dataset(4)], tmp_path / "gan", cfg)
    assert result.iterations == 3 and result.val_dice is not None
    rows = (tmp_path / "gan" / "train_log.csv").read_text().splitlines()
    assert rows[0].endswith("segmentation_bce,adversarial,discriminator")
    state = torch.load(tmp_path / "gan" / "last.pt", map_location="cpu", weights_only=True)
    assert {"model", "discriminator", "optimizer", "optimizer_d"} <= set(state)
    entry = tomllib.loads(result.toml_path.read_text())["models"]["gan"]
    assert (entry["architecture"], entry["decision"], entry["liver_channel"], entry["n_classes"]) == (
        "di2in",
        "sigmoid",
        0,
        1,
    )
    assert entry["labels"] == {"liver": 0}
    _segments(result.model_path)
    # same seed, same generator
    again = train_di2in_an([make_dataset(4)], tmp_path / "again", cfg)
    assert _same(result.model.state_dict(), again.model.state_dict())


# ---------------------------------------------------------------------------- H-DenseUNet

HD_KW = {"features": 8, "blocks_2d": [1, 1, 1], "growth_2d": 4, "blocks_3d": [1, 1], "growth_3d": 4}


def hd_config(**kw) -> TrainConfig:
    base = dict(
        method="hdenseunet",
        arch_kwargs=dict(HD_KW),
        patch_size=(8, 32, 32),
        iterations_per_epoch=1,
        val_every=0,
        device="cpu",
        seed=4,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_stage_schedule_known_answers():
    lengths = stage_lengths(hd_config(epochs=10, stage_iterations=(3, 2)))
    assert lengths == (3, 2, 5)
    assert [stage_of(g, lengths)[:2] for g in (0, 2, 3, 4, 5, 9)] == [(1, 0), (1, 2), (2, 0), (2, 1), (3, 0), (3, 4)]
    assert stage_lengths(hd_config(epochs=10)) == (3, 3, 4)
    assert stage_of(0, (0, 0, 4))[:2] == (3, 0)
    assert poly_lr(0.01, 0, 10) == 0.01 and poly_lr(0.01, 5, 10) == pytest.approx(0.01 * 0.5**0.9)
    with pytest.raises(ConfigError, match="exceed"):
        stage_lengths(hd_config(epochs=2, stage_iterations=(2, 1)))


def test_hdenseunet_stages_freeze_and_train_the_right_parts(tmp_path):
    from liverctl.models import build_model

    data = make_dataset(3, shape=(8, 32, 32), tumour=True)
    torch.manual_seed(4)
    init = build_model("hdenseunet", in_channels=1, out_channels=3, **HD_KW).state_dict()
    sel = {"select_on": "inner:0.3", "val_every": 1}  # one of the three cases chooses the epoch
    one = train_hdenseunet([data], tmp_path / "s1", hd_config(epochs=1, stage_iterations=(1, 0), **sel))
    two = train([data], tmp_path / "s2", hd_config(epochs=2, stage_iterations=(1, 1), **sel))
    three = train_hdenseunet([data], tmp_path / "s3", hd_config(epochs=3, stage_iterations=(1, 1), **sel))
    s1, s2, s3 = (r.model.state_dict() for r in (one, two, three))

    def part(sd, prefix):
        return {k: v for k, v in sd.items() if k.startswith(prefix)}

    # stage 1 trains the 2D DenseUNet only
    assert not _same(part(s1, "net2d."), part(init, "net2d."))
    assert _same(part(s1, "net3d."), part(init, "net3d.")) and _same(part(s1, "hff."), part(init, "hff."))
    # stage 2: the 2D part (weights and batch-norm statistics) is bit-identical, 3D + HFF move
    assert _same(part(s2, "net2d."), part(s1, "net2d."))
    assert not _same(part(s2, "net3d."), part(s1, "net3d.")) and not _same(part(s2, "hff."), part(s1, "hff."))
    # stage 3 trains everything again
    assert not _same(part(s3, "net2d."), part(s2, "net2d.")) and not _same(part(s3, "net3d."), part(s2, "net3d."))
    # the inner split chooses only among epochs that end in the last stage
    assert (one.selected_epoch, two.selected_epoch, three.selected_epoch) == (1, 2, 3)
    rows = (tmp_path / "s3" / "train_log.csv").read_text().splitlines()[1:]
    assert [r.split(",")[8] for r in rows] == ["1.000000", "2.000000", "3.000000"]  # the stage column
    entry = tomllib.loads(three.toml_path.read_text())["models"]["s3"]
    assert (entry["n_classes"], entry["liver_channel"], entry["decision"]) == (3, 1, "argmax")
    assert entry["labels"] == {"liver": 1, "tumour": 2}
    _segments(three.model_path)
    # same seed, same weights
    again = train_hdenseunet([data], tmp_path / "again", hd_config(epochs=1, stage_iterations=(1, 0), **sel))
    assert _same(again.model.state_dict(), s1)
    with pytest.raises(ConfigError, match="class weights"):
        train_hdenseunet([data], tmp_path / "w", hd_config(epochs=1, class_weights=[1.0, 2.0]))


# ---------------------------------------------------------------------------- options and CLI


def test_recipe_options_are_checked():
    with pytest.raises(ConfigError, match="method must be one of"):
        TrainConfig(method="nnunet")
    with pytest.raises(ConfigError, match="moved to preprocessing"):
        TrainConfig.from_dict({"method": "sdnet", "labelled_fraction": 0.2})
    assert TrainConfig.from_dict({"method": "sdnet", "labelled_fraction": None}).method == "sdnet"  # old run folders
    with pytest.raises(ConfigError, match="dcm-from-level"):
        TrainConfig(method="hdenseunet", dcm_from_level=3)
    with pytest.raises(ConfigError, match="stage-iterations"):
        TrainConfig(method="hdenseunet", stage_iterations=(1,))
    cfg = TrainConfig(method="hdenseunet", stage_iterations=[2, 3], class_weights=[1, 2, 3])
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_cli_method_hdenseunet(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from liverctl.cli import app
    from liverctl.io import write_image
    from liverctl.preprocessing import preprocess

    data = make_dataset(2, shape=(8, 32, 32), tumour=True)
    for name in ("c0", "c1"):
        scan = ct_scan((8, 32, 32))
        write_image(scan, tmp_path / "raw" / "imagesTr" / f"{name}_0000.nii.gz")
        write_image(data.labels[name], tmp_path / "raw" / "labelsTr" / f"{name}.nii.gz")
    preprocess(tmp_path / "raw", tmp_path / "prep", target_spacing=SPACING, window="liver", crop=False)
    monkeypatch.setenv("LIVERCTL_NO_PROGRESS", "1")
    args = ["train", str(tmp_path / "prep"), "-o", str(tmp_path / "run"), "--method", "hdenseunet"]
    args += ["--arch-kwargs", json.dumps(HD_KW), "--patch", "32,32,8", "--epochs", "3"]
    args += ["--iterations-per-epoch", "1", "--stage-iterations", "1,1", "--device", "cpu", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["iterations"] == 3 and summary["model"].endswith("model.safetensors")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["method"] == "hdenseunet" and saved["stage_iterations"] == [1, 1]
    sd = [*args[:2], "-o", str(tmp_path / "sd"), "--method", "sdnet", "--unlabelled", str(tmp_path / "prep")]
    sd += ["--select-on", "final"]  # a 1-iteration run: SD-Net's iteration-1000 default is past it
    sd += ["--base-features", "4", "--patch", "16,32,32", "--epochs", "1", "--iterations-per-epoch", "1"]
    result = CliRunner().invoke(app, [*sd, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("model.safetensors")
    assert json.loads((tmp_path / "sd" / "config.json").read_text())["unlabelled"] == [str(tmp_path / "prep")]
    bad = CliRunner().invoke(app, [*args[:2], "-o", str(tmp_path / "bad"), "--method", "gan"])
    assert bad.exit_code == 2 and "method must be one of" in bad.output
