"""Messages that must say what they mean (issue 19): brackets kept in help and tables, no
"± 0.0000" for an undefined std, "≥" where a volume is a lower bound, a preset's own labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from typer.testing import CliRunner

from liverctl.cli import app


def _mask(path: Path, size: int) -> Path:
    lab = np.zeros((12, 16, 16), np.uint8)
    lab[3:9, 4 : 4 + size, 4:12] = 1
    img = sitk.GetImageFromArray(lab)
    img.SetSpacing((2.0, 2.0, 3.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def test_help_keeps_square_brackets() -> None:
    result = CliRunner().invoke(app, ["predict", "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.replace("│", " ").split())  # the help's box and wrapping undone
    assert "pip install 'liverctl[dicom]'" in text


def test_evaluate_table_keeps_bracketed_case_names_and_says_na_for_one_case(tmp_path: Path) -> None:
    for name, size in (("scan[b]", 8), ("scan[v2]", 6)):
        _mask(tmp_path / "p" / f"{name}.nii.gz", size)
        _mask(tmp_path / "r" / f"{name}.nii.gz", 8)
    env = {"LIVERCTL_NO_PROGRESS": "1"}
    table = CliRunner().invoke(app, ["evaluate", str(tmp_path / "p"), str(tmp_path / "r")], env=env).stdout
    assert "| scan[b] " in table and "| scan[v2] " in table
    one = CliRunner().invoke(
        app, ["evaluate", str(tmp_path / "p" / "scan[b].nii.gz"), str(tmp_path / "r" / "scan[b].nii.gz")], env=env
    )
    assert one.exit_code == 0 and "1.0000 ± n/a" in one.stdout and "± 0.0000" not in one.stdout


def test_preview_caption_marks_a_lower_bound() -> None:
    from liverctl.predict.preview import caption

    assert caption("a.nii.gz", 1523.4, lower_bound=True).startswith("a.nii.gz   liver ≥ 1523 mL")
    assert "liver 1523 mL" in caption("a.nii.gz", 1523.4) and "≥" not in caption("a.nii.gz", 1523.4)
    assert "no liver found" in caption("a.nii.gz", None, lower_bound=True)


def test_totalseg_preset_prints_its_own_liver_label(tmp_path: Path) -> None:
    from liverctl.postprocessing.config import PRESETS

    assert PRESETS["totalseg"].names[5] == "liver" and PRESETS["totalseg"].liver_labels == (5,)
    out = CliRunner().invoke(
        app,
        [
            "postprocess",
            str(_mask(tmp_path / "m.nii.gz", 8)),
            "-o",
            str(tmp_path / "o.nii.gz"),
            "--preset",
            "totalseg",
            "--json",
        ],
        env={"LIVERCTL_NO_PROGRESS": "1"},
    )
    assert out.exit_code == 0 and json.loads(out.stdout)["config"]["liver_labels"] == [5]
