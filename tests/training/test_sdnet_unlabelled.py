"""SD-Net with really unlabelled data: the 100:0 row, training from `preprocess --labelled-fraction` folders,
unlabelled patches that never touch a label map, and unlabelled data preprocessed with another plan refused."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from liverctl import preprocessing as pp
from liverctl.errors import ConfigError, DatasetError, LiverctlWarning
from liverctl.io import Geometry, Image
from liverctl.training import ArrayDataset, TrainConfig, TrainingData, train_sdnet
from liverctl.training.common import seed_int
from liverctl.training.recipes.sdnet import _build, _unlabelled_batch_fn

SPACING = (2.0, 2.0, 3.0)


def toy(n: int, seed: int, name: str = "toy", mean: float = 50.0) -> ArrayDataset:
    """Normalised ellipsoid 'livers' in noise (the plan says mean/std as a preprocess output would)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(np.arange(16), np.arange(32), np.arange(32), indexing="ij")
    images, labels = {}, {}
    for i in range(n):
        lab = (((zz - 8) * 1.5) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2 < 36).astype(np.uint8)
        images[f"c{i}"] = Image((1.5 * lab + rng.normal(0, 0.3, lab.shape)).astype(np.float32), Geometry(SPACING))
        labels[f"c{i}"] = Image(lab, Geometry(SPACING))
    plan = {"labels": {"background": 0, "liver": 1}, "target_spacing": list(SPACING), "mean": mean, "std": 50.0}
    return ArrayDataset(images, labels, plan, name=name)


def config(**kw) -> TrainConfig:
    base = dict(
        method="sdnet",
        arch_kwargs={"base_features": 4},
        patch_size=(16, 16, 16),
        epochs=2,
        iterations_per_epoch=1,
        val_every=0,
        device="cpu",
        seed=2,
        select_on="final",  # 2 iterations: SD-Net's iteration-1000 default is past the run
    )
    base.update(kw)
    return TrainConfig(**base)


def log_rows(run: Path) -> list[dict[str, str]]:
    with (run / "train_log.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_100_0_trains_both_networks_with_no_unsupervised_term(tmp_path):
    with pytest.warns(LiverctlWarning, match="100:0"):
        result = train_sdnet([toy(2, seed=1)], tmp_path / "run", config())
    assert result.iterations == 2
    rows = log_rows(tmp_path / "run")
    assert [float(r["unsupervised_mse"]) for r in rows] == [0.0, 0.0]
    assert all(float(r["supervised"]) > 0 for r in rows)
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    cfg = config()
    for key, arch, seed in (("model", "vnet", cfg.seed), ("model_b", "resvnet", seed_int(cfg.seed, 1))):
        init, _ = _build(arch, cfg, 2, seed)  # the network as the run built it, before any step
        assert any(not torch.equal(v, state[key][k]) for k, v in init.state_dict().items()), key
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["unlabelled"] == [] and saved["unlabelled_cases"] == []


def write_raw(root: Path, n: int) -> None:
    """MSD-layout CT: a 0 HU body disc in air, a 60 HU liver block (label 1)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir(parents=True)
    yy, xx = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    for i in range(n):
        rng = np.random.default_rng(i)
        hu = np.where(((yy - 16) ** 2 + (xx - 16) ** 2 < 196)[None], rng.normal(0, 10, (16, 32, 32)), -1000.0)
        label = np.zeros(hu.shape, np.uint8)
        label[4:12, 10:22, 10:22] = 1
        hu[label == 1] += 60
        g = Geometry(SPACING)
        sitk.WriteImage(Image(hu.astype(np.int16), g).to_sitk(), str(root / "imagesTr" / f"c{i}_0000.nii.gz"))
        sitk.WriteImage(Image(label, g).to_sitk(), str(root / "labelsTr" / f"c{i}.nii.gz"))


def test_training_from_a_split_made_before_preprocessing(tmp_path):
    write_raw(tmp_path / "raw", 4)
    split = pp.preprocess_split(
        tmp_path / "raw", tmp_path / "prep", labelled_fraction=0.5, target_spacing=SPACING, window="sdnet"
    ).split
    lab, unl = tmp_path / "prep" / "labelled", tmp_path / "prep" / "unlabelled"
    with pytest.raises(DatasetError, match="give it as --unlabelled"):
        TrainingData([unl])
    result = train_sdnet([lab], tmp_path / "run", config(unlabelled=[str(unl)], epochs=1))
    assert result.iterations == 1
    assert all(float(r["unsupervised_mse"]) > 0 for r in log_rows(tmp_path / "run"))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["labelled_cases"] == [split["labelled"]] and saved["unlabelled_cases"] == [split["unlabelled"]]

    # unlabelled patches come from the images alone: a labelled folder used as unlabelled data,
    # with its label maps deleted, gives the same batches
    shutil.copytree(lab, tmp_path / "lab_copy")
    shutil.rmtree(tmp_path / "lab_copy" / "labels")
    cfg = config()
    pools = [[(pp.load_preprocessed(folder), n) for n in split["labelled"]] for folder in (lab, tmp_path / "lab_copy")]
    batches = [_unlabelled_batch_fn(pool, cfg)(3) for pool in pools]
    assert batches[0].shape == (2, 1, 16, 16, 16) and torch.equal(batches[0], batches[1])


def test_unlabelled_data_with_another_plan_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"another plan than the labelled data .*mean"):
        train_sdnet([toy(2, seed=1)], tmp_path / "run", config(), unlabelled=[toy(2, seed=3, mean=80.0)])
    assert not (tmp_path / "run" / "last.pt").exists()


def test_ties_make_the_residual_vnet_the_teacher():
    """Algorithm 1 of the paper: equal Dice losses on the labelled half -> B (residual V-Net) teaches A."""
    import torch

    from liverctl.training.recipes.sdnet import sdnet_losses

    torch.manual_seed(0)
    logits = torch.randn(3, 2, 4, 8, 8)
    labels = (torch.rand(2, 4, 8, 8) > 0.5).long()
    tie = sdnet_losses(logits, logits.clone(), labels, n_labelled=2)
    assert float(tie["dice_a"]) == float(tie["dice_b"]) and int(tie["teacher"]) == 1
    perfect = torch.zeros_like(logits)
    perfect[:2] = torch.nn.functional.one_hot(labels, 2).permute(0, 4, 1, 2, 3).float() * 10
    a_better = sdnet_losses(perfect, logits, labels, n_labelled=2)
    assert float(a_better["dice_a"]) < float(a_better["dice_b"]) and int(a_better["teacher"]) == 0
