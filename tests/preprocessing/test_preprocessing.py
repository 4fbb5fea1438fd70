"""Preprocessing: resampling, orientation, intensity recipes, z-crop, fingerprint, plan, preprocess."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from liverctl import preprocessing as pp
from liverctl import spatial
from liverctl.errors import ConfigError, DatasetError, LiverctlWarning
from liverctl.io import Geometry, Image, read_image, read_label
from liverctl.preprocessing import fingerprinting

OBLIQUE = tuple(
    np.array([[math.cos(0.3), -math.sin(0.3), 0.0], [math.sin(0.3), math.cos(0.3), 0.0], [0.0, 0.0, -1.0]]).ravel()
)


# --------------------------------------------------------------------------- helpers


def write_case(
    root: Path,
    name: str,
    *,
    shape=(40, 24, 20),
    spacing=(2.0, 2.0, 2.5),
    liver_z=(10, 20),
    liver_mean=60.0,
    seed=0,
    layout="msd",
) -> None:
    """A synthetic CT case: body at 0 HU with noise, a liver block at ``liver_mean`` HU."""
    rng = np.random.default_rng(seed)
    array = rng.normal(0, 20, size=shape).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    z0, z1 = liver_z
    label[z0:z1, 6:18, 5:15] = 1
    array[label == 1] = (liver_mean + rng.normal(0, 10, size=int(label.sum()))).astype(np.int16)
    if z1 > z0:
        label[z0 + 2 : z0 + 4, 8:10, 8:10] = 2  # a "tumour" inside the liver
    geometry = Geometry(spacing, (10.0, -5.0, 3.0))
    img_dir, lab_dir = ("imagesTr", "labelsTr") if layout == "msd" else ("images", "labels")
    suffix = "_0000" if layout == "msd" else ""
    (root / img_dir).mkdir(parents=True, exist_ok=True)
    (root / lab_dir).mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(Image(array, geometry).to_sitk(), str(root / img_dir / f"{name}{suffix}.nii.gz"))
    sitk.WriteImage(Image(label, geometry).to_sitk(), str(root / lab_dir / f"{name}.nii.gz"))


def phys_ramp(shape, geometry: Geometry) -> Image:
    """An image whose value is the physical x + 2y - z coordinate of each voxel (a linear field)."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    p = geometry.index_to_physical(idx)
    return Image((p[..., 0] + 2 * p[..., 1] - p[..., 2]).astype(np.float32), geometry)


# --------------------------------------------------------------------------- resample


