"""PIPO-FAN (Fang and Yan 2020): the target adaptive loss on hand-made numbers, the
network's parameter count at the paper's settings, the two-phase schedule (phase 2 moves only
the fusion), 2D training on true neighbouring slices, and ``train --method pipofan`` ->
``predict --weights`` end to end on a phantom."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from liverctl.errors import ConfigError
from liverctl.io import Geometry, Image
from liverctl.training import ArrayDataset, TrainConfig, train, train_pipofan
from liverctl.training.losses import DeepSupervisionLoss, TargetAdaptiveLoss, soft_dice_loss
from liverctl.training.recipes.pipofan import phase_lengths, phase_lr, slice_batch

TINY = {"base_features": 4, "n_scales": 3}


def make_dataset(n: int, shape=(6, 16, 16), seed: int = 0, name: str = "toy", organ: str = "liver"):
    """Bright ellipsoids (label 1) in noise, already normalised."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    images, labels = {}, {}
    for i in range(n):
        c = np.array(shape) / 2 + rng.uniform(-1, 1, 3)
        lab = (((zz - c[0]) * 2) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < 25).astype(np.uint8)
        img = 1.5 * lab + rng.normal(0, 0.3, shape)
        images[f"c{i}"] = Image(img.astype(np.float32), Geometry((2.0, 2.0, 3.0)))
        labels[f"c{i}"] = Image(lab, Geometry((2.0, 2.0, 3.0)))
    plan = {"labels": {"background": 0, organ: 1}, "target_spacing": [2.0, 2.0, 3.0], "mean": 0.0, "std": 1.0}
    return ArrayDataset(images, labels, plan, name=name)


def cfg(**kw) -> TrainConfig:
    base = dict(
        method="pipofan",
        arch_kwargs=dict(TINY),
        patch_size=(1, 16, 16),
        batch_size=2,
        iterations_per_epoch=1,
        val_every=0,
        device="cpu",
        seed=3,
        checkpoint_every=0,
    )
    base.update(kw)
    return TrainConfig(**base)


# ---------------------------------------------------------------------------- the loss


def test_tal_is_cross_entropy_with_the_unlabelled_classes_merged_into_background():
    # two pixels, classes (background, liver, spleen); the dataset labels liver only
    logits = np.array([[1.0, 2.0, 0.5], [0.2, -1.0, 1.5]])  # pixel, class
    target = np.array([1, 0])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    merged_bg = p[:, 0] + p[:, 2]  # spleen's probability counts as background
    expected = -(np.log(p[0, 1]) + np.log(merged_bg[1])) / 2
    x = torch.tensor(logits.T[None, :, None, :], dtype=torch.float32)  # (1, 3, 1, 2)
    y = torch.tensor(target[None, None, :])
    assert TargetAdaptiveLoss([1])(x, y).item() == pytest.approx(expected, rel=1e-6)
    # class weights (per full class): the weighted mean of -log p, weights of the pixels' labels
    w = [0.2, 1.2, 5.0]
    weighted = (1.2 * -np.log(p[0, 1]) + 0.2 * -np.log(merged_bg[1])) / (1.2 + 0.2)
    assert TargetAdaptiveLoss([1], class_weights=w)(x, y).item() == pytest.approx(weighted, rel=1e-6)
    # the Dice term only on request
    merged = torch.tensor(np.stack([merged_bg, p[:, 1]], 0)[None, :, None, :], dtype=torch.float32)
    dice = soft_dice_loss(merged, y).item()
    assert TargetAdaptiveLoss([1], dice_weight=0.5)(x, y).item() == pytest.approx(expected + 0.5 * dice, rel=1e-6)
    # every class labelled: plain cross-entropy
    full = torch.tensor([[2, 0]])[:, None]
    assert TargetAdaptiveLoss([1, 2])(x, full).item() == pytest.approx(
        torch.nn.functional.cross_entropy(x, full).item(), rel=1e-6
    )


def test_deep_supervision_uses_the_given_weights_for_every_output():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6] = 1
    outs = [torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2)]
    ce = TargetAdaptiveLoss([1])
    small = [target, target[:, ::2, ::2], target[:, ::4, ::4]]
    expected = sum(ce(o, t) for o, t in zip(outs, small, strict=True))  # weight 1 each, the coarsest too
    assert DeepSupervisionLoss(ce, weights=[1, 1, 1])(outs, target).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="3 outputs"):
        DeepSupervisionLoss(ce, weights=[1, 1])(outs, target)


