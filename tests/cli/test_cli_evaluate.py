"""`liverctl evaluate` from the command line: tables, CSV/JSON, --compare, bad input, no torch."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from liverctl import metrics as M
from liverctl.cli import app
from liverctl.io import Geometry, read_label, write_image, write_mask

GEO = Geometry((0.8, 0.8, 2.5), (10.0, -20.0, 30.0))


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["evaluate", *args, "--no-progress"])
    return result.exit_code, result.stdout, result.stderr


def _assert_one_line_error(code: int, out: str, err: str) -> str:
    assert code != 0
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("liverctl: error: "), err
    return lines[0]


def _mask(shift: int = 0) -> np.ndarray:
    a = np.zeros((8, 24, 24), np.uint8)
    a[2:6, 5 + shift : 15 + shift, 6:16] = 1
    a[3:5, 8:10, 8:10] = 2
    return a


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    write_mask(_mask(1), GEO, tmp_path / "pred.nii.gz")
    write_mask(_mask(0), GEO, tmp_path / "ref.nii.gz")
    return tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz"


def test_table_csv_and_json(pair: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = pair
    code, out, _ = _cli(str(pred), str(ref))
    assert code == 0
    assert "Dice" in out and "HD95 mm" in out and "dice global" in out and "mean ± std" in out
    assert "6-connected" in out  # the conventions are named
    sp = read_label(ref).spacing_zyx
    expected = M.compute_metrics(_mask(1) == 1, _mask(0) == 1, sp)
    assert f"{expected.dice:.4f}" in out and f"{expected.hd:.2f}" in out

    code, out, _ = _cli(str(pred), str(ref), "--json", "--labels", "1")
    assert code == 0
    data = json.loads(out)
    assert data["cases"][0]["dice"] == pytest.approx(expected.dice)
    assert data["cases"][0]["hd95"] == pytest.approx(expected.hd95)

    code, out, _ = _cli(str(pred), str(ref), "--csv", "-", "--surface", "lits", "--hd95", "directed-max")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    lits = M.compute_metrics(_mask(1) == 2, _mask(0) == 2, sp, surface="lits", hd95="directed-max")
    row2 = next(r for r in rows if r["row"] == "case" and r["region"] == "2")
    assert float(row2["hd95"]) == pytest.approx(lits.hd95) and row2["surface"] == "lits"

    csv_path, json_path = tmp_path / "out" / "m.csv", tmp_path / "out" / "m.json"
    code, out, _ = _cli(str(pred), str(ref), "--csv", str(csv_path), "--json-file", str(json_path))
    assert code == 0 and "Dice" in out
    assert csv_path.read_text().startswith("row,case,region,ref_labels,pred_labels,lesion,dice")
    assert json.loads(json_path.read_text())["conventions"]["hd95"].startswith("pooled")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.csv", "m.json"]  # no temp files left


def test_folders_missing_partner_and_compare(tmp_path: Path) -> None:
    ref_dir, a_dir, b_dir = tmp_path / "ref", tmp_path / "a", tmp_path / "b"
    for i in range(3):
        write_mask(_mask(0), GEO, ref_dir / f"c{i}.nii.gz")
        write_mask(_mask(i % 2), GEO, a_dir / f"c{i}.nii.gz")
        write_mask(_mask(1 + i % 2), GEO, b_dir / f"c{i}.nii.gz")
    code, out, _ = _cli(str(a_dir), str(ref_dir), "--compare", str(b_dir), "--workers", "2")
    assert code == 0 and "Paired comparison" in out and "Wilcoxon p" in out

    (a_dir / "c1.nii.gz").unlink()
    out_csv = tmp_path / "m.csv"
    line = _assert_one_line_error(*_cli(str(a_dir), str(ref_dir), "--csv", str(out_csv)))
    assert "c1: no prediction" in line and "--allow-missing" in line
    assert not out_csv.exists()
    code, out, err = _cli(str(a_dir), str(ref_dir), "--allow-missing", "--csv", str(out_csv))
    assert code == 0 and "missing: c1: no prediction" in out and "warning" in err
    assert out_csv.exists()


def _truncated(tmp_path: Path) -> Path:
    path = tmp_path / "trunc.nii.gz"
    write_mask(np.random.default_rng(0).integers(0, 2, (20, 64, 64)).astype(np.uint8), GEO, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _write_raw(path: Path, array: np.ndarray, spacing=None) -> Path:
    image = sitk.GetImageFromArray(array, isVector=False)
    if spacing is not None:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def _bad_inputs(tmp_path: Path, ref: Path) -> dict[str, tuple[list[str], str]]:
    from liverctl.io import Image

    empty = tmp_path / "empty_dir"
    empty.mkdir()
    ref_dir = tmp_path / "ref_dir"
    write_mask(_mask(), GEO, ref_dir / "x.nii.gz")
    float_img = Image(np.where(_mask() > 0, 0.5, 0).astype(np.float32), GEO)
    neg_img = Image(_mask().astype(np.int16) - 1, GEO)
    write_image(float_img, tmp_path / "float.nii.gz")
    write_image(neg_img, tmp_path / "neg.nii.gz")
    write_mask(np.zeros((8, 24, 23), np.uint8), GEO, tmp_path / "narrow.nii.gz")
    return {
        "missing file": ([str(tmp_path / "nope.nii.gz"), str(ref)], "no such prediction"),
        "truncated": ([str(_truncated(tmp_path)), str(ref)], "cannot read"),
        "2D": ([str(_write_raw(tmp_path / "flat.nii.gz", np.zeros((24, 24), np.uint8))), str(ref)], "2D"),
        "4D": ([str(_write_raw(tmp_path / "t.nii.gz", np.zeros((2, 8, 24, 24), np.uint8))), str(ref)], "4D"),
        "float labels": ([str(tmp_path / "float.nii.gz"), str(ref)], "fractional"),
        "negative labels": ([str(tmp_path / "neg.nii.gz"), str(ref)], "negative"),
        "mismatched shapes": ([str(tmp_path / "narrow.nii.gz"), str(ref)], "shape"),
        "empty folder": ([str(empty), str(ref_dir)], "no image files"),
        "bad labels option": ([str(ref), str(ref), "--labels", "liver"], "labels"),
        "bad convention": ([str(ref), str(ref), "--hd95", "median"], "HD95 convention"),
        "unknown preset": ([str(ref), str(ref), "--preset", "kits"], "unknown region preset"),
        "malformed regions": ([str(ref), str(ref), "--regions", "liver:1"], "unknown region preset"),
        "bad region labels": ([str(ref), str(ref), "--regions", "liver=1+x"], "whole numbers"),
        "preset and regions": ([str(ref), str(ref), "--preset", "lits", "--regions", "liver=1"], "not both"),
        "labels and regions": ([str(ref), str(ref), "--preset", "lits", "--labels", "1"], "exclude"),
        "one-sided region": ([str(ref), str(ref), "--pred-regions", "liver=5"], "no labels for the reference"),
        "unknown lesion region": ([str(ref), str(ref), "--preset", "lits", "--lesions", "cyst"], "not among"),
        "bad nsd": ([str(ref), str(ref), "--nsd", "1,x"], "NSD tolerances"),
        "bad connectivity": ([str(ref), str(ref), "--preset", "lits", "--lesion-connectivity", "8"], "connectivity"),
    }


def test_bad_input_one_line_no_output(pair: tuple[Path, Path], tmp_path: Path) -> None:
    _, ref = pair
    out_csv, out_json = tmp_path / "o" / "m.csv", tmp_path / "o" / "m.json"
    for what, (args, needle) in _bad_inputs(tmp_path, ref).items():
        line = _assert_one_line_error(*_cli(*args, "--csv", str(out_csv), "--json-file", str(out_json)))
        assert needle in line, (what, line)
        assert not out_csv.exists() and not out_json.exists(), what
        assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir()), what
    # refusing to overwrite an input
    line = _assert_one_line_error(*_cli(str(ref), str(ref), "--csv", str(ref)))
    assert "overwrite" in line
    line = _assert_one_line_error(*_cli(str(ref), str(ref), "--csv", "-", "--json"))
    assert "stdout" in line


def test_subprocess_no_torch_and_no_traceback(pair: tuple[Path, Path], cli_env: dict[str, str], tmp_path: Path) -> None:
    pred, ref = pair
    for args in (["--help"], [str(pred), str(ref), "--json-file", str(tmp_path / "r.json")]):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "liverctl", "evaluate", *args],
            capture_output=True,
            text=True,
            env=cli_env,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
        assert "torch" not in imported and "monai" not in imported
        assert not any(name.startswith("torch.") for name in imported)
    assert json.loads((tmp_path / "r.json").read_text())["cases"][0]["case"] == "ref"
    bad = subprocess.run(
        [sys.executable, "-m", "liverctl", "evaluate", str(_truncated(tmp_path)), str(ref)],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
    )
    assert bad.returncode != 0 and bad.stdout == "" and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def _lits_files(tmp_path: Path) -> tuple[Path, Path]:
    ref = _mask(0)
    ref[2:4, 12:14, 12:14] = 2  # a second tumour, missed by the prediction
    pred = np.where(_mask(1) > 0, 1, 0).astype(np.uint8)
    pred[3:5, 8:10, 9:11] = 2
    write_mask(pred, GEO, tmp_path / "p.nii.gz")
    write_mask(ref, GEO, tmp_path / "r.nii.gz")
    return tmp_path / "p.nii.gz", tmp_path / "r.nii.gz"


def test_lits_hint_once_and_preset_tables(tmp_path: Path) -> None:
    pred, ref = _lits_files(tmp_path)
    code, out, err = _cli(str(pred), str(ref))
    hints = [line for line in err.splitlines() if "1+2" in line]
    assert code == 0 and len(hints) == 1 and hints[0].startswith("liverctl: warning: ") and "--preset lits" in hints[0]
    code, out, err = _cli(str(pred), str(ref), "--preset", "lits", "--nsd", "1,2")
    assert code == 0 and "1+2" not in err
    assert "| liver " in out and "| 1+2 " in out and "NSD 2 mm" in out
    assert "Lesion detection: tumour" in out and "pooled" in out and "26-connected" in out


def test_csv_json_with_regions_and_compare(tmp_path: Path) -> None:
    pred, ref = _lits_files(tmp_path)
    code, out, _ = _cli(str(pred), str(ref), "--regions", "liver=1+2,tumour=2", "--nsd", "1", "--csv", "-")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    sp = read_label(ref).spacing_zyx
    p, r = read_label(pred).array, read_label(ref).array
    liver = next(x for x in rows if x["row"] == "case" and x["region"] == "liver")
    assert liver["ref_labels"] == "1+2" and float(liver["dice"]) == M.compute_metrics(p > 0, r > 0, sp).dice
    tumour = next(x for x in rows if x["row"] == "case" and x["region"] == "tumour")
    assert (tumour["lesions_tp"], tumour["lesions_fn"], tumour["lesions_fp"]) == ("1", "1", "0")
    assert [x["detected"] for x in rows if x["row"] == "lesion"] == ["0", "1"]  # raster order: the missed one first
    assert "nsd_1mm" in liver and liver["nsd_1mm"] != ""
    code, out, _ = _cli(str(pred), str(ref), "--preset", "lits", "--compare", str(ref), "--json")
    data = json.loads(out)
    assert code == 0 and {c["region"] for c in data["comparison"]} == {"liver", "tumour"}
    assert data["summary"]["tumour"]["lesion_detection"]["lesion_recall"] == 0.5


def test_pred_regions_on_the_real_multiorgan_map(liver_path: Path, multiorgan_path: Path) -> None:
    code, out, err = _cli(
        str(multiorgan_path), str(liver_path), "--regions", "liver=1", "--pred-regions", "totalseg", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    row = data["cases"][0]
    assert (row["region"], row["pred_labels"], row["ref_labels"]) == ("liver", [5], [1])
    multi, liver = read_label(multiorgan_path), read_label(liver_path)
    assert row["dice"] == M.compute_metrics(multi.array == 5, liver.array == 1, liver.spacing_zyx).dice
