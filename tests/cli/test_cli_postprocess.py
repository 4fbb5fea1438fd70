"""`liverctl postprocess` from the command line: files, folders, JSON, refusals and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from liverctl.cli import app
from liverctl.io import Geometry, read_image, write_mask
from liverctl.io.manifest import MANIFEST_NAME

GEOMETRY = Geometry((0.8, 0.8, 2.5), (10.0, -20.0, 30.0), (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))


def _labels() -> np.ndarray:
    lab = np.zeros((8, 20, 20), dtype=np.uint8)
    lab[1:7, 2:12, 2:12] = 1  # liver, 600 voxels
    lab[3:5, 5:7, 5:7] = 2  # tumour inside, 8 voxels
    lab[4, 8, 8] = 0  # a one-voxel hole
    lab[0:2, 15:18, 15:18] = 1  # spurious liver blob, 18 voxels
    lab[6:8, 16:18, 2:4] = 2  # tumour outside the liver, 8 voxels
    return lab


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["postprocess", *args, "--no-progress"])
    return result.exit_code, result.stdout, result.stderr


def _assert_one_line_error(code: int, out: str, err: str) -> None:
    assert code != 0
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("liverctl: error: "), err


def _files(folder: Path) -> list[str]:
    """Every file and folder below ``folder`` but liverctl's record of what it wrote there."""
    return sorted(p.name for p in folder.rglob("*") if p.name != MANIFEST_NAME) if folder.exists() else []


def test_file_to_file_and_json(tmp_path: Path) -> None:
    src = tmp_path / "case.nii.gz"
    write_mask(_labels(), GEOMETRY, src)
    out = tmp_path / "clean" / "case.nii.gz"
    code, stdout, _ = _cli(str(src), "-o", str(out))
    assert code == 0 and stdout.strip() == str(out)
    result = read_image(out)
    assert result.geometry.mismatch(GEOMETRY) is None and result.array.dtype == np.uint8
    assert (result.array == 1).sum() == 600 - 8 and (result.array == 2).sum() == 8
    assert not result.array[0:2, 15:18, 15:18].any() and not result.array[6:8, 16:18, 2:4].any()

    code, stdout, _ = _cli(str(src), "-o", str(tmp_path / "j.nii.gz"), "--json", "--no-fill-holes")
    assert code == 0
    report = json.loads(stdout)
    (case,) = report["cases"]
    (liver,) = case["labels"]
    assert (liver["components_before"], liver["components_after"]) == (3, 1)
    assert liver["voxels_removed"] == 18 and liver["voxels_filled"] == 0
    assert (liver["voxels_before"], liver["voxels_after"]) == (600 - 8 - 1 + 18, 600 - 8 - 1)
    assert case["tumour_voxels_removed_outside_liver"] == 8
    assert report["config"]["rules"]["1"]["fill_holes"] is None


def test_options_keep_connectivity_min_volume(tmp_path: Path) -> None:
    lab = np.zeros((10, 30, 30), dtype=np.uint8)
    lab[2:8, 2:10, 2:8] = 4  # 288 voxels
    lab[2:8, 2:10, 20:27] = 4  # 336 voxels
    lab[0, 25, 0:4] = 4  # 4 voxels
    lab[8, 10, 8] = 4  # corner-touching the first block
    src = tmp_path / "k.nrrd"
    write_mask(lab, GEOMETRY, src)
    for extra, expected in [
        (["--keep", "4:2"], 288 + 336 + 1),
        (["--keep", "4:2", "-c", "6"], 288 + 336),
        (["--keep", "4:all", "--min-volume", "0.01"], 288 + 336 + 1),  # 4 voxels = 0.0064 mL go
        (["--labels", "4"], 336),
    ]:
        out = tmp_path / "k_out.mha"
        code, _, err = _cli(str(src), "-o", str(out), "--preset", "none", *extra)
        assert code == 0, err
        assert (read_image(out).array == 4).sum() == expected, extra


def test_folder_to_folder(tmp_path: Path) -> None:
    src = tmp_path / "masks"
    for name in ("a.nii.gz", "b.nii"):
        write_mask(_labels(), GEOMETRY, src / name)
    code, stdout, _ = _cli(str(src), "-o", str(tmp_path / "out"))
    assert code == 0
    assert stdout.split() == [str(tmp_path / "out" / "a.nii.gz"), str(tmp_path / "out" / "b.nii")]
    assert _files(tmp_path / "out") == ["a.nii.gz", "b.nii"]