def test_resample_block_average_keeps_mass_and_centroid() -> None:
    array = np.zeros((40, 40, 40), np.float32)
    array[10:30, 12:28, 9:31] = 100.0
    image = Image(array, Geometry((1.0, 1.0, 1.0), (5.0, -7.0, 2.0)))
    out = spatial.resample(image, (2.0, 2.0, 2.0), interpolator="linear")
    assert out.shape == (20, 20, 20)
    assert out.array.dtype == np.float32
    # 1 mm -> 2 mm, centred grid: each output voxel centre lies at the centre of a 2x2x2 block
    expected = array.reshape(20, 2, 20, 2, 20, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(out.array, expected, atol=1e-4)
    assert out.array.sum() * 8 == pytest.approx(array.sum(), rel=1e-6)

    def centroid(img: Image) -> np.ndarray:
        idx = np.argwhere(img.array > 0)
        w = img.array[img.array > 0]
        return (img.geometry.index_to_physical(idx) * w[:, None]).sum(0) / w.sum()

    np.testing.assert_allclose(centroid(out), centroid(image), atol=1e-6)
    # field of view: same first-corner position (origin - half a voxel)
    np.testing.assert_allclose(np.asarray(out.geometry.origin) - 1.0, np.asarray(image.geometry.origin) - 0.5)


def test_resample_linear_field_reproduced_at_physical_points() -> None:
    """Linear interpolation reproduces a linear field exactly: checks origin/direction/spacing together."""
    geometry = Geometry((0.8, 0.9, 1.5), (12.0, -30.0, 7.5), OBLIQUE)
    image = phys_ramp((30, 28, 26), geometry)
    out = spatial.resample(image, (1.7, 1.1, 2.3), interpolator="linear")
    assert out.geometry.direction == geometry.direction
    assert out.geometry.spacing == (1.7, 1.1, 2.3)
    truth = phys_ramp(out.shape, out.geometry).array
    inner = (slice(1, -1),) * 3  # border voxels may lie just outside the input's voxel centres
    np.testing.assert_allclose(out.array[inner], truth[inner], atol=1e-3)


def test_resample_same_spacing_is_identity_and_round_trip() -> None:
    geometry = Geometry((1.0, 1.0, 2.0), (1.0, 2.0, 3.0), OBLIQUE)
    rng = np.random.default_rng(1)
    image = Image(rng.integers(-100, 100, size=(12, 10, 8)).astype(np.int16), geometry)
    same = spatial.resample(image, geometry.spacing, interpolator="nearest")
    assert same.geometry.mismatch(geometry) is None
    np.testing.assert_array_equal(same.array, image.array)
    assert same.array.dtype == np.int16
    # a smooth field survives a down/up round trip in the interior
    smooth = phys_ramp((24, 20, 18), geometry)
    down = spatial.resample(smooth, (2.0, 2.0, 3.0))
    back = spatial.resample_to_reference(down, smooth)
    assert back.shape == smooth.shape and back.geometry.mismatch(geometry) is None
    inner = (slice(3, -3),) * 3
    np.testing.assert_allclose(back.array[inner], smooth.array[inner], atol=1e-3)


def test_resample_to_reference_needs_shape_with_geometry() -> None:
    image = Image(np.zeros((4, 4, 4), np.float32), Geometry((1, 1, 1)))
    with pytest.raises(ConfigError, match="shape"):
        spatial.resample_to_reference(image, Geometry((2, 2, 2)))
    out = spatial.resample_to_reference(image, Geometry((2, 2, 2)), (2, 3, 4))
    assert out.shape == (2, 3, 4)


@settings(max_examples=25, deadline=None)
@given(
    spacing=st.tuples(*[st.floats(0.4, 4.0)] * 3),
    seed=st.integers(0, 1000),
)
def test_nearest_keeps_only_existing_labels(spacing, seed) -> None:
    rng = np.random.default_rng(seed)
    label = Image(rng.choice(np.array([0, 3, 7], np.uint8), size=(9, 8, 7)), Geometry((1.0, 1.2, 1.5)))
    out = spatial.resample(label, spacing, interpolator="nearest")
    assert out.array.dtype == np.uint8
    assert set(np.unique(out.array)) <= {0, 3, 7}
    expected = [
        max(1, math.floor(n * s / t + 0.5)) for n, s, t in zip((7, 8, 9), (1.0, 1.2, 1.5), spacing, strict=True)
    ]
    assert out.shape == tuple(expected[::-1])


def test_interpolator_names() -> None:
    assert [spatial.interpolation_order(v) for v in ("nearest", "linear", "bspline", "3", 1)] == [0, 1, 3, 3, 1]
    with pytest.raises(ConfigError):
        spatial.interpolation_order("cubic-ish")
    with pytest.raises(ConfigError):
        spatial.interpolation_order(2)


# --------------------------------------------------------------------------- orientation


def test_reorient_ras_lps_round_trip_on_real_scan(ct_path: Path) -> None:
    ct = read_image(ct_path)
    assert spatial.orientation_of(ct) == "RAS"
    lps = spatial.reorient(ct, "LPS")
    assert spatial.orientation_of(lps) == "LPS"
    np.testing.assert_allclose(lps.geometry.direction_matrix, np.eye(3), atol=1e-6)
    # the same physical point has the same value
    rng = np.random.default_rng(0)
    idx = rng.integers(0, ct.shape, size=(200, 3))
    points = ct.geometry.index_to_physical(idx)
    inv = np.linalg.inv(lps.geometry.direction_matrix * np.asarray(lps.geometry.spacing))
    idx_lps = np.rint((points - np.asarray(lps.geometry.origin)) @ inv.T).astype(int)[:, ::-1]
    np.testing.assert_array_equal(lps.array[tuple(idx_lps.T)], ct.array[tuple(idx.T)])
    back = spatial.reorient(lps, spatial.orientation_of(ct))
    np.testing.assert_array_equal(back.array, ct.array)
    assert back.geometry.mismatch(ct.geometry) is None
    with pytest.raises(ConfigError):
        spatial.reorient(ct, "RAR")


# --------------------------------------------------------------------------- intensities


def test_window_presets_clip() -> None:
    values = np.array([-1000, -200, -150, 0, 250, 300, 400, 500], np.int16).reshape(2, 2, 2)
    image = Image(values, Geometry((1, 1, 1)))
    flat = values.ravel().astype(np.float32)
    assert pp.window(image, "liver").array.ravel().tolist() == np.clip(flat, -200, 250).tolist()
    assert pp.window(image, "abdomen").array.ravel().tolist() == np.clip(flat, 0, 400).tolist()
    assert pp.window(image, "sdnet").array.ravel().tolist() == np.clip(flat, 0, 400).tolist()
    assert pp.window(image, "pipofan").array.ravel().tolist() == np.clip(flat, -200, 200).tolist()
    assert pp.window(image, "none").array.ravel().tolist() == flat.tolist()
    assert pp.window(image, "-10,20").array.min() == -10
    assert pp.window(image, "liver").array.dtype == np.float32
    assert pp.window_name("-10,20") == "-10,20" and pp.window_name("PIPOFAN") == "pipofan"
    for bad in ("soft", "20,10", "1,2,3"):
        with pytest.raises(ConfigError):
            pp.resolve_window(bad)


def test_zscore_and_errors() -> None:
    image = Image(np.arange(8, dtype=np.int16).reshape(2, 2, 2), Geometry((1, 1, 1)))
    out = pp.zscore(image, 3.5, 2.0)
    np.testing.assert_allclose(out.array.ravel(), (np.arange(8) - 3.5) / 2)
    with pytest.raises(ConfigError):
        pp.zscore(image, 0.0, 0.0)


# --------------------------------------------------------------------------- z-crop


def _label(nz: int, liver: tuple[int, int], spacing_z: float) -> tuple[Image, Image]:
    g = Geometry((1.0, 1.0, spacing_z), (0.0, 0.0, -50.0), OBLIQUE)
    lab = np.zeros((nz, 4, 4), np.uint8)
    lab[liver[0] : liver[1], 1:3, 1:3] = 1
    img = np.arange(nz * 16, dtype=np.int16).reshape(nz, 4, 4)
    return Image(img, g), Image(lab, g)


def test_liver_z_crop_margin_in_mm() -> None:
    # liver on slices 50..59, 2.5 mm slices, 60 mm margin = 24 slices
    image, label = _label(100, (50, 60), 2.5)
    cimg, _, (z0, z1) = pp.liver_z_crop(image, label, 60.0)
    assert (z0, z1) == (26, 84)
    assert cimg.shape == (58, 4, 4)
    np.testing.assert_array_equal(cimg.array, image.array[26:84])
    np.testing.assert_allclose(cimg.geometry.origin, image.geometry.index_to_physical(np.array([26, 0, 0])))
    # bounded by the volume on both sides
    image, label = _label(40, (5, 35), 2.5)
    assert pp.liver_z_crop(image, label, 60.0)[2] == (0, 40)
    # 10 mm at 3 mm slices: ceil(3.33) = 4 slices
    image, label = _label(40, (10, 20), 3.0)
    assert pp.liver_z_range(label, 10.0) == (6, 24)
    assert pp.liver_z_range(label, 9.0) == (7, 23)
    assert pp.liver_z_range(label, 0.0) == (10, 20)


def test_liver_z_crop_labels_and_no_liver() -> None:
    image, label = _label(30, (10, 12), 1.0)
    label.array[20, 0, 0] = 2
    assert pp.liver_z_range(label, 0.0) == (10, 21)  # default: every label >= 1
    assert pp.liver_z_range(label, 0.0, liver_labels=[1]) == (10, 12)
    empty = label.with_array(np.zeros_like(label.array))
    with pytest.warns(LiverctlWarning, match="no liver"):
        _, _, z = pp.liver_z_crop(image, empty, 60.0)
    assert z == (0, 30)


# --------------------------------------------------------------------------- target spacing


def test_128_median_rule_by_hand() -> None:
    spacings = [(1.0, 1.0, 2.0), (0.5, 0.5, 3.0), (1.0, 2.0, 4.0)]
    shapes = [(64, 128, 256), (128, 128, 128), (256, 64, 128)]
    # spacing that makes each case 128^3: s * n / 128 per axis (x, y, z)
    # case 1: (1*256, 1*128, 2*64)/128 = (2, 1, 1); case 2: (0.5, 0.5, 3); case 3: (1, 1, 8)
    assert pp.target_spacing(spacings, shapes, "128-median") == (1.0, 1.0, 3.0)
    assert pp.target_spacing(spacings, shapes, "median") == (1.0, 1.0, 3.0)
    spacings[2] = (1.0, 2.0, 2.5)  # case 3 -> (1, 1, 5); medians: x 1, y 1, z 3 vs plain median z 2.5
    assert pp.target_spacing(spacings, shapes, "128-median") == (1.0, 1.0, 3.0)
    assert pp.target_spacing(spacings, shapes, "median") == (1.0, 1.0, 2.5)
    assert pp.target_spacing(spacings, shapes, "1.5,1.5,2") == (1.5, 1.5, 2.0)
    assert pp.parse_spacing("3") == (3.0, 3.0, 3.0)
    with pytest.raises(ConfigError):
        pp.parse_spacing("fast")
    with pytest.raises(ConfigError):
        pp.parse_spacing("1,0,1")


# --------------------------------------------------------------------------- fingerprint / plan


@pytest.fixture
def synthetic_ds(tmp_path: Path) -> Path:
    root = tmp_path / "synth"
    write_case(root, "a", liver_mean=50, seed=1)
    write_case(root, "b", liver_mean=80, seed=2, liver_z=(4, 12), spacing=(1.5, 1.5, 3.0))
    write_case(root, "c", liver_mean=65, seed=3, shape=(30, 24, 20), liver_z=(20, 28))
    return root


def test_fingerprint_and_dataset_zscore(synthetic_ds: Path) -> None:
    fp = pp.fingerprint(synthetic_ds)
    assert [c.name for c in fp.cases] == ["a", "b", "c"]
    a = fp.cases[0]
    assert a.shape == (40, 24, 20) and a.spacing == (2.0, 2.0, 2.5)
    assert a.crop == (0, 40)  # 10..20 +- 24 slices, bounded
    assert fp.cases[2].crop == (0, 30)
    assert a.label_values == [0, 1, 2]
    assert a.liver_voxels == 10 * 12 * 10  # tumour voxels are liver region too
    stats = fp.liver_intensity()
    pooled = []
    for case in fp.cases:
        image = read_image(synthetic_ds / "imagesTr" / f"{case.name}_0000.nii.gz")
        label = read_label(synthetic_ds / "labelsTr" / f"{case.name}.nii.gz")
        pooled.append(pp.zscore(image, stats["mean"], stats["std"]).array[label.array > 0])
    pooled = np.concatenate(pooled).astype(np.float64)
    assert pooled.size == stats["n_voxels"]
    assert abs(pooled.mean()) < 1e-5 and pooled.std() == pytest.approx(1.0, abs=1e-5)
    raw = np.concatenate(
        [
            read_image(synthetic_ds / "imagesTr" / f"{n}_0000.nii.gz").array[
                read_label(synthetic_ds / "labelsTr" / f"{n}.nii.gz").array > 0
            ]
            for n in "abc"
        ]
    )
    # integer HU: the statistics come from exact histograms, with or without a window
    assert stats["p0.5"] == pytest.approx(np.percentile(raw, 0.5), abs=1e-9)
    assert stats["p99.5"] == pytest.approx(np.percentile(raw, 99.5), abs=1e-9)
    assert stats["mean"] == pytest.approx(raw.mean(), abs=1e-9) and stats["std"] == pytest.approx(raw.std())
    clipped = np.clip(raw.astype(np.float64), 0, 70)
    windowed = fp.liver_intensity((0, 70))
    assert windowed["mean"] == pytest.approx(clipped.mean(), abs=1e-9)
    assert windowed["std"] == pytest.approx(clipped.std(), abs=1e-9)
    assert windowed["p99.5"] == pytest.approx(np.percentile(clipped, 99.5)) and windowed["max"] == 70

    p = pp.plan(fp, target_spacing="median", window="liver", normalization="dataset")
    assert p.target_spacing == (2.0, 2.0, 2.5)
    assert p.window == (-200.0, 250.0) and p.window_name == "liver"
    assert p.mean == pytest.approx(np.clip(raw, -200, 250).mean(), abs=1e-9)
    assert pp.Plan.from_json(p.to_json()) == p
    assert p.differences(pp.Plan.from_json(p.to_json())) == []


def test_plan_without_liver_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "noliver"
    write_case(root, "a", liver_z=(0, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LiverctlWarning)
        fp = pp.fingerprint(root)
    with pytest.raises(DatasetError, match="normalization image"):
        pp.plan(fp, normalization="dataset")
    assert pp.plan(fp, normalization="image").mean is None


# --------------------------------------------------------------------------- preprocess


@pytest.fixture
def real_msd(tmp_path: Path, ct_path: Path, liver_path: Path) -> Path:
    """A 3-case MSD dataset made of z-crops of the real scan."""
    root = tmp_path / "Task99_Real"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    ct, liver = sitk.ReadImage(str(ct_path)), sitk.ReadImage(str(liver_path))
    for i, (a, b) in enumerate([(0, 30), (4, 26), (0, 18)]):
        sitk.WriteImage(ct[:, :, a:b], str(root / "imagesTr" / f"liver_{i}_0000.nii.gz"))
        sitk.WriteImage(liver[:, :, a:b], str(root / "labelsTr" / f"liver_{i}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"name": "RealCrops", "labels": {"0": "background", "1": "liver"}}))
    return root


def test_preprocess_outputs_resume_and_apply_plan(real_msd: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    res = pp.preprocess(real_msd, out, target_spacing="6,6,6", window="liver")
    assert res.processed == ["liver_0", "liver_1", "liver_2"] and res.skipped == []
    for name in ("fingerprint.json", "plan.json", "cases.json"):
        assert (out / name).is_file()
    plan = json.loads((out / "plan.json").read_text())
    assert plan["target_spacing"] == [6.0, 6.0, 6.0] and plan["window"] == [-200.0, 250.0]
    assert plan["dataset"] == "RealCrops" and plan["normalization"] == "dataset"
    assert plan["labels"] == {"background": 0, "liver": 1} and plan["liverctl_version"]
    cases = json.loads((out / "cases.json").read_text())
    assert [c["name"] for c in cases] == ["liver_0", "liver_1", "liver_2"]
    c0 = cases[0]
    # 122x101x30 voxels at 3 mm -> 61x51x15 at 6 mm (round(n * 3 / 6))
    assert c0["shape"] == [15, 51, 61] and c0["crop"] == [0, 30]
    assert c0["geometry"]["spacing"] == [6.0, 6.0, 6.0]
    assert c0["source_geometry"]["spacing"] == pytest.approx([3.0, 3.0, 3.0])
    img = np.load(out / "images" / "liver_0.npy")
    lab = np.load(out / "labels" / "liver_0.npy")
    assert img.dtype == np.float32 and lab.dtype == np.uint8 and img.shape == lab.shape == (15, 51, 61)
    assert c0["foreground_voxels"] == int(lab.sum())
    # the liver volume survives resampling (39,350 voxels of 27 mm3 = 1.06 L)
    assert int(lab.sum()) * 216 == pytest.approx(39350 * 27, rel=0.05)
    # liver intensities are z-scored with the dataset statistics: mean near 0 inside the liver (its
    # border voxels at 6 mm mix with fat and are excluded); the 2x downsampling averages the noise,
    # so the std falls below 1
    inner = ndimage.binary_erosion(lab > 0)
    assert abs(img[inner].mean()) < 0.2 and 0.3 < img[inner].std() < 1.0

    ds = pp.load_preprocessed(out)
    assert ds.names == ["liver_0", "liver_1", "liver_2"] and ds.plan == res.plan
    image, label = ds.load("liver_1")
    assert isinstance(image.array, np.memmap) and image.geometry.spacing == (6.0, 6.0, 6.0)
    assert label.geometry == image.geometry
    # apply_plan redoes the same recipe on the source scan
    source = read_image(real_msd / "imagesTr" / "liver_0_0000.nii.gz")
    np.testing.assert_array_equal(pp.apply_plan(source, ds.plan).array, img)

    # second run: nothing to do, no image is even read
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()}

    def boom(*args, **kwargs):
        raise AssertionError("read a case on a resumed run")

    # patch where they are looked up (the package's names are re-exports)
    monkeypatch.setattr("liverctl.preprocessing.fingerprinting.fingerprint_case", boom)
    monkeypatch.setattr("liverctl.preprocessing.dataset.preprocess_case", boom)
    monkeypatch.setattr("liverctl.preprocessing.dataset.read_case", boom)
    monkeypatch.setattr("liverctl.preprocessing.fingerprinting.read_case", boom)
    again = pp.preprocess(real_msd, out, target_spacing="6,6,6", window="liver")
    assert again.processed == [] and again.skipped == ["liver_0", "liver_1", "liver_2"]
    assert {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()} == mtimes
    monkeypatch.undo()

    # an interrupted run resumes: only the missing case is redone
    (out / "cases" / "liver_2.json").unlink()
    third = pp.preprocess(real_msd, out, target_spacing="6,6,6", window="liver")
    assert third.processed == ["liver_2"]
    # a source file rewritten since (same content here, so the same plan) is redone too
    label_1 = real_msd / "labelsTr" / "liver_1.nii.gz"
    label_1.write_bytes(label_1.read_bytes() + b"")
    os.utime(label_1, ns=(1, 1))
    fourth = pp.preprocess(real_msd, out, target_spacing="6,6,6", window="liver")
    assert fourth.processed == ["liver_1"]

    with pytest.raises(ConfigError, match=r"another plan .*window"):
        pp.preprocess(real_msd, out, target_spacing="6,6,6", window="abdomen")
    over = pp.preprocess(real_msd, out, target_spacing="6,6,6", window="abdomen", overwrite=True)
    assert len(over.processed) == 3 and pp.load_preprocessed(out).plan.window == (0.0, 400.0)


@pytest.mark.slow
def test_workers_2_equals_workers_1(real_msd: Path, tmp_path: Path) -> None:
    one = pp.preprocess(real_msd, tmp_path / "w1", target_spacing="128-median", normalization="image")
    two = pp.preprocess(real_msd, tmp_path / "w2", target_spacing="128-median", normalization="image", workers=2)
    assert one.plan == two.plan
    # 128-median rule on the crops: x 122*3/128, y 101*3/128, z median of (30, 22, 18)*3/128
    assert one.plan.target_spacing == pytest.approx((122 * 3 / 128, 101 * 3 / 128, 22 * 3 / 128))
    for name in ("liver_0", "liver_1", "liver_2"):
        for sub in ("images", "labels"):
            a = np.load(tmp_path / "w1" / sub / f"{name}.npy")
            b = np.load(tmp_path / "w2" / sub / f"{name}.npy")
            assert a.shape == (128, 128, 128) or name != "liver_1"
            np.testing.assert_array_equal(a, b)
    # the output folder's own name differs, nothing else (pytest-xdist's tmp paths hold "gw1" too)
    assert (tmp_path / "w1" / "cases.json").read_text().replace(str(tmp_path / "w1"), str(tmp_path / "w2")) == (
        tmp_path / "w2" / "cases.json"
    ).read_text()


def test_preprocess_no_crop_and_liver_labels(synthetic_ds: Path, tmp_path: Path) -> None:
    res = pp.preprocess(synthetic_ds, tmp_path / "o", target_spacing="median", crop=False, liver_labels=[1])
    assert res.plan.crop is False and res.plan.liver_labels == [1]
    # no dataset.json: label 2 found in the maps is recorded under a generic name
    assert res.plan.labels == {"background": 0, "liver": 1, "label_2": 2}
    assert [c["crop"] for c in res.cases] == [[0, 40], [0, 40], [0, 30]]
    lab = np.load(tmp_path / "o" / "labels" / "a.npy")
    assert set(np.unique(lab)) == {0, 1, 2}
    assert res.cases[0]["foreground_voxels"] == int((lab == 1).sum())
    res2 = pp.preprocess(synthetic_ds, tmp_path / "o2", target_spacing="median", crop_margin_mm=5)
    # case b: liver slices 4..11, 3 mm slices, 5 mm -> 2 slices
    assert res2.cases[1]["crop"] == [2, 14]


def test_preprocess_refuses_to_write_into_input(synthetic_ds: Path) -> None:
    from liverctl.errors import InputError

    with pytest.raises(InputError, match="input dataset"):
        pp.preprocess(synthetic_ds, synthetic_ds)
    with pytest.raises(InputError, match="input dataset"):
        pp.preprocess(synthetic_ds, synthetic_ds / "imagesTr")


def test_truncated_nifti_is_detected(tmp_path: Path, ct_path: Path) -> None:
    from liverctl.errors import InputError
    from liverctl.io.nifti import check_complete

    image = sitk.ReadImage(str(ct_path))
    sitk.WriteImage(image, str(tmp_path / "full.nii"))
    check_complete(tmp_path / "full.nii")
    check_complete(ct_path)
    data = (tmp_path / "full.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[: len(data) - 1000])
    with pytest.raises(InputError, match=f"truncated file \\({len(data) - 1000} of {len(data)} bytes"):
        check_complete(tmp_path / "cut.nii")
    gz = Path(ct_path).read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        check_complete(tmp_path / "cut.nii.gz")


@settings(max_examples=30, deadline=None)
@given(
    parts=st.lists(st.lists(st.integers(-1024, 3000), min_size=1, max_size=60), min_size=1, max_size=4),
    q=st.floats(0, 100),
)
def test_histogram_statistics_match_numpy(parts, q) -> None:
    hists = [np.concatenate([[min(p)], np.bincount(np.asarray(p) - min(p))]) for p in parts]
    values, counts = fingerprinting._merge_histograms(hists)
    pooled = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])
    assert counts.sum() == pooled.size
    assert fingerprinting._hist_percentile(values, counts, q) == pytest.approx(np.percentile(pooled, q), abs=1e-6)
    assert np.dot(values, counts) / pooled.size == pytest.approx(pooled.mean())


def _oblique(spacing, origin, angle: float) -> Geometry:
    c, s = math.cos(angle), math.sin(angle)
    return Geometry(spacing, origin, (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))


def test_physical_to_index_inverts_index_to_physical() -> None:
    g = _oblique((0.7, 0.9, 2.5), (-120.0, 33.0, 871.0), 0.3)
    idx = np.random.default_rng(0).uniform(-5, 50, size=(20, 3))
    np.testing.assert_allclose(g.physical_to_index(g.index_to_physical(idx)), idx, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(
    corner=st.tuples(st.integers(0, 14), st.integers(0, 14), st.integers(0, 14)),
    size=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
    angle=st.floats(-0.6, 0.6),
    nearest=st.booleans(),
)
def test_resampling_only_the_support_gives_the_same_image(corner, size, angle, nearest) -> None:
    src = np.zeros((20, 20, 20), np.float32)
    src[tuple(slice(c, c + n) for c, n in zip(corner, size, strict=True))] = 1.0
    image = Image(src, _oblique((3.0, 3.0, 3.0), (-30.0, -25.0, -20.0), angle))
    ref_geometry, ref_shape = Geometry((0.8, 0.9, 1.5), (-40.0, -40.0, -30.0)), (60, 90, 90)
    kind = "nearest" if nearest else "linear"
    full = spatial.resample_to_reference(image, ref_geometry, ref_shape, interpolator=kind, default_value=0.0)
    part = spatial.resample_to_reference(
        image, ref_geometry, ref_shape, interpolator=kind, default_value=0.0, support_only=True
    )
    assert part.geometry == full.geometry and part.array.dtype == full.array.dtype
    np.testing.assert_allclose(part.array, full.array, atol=1e-6, rtol=0)


def test_resampling_only_the_support_of_nothing() -> None:
    image = Image(np.zeros((5, 5, 5), np.float32), Geometry((2.0, 2.0, 2.0)))
    out = spatial.resample_to_reference(image, image, interpolator="linear", default_value=0.0, support_only=True)
    assert out.shape == (5, 5, 5) and not out.array.any()
    with pytest.raises(ConfigError, match="default_value"):
        spatial.resample_to_reference(image, image, support_only=True)