# ---------------------------------------------------------------------------- the network


def test_parameter_count_at_the_papers_settings():
    from liverctl.models.pipofan import PAPER_PARAMETERS, PIPOFAN, UNUSED_IN_AUTHORS_CODE, paper_parameter_count

    n = paper_parameter_count()
    print(f"PIPO-FAN parameters at the paper's settings: {n:,}")
    assert n == 27_907_101  # measured, as the module's docstring says
    # Table I's 28,270,986 = ours + the 1x1 bridges the authors' code builds but never calls - the fusion block
    with torch.device("meta"):
        fusion = sum(p.numel() for p in PIPOFAN().scorer.parameters())
    assert fusion == 19 and n + UNUSED_IN_AUTHORS_CODE - fusion == PAPER_PARAMETERS == 28_270_986
    assert paper_parameter_count(input_merge="sum") == 23_644_573  # summing halves the merged blocks' inputs
    with torch.device("meta"):
        net = PIPOFAN()
    # one input convolution, shared by the five scales
    first = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels == 3]
    assert len(first) == 1 and first[0] is net.stem[0]
    # equal convolutional depth: scale s has s - 1 residual blocks after the shared stem
    assert [len(p) for p in net.side_paths] == [0, 1, 2, 3]


def test_input_merge_sum_adds_the_scales_features():
    from liverctl.models import build_model

    torch.manual_seed(0)
    net = build_model("pipofan", input_merge="sum", **TINY).eval()
    # the level-1 block takes f[0] channels (a sum), not 2 * f[0] (a concatenation)
    assert net.encoder[0].body[0].num_features == net.features[0]
    assert net(torch.randn(1, 3, 16, 16)).shape == (1, 2, 16, 16)
    with pytest.raises(ConfigError, match="input_merge"):
        build_model("pipofan", input_merge="max")


# ---------------------------------------------------------------------------- the schedule


def test_phases_and_learning_rates_known_answers():
    assert phase_lengths(cfg(epochs=5)) == (3, 2)  # multi-organ: 2000 of 4000 epochs deep supervision
    assert phase_lengths(cfg(epochs=10), "one organ") == (8, 2)  # one organ: 2000 of 2500
    assert phase_lengths(cfg(epochs=1), "one organ") == (1, 0)
    assert phase_lengths(cfg(epochs=5, stage_iterations=(4, 1))) == (4, 1)
    with pytest.raises(ConfigError, match="add up"):
        phase_lengths(cfg(epochs=5, stage_iterations=(2, 1)))
    assert phase_lr(2e-3, 0, 10) == 2e-3
    assert phase_lr(2e-3, 399, 10) == 2e-3  # epoch 39
    assert phase_lr(2e-3, 400, 10) == pytest.approx(2e-3 * 0.99)  # epoch 40
    assert phase_lr(2e-4, 800, 10) == pytest.approx(2e-4 * 0.99**2)
    with pytest.raises(ConfigError, match="rmsprop"):
        TrainConfig(optimizer="rmsprop")
    assert TrainConfig(method="pipofan", optimizer="rmsprop").optimizer == "rmsprop"


def test_optimizers_class_weights_and_learning_rates_of_the_recipe():
    from liverctl.models import build_model
    from liverctl.training.recipes.pipofan import _class_weights, _Optimizers

    net = build_model("pipofan", **TINY)
    default = _Optimizers(net, cfg(), None)
    assert isinstance(default.optimizer, torch.optim.RMSprop)
    assert default.optimizer.defaults["momentum"] == 0.9 and default.optimizer.defaults["lr"] == 2e-3
    assert _Optimizers(net, cfg(), None, 2e-4).use(2).defaults["lr"] == 2e-4  # the protocol's lr in both phases
    phase2 = default.use(2)
    assert {id(p) for g in phase2.param_groups for p in g["params"]} == {id(p) for p in net.scorer.parameters()}
    assert isinstance(_Optimizers(net, cfg(optimizer="adam"), None).optimizer, torch.optim.Adam)
    assert isinstance(_Optimizers(net, cfg(optimizer="sgd"), None).optimizer, torch.optim.SGD)

    class Two:
        n_classes, labels = 2, {"background": 0, "liver": 1}

    class Three:
        n_classes, labels = 3, {"background": 0, "liver": 1, "spleen": 2}

    assert _class_weights(cfg(), Two()) == [0.2, 1.2]  # the authors' two-class weights
    assert _class_weights(cfg(), Three()) == [1.0, 1.0, 1.0]
    assert _class_weights(cfg(class_weights=[1, 2, 3]), Three()) == [1.0, 2.0, 3.0]
    with pytest.raises(ConfigError, match="class weights"):
        _class_weights(cfg(class_weights=[1, 2]), Three())


