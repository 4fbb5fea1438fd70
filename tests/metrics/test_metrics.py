"""liverctl.metrics: agreement with MedPy and MONAI, hand-computed answers, empty masks, properties."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi

from liverctl import metrics as M
from liverctl.errors import ConfigError, GeometryError
from liverctl.io import read_label

medpy_binary = pytest.importorskip("medpy.metric.binary")
_medpy_surface = getattr(medpy_binary, "__surface_distances")

RTOL = 1e-6


def _medpy_all(pred: np.ndarray, ref: np.ndarray, spacing, connectivity: int = 1) -> dict[str, float]:
    """MedPy's values for every metric it has (RMSD from its own surface distance lists)."""
    d1 = _medpy_surface(pred, ref, spacing, connectivity)
    d2 = _medpy_surface(ref, pred, spacing, connectivity)
    pooled = np.hstack((d1, d2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": medpy_binary.dc(pred, ref),
            "jaccard": medpy_binary.jc(pred, ref),
            "rvd": medpy_binary.ravd(pred, ref),
            "sensitivity": medpy_binary.sensitivity(pred, ref),
            "specificity": medpy_binary.specificity(pred, ref),
            "precision": medpy_binary.precision(pred, ref),
            "hd": medpy_binary.hd(pred, ref, spacing, connectivity),
            "hd95": medpy_binary.hd95(pred, ref, spacing, connectivity),
            "assd": medpy_binary.assd(pred, ref, spacing, connectivity),
            "rmsd": float(np.sqrt(np.mean(pooled**2))),
        }


def _assert_medpy(pred: np.ndarray, ref: np.ndarray, spacing, surface: str = "medpy") -> M.PairMetrics:
    ours = M.compute_metrics(pred, ref, spacing, surface=surface)
    expected = _medpy_all(pred, ref, spacing, 1 if surface == "medpy" else 2)
    if not (~np.asarray(ref, bool)).any():
        # no background in the reference: specificity is 0/0, MedPy's except-branch says 0, liverctl says 1
        del expected["specificity"]
        assert ours.specificity == 1.0
    for name, value in expected.items():
        assert getattr(ours, name) == pytest.approx(value, rel=RTOL, abs=1e-12), name
    return ours


def _ellipsoid(shape, centre, radii_mm, spacing) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    total = sum(((g * s - c) / r) ** 2 for g, s, c, r in zip(grids, spacing, centre, radii_mm, strict=True))
    return total <= 1.0


# --------------------------------------------------------------------------- real scans


@pytest.fixture(scope="module")
def liver(liver_path):
    return read_label(liver_path)


def test_medpy_agreement_on_real_liver_eroded_and_shifted(liver) -> None:
    ref = liver.array == 1
    sp = liver.spacing_zyx  # float32 values from the NIfTI header, as MedPy would get them
    eroded = ndi.binary_erosion(ref, iterations=2)
    shifted = np.roll(ref, (1, 2, -3), axis=(0, 1, 2))
    for pred in (eroded, shifted):
        m = _assert_medpy(pred, ref, sp)
        assert 0.5 < m.dice < 1.0 and m.hd > 0
    # the LiTS (18-connected) border equals MedPy with connectivity=2
    _assert_medpy(shifted, ref, sp, surface="lits")
    # the liver touches the first and last slice: the border there counts (border_value=0)
    assert ref[0].any() and ref[-1].any()


def test_medpy_agreement_liver_vs_multiorgan_liver_label(liver, multiorgan_path) -> None:
    multi = read_label(multiorgan_path)
    assert multi.geometry.mismatch(liver.geometry) is None
    pred, ref = liver.array == 1, multi.array == 5
    m = _assert_medpy(pred, ref, liver.spacing_zyx)
    assert 0.9 < m.dice < 1.0
    # label_metrics on the label maps gives the same numbers as the binary masks
    per = M.label_metrics(np.where(liver.array == 1, 5, 0).astype(np.uint8), multi.array, liver.spacing_zyx, [5])
    assert per[5] == m


@pytest.mark.slow
def test_monai_directed_max_hd95_and_assd(liver) -> None:
    monai = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    ref = liver.array == 1
    pred = np.roll(ndi.binary_dilation(ref), (0, 3, 1), axis=(0, 1, 2))
    sp = list(liver.spacing_zyx)
    yp, yt = torch.from_numpy(pred[None, None]), torch.from_numpy(ref[None, None])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd95_monai = monai.compute_hausdorff_distance(yp, yt, include_background=True, percentile=95, spacing=sp)
        hd_monai = monai.compute_hausdorff_distance(yp, yt, include_background=True, spacing=sp)
        assd_monai = monai.compute_average_surface_distance(yp, yt, include_background=True, symmetric=True, spacing=sp)
    ours = M.compute_metrics(pred, ref, sp, hd95="directed-max")
    # MONAI computes in float32
    assert ours.hd95 == pytest.approx(hd95_monai.item(), rel=1e-5)
    assert ours.hd == pytest.approx(hd_monai.item(), rel=1e-5)
    assert ours.assd == pytest.approx(assd_monai.item(), rel=1e-5)
    pooled = M.compute_metrics(pred, ref, sp, hd95="pooled").hd95
    assert pooled != pytest.approx(ours.hd95, rel=1e-3)  # the two conventions really differ here


# --------------------------------------------------------------------------- synthetic, anisotropic


def test_medpy_agreement_synthetic_anisotropic() -> None:
    sp = (2.5, 0.7, 0.9)
    shape = (24, 60, 50)
    ref = _ellipsoid(shape, (30.0, 21.0, 22.0), (20.0, 15.0, 18.0), sp)
    pred = _ellipsoid(shape, (32.0, 20.0, 23.5), (18.0, 16.0, 17.0), sp)
    pred[2:5, 40:44, 5:9] = True  # a far false-positive component
    pred[:, :, -1] = pred[:, :, -2]  # touch the volume edge
    for surface in ("medpy", "lits"):
        _assert_medpy(pred, ref, sp, surface=surface)


def test_direction_and_origin_do_not_change_metrics(tmp_path) -> None:
    from liverctl.evaluation import evaluate_images
    from liverctl.io import Geometry, Image, write_mask

    sp_xyz = (0.7, 0.8, 2.5)
    shape = (20, 40, 36)
    sp_zyx = sp_xyz[::-1]
    ref = _ellipsoid(shape, (25.0, 16.0, 12.0), (18.0, 10.0, 9.0), sp_zyx).astype(np.uint8)
    pred = _ellipsoid(shape, (26.0, 15.0, 13.0), (16.0, 11.0, 9.5), sp_zyx).astype(np.uint8)
    c, s = math.cos(0.5), math.sin(0.5)
    oblique = (c, -s, 0.0, s * 0.8, c * 0.8, 0.6, -s * 0.6, -c * 0.6, 0.8)  # a rotation, no axis aligned
    assert np.allclose(np.asarray(oblique).reshape(3, 3) @ np.asarray(oblique).reshape(3, 3).T, np.eye(3))
    plain = Geometry(sp_xyz)
    tilted = Geometry(sp_xyz, (-120.5, 33.0, 871.25), oblique)
    a = evaluate_images(Image(pred, plain), Image(ref, plain)).rows[0].metrics
    b = evaluate_images(Image(pred, tilted), Image(ref, tilted)).rows[0].metrics
    assert a == b
    # through a file: the spacing comes back as float32 and still agrees with MedPy to 1e-6
    write_mask(pred, tilted, tmp_path / "p.nii.gz")
    write_mask(ref, tilted, tmp_path / "r.nii.gz")
    p_img, r_img = read_label(tmp_path / "p.nii.gz"), read_label(tmp_path / "r.nii.gz")
    m = _assert_medpy(p_img.array, r_img.array, p_img.spacing_zyx)
    for name in M.METRIC_NAMES:
        assert getattr(m, name) == pytest.approx(getattr(a, name), rel=RTOL), name


# --------------------------------------------------------------------------- known answers


def test_one_voxel_shift_of_a_cube_by_hand() -> None:
    sp = (2.5, 1.5, 0.8)  # x is the finest axis
    a = np.zeros((10, 10, 11), bool)
    a[2:8, 2:8, 2:8] = True  # 6x6x6 = 216 voxels, 152 on the border
    b = np.roll(a, 1, axis=2)  # shifted by one voxel along x
    m = M.compute_metrics(a, b, sp)
    assert m.dice == pytest.approx(2 * 180 / 432)
    assert m.jaccard == pytest.approx(180 / 252)
    assert m.voe == pytest.approx(1 - 180 / 252)
    assert m.rvd == 0.0
    assert m.pred_ml == pytest.approx(216 * 2.5 * 1.5 * 0.8 / 1000)
    # per direction: 36 voxels of the trailing face + 16 inner voxels of the leading face lie 0.8 mm away
    assert m.hd == pytest.approx(0.8)
    assert m.assd == pytest.approx(104 * 0.8 / 304)
    assert m.rmsd == pytest.approx(0.8 * math.sqrt(104 / 304))
    assert m.hd95 == pytest.approx(0.8)  # the 95th percentile lies among the 104 non-zero values
    d = M.surface_distances(a, b, sp)
    assert d.pred_to_ref.size == 152 and np.count_nonzero(d.pred_to_ref) == 52


def test_concentric_cubes_by_hand() -> None:
    inner = np.zeros((16, 16, 16), bool)
    inner[3:13, 3:13, 3:13] = True  # side 10
    outer = np.zeros_like(inner)
    outer[1:15, 1:15, 1:15] = True  # side 14, two voxels wider on every side
    d = M.surface_distances(inner, outer, 1.0)
    assert np.allclose(d.pred_to_ref, 2.0)  # every inner border voxel is 2 from the outer face
    assert d.ref_to_pred.max() == pytest.approx(2 * math.sqrt(3))  # outer corner to inner corner
    assert d.hd() == pytest.approx(2 * math.sqrt(3))
    assert M.dice(inner, outer) == pytest.approx(2 * 1000 / (1000 + 2744))
    assert M.sensitivity(inner, outer) == pytest.approx(1000 / 2744)
    assert M.precision(inner, outer) == 1.0
    assert M.specificity(inner, outer) == 1.0
    assert M.accuracy(inner, outer) == pytest.approx(1 - 1744 / 4096)
    assert M.volume_ml(outer, (2.0, 2.0, 2.0)) == pytest.approx(2744 * 8 / 1000)


def test_border_matches_scipy_erosion() -> None:
    rng = np.random.default_rng(0)
    mask = ndi.binary_opening(rng.random((12, 13, 14)) > 0.35)
    for surface, conn in (("medpy", 1), ("lits", 2)):
        expected = mask ^ ndi.binary_erosion(mask, ndi.generate_binary_structure(3, conn))
        assert np.array_equal(M.border(mask, surface), expected)
    assert M.border(mask, "lits").sum() > M.border(mask, "medpy").sum()


def test_rvd_sign_follows_prediction_minus_reference() -> None:
    small = np.zeros((5, 5, 5), bool)
    small[1:3, 1:3, 1:3] = True
    big = np.zeros_like(small)
    big[1:4, 1:4, 1:3] = True
    assert M.rvd(small, big) == pytest.approx((8 - 18) / 18)
    assert M.rvd(big, small) == pytest.approx((18 - 8) / 8)
    assert M.rvd(small, big) == pytest.approx(medpy_binary.ravd(small, big))


# --------------------------------------------------------------------------- empty masks


def test_empty_masks_have_documented_values_and_no_nan() -> None:
    empty = np.zeros((6, 6, 6), bool)
    some = empty.copy()
    some[2:4, 2:4, 2:4] = True
    both = M.compute_metrics(empty, empty, (1.0, 2.0, 3.0))
    assert both.empty == "both"
    assert (both.dice, both.jaccard, both.voe, both.rvd) == (1.0, 1.0, 0.0, 0.0)
    assert (both.assd, both.rmsd, both.hd, both.hd95) == (0.0, 0.0, 0.0, 0.0)
    assert (both.sensitivity, both.precision, both.specificity, both.accuracy) == (1.0, 1.0, 1.0, 1.0)

    no_pred = M.compute_metrics(empty, some, (1.0, 2.0, 3.0))
    assert no_pred.empty == "pred"
    assert (no_pred.dice, no_pred.jaccard, no_pred.voe, no_pred.rvd) == (0.0, 0.0, 1.0, -1.0)
    assert no_pred.hd == no_pred.hd95 == no_pred.assd == no_pred.rmsd == M.EMPTY_DISTANCE_MM
    assert (no_pred.sensitivity, no_pred.precision) == (0.0, 0.0)

    no_ref = M.compute_metrics(some, empty, (1.0, 2.0, 3.0), hd95="directed-max")
    assert no_ref.empty == "ref"
    assert no_ref.rvd == M.EMPTY_RVD and no_ref.dice == 0.0 and no_ref.hd95 == M.EMPTY_DISTANCE_MM
    assert (no_ref.sensitivity, no_ref.precision) == (0.0, 0.0)
    assert no_ref.specificity == pytest.approx(208 / 216)
    for m in (both, no_pred, no_ref):
        assert all(math.isfinite(v) for v in m.values().values())
    # MedPy raises on every surface metric of an empty mask: that is why the values are fixed here
    with pytest.raises(RuntimeError):
        medpy_binary.hd(empty, some)


def test_bad_arguments() -> None:
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(GeometryError):
        M.dice(a, np.zeros((4, 4, 5), bool))
    with pytest.raises(ConfigError):
        M.compute_metrics(a, a, surface="deepmind")
    with pytest.raises(ConfigError):
        M.compute_metrics(a, a, hd95="mean")
    with pytest.raises(GeometryError):
        M.compute_metrics(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(ConfigError):
        M.label_metrics(a.astype(np.uint8), a.astype(np.uint8), None, [0])


def test_label_metrics_many_labels_uses_same_values() -> None:
    rng = np.random.default_rng(3)
    pred = ndi.median_filter(rng.integers(0, 7, (14, 15, 16)).astype(np.uint8), 3)
    ref = ndi.median_filter(rng.integers(0, 7, (14, 15, 16)).astype(np.uint8), 3)
    sp = (2.0, 0.9, 0.8)
    many = M.label_metrics(pred, ref, sp, [1, 2, 3, 4, 5, 6, 9])  # > 4 labels: the find_objects path
    for lab in (1, 2, 3, 4, 5, 6, 9):
        assert many[lab] == M.compute_metrics(pred == lab, ref == lab, sp)
    assert many[9].empty == "both"
    present = (set(np.unique(pred).tolist()) | set(np.unique(ref).tolist())) - {0}
    assert sorted(M.label_metrics(pred, ref, sp)) == sorted(present)


# --------------------------------------------------------------------------- properties

masks = arrays(np.bool_, st.tuples(st.integers(2, 7), st.integers(2, 7), st.integers(2, 7)))
spacings = st.tuples(*(st.floats(0.3, 4.0, allow_nan=False) for _ in range(3)))


@st.composite
def mask_pairs(draw):
    a = draw(masks)
    b = draw(arrays(np.bool_, st.just(a.shape)))
    return a, b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=mask_pairs(), sp=spacings)
def test_properties(pair, sp) -> None:
    a, b = pair
    ab = M.compute_metrics(a, b, sp)
    ba = M.compute_metrics(b, a, sp)
    assert 0.0 <= ab.dice <= 1.0
    assert ab.dice == pytest.approx(ba.dice)
    assert ab.hd == pytest.approx(ba.hd) and ab.assd == pytest.approx(ba.assd) and ab.hd95 == pytest.approx(ba.hd95)
    assert ab.voe == pytest.approx(1.0 - ab.jaccard)
    assert ab.hd95 <= ab.hd + 1e-12 and ab.assd <= ab.rmsd + 1e-12 <= ab.hd + 2e-12
    if a.any() and b.any():
        assert np.sign(ab.rvd) == np.sign(a.sum() - b.sum())
        _assert_medpy(a, b, sp)  # masks touching the volume edge included
        _assert_medpy(a, b, sp, surface="lits")
    same = M.compute_metrics(a, a, sp)
    assert same.dice == 1.0 and same.hd == 0.0 and same.assd == 0.0 and same.hd95 == 0.0 and same.rvd == 0.0
    assert all(math.isfinite(v) for v in ab.values().values())