def test_refuses_to_overwrite_input(tmp_path: Path) -> None:
    src = tmp_path / "case.nii.gz"
    write_mask(_labels(), GEOMETRY, src)
    before = src.read_bytes()
    _assert_one_line_error(*_cli(str(src), "-o", str(src)))
    _assert_one_line_error(*_cli(str(tmp_path), "-o", str(tmp_path)))
    assert src.read_bytes() == before and _files(tmp_path) == ["case.nii.gz"]


def _write_sitk(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def _bad_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    good = folder / "good.nii.gz"
    write_mask(_labels(), GEOMETRY, good)
    truncated = folder / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = folder / "text.nii.gz"
    text.write_text("this is not an image\n")
    vol = sitk.GetImageFromArray(_labels())
    empty = folder / "empty"
    empty.mkdir()
    return {
        "missing": folder / "missing.nii.gz",
        "truncated": truncated,
        "text": text,
        "2d": _write_sitk(sitk.GetImageFromArray(np.ones((5, 6), np.uint8)), folder / "flat.nii.gz"),
        "4d": _write_sitk(sitk.JoinSeries([vol, vol]), folder / "t.nii.gz"),
        "float": _write_sitk(sitk.GetImageFromArray(np.full((4, 5, 6), 0.5, np.float32)), folder / "f.nii.gz"),
        "negative": _write_sitk(sitk.GetImageFromArray(-np.ones((4, 5, 6), np.int16)), folder / "n.nii.gz"),
        "empty folder": empty,
    }


BAD = ["missing", "truncated", "text", "2d", "4d", "float", "negative", "empty folder"]
MESSAGES = {
    "missing": "no such file",
    "truncated": "cannot read",
    "text": "cannot read",
    "2d": "2D",
    "4d": "4D",
    "float": "fractional",
    "negative": "negative",
    "empty folder": "no image files",
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_one_line_no_output(tmp_path: Path, case: str) -> None:
    path = _bad_inputs(tmp_path / "in")[case]
    out_dir = tmp_path / "out"
    target = out_dir if case == "empty folder" else out_dir / "x.nii.gz"
    code, out, err = _cli(str(path), "-o", str(target))
    _assert_one_line_error(code, out, err)
    assert MESSAGES[case] in err
    assert _files(out_dir) == []  # no output, no temporary file


def test_bad_file_in_folder_leaves_no_partial_file(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    write_mask(_labels(), GEOMETRY, src / "a.nii.gz")
    (src / "b.nii.gz").write_bytes((src / "a.nii.gz").read_bytes()[:100])
    code, out, err = _cli(str(src), "-o", str(tmp_path / "out"))
    assert out == f"{tmp_path / 'out' / 'a.nii.gz'}\n"  # a folder run goes on past a bad file, as predict does
    assert code == 1 and "Traceback" not in err and "b.nii.gz" in err
    assert err.splitlines()[-1] == "liverctl: 1 of 2 file(s) failed"
    assert _files(tmp_path / "out") == ["a.nii.gz"]  # complete file for a, nothing at all for b


@pytest.mark.parametrize(
    "args",
    [
        ["--keep", "1"],
        ["--keep", "x:1"],
        ["-c", "8"],
        ["--preset", "nope"],
        ["--labels", "a,b"],
        ["--min-volume", "-1"],
    ],
)
def test_bad_options(tmp_path: Path, args: list[str]) -> None:
    src = tmp_path / "case.nii.gz"
    write_mask(_labels(), GEOMETRY, src)
    _assert_one_line_error(*_cli(str(src), "-o", str(tmp_path / "o" / "x.nii.gz"), *args))
    assert not (tmp_path / "o").exists()


def test_subprocess_real_scan_and_no_torch(liver_path: Path, tmp_path: Path, cli_env: dict[str, str]) -> None:
    out = tmp_path / "liver_pp.nii.gz"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "liverctl", "postprocess", str(liver_path), "-o", str(out)],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert not [ln for ln in proc.stderr.splitlines() if ln.startswith("import time:") and "torch" in ln]
    original, result = read_image(liver_path), read_image(out)
    assert result.geometry.mismatch(original.geometry) is None
    assert int((result.array != original.array).sum()) == 1  # the mask's single 3D hole, filled
    bad = subprocess.run(
        [sys.executable, "-m", "liverctl", "postprocess", str(tmp_path / "nope.nii.gz"), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [f"liverctl: error: no such file or folder: {tmp_path / 'nope.nii.gz'}"]


def test_real_scan_folder_copy_is_not_modified(liver_path: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(liver_path, src / "liver.nii.gz")
    before = (src / "liver.nii.gz").read_bytes()
    code, stdout, _ = _cli(str(src), "-o", str(tmp_path / "out"))
    assert code == 0 and (src / "liver.nii.gz").read_bytes() == before
    assert stdout.strip() == str(tmp_path / "out" / "liver.nii.gz")
