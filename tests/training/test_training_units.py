"""Unit tests of liverctl.training: losses, samplers, patches, augmentation, folds, config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liverctl.errors import ConfigError
from liverctl.training.augmentation import (
    Augmentation,
    choose_center,
    extract_patch,
    foreground_coordinates,
    foreground_slots,
)
from liverctl.training.config import TrainConfig
from liverctl.training.data import kfold_split, plan_labels
from liverctl.training.export import toml_value
from liverctl.training.losses import (
    DeepSupervisionLoss,
    DiceCELoss,
    TargetAdaptiveLoss,
    consistency_mse,
    deep_supervision_weights,
    masked_mse,
    sharpen,
    soft_dice_loss,
)
from liverctl.training.recipes.he2021 import _poly_lr, _stop_rule
from liverctl.training.samplers import DOS, RS, RSD, make_sampler

# ----------------------------------------------------------------------------- losses


def test_perfect_prediction_gives_near_zero_loss():
    target = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    target[:, 1:3, 1:3, 1:3] = 1
    target[0, 0, 0, 0] = 2
    logits = 50.0 * torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float()
    assert DiceCELoss()(logits, target).item() < 1e-6


def test_dice_ce_matches_hand_computation():
    # one sample, two classes, four voxels (1x1x4 volume)
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0], [0.0, 1.0, 1.0, 1.0]]).reshape(1, 2, 1, 1, 4)
    target = torch.tensor([0, 1, 1, 0]).reshape(1, 1, 1, 4)
    l0 = np.array([2.0, 0.0, 1.0, -1.0])
    l1 = np.array([0.0, 1.0, 1.0, 1.0])
    p1 = np.exp(l1) / (np.exp(l0) + np.exp(l1))
    y = np.array([0, 1, 1, 0])
    ce = -np.mean(np.log(np.where(y == 1, p1, 1 - p1)))
    dice = (2 * np.sum(p1 * y) + 1e-5) / (np.sum(p1) + np.sum(y) + 1e-5)
    expected = ce + 1 - dice
    assert DiceCELoss()(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_dice_ce_agrees_with_monai():
    monai_losses = pytest.importorskip("monai.losses")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 5, 4, generator=gen)
    target = torch.randint(0, 3, (2, 1, 6, 5, 4), generator=gen)
    ref = monai_losses.DiceCELoss(
        include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5
    )(logits, target)
    assert DiceCELoss()(logits, target).item() == pytest.approx(ref.item(), rel=1e-5)


def test_tal_with_a_dice_term_equals_dice_ce_when_everything_is_labelled_and_merges_otherwise():
    # he2021's --loss tal: TAL's cross-entropy plus its optional Dice term (dice_weight=1)
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, 4, generator=gen)
    target = torch.randint(0, 3, (2, 4, 4, 4), generator=gen)
    assert TargetAdaptiveLoss([1, 2], dice_weight=1.0)(logits, target).item() == pytest.approx(
        DiceCELoss()(logits, target).item(), rel=1e-5
    )
    # only class 1 labelled: class-2 probability counts as background
    tgt = (target == 1).long()
    probs = logits.softmax(1)
    merged = torch.stack([probs[:, 0] + probs[:, 2], probs[:, 1]], 1)
    ce = torch.nn.functional.nll_loss(merged.log(), tgt)
    expected = ce + soft_dice_loss(merged, tgt)
    assert TargetAdaptiveLoss([1], dice_weight=1.0)(logits, tgt).item() == pytest.approx(expected.item(), rel=1e-5)
    assert TargetAdaptiveLoss([1])(logits, tgt).item() == pytest.approx(ce.item(), rel=1e-5)  # the paper: CE only


def test_deep_supervision_weights_and_loss():
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    target = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6, 2:6] = 1
    full = torch.randn(1, 2, 8, 8, 8)
    half = torch.randn(1, 2, 4, 4, 4)
    coarse = torch.randn(1, 2, 2, 2, 2)
    base = DiceCELoss()
    small_target = target[:, ::2, ::2, ::2]
    expected = (2 / 3) * base(full, target) + (1 / 3) * base(half, small_target)
    got = DeepSupervisionLoss(base)([full, half, coarse], target)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_sharpen_and_mse_terms():
    p = torch.tensor([0.5, 0.6, 0.2, 0.99])
    assert torch.allclose(sharpen(p, 1.0), p, atol=1e-6)
    expected = 0.6**10 / (0.6**10 + 0.4**10)
    assert sharpen(p, 0.1)[1].item() == pytest.approx(expected, rel=1e-5)
    assert sharpen(p, 0.1)[0].item() == pytest.approx(0.5)
    a = torch.tensor([0.0, 1.0, 2.0, 3.0])
    b = torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert masked_mse(a, b, torch.tensor([False, True, False, True])).item() == pytest.approx((1 + 4) / 2)
    assert masked_mse(a, b, torch.zeros(4, dtype=torch.bool)).item() == 0.0
    student = torch.tensor([0.5, 0.5])
    teacher = torch.tensor([0.6, 0.4])
    s = expected
    assert consistency_mse(student, teacher, 0.1).item() == pytest.approx(((0.5 - s) ** 2 + (0.5 - (1 - s)) ** 2) / 2)


# ----------------------------------------------------------------------------- samplers


def test_dos_is_round_robin_with_single_dataset_batches():
    sampler = DOS([3, 5, 2], batch_size=2)
    rng = np.random.default_rng(0)
    for g in range(30):
        plan = sampler(g, rng)
        assert plan.dataset_index == g % 3
        assert all(d == g % 3 and 0 <= c < [3, 5, 2][d] for d, c in plan.items)


def test_rsd_picks_datasets_in_proportion_to_their_size():
    sampler = RSD([10, 30], batch_size=2)
    counts = np.zeros(2)
    for g in range(4000):
        plan = sampler(g, np.random.default_rng([7, g]))
        assert {d for d, _ in plan.items} == {plan.dataset_index}
        counts[plan.dataset_index] += 1
    assert counts[1] / counts.sum() == pytest.approx(0.75, abs=0.03)


def test_rs_mixes_datasets_in_a_batch():
    sampler = RS([10, 10], batch_size=2)
    mixed = 0
    for g in range(4000):
        plan = sampler(g, np.random.default_rng([3, g]))
        ds = {d for d, _ in plan.items}
        assert plan.dataset_index == (next(iter(ds)) if len(ds) == 1 else None)
        mixed += len(ds) == 2
    assert mixed / 4000 == pytest.approx(0.5, abs=0.03)


def test_samplers_are_deterministic_and_validated():
    for name in ("dos", "rsd", "rs"):
        s = make_sampler(name, [4, 6], 3)
        assert s(5, np.random.default_rng([1, 5])) == s(5, np.random.default_rng([1, 5]))
    with pytest.raises(ConfigError, match="unknown sampler"):
        make_sampler("xyz", [1], 1)
    with pytest.raises(ConfigError, match="at least one training case"):
        make_sampler("dos", [3, 0], 2)


# ----------------------------------------------------------------------------- folds


def test_kfold_split_from_sorted_names():
    names = ["c", "a", "e", "b", "d"]
    assert kfold_split(names, 2, 0) == (["d", "e"], ["a", "b", "c"])
    assert kfold_split(names, 2, 1) == (["a", "b", "c"], ["d", "e"])
    vals = [kfold_split(names, 5, k)[1] for k in range(5)]
    assert vals == [["a"], ["b"], ["c"], ["d"], ["e"]]
    with pytest.raises(ConfigError, match="too few for 5-fold"):
        kfold_split(names[:4], 5, 0)


@given(n=st.integers(2, 40), k=st.integers(2, 6))
@settings(max_examples=40, deadline=None)
def test_kfold_partitions_cases(n, k):
    names = [f"case{i:03d}" for i in range(n)]
    if n < k:
        with pytest.raises(ConfigError):
            kfold_split(names, k, 0)
        return
    vals = [kfold_split(names, k, f) for f in range(k)]
    all_val = [v for _, fold in vals for v in fold]
    assert sorted(all_val) == names  # every case validated exactly once
    for tr, va in vals:
        assert not set(tr) & set(va) and len(tr) + len(va) == n
        assert max(len(v) for _, v in vals) - min(len(v) for _, v in vals) <= 1


def test_plan_labels_both_forms():
    assert plan_labels({"labels": {"background": 0, "liver": 1}}) == {"background": 0, "liver": 1}
    assert plan_labels({"labels": {"0": "background", "1": "liver", "2": "tumor"}}) == {
        "background": 0,
        "liver": 1,
        "tumor": 2,
    }


# ----------------------------------------------------------------------------- patches


def test_foreground_slots_follow_nnunet_rule():
    assert foreground_slots(2) == [False, True]
    assert foreground_slots(3) == [False, False, True]
    assert foreground_slots(1) == [False]
    assert foreground_slots(4, 0.5) == [False, False, True, True]


def test_extract_patch_shifts_inside_and_pads_small_axes():
    image = np.arange(10 * 20 * 30, dtype=np.float32).reshape(10, 20, 30)
    label = (image % 7 == 0).astype(np.uint8)
    img, lab = extract_patch(image, label, (0, 19, 15), (8, 8, 8))
    np.testing.assert_array_equal(img, image[0:8, 12:20, 11:19])
    np.testing.assert_array_equal(lab, label[0:8, 12:20, 11:19])
    img, lab = extract_patch(image, label, (5, 10, 10), (14, 8, 8))  # z: 10 < 14 -> pad 2 each side
    np.testing.assert_array_equal(img[2:12], image[:, 6:14, 6:14])
    assert (img[:2] == image[:, 6:14, 6:14].min()).all() and (lab[:2] == 0).all()


def test_foreground_centres_lie_on_foreground():
    label = np.zeros((20, 20, 20), np.uint8)
    label[3:5, 10:12, 7:9] = 1
    fg = foreground_coordinates(label)
    assert len(fg) == 8
    rng = np.random.default_rng(0)
    for _ in range(20):
        z, y, x = choose_center(label.shape, rng, fg)
        assert label[z, y, x] == 1
    assert len(foreground_coordinates(np.ones((30, 30, 30)), max_points=100)) == 100


# ----------------------------------------------------------------------------- augmentation


def _identity_params(**kw):
    p = {"scale": 1.0, "angles": (0.0, 0.0, 0.0), "elastic": None, "flips": (), "gamma": 1.0}
    p.update(kw)
    return p


def test_flips_are_exact():
    img = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(4, 5, 6)
    lab = (img.long() % 3).to(torch.int64)
    out_i, out_l = Augmentation.apply(img, lab, _identity_params(flips=(0, 2)))
    assert torch.equal(out_i, torch.flip(img, (0, 2)))
    assert torch.equal(out_l, torch.flip(lab, (0, 2)))


def test_scaling_of_a_coordinate_volume_is_known():
    # image value = z index; zoom by s about the centre: out(z) = c + (z - c) / s
    shape = (17, 9, 9)
    z = torch.arange(17, dtype=torch.float32)[:, None, None].expand(shape).clone()
    lab = torch.zeros(shape, dtype=torch.int64)
    s = 1.25
    out, _ = Augmentation.apply(z, lab, _identity_params(scale=s))
    c = 8.0
    expected = c + (torch.arange(17, dtype=torch.float32) - c) / s
    assert torch.allclose(out[:, 4, 4], expected, atol=1e-4)


def test_rotation_by_90_degrees_moves_coordinates():
    # in-plane rotation (about the z axis, angles[0]) by 90 degrees: value = x index becomes c +- (y - c)
    n = 9
    x = torch.arange(n, dtype=torch.float32)[None, None, :].expand(n, n, n).clone()
    lab = torch.zeros((n, n, n), dtype=torch.int64)
    out, _ = Augmentation.apply(x, lab, _identity_params(angles=(math.pi / 2, 0.0, 0.0)))
    col = out[4, :, 4] - 4
    ys = torch.arange(n, dtype=torch.float32) - 4
    assert torch.allclose(col.abs(), ys.abs(), atol=1e-4)
    assert torch.allclose(out[4, 4, :], torch.full((n,), 4.0), atol=1e-4)


def test_random_augmentation_keeps_labels_and_alignment():
    rng = np.random.default_rng(0)
    lab = torch.zeros((24, 24, 24), dtype=torch.int64)
    lab[4:14, 5:18, 6:16] = 1
    lab[14:20, 8:12, 10:20] = 2
    img = lab.float() * 100.0
    aug = Augmentation(p_scale=1.0, p_rotation=1.0, p_elastic=1.0, p_gamma=0.0)
    for _ in range(5):
        out_i, out_l = aug(img, lab, rng)
        assert out_i.shape == img.shape and out_l.shape == lab.shape
        assert set(out_l.unique().tolist()) <= {0, 1, 2}
        # the image (a copy of the label, resampled linearly) agrees with the label (nearest)
        agree = (torch.round(out_i / 100.0).long() == out_l).float().mean().item()
        assert agree > 0.95


def test_gamma_keeps_mean_and_std():
    img = torch.linspace(-2, 3, 1000).reshape(10, 10, 10)
    lab = torch.zeros((10, 10, 10), dtype=torch.int64)
    out, _ = Augmentation.apply(img, lab, _identity_params(gamma=1.4))
    assert out.mean().item() == pytest.approx(img.mean().item(), abs=1e-4)
    assert out.std().item() == pytest.approx(img.std().item(), rel=1e-4)
    assert not torch.allclose(out, img)


# ----------------------------------------------------------------------------- config, schedules


def test_config_validation_and_roundtrip():
    cfg = TrainConfig(patch_size=[64, 64, 64], folds=5, fold=4)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.initial_lr == 3e-4
    assert TrainConfig(optimizer="sgd").initial_lr == 1e-2
    assert TrainConfig(init_checkpoint="x.pt", finetune_lr=1e-6).initial_lr == 1e-6
    with pytest.raises(ConfigError, match=r"fold must be in 0\.\.1"):
        TrainConfig(folds=2, fold=2)
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ConfigError, match="unknown training options"):
        TrainConfig.from_dict({"bogus": 1})


def test_stop_rule_and_poly_schedule():
    cfg = TrainConfig(stop_window=3, stop_min_improvement=0.01)
    flat = [1.0, 0.5, 0.499, 0.498, 0.497]
    assert _stop_rule(flat, 1e-7, cfg)  # improved by 0.003 < 0.01 over the last 3 epochs, lr small
    assert not _stop_rule(flat, 1e-4, cfg)  # lr still large
    assert not _stop_rule([1.0, 0.9, 0.5, 0.4, 0.3], 1e-7, cfg)  # still improving
    assert not _stop_rule(flat[:3], 1e-7, cfg)  # not enough epochs
    poly = TrainConfig(scheduler="poly", optimizer="sgd", epochs=10)
    assert _poly_lr(poly, 0) == pytest.approx(1e-2)
    assert _poly_lr(poly, 5) == pytest.approx(1e-2 * 0.5**0.9)
    assert _poly_lr(poly, 10) == 0.0


def test_toml_values():
    import tomllib

    text = "a = " + toml_value({"x": [1, 2.5], "name": 'q"uote', "flag": True})
    assert tomllib.loads(text) == {"a": {"x": [1, 2.5], "name": 'q"uote', "flag": True}}
