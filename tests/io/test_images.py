"""liverctl.io: bit-exact round trips of the real scans, DICOM series choice, bad input, atomic writes."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from bad_geometry import keep_locale

from liverctl.errors import GeometryError, ImageFormatError, InputError, LabelError, LiverctlError
from liverctl.io import (
    Geometry,
    Image,
    as_label_array,
    atomic_path,
    check_not_input,
    check_same_grid,
    image_stem,
    image_suffix,
    list_images,
    read_image,
    read_label,
    write_image,
    write_mask,
    write_text_atomic,
)
from liverctl.io.dicom import list_dicom_series

WRITABLE = (".nii.gz", ".nii", ".nrrd", ".mha")
# A rotation about a tilted axis: no zeros in the direction matrix.
_c, _s = np.cos(0.3), np.sin(0.3)
_ROT = np.array([[_c, -_s, 0], [_s, _c, 0], [0, 0, 1]]) @ np.array(
    [[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]]
)
OBLIQUE = Geometry((0.7, 0.8, 2.5), (-120.5, 33.25, 880.0), tuple(_ROT.ravel()))


def assert_geometry_close(a: Geometry, b: Geometry, rtol: float = 1e-6) -> None:
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=rtol, atol=0)
    np.testing.assert_allclose(a.origin, b.origin, rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(a.direction, b.direction, rtol=0, atol=rtol)


def assert_one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text


# --------------------------------------------------------------------------- round trips


@pytest.fixture(scope="module")
def real_scans(ct_path: Path, liver_path: Path, multiorgan_path: Path, dicom_dir: Path) -> dict[str, Image]:
    return {
        "ct": read_image(ct_path),
        "liver": read_image(liver_path),
        "multiorgan": read_image(multiorgan_path),
        "dicom": read_image(dicom_dir),
    }


def test_real_scans_as_documented(real_scans: dict[str, Image]) -> None:
    ct, liver, multi, dicom = (real_scans[k] for k in ("ct", "liver", "multiorgan", "dicom"))
    assert ct.shape == (30, 101, 122) and ct.array.dtype == np.int16
    assert ct.geometry.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert ct.geometry.direction == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    assert liver.array.dtype == np.uint8 and int(liver.array.sum()) == 39350
    assert set(np.unique(liver.array).tolist()) == {0, 1}
    assert multi.array.dtype == np.uint8 and int(multi.array.max()) == 117
    check_same_grid(ct, liver)
    check_same_grid(ct, multi)
    assert dicom.shape == (20, 512, 512) and dicom.array.dtype == np.int16
    assert dicom.geometry.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))


@pytest.mark.parametrize("suffix", WRITABLE)
@pytest.mark.parametrize("name", ["ct", "liver", "multiorgan", "dicom"])
def test_real_scan_round_trip_is_bit_exact(
    real_scans: dict[str, Image], tmp_path: Path, name: str, suffix: str
) -> None:
    image = real_scans[name]
    path = write_image(image, tmp_path / f"{name}{suffix}")
    back = read_image(path)
    assert back.array.dtype == image.array.dtype
    np.testing.assert_array_equal(back.array, image.array)
    assert_geometry_close(back.geometry, image.geometry)
    assert back.geometry.mismatch(image.geometry) is None


@pytest.mark.parametrize("suffix", WRITABLE)
@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint16, np.uint8])
def test_integer_types_round_trip_with_oblique_geometry(tmp_path: Path, suffix: str, dtype: type) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(0)
    array = rng.integers(info.min, info.max, size=(4, 5, 6), dtype=dtype, endpoint=True)
    array.flat[0], array.flat[1] = info.min, info.max
    image = Image(array, OBLIQUE)
    back = read_image(write_image(image, tmp_path / f"x{suffix}"))
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, array)
    assert_geometry_close(back.geometry, OBLIQUE)


def test_write_mask_is_uint8_in_the_reference_geometry(real_scans: dict[str, Image], tmp_path: Path) -> None:
    ct = real_scans["ct"]
    mask = (ct.array > 100).astype(np.int64)  # any integer or bool type goes in
    for reference in (ct, ct.geometry):
        path = write_mask(mask, reference, tmp_path / "m.nii.gz")
        back = read_image(path)
        assert back.array.dtype == np.uint8
        np.testing.assert_array_equal(back.array, mask)
        assert_geometry_close(back.geometry, ct.geometry)
    back = read_image(write_mask(mask.astype(bool), ct, tmp_path / "b.mha"))
    assert back.array.dtype == np.uint8 and back.array.max() == 1
    big = mask * 300
    assert read_image(write_mask(big, ct, tmp_path / "u16.nrrd")).array.dtype == np.uint16
    with pytest.raises(GeometryError, match="shape"):
        write_mask(mask[:-1], ct, tmp_path / "bad.nii.gz")
    with pytest.raises(LabelError):
        write_mask(mask - 1, ct, tmp_path / "neg.nii.gz")
    assert not (tmp_path / "bad.nii.gz").exists() and not (tmp_path / "neg.nii.gz").exists()


def test_index_to_physical_matches_simpleitk_on_an_oblique_image() -> None:
    image = OBLIQUE.apply_to(sitk.Image(6, 5, 4, sitk.sitkUInt8))
    rng = np.random.default_rng(1)
    idx_zyx = np.concatenate([np.array([[0, 0, 0], [3, 4, 5]]), rng.uniform(-2, 8, size=(20, 3))])
    ours = OBLIQUE.index_to_physical(idx_zyx)
    theirs = np.array(
        [image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in i[::-1])) for i in idx_zyx]
    )
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    assert ours.shape == (22, 3)
    np.testing.assert_allclose(OBLIQUE.index_to_physical(np.zeros(3)), OBLIQUE.origin)


def test_geometry_dict_round_trip_and_mismatch() -> None:
    assert Geometry.from_dict(OBLIQUE.to_dict()) == OBLIQUE
    assert OBLIQUE.spacing_zyx == (2.5, 0.8, 0.7)
    assert OBLIQUE.mismatch(OBLIQUE) is None
    moved = Geometry(OBLIQUE.spacing, (-120.5, 33.25, 880.01), OBLIQUE.direction)
    assert "origin" in (OBLIQUE.mismatch(moved) or "")
    with pytest.raises(ImageFormatError):
        Geometry((1.0, 0.0, 1.0))
    with pytest.raises(ImageFormatError):
        Geometry((1.0, 1.0))


# --------------------------------------------------------------------------- DICOM


def _copy_series_with_uid(src: Path, dst: Path, uid: str) -> None:
    """Rewrite every slice of ``src`` into ``dst`` with SimpleITK, under SeriesInstanceUID ``uid``."""
    keys = ("0008|0060", "0020|0032", "0020|0037", "0028|0030", "0018|0050", "0020|0013")
    for i, f in enumerate(sorted(p for p in src.iterdir() if p.is_file())):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(f))
        image = reader.Execute()
        for key in keys:
            if reader.HasMetaDataKey(key) and reader.GetMetaData(key).strip():
                image.SetMetaData(key, reader.GetMetaData(key))
        image.SetMetaData("0008|0016", "1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage
        image.SetMetaData("0008|0018", f"{uid}.{i + 1}")
        image.SetMetaData("0020|000d", f"{uid}.0")
        image.SetMetaData("0020|000e", uid)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(dst / f"copy_{i:03d}.dcm"))
        with keep_locale():
            writer.Execute(image)


def test_dicom_series_without_series_uid(dicom_dir: Path) -> None:
    (series,) = list_dicom_series(dicom_dir)
    assert series.uid == "" and series.n_slices == 20 and series.label == '<no SeriesInstanceUID> (--series "")'
    image = read_image(dicom_dir, series_uid="")
    np.testing.assert_array_equal(image.array, read_image(dicom_dir).array)
    with pytest.raises(InputError, match="not found") as info:
        read_image(dicom_dir, series_uid="1.2.3")
    assert 'available: <no SeriesInstanceUID> (--series "") (20 slices)' in str(info.value)
    assert_one_line(info.value)
    with pytest.raises(InputError, match="DICOM folders"):
        read_image(dicom_dir / sorted(os.listdir(dicom_dir))[0], series_uid="1.2.3")


def test_two_series_of_equal_length_are_ambiguous(dicom_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "two"
    shutil.copytree(dicom_dir, folder)
    uid = "1.2.826.0.1.3680043.2.1125.4242"
    _copy_series_with_uid(dicom_dir, folder, uid)
    found = list_dicom_series(folder)
    assert [(s.uid, s.n_slices) for s in found] == [("", 20), (uid, 20)]
    with pytest.raises(InputError, match="several series") as info:
        read_image(folder)
    assert '<no SeriesInstanceUID> (--series "") (20 slices)' in str(info.value) and f"{uid} (20 slices)" in str(
        info.value
    )
    assert_one_line(info.value)
    with pytest.raises(InputError, match="available") as info:
        read_image(folder, series_uid="9.9")
    assert uid in str(info.value) and "<no SeriesInstanceUID>" in str(info.value)
    chosen = read_image(folder, series_uid=uid)
    original = read_image(folder, series_uid="")
    np.testing.assert_array_equal(chosen.array, original.array)
    assert chosen.geometry.mismatch(original.geometry) is None
    # One more slice in the copy: the longer series wins without a question.
    extra = tmp_path / "extra"
    extra.mkdir()
    _copy_series_with_uid(dicom_dir, extra, uid)
    for f in sorted(dicom_dir.iterdir())[:19]:
        shutil.copy(f, extra / f.name)
    assert read_image(extra).shape == (20, 512, 512)
    assert [s.uid for s in list_dicom_series(extra)] == [uid, ""]


def test_folder_without_dicom(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path)


# --------------------------------------------------------------------------- bad input


def _write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file") as info:
        read_image(tmp_path / "nope.nii.gz")
    assert_one_line(info.value)


def test_fake_and_truncated_files_other_than_nifti(ct_path: Path, tmp_path: Path) -> None:
    for name, content in [("text.nii.gz", b"this is not an image\n"), ("empty.nii.gz", b""), ("text.mha", b"hello\n")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match="cannot read") as info:
            read_image(tmp_path / name)
        assert_one_line(info.value)
    ct = read_image(ct_path)
    for suffix in (".nrrd", ".mha"):
        full = write_image(ct, tmp_path / f"full{suffix}")
        data = full.read_bytes()
        (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
        with pytest.raises(InputError, match="cannot read"):
            read_image(tmp_path / f"cut{suffix}")


@pytest.mark.parametrize("cut", ["half", "header-only", "raw-half"])
def test_truncated_nifti_is_refused(liver_path: Path, tmp_path: Path, cut: str) -> None:
    # ITK alone reads half of liver.nii.gz as a full-size mask with 13,110 of its 39,350 voxels.
    data = liver_path.read_bytes()
    if cut == "half":
        path, content = tmp_path / "t.nii.gz", data[: len(data) // 2]
    elif cut == "header-only":
        path, content = tmp_path / "t.nii.gz", data[:200]
    else:
        raw = gzip.decompress(data)
        path, content = tmp_path / "t.nii", raw[: len(raw) // 2]
    path.write_bytes(content)
    with pytest.raises(InputError, match="cannot read") as info:
        read_image(path)
    assert_one_line(info.value)


def test_unreadable_file_message_is_informative(tmp_path: Path) -> None:
    (tmp_path / "text.nii.gz").write_text("this is not an image\n")
    with pytest.raises(InputError) as info:
        read_image(tmp_path / "text.nii.gz")
    message = str(info.value)
    assert ".cxx" not in message and "SimpleITK" not in message
    assert "Unable to determine ImageIO reader" in message


@pytest.mark.parametrize(
    ("make", "error", "text"),
    [
        (lambda: sitk.GetImageFromArray(np.ones((5, 6), np.uint8)), ImageFormatError, "2D"),
        (
            lambda: sitk.JoinSeries([sitk.GetImageFromArray(np.ones((3, 4, 5), np.uint8))] * 2),
            ImageFormatError,
            "4D",
        ),
        (lambda: sitk.GetImageFromArray(np.ones((1, 4, 5), np.uint8)), ImageFormatError, "single slice"),
        (
            lambda: sitk.GetImageFromArray(np.ones((3, 4, 5, 3), np.uint8), isVector=True),
            ImageFormatError,
            "components",
        ),
    ],
    ids=["2d", "4d", "single-slice", "vector"],
)
def test_wrong_dimensions(tmp_path: Path, make, error: type, text: str) -> None:
    path = _write(make(), tmp_path / "bad.nii.gz")
    with pytest.raises(error, match=text) as info:
        read_image(path)
    assert_one_line(info.value)


def test_4d_with_one_volume_is_read_as_3d(tmp_path: Path) -> None:
    array = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    path = _write(sitk.JoinSeries([sitk.GetImageFromArray(array)]), tmp_path / "t1.nii.gz")
    np.testing.assert_array_equal(read_image(path).array, array)


@pytest.mark.parametrize(
    ("values", "dtype", "text"),
    [
        ([0.0, 0.5, 1.0], np.float32, "fractional"),
        ([0, -1, 2], np.int16, "negative"),
        ([0.0, np.nan, 1.0], np.float32, "NaN"),
        ([0.0, np.inf, 1.0], np.float64, "NaN or infinite"),
        ([0, 70000, 1], np.int32, "more than"),
    ],
    ids=["fraction", "negative", "nan", "inf", "too-large"],
)
def test_bad_label_values(tmp_path: Path, values: list[float], dtype: type, text: str) -> None:
    array = np.zeros((3, 4, 5), dtype=dtype)
    array.flat[: len(values)] = values
    with pytest.raises(LabelError, match=text) as info:
        as_label_array(array)
    assert_one_line(info.value)
    path = _write(sitk.GetImageFromArray(array), tmp_path / "lab.nrrd")
    with pytest.raises(LabelError, match=text):
        read_label(path)


def test_label_types() -> None:
    whole_floats = np.array([[[0.0, 1.0, 5.0]]], dtype=np.float32)
    out = as_label_array(whole_floats)
    assert out.dtype == np.uint8 and out.tolist() == [[[0, 1, 5]]]
    assert as_label_array(np.array([[[300]]], dtype=np.int64)).dtype == np.uint16
    assert as_label_array(np.ones((1, 1, 1), dtype=bool)).dtype == np.uint8
    kept = np.ones((2, 2, 2), dtype=np.uint8)
    assert as_label_array(kept) is kept  # no needless copy
    with pytest.raises(LabelError, match="unsupported"):
        as_label_array(np.ones((2, 2, 2), dtype=np.complex64))


def test_image_must_be_3d() -> None:
    with pytest.raises(ImageFormatError):
        Image(np.zeros((3, 4)), OBLIQUE)
    with pytest.raises(GeometryError):
        Image(np.zeros((3, 4, 5)), OBLIQUE).with_array(np.zeros((3, 4, 6)))


# --------------------------------------------------------------------------- paths and atomic writes


def test_suffix_helpers_and_listing(tmp_path: Path) -> None:
    assert image_suffix("a/B.NII.GZ") == ".nii.gz" and image_suffix("x.png") is None
    assert image_stem("case_001.nii.gz") == "case_001" and image_stem("scan.mha") == "scan"
    for name in ("b.nii.gz", "a.mha", ".hidden.nii.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.nii.gz").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.mha", "b.nii.gz"]
    with pytest.raises(InputError):
        list_images(tmp_path / "a.mha")


def test_check_not_input(tmp_path: Path) -> None:
    a = tmp_path / "a.nii.gz"
    a.write_bytes(b"x")
    with pytest.raises(InputError, match="overwrite"):
        check_not_input(a, [tmp_path / "b.nii.gz", a])
    with pytest.raises(InputError, match="overwrite"):
        check_not_input(tmp_path / "sub" / ".." / "a.nii.gz", [a])  # same file by another spelling
    (tmp_path / "link.nii.gz").symlink_to(a)
    with pytest.raises(InputError, match="overwrite"):
        check_not_input(tmp_path / "link.nii.gz", [a])
    check_not_input(tmp_path / "c.nii.gz", [a])


def test_atomic_path_failure_leaves_target_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"previous content")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz") and tmp != target
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]
    # A failing writer leaves nothing at all where nothing was.
    with pytest.raises(InputError):
        write_image(Image(np.zeros((3, 4, 5), np.uint8), OBLIQUE), tmp_path / "new" / "x.png")
    with pytest.raises(LabelError):
        write_mask(np.full((3, 4, 5), 0.5), OBLIQUE, tmp_path / "new.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]


def test_atomic_success_replaces_target(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    write_image(Image(np.zeros((3, 4, 5), np.uint8), OBLIQUE), tmp_path / "x.nii.gz")
    write_text_atomic(tmp_path / "r.json", "{}")
    for name in ("x.nii.gz", "r.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~_umask()


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr"])
def test_detached_formats_leave_no_temporary_names(tmp_path: Path, suffix: str) -> None:
    image = Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), OBLIQUE)
    path = write_image(image, tmp_path / f"x{suffix}")
    np.testing.assert_array_equal(read_image(path).array, image.array)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_errors_are_liverctl_errors() -> None:
    for cls in (InputError, ImageFormatError, LabelError, GeometryError):
        assert issubclass(cls, LiverctlError)
    assert str(InputError("two\nlines   here")) == "two lines here"