def test_slice_batch_gives_each_inner_slice_its_true_neighbours():
    x = torch.arange(2 * 5 * 2 * 2, dtype=torch.float32).reshape(2, 1, 5, 2, 2)
    y = torch.arange(2 * 5 * 2 * 2).reshape(2, 5, 2, 2)
    stacks, labels, d = slice_batch(x, y, torch.tensor([0, 1]), 1)
    assert stacks.shape == (6, 3, 2, 2) and labels.shape == (6, 2, 2)
    assert torch.equal(stacks[4], x[1, 0, 1:4])  # volume 1, inner slice 2: slices 1, 2, 3
    assert torch.equal(labels[4], y[1, 2])
    assert d.tolist() == [0, 0, 0, 1, 1, 1]


def test_phase_two_moves_only_the_fusion(tmp_path):
    from liverctl.models import build_model

    data = make_dataset(2, shape=(6, 16, 16))
    torch.manual_seed(3)
    init = build_model("pipofan", in_channels=1, out_channels=2, **TINY).state_dict()
    one = train_pipofan([data], tmp_path / "p1", cfg(epochs=1, stage_iterations=(1, 0)))
    two = train_pipofan([data], tmp_path / "p2", cfg(epochs=2, stage_iterations=(1, 1)))
    s0, s1, s2 = init, one.model.state_dict(), two.model.state_dict()

    def split(sd):
        return {k: v for k, v in sd.items() if k.startswith("scorer.")}, {
            k: v for k, v in sd.items() if not k.startswith("scorer.")
        }

    (f0, r0), (f1, r1), (f2, r2) = split(s0), split(s1), split(s2)
    # phase 1 (deep pyramid supervision) trains the network, not the fusion
    assert not all(torch.equal(r0[k], r1[k]) for k in r0)
    assert all(torch.equal(f0[k], f1[k]) for k in f0)
    # phase 2: every other parameter and buffer bit-identical, the fusion moved
    assert all(torch.equal(r1[k], r2[k]) for k in r1)
    assert not all(torch.equal(f1[k], f2[k]) for k in f1)
    rows = (tmp_path / "p2" / "train_log.csv").read_text().splitlines()
    assert rows[0].split(",")[-3:] == ["phase", "loss_pyramid", "loss_fused"]
    assert [r.split(",")[4] for r in rows[1:]] == ["0.002", "0.002"]  # one organ: RMSprop at 0.002 in both phases
    assert two.selected_epoch == 2 and two.model_selection == "final"


def test_resume_is_exact_across_the_phases(tmp_path):
    data = make_dataset(2, shape=(6, 16, 16))
    config = cfg(epochs=4, stage_iterations=(3, 1))
    full = train_pipofan([data], tmp_path / "full", config)

    class Stop(Exception):
        pass

    def stop_in_epoch_two(desc, done, total):
        if desc == "training" and done == 2:
            raise Stop

    with pytest.raises(Stop):
        train_pipofan([data], tmp_path / "resumed", config, progress=stop_in_epoch_two)
    # resumed in phase 1 (its RMSprop state restored), then through phase 2
    resumed = train_pipofan([data], tmp_path / "resumed", TrainConfig(device="cpu"), resume=True)
    assert resumed.iterations == 4
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_partially_labelled_datasets_train_one_network_over_the_union(tmp_path):
    liver = make_dataset(2, shape=(4, 16, 16), name="liver")
    spleen = make_dataset(2, shape=(4, 16, 16), seed=1, name="spleen", organ="spleen")
    result = train([liver, spleen], tmp_path / "u", cfg(epochs=2, lr=1e-3))
    import tomllib

    entry = tomllib.loads(result.toml_path.read_text())["models"]["u"]
    assert entry["labels"] == {"liver": 1, "spleen": 2} and entry["n_classes"] == 3
    assert all(np.isfinite(result.train_losses))
    rows = (tmp_path / "u" / "train_log.csv").read_text().splitlines()[1:]
    assert [r.split(",")[4] for r in rows] == ["0.001", "0.001"]  # --lr, in both phases
    saved = json.loads((tmp_path / "u" / "config.json").read_text())
    assert (saved["protocol"], saved["learning_rate"], saved["class_weights"]) == ("multi-organ", 1e-3, [1.0] * 3)


