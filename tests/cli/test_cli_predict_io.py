"""Issue 13, predict's inputs and outputs from the command line: -i, --recursive, zipped and
single-file DICOM, --output-format (NRRD, MHA, DICOM-SEG read back and aligned with its
series), --preview, the citation line, TTA in the window count."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from dicom_uids import series_with_uids

from liverctl.io import read_image

TOML = """default = "tiny"
[models.tiny]
repo_id = ""
filename = "tiny.pt"
revision = ""
sha256 = ""
architecture = "segresnet"
spacing = [8.0, 8.0, 8.0]
orientation = "RAS"
intensity = { method = "window-zscore", window = [-100.0, 300.0], mean = 80.0, std = 60.0 }
n_classes = 2
liver_channel = 1
decision = "argmax"
labels = { liver = 1 }
citation = "Tiny T., A tiny test network, 2024"
[models.tiny.kwargs]
spatial_dims = 3
in_channels = 1
out_channels = 2
init_filters = 8
[models.tiny.sliding_window]
roi = [32, 32, 32]
overlap = 0.25
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from liverctl.models import build_model

    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    net = build_model("segresnet", spatial_dims=3, in_channels=1, out_channels=2, init_filters=8)
    torch.save(net.state_dict(), folder / "tiny.pt")
    (folder / "tiny.pt.toml").write_text(TOML)
    return folder / "tiny.pt"


def run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "liverctl", "predict", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def test_i_alias_nrrd_format_preview_citation_and_tta_windows(tiny: Path, ct_path: Path, tmp_path: Path, cli_env):
    out = tmp_path / "out"
    proc = run(
        ["-i", str(ct_path), "--weights", str(tiny), "-o", str(out), "--output-format", "mha", "--preview", "--tta"],
        cli_env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "ct.mha")
    assert "model tiny: Tiny T., A tiny test network, 2024" in proc.stderr
    mask, ct = read_image(out / "ct.mha"), read_image(ct_path)
    assert mask.geometry.mismatch(ct.geometry) is None
    report = json.loads((out / "ct.json").read_text())
    assert report["inference"]["windows"] == 8 * report["inference"]["grid_windows"]
    png = out / "ct_preview.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # default format: the input's; --quiet: no citation, no notes
    nrrd = tmp_path / "scan.nrrd"
    import SimpleITK as sitk

    sitk.WriteImage(sitk.ReadImage(str(ct_path)), str(nrrd))
    proc = run([str(nrrd), "--weights", str(tiny), "-q"], cli_env, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "scan_liver.nrrd")


def test_recursive_folders_zip_and_a_single_dicom_file(
    tiny: Path, ct_path: Path, dicom_dir: Path, tmp_path: Path, cli_env
):
    tree = tmp_path / "tree"
    for patient in ("p1", "p2"):
        (tree / patient).mkdir(parents=True)
        shutil.copy(ct_path, tree / patient / "ct.nii.gz")
    flat = run([str(tree), "--weights", str(tiny), "-o", str(tmp_path / "o1")], cli_env)
    assert flat.returncode == 2 and "add --recursive" in flat.stderr and len(flat.stderr.splitlines()) == 1
    deep = run([str(tree), "-r", "--weights", str(tiny), "-o", str(tmp_path / "o1")], cli_env)
    assert deep.returncode == 0, deep.stderr
    assert sorted(Path(p).name for p in deep.stdout.split()) == ["p1_ct.nii.gz", "p2_ct.nii.gz"]

    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(dicom_dir.iterdir()):
            z.write(f, f"study/{f.name}")
    one_file = sorted(dicom_dir.iterdir())[3]
    proc = run([str(archive), str(one_file), "--weights", str(tiny), "-o", str(tmp_path / "o2")], cli_env)
    assert proc.returncode == 0, proc.stderr
    assert [Path(p).name for p in proc.stdout.split()] == ["series.nii.gz", f"{dicom_dir.name}.nii.gz"]
    assert "one DICOM file of a 20-slice series" in proc.stderr
    a, b = (read_image(p) for p in proc.stdout.split())
    assert a.shape == b.shape == (20, 512, 512) and np.array_equal(a.array, b.array)


