"""Post-processing: hand-counted voxel cases, agreement with scipy.ndimage, properties, real scan."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from liverctl.errors import ConfigError, DatasetError, InputError, LabelError
from liverctl.io import Geometry, Image, read_image, read_label, write_mask
from liverctl.postprocessing import (
    LabelRule,
    PostprocessConfig,
    fill_holes,
    largest_components,
    parse_keep,
    postprocess,
    postprocess_image,
    remove_outside,
)

STRUCTURES = {6: ndi.generate_binary_structure(3, 1), 18: ndi.generate_binary_structure(3, 2), 26: np.ones((3, 3, 3))}


def _ncomp(mask: np.ndarray, connectivity: int = 26) -> int:
    return int(ndi.label(mask, structure=STRUCTURES[connectivity])[1])


def _ball(shape: tuple[int, int, int], center: tuple[float, float, float], radius: float) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - center[0]) ** 2 + (y - center[1]) ** 2 + (x - center[2]) ** 2 <= radius**2


# --------------------------------------------------------------------------- largest_components


def _two_blobs() -> np.ndarray:
    m = np.zeros((12, 12, 12), dtype=np.uint8)
    m[1:4, 1:4, 1:4] = 1  # 27 voxels
    m[7:9, 7:9, 7:9] = 1  # 8 voxels
    m[10, 1, 10] = 1  # 1 voxel
    return m


def test_largest_component_of_three_blobs_by_hand() -> None:
    m = _two_blobs()
    kept, stats = largest_components(m)
    assert kept.dtype == bool
    assert kept.sum() == 27 and kept[1:4, 1:4, 1:4].all()
    assert stats.sizes == (27, 8, 1)
    assert (stats.components_before, stats.components_after) == (3, 1)
    assert (stats.voxels_before, stats.voxels_after, stats.voxels_removed) == (36, 27, 9)


def test_keep_two_and_keep_all() -> None:
    m = _two_blobs()
    kept, stats = largest_components(m, n=2)
    assert kept.sum() == 35 and not kept[10, 1, 10]
    assert stats.kept == 2
    kept_all, _ = largest_components(m, n=None)
    np.testing.assert_array_equal(kept_all, m.astype(bool))
    kept_none, stats0 = largest_components(m, n=0)
    assert not kept_none.any() and stats0.voxels_after == 0


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 3, 1), (3, 1, 1), (1, 1, 7)])
@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_thin_arrays(shape: tuple[int, int, int], connectivity: int) -> None:
    # cc3d 4.1.1 alone raises "maximum length exception" on these at 26-connectivity.
    m = np.zeros(shape, dtype=bool)
    m.flat[0] = m.flat[-1] = True
    kept, stats = largest_components(m, n=None, connectivity=connectivity)
    assert stats.sizes == (1, 1)
    np.testing.assert_array_equal(kept, m)


def test_empty_mask() -> None:
    kept, stats = largest_components(np.zeros((4, 5, 6), dtype=np.uint8))
    assert kept.shape == (4, 5, 6) and not kept.any()
    assert stats.sizes == () and stats.components_before == 0


@pytest.mark.parametrize(("connectivity", "sizes"), [(6, (2, 1, 1)), (18, (3, 1)), (26, (4,))])
def test_connectivity_on_diagonal_touching_voxels(connectivity: int, sizes: tuple[int, ...]) -> None:
    # A-D share a face, A-B share an edge only, B-C share a corner only.
    m = np.zeros((5, 5, 5), dtype=bool)
    for z, y, x in [(1, 1, 1), (0, 1, 1), (1, 2, 2), (2, 3, 3)]:
        m[z, y, x] = True
    _, stats = largest_components(m, n=None, connectivity=connectivity)
    assert stats.sizes == sizes


def test_min_volume_in_ml_with_anisotropic_spacing() -> None:
    # Voxel 0.8 x 0.8 x 2.5 mm = 1.6 mm3 = 0.0016 mL.
    m = np.zeros((20, 40, 40), dtype=np.uint8)
    m[0:10, 0:10, 0:10] = 1  # 1000 voxels = 1.6 mL
    m[12:17, 20:30, 20:30] = 1  # 500 voxels = 0.8 mL
    m[0:1, 30:40, 30:40] = 1  # 100 voxels = 0.16 mL
    image = Image(m, Geometry(spacing=(0.8, 0.8, 2.5)))
    kept, stats = largest_components(image, n=None, min_volume_ml=0.5)
    assert isinstance(kept, Image) and kept.geometry == image.geometry
    assert kept.array.sum() == 1500 and stats.kept == 2
    assert stats.voxel_volume_ml == pytest.approx(0.0016)
    kept, _ = largest_components(image, n=None, min_volume_ml=1.6)  # inclusive bound
    assert kept.array.sum() == 1000
    # Same array with the spacing given explicitly; isotropic 1 mm would keep all three at 0.1 mL.
    kept, _ = largest_components(m, n=None, min_volume_ml=0.5, spacing_zyx=(2.5, 0.8, 0.8))
    assert kept.sum() == 1500
    kept, _ = largest_components(m, n=None, min_volume_ml=0.1, spacing_zyx=(1, 1, 1))
    assert kept.sum() == 1600
    # n and the minimum together: the largest among those large enough.
    kept, _ = largest_components(image, n=1, min_volume_ml=0.5)
    assert kept.array.sum() == 1000


def test_min_volume_needs_spacing_and_bad_options() -> None:
    m = _two_blobs()
    with pytest.raises(ConfigError, match="spacing"):
        largest_components(m, min_volume_ml=1.0)
    with pytest.raises(ConfigError, match="connectivity"):
        largest_components(m, connectivity=8)
    with pytest.raises(ConfigError):
        largest_components(m, n=-1)
    with pytest.raises(ConfigError, match="3D"):
        largest_components(np.ones((4, 4), dtype=bool))


# --------------------------------------------------------------------------- fill_holes


def test_hollow_sphere_is_filled_exactly() -> None:
    outer = _ball((17, 17, 17), (8, 8, 8), 6)
    inner = _ball((17, 17, 17), (8, 8, 8), 3)
    shell = outer & ~inner
    filled = fill_holes(shell)
    np.testing.assert_array_equal(filled, outer)
    # A one-voxel tunnel from the cavity to the outside: no longer a hole.
    leaky = shell.copy()
    leaky[8, 8, 8:] = False
    np.testing.assert_array_equal(fill_holes(leaky), leaky)


def test_hole_touching_the_volume_border_is_not_a_hole() -> None:
    m = np.zeros((8, 8, 8), dtype=bool)
    m[0:5, 1:6, 1:6] = True
    m[0:4, 2:5, 2:5] = False  # a cavity open at z = 0, the volume's border
    np.testing.assert_array_equal(fill_holes(m), m)
    closed = m.copy()
    closed[0, 2:5, 2:5] = True  # closing the lid turns the rest of the cavity into a hole (27 voxels)
    filled = fill_holes(closed)
    assert filled.sum() - closed.sum() == 27
    assert filled[0:5, 1:6, 1:6].all()


def test_hole_only_diagonally_open_is_still_a_hole() -> None:
    # Background is 6-connected: a cavity that reaches the outside only through a corner is a hole.
    m = np.zeros((7, 7, 7), dtype=bool)
    m[1:6, 1:6, 1:6] = True
    m[2, 2, 1:3] = False  # a tunnel from the x = 0 side to (2, 2, 2) ...
    m[3, 3, 3] = False  # ... and a cavity that touches it only at a corner
    filled = fill_holes(m)
    assert filled[3, 3, 3] and not filled[2, 2, 1:3].any()
    np.testing.assert_array_equal(filled, ndi.binary_fill_holes(m))


def test_slicewise_fills_a_tube_that_3d_leaves_open() -> None:
    _, y, x = np.ogrid[:6, :11, :11]
    r2 = (y - 5) ** 2 + (x - 5) ** 2
    tube = np.broadcast_to((r2 <= 16) & (r2 > 4), (6, 11, 11)).copy()
    np.testing.assert_array_equal(fill_holes(tube), tube)  # the bore is open at both ends
    solid = np.broadcast_to(r2 <= 16, (6, 11, 11))
    np.testing.assert_array_equal(fill_holes(tube, slicewise=True), solid)


def test_fill_holes_keeps_image_geometry() -> None:
    geometry = Geometry((0.7, 0.7, 2.0), (1.0, 2.0, 3.0))
    out = fill_holes(Image(_ball((9, 9, 9), (4, 4, 4), 3).astype(np.uint8), geometry))
    assert isinstance(out, Image) and out.geometry == geometry


# --------------------------------------------------------------------------- remove_outside


def test_tumour_outside_liver_is_removed() -> None:
    lab = np.zeros((10, 20, 20), dtype=np.uint8)
    lab[2:8, 2:10, 2:10] = 1
    lab[4:6, 4:6, 4:6] = 2  # inside the liver: kept
    lab[3:5, 10:12, 5:7] = 2  # on the liver's surface, touching it: kept
    lab[2:4, 15:18, 15:18] = 2  # 18 voxels far away: removed
    lab[8, 10, 10] = 2  # corner-touching the liver: kept at 26, removed at 6
    out = remove_outside(lab)
    assert (out == 2).sum() == 8 + 8 + 1
    assert not out[2:4, 15:18, 15:18].any()
    np.testing.assert_array_equal(out == 1, lab == 1)
    out6 = remove_outside(lab, connectivity=6)
    assert (out6 == 2).sum() == 16 and out6[8, 10, 10] == 0
    # No liver at all: every tumour voxel is outside.
    assert not (remove_outside(np.where(lab == 2, 2, 0).astype(np.uint8)) == 2).any()


# --------------------------------------------------------------------------- configurations and the pipeline


def test_liver_preset_on_liver_tumour_map() -> None:
    lab = np.zeros((12, 24, 24), dtype=np.uint8)
    lab[2:10, 2:12, 2:12] = 1
    lab[5, 6, 6] = 0  # a one-voxel hole: filled as liver
    lab[4:6, 8:10, 8:10] = 2
    lab[2:4, 18:21, 18:21] = 1  # a second, smaller liver blob (18 voxels) ...
    lab[2, 18, 18] = 2  # ... with tumour on it: both go
    lab[8:10, 18:20, 2:4] = 2  # tumour alone (8 voxels): removed by the LCC of liver+tumour
    image = Image(lab, Geometry((1.5, 1.5, 2.0)))
    out, report = postprocess_image(image)
    expected = np.zeros_like(lab)
    expected[2:10, 2:12, 2:12] = 1
    expected[4:6, 8:10, 8:10] = 2
    np.testing.assert_array_equal(out.array, expected)
    assert out.geometry == image.geometry
    (liver,) = report.labels
    assert (liver.label, liver.name) == (1, "liver")
    assert (liver.components_before, liver.components_after) == (3, 1)
    assert liver.voxels_removed == 17  # the small blob's liver voxels; its tumour voxel counts as tumour
    assert liver.voxels_filled == 1
    assert report.tumour_voxels_removed_outside_liver == 1 + 8
    assert liver.voxels_before == int((lab == 1).sum()) and liver.voxels_after == int((expected == 1).sum())
    assert liver.voxels_after == liver.voxels_before - liver.voxels_removed + liver.voxels_filled
    assert liver.volume_ml_after == pytest.approx(liver.voxels_after * 1.5 * 1.5 * 2.0 / 1000)


def test_keep_two_for_a_kidneys_label_and_options() -> None:
    lab = np.zeros((10, 30, 30), dtype=np.uint8)
    lab[2:8, 2:10, 2:8] = 3  # kidney A, 288
    lab[2:8, 2:10, 20:27] = 3  # kidney B, 336
    lab[0, 25, 0:4] = 3  # speck, 4
    config = PostprocessConfig.preset("none").with_options(keep={3: 2})
    out, report = postprocess(Image(lab, Geometry((1, 1, 1))), config=config)
    assert (out.array == 3).sum() == 288 + 336
    assert report.labels[0].components_after == 2
    # The same on a bare array returns an array.
    arr, _ = postprocess(lab, config=config)
    assert isinstance(arr, np.ndarray)
    np.testing.assert_array_equal(arr, out.array)
    with pytest.raises(ConfigError, match="spacing"):
        postprocess(lab, config=config.with_options(min_volume_ml=0.1))


def test_config_options() -> None:
    base = PostprocessConfig.preset("liver")
    assert base.rules[1] == LabelRule(keep=1, fill_holes="3d", region=(1, 2)) and base.tumour_label == 2
    c = base.with_options(fill_holes=False, tumour_in_liver=False, connectivity=6, keep={4: None}, min_volume_ml=2)
    assert c.rules[1].fill_holes is None and c.tumour_label is None and c.connectivity == 6
    assert c.rules[4].keep is None and c.rules[4].min_volume_ml == 2 and c.rules[1].min_volume_ml == 2
    assert base.with_options(fill_holes="2d").rules[1].fill_holes == "2d"
    assert set(base.with_options(labels=[5, 1]).rules) == {1, 5}
    assert parse_keep("3:2") == (3, 2) and parse_keep("7:all") == (7, None)
    for bad in ("3", "x:2", "0:1", "3:-1", "3:two"):
        with pytest.raises(ConfigError):
            parse_keep(bad)
    with pytest.raises(ConfigError, match="preset"):
        PostprocessConfig.preset("kidney")
    with pytest.raises(ConfigError):
        LabelRule(fill_holes="4d")
    with pytest.raises(ConfigError):
        PostprocessConfig(connectivity=4)


def test_float_and_negative_label_arrays_are_refused() -> None:
    with pytest.raises(LabelError, match="fractional"):
        postprocess(np.full((3, 3, 3), 0.5, dtype=np.float32))
    with pytest.raises(LabelError, match="negative"):
        postprocess(-np.ones((3, 3, 3), dtype=np.int16))


# --------------------------------------------------------------------------- properties

small_masks = arrays(np.bool_, st.tuples(*[st.integers(1, 7)] * 3))
small_labels = arrays(np.uint8, st.tuples(*[st.integers(1, 7)] * 3), elements=st.integers(0, 2))
prop = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@prop
@given(small_masks, st.sampled_from([6, 18, 26]), st.integers(0, 3))
def test_lcc_properties(mask: np.ndarray, connectivity: int, n: int) -> None:
    kept, stats = largest_components(mask, n=n, connectivity=connectivity)
    assert not (kept & ~mask).any()  # a subset
    labelled, found = ndi.label(mask, structure=STRUCTURES[connectivity])
    sizes = sorted(np.bincount(labelled.ravel())[1:].tolist(), reverse=True)
    assert list(stats.sizes) == sizes  # same components as scipy
    assert _ncomp(kept, connectivity) == min(n, found)
    assert kept.sum() == sum(sizes[:n])
    again, _ = largest_components(kept, n=n, connectivity=connectivity)
    np.testing.assert_array_equal(again, kept)  # idempotent


@prop
@given(small_masks, st.booleans())
def test_fill_holes_properties(mask: np.ndarray, slicewise: bool) -> None:
    filled = fill_holes(mask, slicewise=slicewise)
    assert not (mask & ~filled).any()  # a superset
    np.testing.assert_array_equal(fill_holes(filled, slicewise=slicewise), filled)  # idempotent
    if slicewise:
        expected = np.stack([ndi.binary_fill_holes(s) for s in mask])
    else:
        expected = ndi.binary_fill_holes(mask)
    np.testing.assert_array_equal(filled, expected)


@prop
@given(small_labels, st.sampled_from([6, 26]), st.booleans())
def test_postprocess_is_idempotent(labels: np.ndarray, connectivity: int, holes: bool) -> None:
    config = PostprocessConfig.preset("liver").with_options(connectivity=connectivity, fill_holes=holes)
    once, _ = postprocess(labels, config=config)
    twice, _ = postprocess(once, config=config)
    np.testing.assert_array_equal(once, twice)
    liver = np.isin(once, (1, 2))
    assert _ncomp(liver, connectivity) <= 1
    if not holes:
        assert not (liver & ~np.isin(labels, (1, 2))).any()


# --------------------------------------------------------------------------- real scan


def test_real_liver_mask(liver_path, tmp_path) -> None:
    liver = read_label(liver_path)
    for connectivity in (6, 18, 26):
        _, stats = largest_components(liver, n=None, connectivity=connectivity)
        assert stats.sizes == (39350,)  # the TotalSegmentator liver is one component
    noisy = liver.array.copy()
    noisy[1:3, 2:4, 2:4] = 1  # a far-away 8-voxel blob in a corner
    assert not liver.array[0:4, 1:5, 1:5].any()
    kept, stats = largest_components(liver.with_array(noisy))
    np.testing.assert_array_equal(kept.array, liver.array.astype(bool))
    assert stats.sizes == (39350, 8)
    # The full liver preset also fills the mask's single 3D hole, one voxel at (z, y, x) = (16, 76, 67).
    out, report = postprocess(liver.with_array(noisy))
    diff = np.argwhere(out.array != liver.array)
    assert diff.tolist() == [[16, 76, 67]] and out.array[16, 76, 67] == 1
    assert report.labels[0].voxels_removed == 8 and report.labels[0].voxels_filled == 1
    # Written through the file API: geometry exactly that of the input, uint8.
    src = tmp_path / "in" / "case.nii.gz"
    write_mask(liver.with_array(noisy), liver, src)
    (case,) = postprocess(src, tmp_path / "out.nii.gz")
    written = read_image(tmp_path / "out.nii.gz")
    assert written.array.dtype == np.uint8
    assert written.geometry.mismatch(liver.geometry) is None
    np.testing.assert_array_equal(written.array, out.array)
    assert case.output == str(tmp_path / "out.nii.gz")


def test_real_multiorgan_totalseg_preset(multiorgan_path) -> None:
    image = read_label(multiorgan_path)
    out, report = postprocess(image, config=PostprocessConfig.preset("totalseg"))
    by_label = {r.label: r for r in report.labels}
    assert set(by_label) == {1, 2, 3, 5}
    for label in (1, 2, 3, 5):
        assert by_label[label].voxels_before == int((image.array == label).sum())
        assert _ncomp(out.array == label) == min(1, by_label[label].components_before)
    # Voxels of other labels are never changed (holes are filled only where the map is 0).
    changed = out.array != image.array
    assert not (changed & (image.array != 0) & ~np.isin(image.array, (1, 2, 3, 5))).any()


# --------------------------------------------------------------------------- files and folders


def _write_case(path, array: np.ndarray) -> None:
    write_mask(array, Geometry((1.0, 1.0, 2.0)), path)


def test_folder_to_folder_and_refusals(tmp_path) -> None:
    src = tmp_path / "masks"
    for i in range(2):
        _write_case(src / f"case_{i}.nii.gz", _two_blobs())
    (src / "notes.txt").write_text("not an image")
    reports = postprocess(src, tmp_path / "clean")
    assert [r.output for r in reports] == [str(tmp_path / "clean" / f"case_{i}.nii.gz") for i in range(2)]
    for i in range(2):
        assert read_image(tmp_path / "clean" / f"case_{i}.nii.gz").array.sum() == 27
    with pytest.raises(InputError, match="must be a folder"):
        postprocess(src, tmp_path / "clean.nii.gz")
    with pytest.raises(InputError, match="input folder"):
        postprocess(src, src)
    with pytest.raises(InputError, match="overwrite"):
        postprocess(src / "case_0.nii.gz", src / "case_0.nii.gz")
    with pytest.raises(InputError, match="overwrite"):
        postprocess(src / "case_0.nii.gz", src)  # a folder output that resolves to the input itself
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        postprocess(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(InputError, match="no such"):
        postprocess(tmp_path / "missing.nii.gz", tmp_path / "out.nii.gz")
    with pytest.raises(ConfigError, match="output"):
        postprocess(src / "case_0.nii.gz")
