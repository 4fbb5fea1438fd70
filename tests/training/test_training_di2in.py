"""DI2IN-AN as Yang et al. 2017 train it (issue 11 point 3): SGD at 0.01 divided by 10 after 100
iterations (checked on the real optimizers), 200 pre-training iterations and generator batch 4 as
the method's defaults (explicit options win, config.json records the resolved values), and the
3-branch deep supervision fused by a convolution with LeakyReLU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from liverctl.io import Geometry, Image
from liverctl.models import build_model
from liverctl.training import ArrayDataset, TrainConfig, train
from liverctl.training.config import resolve
from liverctl.training.recipes.di2in_an import AdversarialSteps, _step_fn, di2in_lr, di2in_optimizers


def make_dataset(n: int, shape=(8, 16, 16)) -> ArrayDataset:
    """Bright ellipsoidal "livers" (label 1) in noise, already normalised."""
    rng = np.random.default_rng(0)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    images, labels = {}, {}
    for i in range(n):
        c = np.array(shape) / 2 + rng.uniform(-1, 1, 3)
        lab = ((((zz - c[0]) * 2) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) < 16).astype(np.uint8)
        images[f"c{i}"] = Image((1.5 * lab + rng.normal(0, 0.3, shape)).astype(np.float32), Geometry((2.0, 2.0, 3.0)))
        labels[f"c{i}"] = Image(lab, Geometry((2.0, 2.0, 3.0)))
    return ArrayDataset(images, labels, {"labels": {"background": 0, "liver": 1}, "mean": 0.0, "std": 1.0})


def test_method_defaults_are_the_papers_and_explicit_options_win():
    paper = TrainConfig(method="di2in-an")
    # the paper's 200 + 100 "iterations" as passes over ~1000 volumes: 300 epochs of 250 x 4 volumes
    assert (paper.optimizer, paper.lr, paper.epochs, paper.iterations_per_epoch) == ("sgd", 1e-2, 300, 250)
    assert (paper.pretrain_iterations, paper.lr_step) == (50000, 25000)  # 200 and 100 epochs
    assert (paper.batch_size, paper.patch_size, paper.augment, paper.foreground_fraction) == (4, (128,) * 3, False, 0)
    assert paper.d_batch_size == 8 and paper.d_steps == 10 and paper.adv_weight == 0.01
    short = TrainConfig(method="di2in-an", epochs=3, iterations_per_epoch=10)
    assert (short.pretrain_iterations, short.lr_step) == (20, 10)  # the same proportions in any run
    mine = TrainConfig(method="di2in-an", optimizer="adam", batch_size=2, pretrain_iterations=0, augment=True)
    assert (mine.optimizer, mine.lr, mine.batch_size, mine.pretrain_iterations, mine.augment) == (
        "adam",
        3e-4,
        2,
        0,
        True,
    )
    assert TrainConfig(method="di2in-an", lr=0.5).lr == 0.5
    # the other recipes keep their own defaults
    he = TrainConfig()
    assert (he.optimizer, he.lr, he.batch_size, he.pretrain_iterations, he.epochs) == (None, None, 2, 0, 400)
    assert (he.augment, he.foreground_fraction) == (True, 1 / 3)
    assert TrainConfig(method="sdnet").lr_step == 200
    # a config made for one method and trained with another gets that method's defaults
    moved = resolve(TrainConfig(batch_size=3, epochs=3, iterations_per_epoch=10), "di2in-an")
    assert (moved.batch_size, moved.pretrain_iterations, moved.optimizer, moved.epochs) == (3, 20, "sgd", 3)
    back = resolve(paper, "he2021")
    assert (back.batch_size, back.optimizer, back.lr, back.pretrain_iterations, back.epochs) == (2, None, None, 0, 400)
    assert TrainConfig.from_dict(paper.to_dict()) == paper and "unset" not in paper.to_dict()
    with pytest.raises(Exception, match="after its adversarial phase"):
        TrainConfig(method="di2in-an", epochs=1, iterations_per_epoch=4, pretrain_iterations=4)


def test_deep_supervision_branches_are_upscaled_16_4_1_and_fused_by_a_leaky_relu_conv():
    torch.manual_seed(0)
    net = build_model("di2in", base_features=2, n_levels=5).train()
    assert net.side_levels == (4, 2, 0) and len(net.loss_weights) == 4
    # the branches come from the levels at 1/16, 1/4 and 1/1: upscaling factors 16, 4, 1 as the paper's
    assert [2**k for k in net.side_levels] == [16, 4, 1]
    assert [net.side[str(k)].in_channels for k in net.side_levels] == [
        net.features[4],
        net.features[2],
        net.features[0],
    ]
    kinds = [type(m) for m in net.fuse]
    assert kinds[:2] == [nn.Conv3d, nn.LeakyReLU] and net.fuse[0].in_channels == 3
    assert net.fuse[-1].out_channels == 1
    x = torch.randn(2, 1, 16, 16, 32)
    # the coarsest branch really sees 1/16 resolution: constant over each 16^3 block before upscaling
    seen = {}
    hook = net.side["4"].register_forward_hook(lambda m, i, o: seen.update(shape=tuple(o.shape)))
    final, *sides = net(x)
    hook.remove()
    assert seen["shape"] == (2, 1, 1, 1, 2)
    assert len(sides) == 3 and all(t.shape == (2, 1, 16, 16, 32) for t in (final, *sides))
    assert torch.allclose(final, net.fuse(torch.cat(sides, dim=1)), atol=1e-6)
    # the fusion starts as the mean of the side logits (through its LeakyReLU, for either sign)
    assert torch.allclose(final, torch.stack(sides).mean(0), atol=1e-5) and (final < 0).any() and (final > 0).any()
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 1, 16, 16, 32)
    assert build_model("di2in", base_features=2, n_levels=3).side_levels == (2, 1, 0)
    assert build_model("di2in", base_features=2, n_levels=5, side_levels=[2, 1, 0]).side_levels == (2, 1, 0)
    with pytest.raises(Exception, match="side_levels"):
        build_model("di2in", base_features=2, n_levels=3, side_levels=(3, 0))


def test_sgd_lr_steps_inside_each_phase_on_the_real_optimizers():
    # pre-training: 0.01, / 10 after lr_step; the adversarial phase starts its own schedule at 0.01
    assert [di2in_lr(0.01, g, 100, 200) for g in (0, 99, 100, 199, 200, 299, 300)] == [
        0.01, 0.01, 0.001, 0.001, 0.01, 0.01, 0.001
    ]  # fmt: skip
    torch.manual_seed(0)
    gen = build_model("di2in", base_features=2, n_levels=2)
    disc = build_model("di2in_discriminator", base_features=2, n_layers=1)
    config = TrainConfig(method="di2in-an", pretrain_iterations=4, lr_step=2, d_steps=1, seed=0)
    opt_g, opt_d = di2in_optimizers(gen, disc, config)
    assert isinstance(opt_g, torch.optim.SGD) and isinstance(opt_d, torch.optim.SGD)
    data = make_dataset(2, shape=(8, 16, 16))
    x = torch.stack([torch.from_numpy(data.images[n].array) for n in ("c0", "c1")])[:, None]
    y = torch.stack([torch.from_numpy(data.labels[n].array.astype("int64")) for n in ("c0", "c1")])

    def batch(index):
        return x, y, torch.zeros(2, dtype=torch.long)

    steps = AdversarialSteps(gen, disc, opt_g, opt_d, config, torch.device("cpu"), "fp32", batch, batch, [1])
    step = _step_fn(steps, config)
    seen = {}
    for g in (0, 2, 3, 4, 6):
        values = step(g)
        seen[g] = (opt_g.param_groups[0]["lr"], opt_d.param_groups[0]["lr"], "discriminator" in values)
    assert seen[0] == (pytest.approx(0.01), pytest.approx(0.01), False)  # pre-training: generator only
    assert seen[2] == seen[3] == (pytest.approx(0.001), pytest.approx(0.001), False)
    assert seen[4] == (pytest.approx(0.01), pytest.approx(0.01), True)  # the adversarial phase: 0.01 again
    assert seen[6] == (pytest.approx(0.001), pytest.approx(0.001), True)
    adam_g, adam_d = di2in_optimizers(gen, disc, TrainConfig(method="di2in-an", optimizer="adam"))
    assert isinstance(adam_g, torch.optim.Adam) and adam_d.param_groups[0]["betas"] == (0.5, 0.999)
    assert adam_g.param_groups[0]["lr"] == 3e-4


def test_tiny_di2in_an_run_records_the_resolved_defaults(tmp_path):
    cfg = TrainConfig(
        method="di2in-an",
        arch_kwargs={"base_features": 2, "n_levels": 3},
        disc_kwargs={"base_features": 2, "n_layers": 1},
        patch_size=(8, 16, 16),
        epochs=3,
        iterations_per_epoch=2,
        d_steps=1,
        d_batch_size=2,
        batch_size=2,
        val_every=0,
        checkpoint_every=0,
        device="cpu",
    )
    result = train([make_dataset(2, shape=(8, 16, 16))], tmp_path / "run", cfg)
    assert result.iterations == 6 and result.model_path.is_file()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (saved["optimizer"], saved["lr"], saved["batch_size"]) == ("sgd", 0.01, 2)  # the paper's lr, our batch
    assert (saved["pretrain_iterations"], saved["lr_step"]) == (4, 2)  # 2/3 of the run, the step half-way
    assert (saved["augment"], saved["foreground_fraction"], saved["select_on"]) == (False, 0.0, "final")
    rows = (tmp_path / "run" / "train_log.csv").read_text().splitlines()[1:]
    assert [r.split(",")[4] for r in rows] == ["0.01", "0.001", "0.01"]  # the lr of each epoch's start
    header = (tmp_path / "run" / "train_log.csv").read_text().splitlines()[0].split(",")
    assert rows[-1].split(",")[header.index("discriminator")] != ""  # the last epoch is adversarial
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert "momentum_buffer" in next(iter(state["optimizer"]["state"].values()))  # SGD with momentum
    # the exported generator is the final one: trained after the adversarial phase
    from safetensors.torch import load_file

    exported = load_file(str(result.model_path))
    assert all(torch.equal(exported[k], v) for k, v in state["model"].items() if k in exported)


def test_whole_liver_folds_the_tumour_into_the_liver():
    """He et al. 2021 train the whole liver: tumour voxels train the liver class, no tumour class."""
    from liverctl.training.data import TrainingData

    lab = np.zeros((4, 8, 8), np.uint8)
    lab[1:3, 2:6, 2:6] = 1
    lab[2, 3:5, 3:5] = 2
    g = Geometry((1.0, 1.0, 1.0))
    plan = {"labels": {"background": 0, "liver": 1, "tumour": 2}}
    ds = ArrayDataset({"a": Image(np.zeros((4, 8, 8), np.float32), g)}, {"a": Image(lab, g)}, plan)
    whole = TrainingData([ds], merge_tumour=True)
    assert whole.labels == {"background": 0, "liver": 1} and whole.n_classes == 2
    np.testing.assert_array_equal(whole.luts[0][lab], (lab > 0).astype(np.uint8))
    classes = TrainingData([ds])
    assert classes.labels == {"background": 0, "liver": 1, "tumour": 2} and classes.n_classes == 3
    np.testing.assert_array_equal(classes.luts[0][lab], lab)
    # a liver-only and a liver + tumour dataset train together on the whole liver
    other = ArrayDataset({"b": Image(np.zeros((4, 8, 8), np.float32), g)}, {"b": Image((lab > 0).astype(np.uint8), g)})
    assert TrainingData([ds, other], merge_tumour=True).labels == {"background": 0, "liver": 1}
    with pytest.raises(Exception, match="different label sets"):
        TrainingData([ds, other])


def test_dropout_paper_puts_dropout_after_every_unet_conv():
    from liverctl.training.config import PAPER_DROPOUT

    net = build_model("unet3d", base_features=2, n_levels=2, dropout=PAPER_DROPOUT)
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout3d)]
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 3)]
    assert drops and len(drops) == len(convs) and all(d.p == 0.5 for d in drops)
