"""liverctl.metrics.lesions: lesion detection (LiTS' merged-overlap Dice > 0.2) and tumour burden, known answers."""

from __future__ import annotations

import numpy as np
import pytest

from liverctl.errors import ConfigError
from liverctl.metrics.lesions import detect_lesions, pool, tumour_burden


def _box(a: np.ndarray, lo, hi) -> None:
    a[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True


def test_lesion_split_into_two_predicted_components_is_one_detection() -> None:
    ref = np.zeros((6, 20, 20), bool)
    _box(ref, (1, 2, 2), (5, 10, 12))  # 4 x 8 x 10 = 320 voxels
    pred = np.zeros_like(ref)
    _box(pred, (1, 2, 2), (5, 10, 6))  # 128 voxels
    _box(pred, (1, 2, 8), (5, 10, 12))  # 128 voxels, 2 columns of background apart
    det = detect_lesions(pred, ref)
    assert (det.n_ref, det.n_pred, det.tp, det.fp, det.fn) == (1, 2, 1, 0, 0)
    assert det.components == (2,) and det.pred_voxels == (256,) and det.ref_voxels == (320,)
    assert det.lesion_dice[0] == pytest.approx(2 * 256 / (320 + 256))
    assert det.recall() == det.precision() == det.f1() == 1.0


def test_weak_overlap_is_a_miss_and_a_false_positive() -> None:
    ref = np.zeros((4, 30, 30), bool)
    _box(ref, (0, 0, 0), (4, 10, 10))  # 400 voxels
    pred = np.zeros_like(ref)
    _box(pred, (0, 9, 0), (4, 30, 30))  # 4 x 21 x 30 = 2520 voxels, 40 inside the lesion
    det = detect_lesions(pred, ref)
    dice = 2 * 40 / (400 + 2520)
    assert dice < 0.2 and det.lesion_dice[0] == pytest.approx(dice)
    assert (det.tp, det.fp, det.fn) == (0, 1, 1) and det.detected == (False,)
    assert det.recall() == det.precision() == det.f1() == 0.0
    # the same overlap passes a lower threshold
    low = detect_lesions(pred, ref, min_dice=0.02)
    assert (low.tp, low.fp, low.fn) == (1, 0, 0)


def test_false_positive_and_missed_lesions_counted() -> None:
    ref = np.zeros((5, 40, 40), bool)
    _box(ref, (1, 1, 1), (4, 6, 6))  # found
    _box(ref, (1, 20, 20), (4, 24, 24))  # missed
    pred = np.zeros_like(ref)
    _box(pred, (1, 1, 1), (4, 6, 7))
    _box(pred, (1, 30, 2), (3, 33, 5))  # false positive, far from every lesion
    det = detect_lesions(pred, ref)
    assert (det.n_ref, det.n_pred, det.tp, det.fp, det.fn) == (2, 2, 1, 1, 1)
    assert det.lesion_dice[1] == 0.0 and det.components == (1, 0)
    assert det.recall() == 0.5 and det.precision() == 0.5 and det.f1() == pytest.approx(0.5)
    values = det.values()
    assert values["lesions_fp"] == 1.0 and values["lesion_f1"] == pytest.approx(0.5)


def test_empty_tumour_on_both_sides_and_one_side() -> None:
    empty = np.zeros((3, 8, 8), bool)
    det = detect_lesions(empty, empty)
    assert (det.n_ref, det.n_pred, det.tp, det.fp, det.fn) == (0, 0, 0, 0, 0)
    assert det.recall() == det.precision() == det.f1() == 1.0 and det.lesion_dice == ()
    blob = empty.copy()
    blob[1, 2:4, 2:4] = True
    only_pred = detect_lesions(blob, empty)
    assert (only_pred.fp, only_pred.recall(), only_pred.precision()) == (1, 0.0, 0.0)
    only_ref = detect_lesions(empty, blob)
    assert (only_ref.fn, only_ref.lesion_dice) == (1, (0.0,))


def test_connectivity_decides_what_one_lesion_is() -> None:
    ref = np.zeros((3, 5, 5), bool)
    ref[1, 1, 1] = ref[1, 2, 2] = True  # touching by an edge only
    assert detect_lesions(ref, ref, connectivity=26).n_ref == 1
    assert detect_lesions(ref, ref, connectivity=18).n_ref == 1
    assert detect_lesions(ref, ref, connectivity=6).n_ref == 2
    with pytest.raises(ConfigError):
        detect_lesions(ref, ref, connectivity=8)
    with pytest.raises(ConfigError):
        detect_lesions(ref, ref, min_dice=1.5)


def test_one_component_over_two_lesions() -> None:
    ref = np.zeros((3, 10, 20), bool)
    _box(ref, (0, 0, 0), (3, 10, 8))  # 240
    _box(ref, (0, 0, 10), (3, 10, 18))  # 240
    pred = np.zeros_like(ref)
    _box(pred, (0, 0, 0), (3, 10, 18))  # 540, covers both
    det = detect_lesions(pred, ref)
    assert det.lesion_dice == pytest.approx((2 * 240 / 780, 2 * 240 / 780))
    assert (det.tp, det.fp, det.fn) == (2, 0, 0)


def test_burden_and_pooling() -> None:
    assert tumour_burden(10, 100, 10) == pytest.approx(0.1)  # tumour inside the liver (LiTS 1+2)
    assert tumour_burden(10, 90, 0) == pytest.approx(0.1)  # tumour beside a liver that excludes it
    assert tumour_burden(0, 0, 0) == 0.0
    a = detect_lesions(np.ones((2, 2, 2), bool), np.ones((2, 2, 2), bool))
    b = detect_lesions(np.zeros((2, 2, 2), bool), np.ones((2, 2, 2), bool))
    pooled = pool([a, b]).as_dict()
    assert (pooled["lesions_tp"], pooled["lesions_fn"], pooled["lesions_fp"]) == (1, 1, 0)
    assert pooled["lesion_recall"] == 0.5 and pooled["lesion_precision"] == 1.0
    assert pooled["lesion_dice_mean"] == 0.5 and pooled["cases"] == 2
    assert np.isnan(pool([]).lesion_dice_mean)
