"""RTSTRUCT output (issue 22): contours read back and rasterised on the series grid match the mask
(Dice >= 0.98 on the shared CT DICOM series), every contour and the structure set reference the
source slices, series, study and frame of reference; refused in one line, up front, for NIfTI
input and for a series without the UIDs it must reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from dicom_uids import series_with_uids
from scipy import ndimage

from liverctl.io import read_image

pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")

TOML = """default = "tiny"
[models.tiny]
repo_id = ""
filename = "tiny.pt"
architecture = "segresnet"
spacing = [8.0, 8.0, 8.0]
orientation = "RAS"
intensity = { method = "window-zscore", window = [-100.0, 300.0], mean = 80.0, std = 60.0 }
n_classes = 2
liver_channel = 1
labels = { liver = 1 }
[models.tiny.kwargs]
spatial_dims = 3
in_channels = 1
out_channels = 2
init_filters = 8
[models.tiny.sliding_window]
roi = [32, 32, 32]
"""


@pytest.fixture(scope="module")
def series(dicom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return series_with_uids(dicom_dir, tmp_path_factory.mktemp("rt") / "series")


def threshold_mask(ct: np.ndarray) -> np.ndarray:
    """No liver label exists for the series: the body (> -300 HU, holes filled per slice) as 1 and
    its dense tissue (> 250 HU: bone, many small pieces) as 2, a stand-in for liver + tumour."""
    body = ndimage.binary_opening(ct > -300, iterations=2)
    body = np.stack([ndimage.binary_fill_holes(plane) for plane in body])
    labels = body.astype(np.uint8)
    labels[body & (ct > 250)] = 2
    return labels


def read_back(path: Path, series: Path, shape: tuple[int, ...]) -> tuple[dict[str, np.ndarray], pydicom.Dataset]:
    """Every ROI's contours rasterised on the series grid (each contour on the slice it references)."""
    from liverctl.io.rtstruct import rasterise

    ct = read_image(series)
    origin = np.asarray(ct.geometry.origin)
    matrix = np.asarray(ct.geometry.direction).reshape(3, 3) @ np.diag(ct.geometry.spacing)
    slices = {}
    for f in series.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        ijk = np.linalg.solve(matrix, np.asarray([float(v) for v in ds.ImagePositionPatient]) - origin)
        slices[ds.SOPInstanceUID] = round(float(ijk[2]))
    rt = pydicom.dcmread(path)
    names = {roi.ROINumber: roi.ROIName for roi in rt.StructureSetROISequence}
    out = {}
    for roi in rt.ROIContourSequence:
        volume = np.zeros(shape, bool)
        for contour in roi.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            data = contour.get_item((0x3006, 0x0050)).value  # raw bytes: parsing each DS value is slow
            values = np.array(data.split(b"\\")).astype(float) if isinstance(data, bytes) else np.asarray(data, float)
            xyz = values.reshape(-1, 3)
            assert len(xyz) == int(contour.NumberOfContourPoints)
            ijk = np.linalg.solve(matrix, (xyz - origin).T).T
            k = slices[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            assert np.allclose(ijk[:, 2], k, atol=1e-3)  # the contour lies on the slice it references
            volume[k] ^= rasterise([ijk[:, [1, 0]]], shape[1:])
        out[names[roi.ReferencedROINumber]] = volume
    return out, rt


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def test_contours_read_back_match_the_mask_and_reference_the_series(series: Path, tmp_path: Path):
    from liverctl.io.dicom_seg import series_files
    from liverctl.io.rtstruct import write_rtstruct

    ct = read_image(series)
    labels = threshold_mask(ct.array)
    assert (labels == 1).sum() > 100_000 and (labels == 2).sum() > 1_000
    path = write_rtstruct(labels, ct.geometry, series_files(series), tmp_path / "s.rtstruct.dcm")
    rois, rt = read_back(path, series, labels.shape)
    assert list(rois) == ["Liver", "Tumour"]
    assert dice(rois["Liver"], labels > 0) >= 0.98 and dice(rois["Tumour"], labels == 2) >= 0.98
    assert rt.Modality == "RTSTRUCT" and rt.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    first = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    frame = rt.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == first.FrameOfReferenceUID and rt.StudyInstanceUID == first.StudyInstanceUID
    study = frame.RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == first.StudyInstanceUID
    referenced = study.RTReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == first.SeriesInstanceUID and rt.SeriesInstanceUID != first.SeriesInstanceUID
    uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.iterdir()}
    assert {c.ReferencedSOPInstanceUID for c in referenced.ContourImageSequence} == uids
    assert [roi.ReferencedFrameOfReferenceUID for roi in rt.StructureSetROISequence] == [first.FrameOfReferenceUID] * 2


def test_a_liver_only_mask_with_a_hole_has_one_roi(series: Path, tmp_path: Path):
    from liverctl.io.dicom_seg import series_files
    from liverctl.io.rtstruct import write_rtstruct

    ct = read_image(series)
    labels = np.zeros(ct.shape, np.uint8)
    labels[3:15, 150:350, 120:300] = 1
    labels[6:9, 200:260, 180:220] = 0  # a hole: an inner contour, filled by the even-odd rule
    labels[10, 20:24, 400:403] = 1  # a small island on one slice
    path = write_rtstruct(labels, ct.geometry, series_files(series), tmp_path / "l.rtstruct.dcm")
    rois, _ = read_back(path, series, labels.shape)
    assert list(rois) == ["Liver"] and np.array_equal(rois["Liver"], labels > 0)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "liverctl", "predict", *args], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def test_predict_writes_an_rtstruct_and_refuses_what_it_cannot_reference(
    series: Path, dicom_dir: Path, ct_path: Path, tmp_path: Path, cli_env: dict[str, str]
):
    from liverctl.models import build_model

    torch.manual_seed(0)
    torch.save(build_model("segresnet", spatial_dims=3, in_channels=1, out_channels=2, init_filters=8).state_dict(),
               tmp_path / "tiny.pt")  # fmt: skip
    (tmp_path / "tiny.pt.toml").write_text(TOML)
    weights = ["--weights", str(tmp_path / "tiny.pt")]
    out = tmp_path / "out"
    for args, message in (
        ([str(ct_path), "--output-format", "rtstruct"], "--output-format rtstruct needs DICOM input"),
        ([str(dicom_dir), "--output-format", "rtstruct"], "the series has no SOPClassUID, SOPInstanceUID"),
        ([str(series), "-o", str(tmp_path / "x.dcm"), "--output-format", "rtstruct"], "has suffix .dcm"),
    ):
        proc = _run([*args, "-o", str(out), *weights] if "-o" not in args else [*args, *weights], cli_env)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("liverctl: error:")]
        assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr
        assert not out.exists() and "Traceback" not in proc.stderr
    rt = _run([str(series), "-o", str(out / "rt"), "--output-format", "rtstruct", *weights], cli_env)
    assert rt.returncode == 0, rt.stderr
    assert rt.stdout.strip() == str(out / "rt" / "series.rtstruct.dcm")
    report = json.loads((out / "rt" / "series.json").read_text())
    rois, ds = read_back(out / "rt" / "series.rtstruct.dcm", series, read_image(series).shape)
    assert ds.Modality == "RTSTRUCT" and list(rois) == ["Liver"]
    assert abs(int(rois["Liver"].sum()) - report["voxel_count"]) <= 0.02 * report["voxel_count"]  # the mask it wrote
