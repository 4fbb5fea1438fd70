"""`liverctl preprocess` from the command line: output, JSON, and one-line errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from liverctl.cli import app


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "liverctl", *args], capture_output=True, text=True, env=env)


def write(image: sitk.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def tiny_case(root: Path, name: str, *, label_array: np.ndarray | None = None, shape=(12, 10, 8)) -> None:
    rng = np.random.default_rng(0)
    array = rng.normal(40, 10, size=shape).astype(np.int16)
    array[:, :, 0] = -1000  # air beside the body: a CT in HU
    img = sitk.GetImageFromArray(array)
    img.SetSpacing((2.0, 2.0, 3.0))
    if label_array is None:
        label_array = np.zeros(shape, np.uint8)
        label_array[3:8, 2:8, 2:6] = 1
    lab = sitk.GetImageFromArray(label_array)
    lab.CopyInformation(img) if label_array.shape == shape else lab.SetSpacing((2.0, 2.0, 3.0))
    write(img, root / "imagesTr" / f"{name}_0000.nii.gz")
    write(lab, root / "labelsTr" / f"{name}.nii.gz")


@pytest.fixture
def real_ds(tmp_path: Path, ct_path: Path, liver_path: Path) -> Path:
    root = tmp_path / "lits"
    ct, liver = sitk.ReadImage(str(ct_path)), sitk.ReadImage(str(liver_path))
    write(ct, root / "volume-0.nii")
    write(liver, root / "segmentation-0.nii")
    write(ct[:, :, 6:26], root / "volume-1.nii")
    write(liver[:, :, 6:26], root / "segmentation-1.nii")
    return root


def test_cli_preprocess_summary_and_json(real_ds: Path, tmp_path: Path, cli_env: dict[str, str]) -> None:
    out = tmp_path / "pre"
    proc = run_cli(["preprocess", str(real_ds), "-o", str(out), "--spacing", "4,4,4", "--window", "pipofan"], cli_env)
    assert proc.returncode == 0, proc.stderr
    assert "Preprocessed 2 case(s) of dataset lits (lits layout)" in proc.stdout
    assert "Target spacing 4 x 4 x 4 mm" in proc.stdout and "pipofan (-200..200)" in proc.stdout
    assert sorted(p.name for p in (out / "images").iterdir()) == ["volume-0.npy", "volume-1.npy"]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["labels"] == {"background": 0, "liver": 1, "tumor": 2}

    result = CliRunner().invoke(
        app, ["preprocess", str(real_ds), "-o", str(out), "--spacing", "4,4,4", "--window", "pipofan", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["processed"] == 0 and summary["skipped"] == 2 and summary["cases"] == 2
    assert summary["window"] == [-200.0, 200.0] and summary["target_spacing"] == [4.0, 4.0, 4.0]
    assert summary["liver_intensity"]["n_voxels"] > 39350  # both cases' liver voxels


def _bad_datasets(tmp: Path, ct_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (dataset folder, expected text of the error line)."""
    cases: dict[str, tuple[Path, str]] = {}

    root = tmp / "missing_label"
    tiny_case(root, "a")
    (root / "labelsTr" / "a.nii.gz").unlink()
    (root / "labelsTr" / "b.nii.gz").write_bytes(b"")
    cases["missing_file"] = (root, "have no label")

    root = tmp / "truncated"
    tiny_case(root, "a")
    data = Path(ct_path).read_bytes()
    (root / "imagesTr" / "a_0000.nii.gz").write_bytes(data[: len(data) // 3])
    cases["truncated"] = (root, "cannot read")

    root = tmp / "garbage"
    tiny_case(root, "a")
    (root / "imagesTr" / "a_0000.nii.gz").write_bytes(b"this is not an image")
    cases["unreadable"] = (root, "cannot read")

    root = tmp / "twod"
    tiny_case(root, "a")
    write(sitk.GetImageFromArray(np.zeros((10, 8), np.int16)), root / "imagesTr" / "a_0000.nii.gz")
    cases["2d"] = (root, "2D image")

    root = tmp / "fourd"
    tiny_case(root, "a")
    vol = sitk.GetImageFromArray(np.zeros((12, 10, 8), np.int16))
    write(sitk.JoinSeries([vol, vol]), root / "imagesTr" / "a_0000.nii.gz")  # a 4D (x, y, z, t) series
    cases["4d"] = (root, "4D image")

    lab = np.zeros((12, 10, 8), np.float32)
    lab[3:6, 3:6, 3:6] = 0.5
    root = tmp / "float_label"
    tiny_case(root, "a", label_array=lab)
    cases["float_label"] = (root, "fractional values")

    lab = np.zeros((12, 10, 8), np.int16)
    lab[3:6, 3:6, 3:6] = -1
    root = tmp / "negative_label"
    tiny_case(root, "a", label_array=lab)
    cases["negative_label"] = (root, "negative values")

    root = tmp / "mismatch"
    tiny_case(root, "a", label_array=np.zeros((12, 10, 9), np.uint8))
    cases["mismatched_shapes"] = (root, "case a: image a_0000.nii.gz shape")

    root = tmp / "empty"
    root.mkdir()
    cases["empty_folder"] = (root, "is empty")

    cases["no_folder"] = (tmp / "absent", "no such dataset folder")
    return cases


def test_cli_bad_input_one_line_no_output(tmp_path: Path, ct_path: Path, cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    for what, (root, expected) in _bad_datasets(tmp_path / "bad", ct_path).items():
        out = tmp_path / f"out_{what}"
        result = runner.invoke(app, ["preprocess", str(root), "-o", str(out)])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2, (what, result.output)
        assert len(lines) == 1 and lines[0].startswith("liverctl: error: "), (what, result.stderr)
        assert expected in lines[0], (what, lines[0])
        assert "Traceback" not in result.output
        assert not out.exists(), what  # nothing half-written, not even the folder
        assert result.stdout == ""


def test_cli_bad_input_subprocess(tmp_path: Path, ct_path: Path, cli_env: dict[str, str]) -> None:
    """The same through a real process: exit status, stderr, no traceback."""
    bad = _bad_datasets(tmp_path / "bad", ct_path)
    root, _ = bad["negative_label"]
    proc = run_cli(["preprocess", str(root), "-o", str(tmp_path / "o")], cli_env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "negative values" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_cli_bad_options(real_ds: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    for args, expected in [
        (["--spacing", "fast"], "invalid spacing"),
        (["--window", "bone"], "unknown window"),
        (["--normalization", "global"], "unknown normalization"),
        (["--image-order", "0"], "nearest is for label maps"),
        (["--crop-margin", "-5"], "crop margin"),
    ]:
        result = runner.invoke(app, ["preprocess", str(real_ds), "-o", str(tmp_path / "o"), *args])
        assert result.exit_code == 2 and expected in result.stderr, (args, result.stderr)
        assert not (tmp_path / "o").exists()
    # a changed plan in an existing output folder needs --overwrite
    ok = runner.invoke(app, ["preprocess", str(real_ds), "-o", str(tmp_path / "o"), "--spacing", "6"])
    assert ok.exit_code == 0, ok.output
    changed = runner.invoke(app, ["preprocess", str(real_ds), "-o", str(tmp_path / "o"), "--spacing", "5"])
    assert changed.exit_code == 2 and "another plan (different target_spacing)" in changed.stderr
    again = runner.invoke(app, ["preprocess", str(real_ds), "-o", str(tmp_path / "o"), "--spacing", "5", "--overwrite"])
    assert again.exit_code == 0 and "2 processed" in again.stdout


def test_preprocess_help_does_not_import_heavy_modules(cli_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "liverctl", "preprocess", "--help"],
        capture_output=True,
        text=True,
        env=cli_env,
    )
    assert proc.returncode == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "SimpleITK" not in imported
