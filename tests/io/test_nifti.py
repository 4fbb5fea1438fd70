"""liverctl.io.nifti.nifti_affine: the affine nibabel (hence MONAI's NibabelReader) gives a NIfTI
file, to the last bit, for every way a file can store it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from liverctl.io import read_image
from liverctl.io.nifti import nifti_affine
from liverctl.predict.monai_grid import ras_affine, source_affine

nib = pytest.importorskip("nibabel")


def _rotation(rx: float, ry: float, rz: float, flip: bool) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    m = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    m = m @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return m @ np.diag([1.0, 1.0, -1.0]) if flip else m


angles = st.floats(-0.5, 0.5, allow_nan=False)


@settings(max_examples=25, deadline=None)
@given(
    rx=angles,
    ry=angles,
    rz=angles,
    flip=st.booleans(),
    spacing=st.tuples(*[st.floats(0.5, 5.0)] * 3),
    origin=st.tuples(*[st.floats(-300.0, 300.0)] * 3),
)
def test_the_affine_is_nibabels_for_itk_written_files(tmp_path_factory, rx, ry, rz, flip, spacing, origin) -> None:
    """SimpleITK writes sform and qform; nibabel (and so MONAI) reads the sform, liverctl the
    same bits; ITK's own direction is a few ulps away from it."""
    folder = tmp_path_factory.mktemp("nii")
    image = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(tuple(_rotation(rx, ry, rz, flip).ravel()))
    path = folder / "scan.nii.gz"
    sitk.WriteImage(image, str(path))
    assert np.array_equal(nifti_affine(path), nib.load(path).affine)
    # what MONAI's grid code is handed: the stored bits, not ITK's orthonormalised direction
    scan = read_image(path)
    assert np.array_equal(source_affine(scan), nib.load(path).affine)
    np.testing.assert_allclose(source_affine(scan), ras_affine(scan.geometry), atol=1e-4)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("qfac", [1, -1])
def test_the_qform_only_affine_is_nibabels(tmp_path: Path, version: int, qfac: int) -> None:
    """sform_code 0: nibabel builds the qform from the quaternion in longdouble."""
    affine = np.eye(4)
    affine[:3, :3] = _rotation(0.2, -0.13, 0.31, qfac < 0) @ np.diag([0.78125, 0.78125, 2.5])
    affine[:3, 3] = (-187.3, 12.9, -401.25)
    kind = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    img = kind(np.zeros((5, 4, 3), np.int16), None)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(None, code=0)
    path = tmp_path / "q.nii"
    nib.save(img, path)
    loaded = nib.load(path)
    assert loaded.header["sform_code"] == 0 and loaded.header["qform_code"] == 1
    assert np.array_equal(nifti_affine(path), loaded.affine)
    np.testing.assert_allclose(nifti_affine(path), affine, atol=1e-4)


def test_no_stored_transform_gives_none(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((5, 4, 3), np.int16), None)
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    path = tmp_path / "bare.nii"
    nib.save(img, path)
    assert nifti_affine(path) is None
    assert source_affine(read_image(path)) is not None  # the geometry's affine stands in


def test_an_affine_itk_reads_otherwise_is_not_used(tmp_path: Path) -> None:
    """A sform ITK does not take (sheared; ITK falls back to the qform): the stored bits would
    describe another grid than the geometry liverctl reads, so the geometry's own affine is used."""
    sheared = np.array([[1.0, 0.4, 0.0, 5.0], [0.0, 1.0, 0.0, 6.0], [0.0, 0.0, 2.0, 7.0], [0.0, 0.0, 0.0, 1.0]])
    img = nib.Nifti1Image(np.zeros((5, 4, 3), np.int16), None)
    img.header.set_qform(np.diag([1.0, 1.0, 2.0, 1.0]), code=1)
    img.header.set_sform(sheared, code=2)
    path = tmp_path / "sheared.nii"
    nib.save(img, path)
    scan = read_image(path)
    assert scan.stored_affine is None
    assert np.array_equal(source_affine(scan), ras_affine(scan.geometry))
