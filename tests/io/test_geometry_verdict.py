"""One geometry verdict for every reader (issue 19): a spacing ITK would invent or flip, axes
that are not perpendicular, a DICOM series with a gap or an unreadable slice, a folder mixing a
series with scan files, and a grid no CT needs are refused in one line, whatever the format."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from bad_geometry import (
    SHEAR,
    SINGULAR,
    ct_array,
    dicom_series,
    metaimage,
    nifti_claiming,
    nifti_pixdim,
    nrrd_sheared,
    truncate,
    write,
)

from liverctl.errors import GeometryError, ImageFormatError, InputError
from liverctl.io import Geometry, Image, read_image
from liverctl.io.checks import MAX_VOXELS, check_geometry
from liverctl.io.inputs import resolve_inputs
from liverctl.spatial import resample

BAD_FILES = {
    "nifti-pixdim-0": (lambda p: nifti_pixdim(p / "a.nii"), "voxel spacing (0, 0, 0) mm (x, y, z) in its NIfTI header"),
    "nifti-pixdim-0-z": (lambda p: nifti_pixdim(p / "a.nii", (0.8, 0.8, 0.0)), "(0.8, 0.8, 0) mm"),
    "nifti-pixdim-negative": (lambda p: nifti_pixdim(p / "a.nii", (-2.0, 2.0, 3.0), xform_code=1), "(-2, 2, 3) mm"),
    "nifti-pixdim-nan": (lambda p: nifti_pixdim(p / "a.nii", (math.nan, 2.0, 3.0)), "(nan, 2, 3) mm"),
    "mha-negative": (lambda p: metaimage(p / "a.mha", ("-2", "2", "3")), "(-2, 2, 3) mm (x, y, z) in its header (ElementSpacing)"),
    "mha-zero": (lambda p: metaimage(p / "a.mha", ("0", "2", "3")), "(0, 2, 3) mm"),
    "mha-inf": (lambda p: metaimage(p / "a.mha", ("inf", "2", "3")), "(inf, 2, 3) mm"),
    "mha-shear": (lambda p: metaimage(p / "a.mha", matrix=SHEAR), "TransformMatrix are sheared"),
    "mha-singular": (lambda p: metaimage(p / "a.mha", matrix=SINGULAR), "TransformMatrix are singular"),
    "nrrd-sheared": (lambda p: nrrd_sheared(p / "a.nrrd"), "axis directions in its geometry are sheared"),
    "dicom-gap": (lambda p: dicom_series(p / "s", skip=3), "slices slice_02.dcm and slice_04.dcm are 4 mm apart"),
    "dicom-truncated": (
        lambda p: truncate(dicom_series(p / "s") / "slice_03.dcm").parent,
        "cannot read slice slice_03.dcm",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_broken_geometry_is_refused_in_one_line(case: str, tmp_path: Path) -> None:
    make, message = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(ImageFormatError) as err:
        read_image(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_good_files_of_every_format_still_read(tmp_path: Path) -> None:
    for name in ("a.nii", "a.nii.gz", "a.mha", "a.nrrd"):
        assert read_image(write(tmp_path / name, ct_array())).geometry.spacing == (2.0, 2.0, 3.0)
    assert read_image(dicom_series(tmp_path / "s")).geometry.spacing == pytest.approx((0.8, 0.8, 2.0))
    assert read_image(metaimage(tmp_path / "r.mha", matrix=(0, 1, 0, 1, 0, 0, 0, 0, 1))).shape == (16, 24, 24)
    with pytest.raises(ImageFormatError, match="2D image"):  # a 2D NIfTI's unused pixdim is no reason
        read_image(write(tmp_path / "flat.nii", np.zeros((24, 24), np.int16), spacing=(1.0, 1.0)))


def test_the_same_geometry_gets_the_same_verdict_in_memory() -> None:
    sheared = Geometry((2.0, 2.0, 3.0), direction=(1, 0.5, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(ImageFormatError, match="sheared"):
        check_geometry(sheared, Path("x"))


def test_absurd_spacing_is_refused_before_the_resample_allocates(tmp_path: Path) -> None:
    image = read_image(write(tmp_path / "huge.mha", ct_array(), spacing=(1000.0, 1000.0, 1000.0)))
    with pytest.raises(GeometryError, match="more than any CT needs") as err:
        resample(image, (1.5, 1.5, 1.5))
    assert "16000 x 16000 x 10667 voxels" in str(err.value) and MAX_VOXELS < 16000**3
    assert resample(Image(ct_array(), Geometry((2.0, 2.0, 3.0))), (1.5, 1.5, 1.5)).shape == (32, 32, 32)


def test_a_header_claiming_terabytes_is_refused_before_itk_allocates(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"truncated file \(\d+ of 128000000352 bytes\)"):
        read_image(nifti_claiming(tmp_path / "big.nii"))


def test_a_folder_mixing_a_series_and_scan_files_is_refused(tmp_path: Path) -> None:
    folder = dicom_series(tmp_path / "mixed")
    write(folder / "other.nii.gz", ct_array())
    with pytest.raises(InputError, match=r"holds both image files .* and a DICOM series of 6 slices"):
        resolve_inputs([folder])


def test_recursive_inputs_visit_each_real_folder_once(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    write(root / "a.nii.gz", ct_array())
    write(root / "sub" / "b.nii.gz", ct_array())
    (root / "self").symlink_to(".", target_is_directory=True)  # a loop
    (root / "sub" / "up").symlink_to("..", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    write(tmp_path / "elsewhere" / "c.nii.gz", ct_array())
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # followed, once
    scans, _ = resolve_inputs([root], recursive=True)
    assert sorted(p.name for p in scans) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
