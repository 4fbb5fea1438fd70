"""Issue 13: help that tells the truth, one --json / progress / axis convention, usage errors
as one line, logs that work in a file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from liverctl.cli import app
from liverctl.io import Geometry, read_image, write_mask
from liverctl.progress import LineLog, report_values

COMMANDS = [
    ["preprocess"],
    ["train"],
    ["predict"],
    ["gather"],
    ["crosstest"],
    ["demo"],
    ["evaluate"],
    ["postprocess"],
    ["phantom"],
    ["weights", "list"],
    ["weights", "download"],
    ["weights", "verify"],
    ["weights", "path"],
    ["weights", "add"],
    ["weights", "pack"],
    ["weights", "import"],
]


def _help(command: list[str]) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_shows_flags_as_flags_and_names_every_value(command: list[str]) -> None:
    text = _help(command)
    assert not re.search(r"<(bool|str|int|float|path|list)", text, re.I), text
    assert not re.search(r"\{[a-z_]+\}", text), text  # {inputs}
    if command[0] not in ("weights", "gather") or command[-1] in ("download", "add", "pack"):
        assert "--progress" in text and "--quiet" in text and "--verbose" in text


def test_predict_help_has_the_totalsegmentator_spellings() -> None:
    text = _help(["predict"])
    for flag in ("-i", "--recursive", "--output-format", "--preview", "--exact", "nii.gz|nrrd|mha|dicom-seg"):
        assert flag in text


@pytest.mark.parametrize(
    "args, needle",
    [
        (["predict", "scan.nii.gz", "--tta", "true"], "--tta is a switch and takes no value"),
        (["evaluate", "p/", "r/", "--json", "out.json"], "use --json-file out.json"),
        (["phantom", "x", "--organs", "yes"], "--organs is a switch"),
        (["weights", "download", "--force", "1"], "--force is a switch"),
        (["predict", "--bogus"], "No such option"),
    ],
)
def test_usage_mistakes_are_one_line_exit_2_before_any_work(args: list[str], needle: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "liverctl", *args], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("liverctl: error: ") and needle in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a mask of 'scan.nii.gz'


def test_quiet_and_verbose_together_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["phantom", str(tmp_path / "p"), "-q", "-v"])
    assert result.exit_code == 2 and "give --quiet or --verbose, not both" in result.stderr
    assert not (tmp_path / "p").exists()


def test_phantom_shape_is_x_y_z_like_spacing(tmp_path: Path, cli_env: dict[str, str]) -> None:
    out = tmp_path / "ph"
    args = ["phantom", str(out), "-n", "1", "--shape", "40,32,16", "--spacing", "6,5,8", "--json"]
    proc = subprocess.run([sys.executable, "-m", "liverctl", *args], capture_output=True, text=True, env=cli_env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["shape_xyz"] == [40, 32, 16] and summary["spacing_xyz"] == [6.0, 5.0, 8.0]
    image = read_image(out / "imagesTr" / summary["cases"][0].split("/")[-1])
    assert image.shape[::-1] == (40, 32, 16) and image.geometry.spacing == (6.0, 5.0, 8.0)


def test_patch_is_x_y_z_and_its_error_says_so() -> None:
    from liverctl.cli.cmd_train import _patch

    assert _patch("64,48,32") == (32, 48, 64)  # TrainConfig keeps (z, y, x)
    assert _patch("32") == (32, 32, 32)
    result = CliRunner().invoke(app, ["train", "d", "-o", "o", "--patch", "1,2"])
    assert result.exit_code == 2 and "--patch must be three comma-separated numbers X,Y,Z" in result.stderr


def test_messages_name_flags_not_python_parameters() -> None:
    from liverctl.errors import ConfigError
    from liverctl.training import TrainConfig

    with pytest.raises(ConfigError, match="--val-every, --checkpoint-every and --workers"):
        TrainConfig(val_every=-1).validate()
    with pytest.raises(ConfigError, match="--iterations-per-epoch must be >= 1"):
        TrainConfig(iterations_per_epoch=0).validate()


def test_evaluate_json_is_a_switch_and_json_file_writes(tmp_path: Path) -> None:
    a = np.zeros((6, 12, 12), np.uint8)
    a[2:4, 3:9, 3:9] = 1
    geo = Geometry((1.0, 1.0, 2.0))
    write_mask(a, geo, tmp_path / "p.nii.gz")
    write_mask(a, geo, tmp_path / "r.nii.gz")
    runner = CliRunner()
    shown = runner.invoke(app, ["evaluate", str(tmp_path / "p.nii.gz"), str(tmp_path / "r.nii.gz"), "--json", "-q"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["cases"]
    out = tmp_path / "m.json"
    wrote = runner.invoke(
        app, ["evaluate", str(tmp_path / "p.nii.gz"), str(tmp_path / "r.nii.gz"), "--json-file", str(out), "-q"]
    )
    assert wrote.exit_code == 0 and json.loads(out.read_text())["cases"]
    assert "Dice" in wrote.stdout  # the tables, as without --json


def test_line_log_writes_one_line_per_step_and_throttles_fine_ones() -> None:
    lines: list[str] = []
    now = [0.0]
    log = LineLog(lines.append, interval=60.0, clock=lambda: now[0])
    for i in range(4):
        now[0] += 10
        log("scans", i + 1, 4)
    assert len(lines) == 4 and "scans 4/4 (100%)" in lines[-1] and "ETA" in lines[1]
    lines.clear()
    log("sliding window", 0, 100)
    for i in range(100):
        now[0] += 1
        log("sliding window", i + 1, 100)
    assert len(lines) == 2 and lines[-1].split(" ", 2)[2].startswith("sliding window 100/100")  # t=60 s and the end
    lines.clear()
    report_values(log, "epoch", epoch=3, epochs=10, loss=0.41234, val_dice=0.8, lr=3e-4, seconds=12.0)
    assert "epoch 3/10" in lines[0] and "loss 0.4123" in lines[0] and "val Dice 0.8000" in lines[0]
    assert "ETA 1:24" in lines[0]
    report_values(print, "epoch", epoch=1)  # a plain callback is left alone


def test_training_off_a_terminal_logs_each_epoch_with_loss(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """A log file (stderr not a terminal) gets one plain line per epoch with loss and Dice."""
    env = dict(cli_env)
    env.pop("LIVERCTL_NO_PROGRESS")
    raw, prep = tmp_path / "raw", tmp_path / "prep"
    run = [sys.executable, "-m", "liverctl"]
    ph = subprocess.run(
        [*run, "phantom", str(raw), "-n", "3", "--shape", "32,32,16", "-q"], env=env, capture_output=True
    )
    assert ph.returncode == 0
    pp = subprocess.run([*run, "preprocess", str(raw), "-o", str(prep), "--spacing", "8,8,8", "-q"], env=env)
    assert pp.returncode == 0
    args = ["train", str(prep), "-o", str(tmp_path / "run"), "--arch-kwargs", '{"base_features": 4, "n_levels": 2}']
    args += [
        "--patch",
        "16",
        "--epochs",
        "2",
        "--iterations-per-epoch",
        "2",
        "--val-every",
        "1",
        "--folds",
        "3",
        "--device",
        "cpu",
    ]
    with open(tmp_path / "log.txt", "w") as log:
        proc = subprocess.run([*run, *args], env=env, stdout=subprocess.PIPE, stderr=log, text=True, timeout=600)
    text = (tmp_path / "log.txt").read_text()
    assert proc.returncode == 0, text
    epochs = [ln for ln in text.splitlines() if " epoch " in ln]
    assert len(epochs) == 2 and "loss " in epochs[0] and "val Dice " in epochs[0] and "ETA" in epochs[0], text
    assert "\r" not in text and "\x1b" not in text  # plain lines, no bars
