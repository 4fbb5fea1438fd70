"""Issue 23: `train --method di2in-an | hdenseunet | pipofan` with no options trains as the papers train
(DI2IN-AN: Yang et al. 2017; H-DenseUNet: Li et al. 2018; PIPO-FAN: Fang and Yan 2020). Every
default is read back from the run's config.json; each recipe runs end to end on tiny phantoms,
with only the sizes made small (patch, epochs, the networks' small presets)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from liverctl.io import Geometry, Image
from liverctl.training import ArrayDataset, TrainConfig, train
from liverctl.training.config import resolve

SPACING = (2.0, 2.0, 3.0)

# the papers' values of the options a user leaves unset (config.json's "config")
PAPER_DEFAULTS = {
    "di2in-an": {
        "optimizer": "sgd", "lr": 0.01, "batch_size": 4, "epochs": 300, "pretrain_iterations": 50000,
        "lr_step": 25000, "patch_size": [128, 128, 128], "augment": False, "foreground_fraction": 0.0,
        "select_on": "final", "tumour_class": True, "architecture": "di2in", "arch_kwargs": {},
    },
    "hdenseunet": {
        "optimizer": None, "lr": None, "batch_size": 2, "epochs": 400, "patch_size": [12, 224, 224],
        "augment": True, "select_on": "final", "tumour_class": True, "architecture": "hdenseunet",
        "arch_kwargs": {"preset": "paper"}, "coarse_iterations": 0, "pretrain_iterations": 16667,
    },
    "pipofan": {
        "optimizer": "rmsprop", "lr": None, "batch_size": 2, "epochs": 400, "patch_size": [1, 224, 224],
        "augment": True, "foreground_fraction": 1.0, "select_on": "final", "tumour_class": False,
        "architecture": "pipofan", "arch_kwargs": {},
    },
}  # fmt: skip


def liver_tumour(n: int = 3, shape=(8, 32, 32), seed: int = 0) -> ArrayDataset:
    """Bright ellipsoidal livers (label 1) with a brighter tumour core (label 2) in noise, normalised."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    images, labels = {}, {}
    for i in range(n):
        c = np.array(shape) / 2 + rng.uniform(-1, 1, 3)
        d = np.sqrt(((zz - c[0]) * 1.5) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
        lab = (d < 7).astype(np.uint8)
        lab[d < 2.5] = 2
        img = 1.5 * (lab > 0) + 1.0 * (lab == 2) + rng.normal(0, 0.3, shape)
        images[f"c{i}"] = Image(img.astype(np.float32), Geometry(SPACING))
        labels[f"c{i}"] = Image(lab, Geometry(SPACING))
    plan = {"labels": {"background": 0, "liver": 1, "tumour": 2}, "target_spacing": list(SPACING)}
    return ArrayDataset(images, labels, {**plan, "mean": 0.0, "std": 1.0}, name="toy")


@pytest.mark.parametrize("method", sorted(PAPER_DEFAULTS))
def test_every_default_is_the_papers_in_the_saved_config(method):
    saved = resolve(None, method).to_dict()
    for name, value in PAPER_DEFAULTS[method].items():
        assert saved[name] == value, name
    assert TrainConfig.from_dict(json.loads(json.dumps(saved))).to_dict() == saved  # config.json round trip


def _saved(run) -> dict:
    return json.loads((run / "config.json").read_text())


def test_di2in_an_end_to_end_exports_the_adversarial_generator(tmp_path):
    cfg = TrainConfig(
        method="di2in-an",
        arch_kwargs={"base_features": 2, "n_levels": 3},
        disc_kwargs={"base_features": 2, "n_layers": 1},
        patch_size=(8, 32, 32),
        epochs=3,
        iterations_per_epoch=1,
        batch_size=2,
        d_steps=1,
        d_batch_size=2,
        select_on="inner:0.3",
        val_every=1,
        checkpoint_every=0,
        device="cpu",
    )
    result = train([liver_tumour()], tmp_path / "run", cfg)
    saved = _saved(tmp_path / "run")["config"]
    for name in ("optimizer", "lr", "augment", "foreground_fraction", "tumour_class"):
        assert saved[name] == PAPER_DEFAULTS["di2in-an"][name], name
    assert (saved["pretrain_iterations"], saved["lr_step"]) == (2, 1)  # 2/3 of the run, the step half-way
    # epochs 1 and 2 pre-train: only the adversarially trained generator of epoch 3 may be chosen
    assert result.selected_epoch == 3
    import tomllib

    entry = tomllib.loads(result.toml_path.read_text())["models"]["run"]
    assert entry["kwargs"]["side_levels"] == [2, 1, 0] and entry["decision"] == "sigmoid"


def test_hdenseunet_small_preset_end_to_end_with_the_papers_training(tmp_path):
    data = liver_tumour(2, shape=(4, 32, 32))
    base = dict(
        method="hdenseunet",
        arch_kwargs={"preset": "small"},
        patch_size=(4, 32, 32),
        iterations_per_epoch=1,
        val_every=0,
        checkpoint_every=0,
        device="cpu",
        seed=1,
    )
    from liverctl.models import build_model

    torch.manual_seed(1)
    init = build_model("hdenseunet", out_channels=3, preset="small").state_dict()
    warm = train([data], tmp_path / "warm", TrainConfig(**base, epochs=1, stage_iterations=(1, 0)))
    both = train([data], tmp_path / "both", TrainConfig(**base, epochs=3, stage_iterations=(2, 0)))
    proj = "net2d.skip_proj.0.weight"  # the UNet connection of the 2D network's finest level
    # the warm-up (first half of stage 1) trains the 2D network without its UNet connections ...
    assert torch.equal(warm.model.state_dict()[proj], init[proj])
    assert not torch.equal(warm.model.state_dict()["net2d.features.conv0.weight"], init["net2d.features.conv0.weight"])
    # ... then with them
    assert not torch.equal(both.model.state_dict()[proj], init[proj])
    assert _saved(tmp_path / "warm")["config"]["pretrain_iterations"] == 1  # half of stage 1, rounded up
    # --pretrain-iterations 0: no warm-up, the connections train from the first iteration
    none = train(
        [data], tmp_path / "none", TrainConfig(**base, epochs=1, stage_iterations=(1, 0), pretrain_iterations=0)
    )
    assert not torch.equal(none.model.state_dict()[proj], init[proj])
    with pytest.raises(Exception, match="warm-up"):
        train([data], tmp_path / "long", TrainConfig(**base, epochs=2, stage_iterations=(1, 0), pretrain_iterations=2))
    saved = _saved(tmp_path / "both")
    assert saved["config"]["arch_kwargs"] == {"preset": "small"} and saved["config"]["augment"] is True
    assert saved["parameter_counts"]["total"] == sum(p.numel() for p in both.model.parameters())
    state = torch.load(tmp_path / "both" / "last.pt", map_location="cpu", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == 0  # the paper states none
    assert both.model_path.is_file()


def test_hdenseunet_augmentation_is_mirror_and_scaling_only():
    from liverctl.training.recipes.hdenseunet import HDENSEUNET_AUGMENTATION as aug

    assert aug.scale_range == (0.8, 1.2) and aug.p_scale == 1.0 and aug.p_flip == 0.5
    assert aug.p_rotation == aug.p_elastic == aug.p_gamma == 0.0
    params = [aug.draw(np.random.default_rng(i)) for i in range(50)]
    assert all(0.8 <= p["scale"] <= 1.2 for p in params) and all(p["angles"] == (0.0, 0.0, 0.0) for p in params)


def test_pipofan_whole_liver_one_organ_protocol_end_to_end(tmp_path):
    cfg = TrainConfig(
        method="pipofan",
        arch_kwargs={"base_features": 4, "n_scales": 3},
        patch_size=(1, 32, 32),
        epochs=5,
        iterations_per_epoch=1,
        val_every=0,
        checkpoint_every=0,
        device="cpu",
    )
    result = train([liver_tumour()], tmp_path / "run", cfg)
    saved = _saved(tmp_path / "run")
    # the liver's tumour is liver: one organ, so the one-organ protocol's lr and class weights
    assert saved["config"]["tumour_class"] is False and saved["config"]["optimizer"] == "rmsprop"
    assert (saved["protocol"], saved["learning_rate"], saved["class_weights"]) == ("one organ", 2e-3, [0.2, 1.2])
    assert saved["phase_lengths"] == [4, 1]  # 2000 of 2500 epochs of deep supervision
    import tomllib

    entry = tomllib.loads(result.toml_path.read_text())["models"]["run"]
    assert entry["labels"] == {"liver": 1} and entry["n_classes"] == 2
    rows = (tmp_path / "run" / "train_log.csv").read_text().splitlines()[1:]
    assert {r.split(",")[4] for r in rows} == {"0.002"}


def _one_organ(organ: str, seed: int) -> ArrayDataset:
    data = liver_tumour(2, shape=(4, 16, 16), seed=seed)
    labels = {n: Image((im.array > 0).astype(np.uint8), im.geometry) for n, im in data.labels.items()}
    plan = {"labels": {"background": 0, organ: 1}, "target_spacing": list(SPACING), "mean": 0.0, "std": 1.0}
    return ArrayDataset(data.images, labels, plan, name=organ)


def test_pipofan_multi_organ_protocol_learning_rate(tmp_path):
    liver, spleen = _one_organ("liver", 0), _one_organ("spleen", 1)
    cfg = TrainConfig(
        method="pipofan",
        arch_kwargs={"base_features": 4, "n_scales": 3},
        patch_size=(1, 16, 16),
        epochs=2,
        iterations_per_epoch=1,
        val_every=0,
        checkpoint_every=0,
        device="cpu",
    )
    train([liver, spleen], tmp_path / "run", cfg)
    saved = _saved(tmp_path / "run")
    assert (saved["protocol"], saved["learning_rate"], saved["class_weights"]) == ("multi-organ", 2e-4, [1.0] * 3)
    assert saved["phase_lengths"] == [1, 1]  # 2000 of 4000 epochs


def test_pipofan_trains_on_slices_that_contain_the_organ():
    from liverctl.training.common import make_batch_fn
    from liverctl.training.data import TrainingData

    data = TrainingData([liver_tumour(2, shape=(16, 32, 32))], merge_tumour=True)
    cfg = TrainConfig(method="pipofan", patch_size=(3, 32, 32), batch_size=4, augment=False)
    batch = make_batch_fn(data, cfg)
    for g in range(10):
        _, y, _ = batch(g)
        assert all(bool((y[b, 1] > 0).any()) for b in range(len(y)))  # the centre slice holds liver


def test_pipofan_plain_blocks_for_kits():
    from liverctl.models import build_model
    from liverctl.models.pipofan import ResBlock2d

    net = build_model("pipofan", base_features=4, n_scales=3, blocks="plain")
    blocks = [m for m in net.modules() if isinstance(m, ResBlock2d)]
    assert blocks and all(b.skip is None for b in blocks)
    block = blocks[0].eval()
    x = torch.randn(1, block.body[0].num_features, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x), block.body(x))  # the two convolutions alone, no residual addition
        assert net.eval()(torch.randn(2, 3, 16, 16)).shape == (2, 2, 16, 16)