def test_patch_checks_are_2d():
    from liverctl.errors import ConfigError as CE

    data = make_dataset(2, shape=(5, 16, 16))
    with pytest.raises(CE, match="x and y must be multiples of 4"):
        train_pipofan([data], "/nonexistent/never-written", cfg(epochs=1, patch_size=(1, 18, 16)))
    with pytest.raises(CE, match="2D network"):
        train([data], "/nonexistent/never-written", TrainConfig(architecture="pipofan", patch_size=(1, 16, 16)))


# ---------------------------------------------------------------------------- end to end


def test_cli_train_pipofan_with_validation_then_predict(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from liverctl.cli import app
    from liverctl.io import read_image, write_image
    from liverctl.phantoms import make_phantom
    from liverctl.preprocessing import preprocess

    for i in range(3):
        ct, lab = make_phantom(domain="contrast", seed=2, case=i, shape=(12, 32, 32), spacing=(10.0, 10.0, 12.0))
        write_image(ct, tmp_path / "raw" / "imagesTr" / f"ph_{i}_0000.nii.gz")
        write_image(lab.with_array((lab.array > 0).astype(np.uint8)), tmp_path / "raw" / "labelsTr" / f"ph_{i}.nii.gz")
    preprocess(tmp_path / "raw", tmp_path / "prep", target_spacing=(10.0, 10.0, 12.0), window="pipofan", crop=False)
    monkeypatch.setenv("LIVERCTL_NO_PROGRESS", "1")
    run = tmp_path / "run"
    args = ["train", str(tmp_path / "prep"), "-o", str(run), "--method", "pipofan", "--arch-kwargs", json.dumps(TINY)]
    args += ["--patch", "32,32,1", "--epochs", "2", "--iterations-per-epoch", "1", "--stage-iterations", "1,1"]
    args += ["--folds", "3", "--val-every", "1", "--device", "cpu", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["last_val_dice"] is not None and summary["iterations"] == 2
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["method"] == "pipofan" and saved["phase_lengths"] == [1, 1]
    scan = tmp_path / "raw" / "imagesTr" / "ph_0_0000.nii.gz"
    out = tmp_path / "pred" / "ph_0.nii.gz"
    pred = ["predict", str(scan), "-o", str(out), "--weights", str(run / "model.safetensors"), "--device", "cpu"]
    result = CliRunner().invoke(app, pred)
    assert result.exit_code == 0, result.output
    mask, image = read_image(out), read_image(scan)
    assert mask.array.shape == image.array.shape
    assert np.allclose(mask.geometry.spacing, image.geometry.spacing)
    assert set(np.unique(mask.array).tolist()) <= {0, 1}
    # three copies of the model voting: the single model's mask; the option reaches the engine
    voted = tmp_path / "pred" / "ph_0_vote.nii.gz"
    weights = ["--weights", str(run / "model.safetensors")] * 3
    result = CliRunner().invoke(app, ["predict", str(scan), "-o", str(voted), *weights, "--ensemble", "vote"])
    assert result.exit_code == 0, result.output
    assert np.array_equal(read_image(voted).array, mask.array)
    from liverctl.predict import LiverModel, PredictOptions

    loaded = LiverModel.load(weights=[run / "model.safetensors"] * 3, device="cpu")
    assert loaded.window_config(PredictOptions(ensemble="vote")).ensemble == "vote"
    result = CliRunner().invoke(app, ["predict", str(scan), "-o", str(voted), *weights, "--ensemble", "median"])
    assert result.exit_code != 0 and "--ensemble must be mean or vote" in result.output