def test_dicom_seg_references_its_series_and_aligns_with_it(tiny: Path, dicom_dir: Path, tmp_path: Path, cli_env):
    pytest.importorskip("highdicom")
    import highdicom as hd
    import pydicom

    source = series_with_uids(dicom_dir, tmp_path / "series")
    out = tmp_path / "out"
    nifti = run([str(source), "--weights", str(tiny), "-o", str(out / "nii")], cli_env)
    seg = run([str(source), "--weights", str(tiny), "-o", str(out / "seg"), "--output-format", "dicom-seg"], cli_env)
    assert nifti.returncode == 0 and seg.returncode == 0, seg.stderr
    assert seg.stdout.strip() == str(out / "seg" / "series.dcm")
    assert (out / "seg" / "series.json").is_file()
    mask = read_image(nifti.stdout.strip()).array  # (z, y, x) on the series' grid

    ds = pydicom.dcmread(out / "seg" / "series.dcm")
    assert ds.Modality == "SEG" and ds.SegmentSequence[0].SegmentLabel == "liver"
    sources = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in sorted(source.iterdir())}
    assert ds.StudyInstanceUID == next(iter(sources.values())).StudyInstanceUID
    refs = ds.ReferencedSeriesSequence[0]
    assert refs.SeriesInstanceUID == next(iter(sources.values())).SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in refs.ReferencedInstanceSequence} == set(sources)
    assert ds.FrameOfReferenceUID == next(iter(sources.values())).FrameOfReferenceUID

    seg_obj = hd.seg.Segmentation.from_dataset(ds)
    frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
    assert len(frames) == 20
    ct = read_image(source)
    z_axis = np.asarray(ct.geometry.direction).reshape(3, 3)[:, 2]
    for i, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        position = np.asarray([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient])
        k = round(float((position - np.asarray(ct.geometry.origin)) @ z_axis) / ct.geometry.spacing[2])
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.allclose([float(v) for v in sources[uid].ImagePositionPatient], position)
        assert np.array_equal(frames[i] > 0, mask[k] > 0), i  # each frame lies on its source slice
    assert seg_obj.number_of_segments == 1


def test_dicom_seg_refused_up_front_without_dicom_input_or_uids(
    tiny: Path, ct_path: Path, dicom_dir: Path, tmp_path: Path, cli_env
):
    pytest.importorskip("highdicom")
    proc = run(
        [str(ct_path), "--weights", str(tiny), "-o", str(tmp_path / "o"), "--output-format", "dicom-seg"], cli_env
    )
    assert proc.returncode == 2 and "needs DICOM input" in proc.stderr and not (tmp_path / "o").exists()
    proc = run([str(ct_path), "--weights", str(tiny), "--output-format", "png"], cli_env)
    assert proc.returncode == 2 and "unknown --output-format 'png'" in proc.stderr
    proc = run(
        [str(dicom_dir), "--weights", str(tiny), "-o", str(tmp_path / "d"), "--output-format", "dicom-seg"], cli_env
    )
    assert proc.returncode == 1 and "has no SOPClassUID" in proc.stderr and "Traceback" not in proc.stderr


def test_write_dicom_seg_puts_each_plane_on_its_source_slice(dicom_dir: Path, tmp_path: Path):
    """A known, asymmetric mask through the library writer: every frame equals its plane."""
    pytest.importorskip("highdicom")
    import pydicom

    from liverctl.io.dicom_seg import series_files, write_dicom_seg

    source = series_with_uids(dicom_dir, tmp_path / "series")
    ct = read_image(source)
    mask = np.zeros(ct.shape, np.uint8)
    mask[4:13, 100:300, 150:260] = 1
    mask[7, 10:20, 400:500] = 1  # one slice only, off to one side
    path = write_dicom_seg(mask, ct.geometry, series_files(source), tmp_path / "m.dcm")
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
    z_axis = np.asarray(ct.geometry.direction).reshape(3, 3)[:, 2]
    for i, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        position = np.asarray([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient])
        k = round(float((position - np.asarray(ct.geometry.origin)) @ z_axis) / ct.geometry.spacing[2])
        assert np.array_equal(frames[i], mask[k]), i
    assert sum(int(f.sum()) for f in frames) == int(mask.sum())
