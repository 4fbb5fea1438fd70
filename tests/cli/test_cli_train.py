"""`liverctl train` from the command line: preprocess -> train -> predict --weights, and bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib

from liverctl.io import read_image, write_image

TRAIN = ["--arch-kwargs", '{"base_features": 4, "n_levels": 3}', "--patch", "32", "--device", "cpu"]


def liverctl(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "liverctl", *args], capture_output=True, text=True, env=env, cwd=cwd)


def run_inprocess(*args: str, monkeypatch: pytest.MonkeyPatch):
    """The CLI in this process (Typer's runner): faster than a subprocess for option checks."""
    from typer.testing import CliRunner

    from liverctl.cli import app

    monkeypatch.setenv("LIVERCTL_NO_PROGRESS", "1")
    monkeypatch.delenv("LIVERCTL_DEBUG", raising=False)
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Four phantoms in MSD layout, preprocessed by liverctl.preprocessing."""
    from liverctl.phantoms import make_phantom
    from liverctl.preprocessing import preprocess

    root = tmp_path_factory.mktemp("cli_train")
    raw = root / "raw"
    for i in range(4):
        ct, lab = make_phantom(domain="contrast", seed=1, case=i, shape=(32, 40, 40), spacing=(9.0, 9.0, 10.0))
        write_image(ct, raw / "imagesTr" / f"ph_{i}_0000.nii.gz")
        write_image(lab.with_array((lab.array > 0).astype(np.uint8)), raw / "labelsTr" / f"ph_{i}.nii.gz")
    preprocess(raw, root / "prep", target_spacing=(9.0, 9.0, 10.0), window="liver", crop=False)
    return root


@pytest.mark.slow
def test_train_cli_exports_a_model_that_predict_uses(prepared, tmp_path, cli_env, monkeypatch):
    env = dict(cli_env, OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    proc = liverctl(
        "train", str(prepared / "prep"), "-o", str(out), *TRAIN,
        "--epochs", "2", "--iterations-per-epoch", "2", "--folds", "2", "--fold", "0", "--val-every", "2",
        "--seed", "1", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "model.safetensors")
    entry = tomllib.loads((out / "weights.toml").read_text())
    model = entry["models"][entry["default"]]
    assert model["intensity"]["window"] == [-200.0, 250.0] and model["spacing"] == [9.0, 9.0, 10.0]
    rows = (out / "train_log.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[2].split(",")[3] != ""
    # predict uses the exported file as it is (its weights.toml beside it)
    scan = prepared / "raw" / "imagesTr" / "ph_3_0000.nii.gz"
    pred = liverctl("predict", str(scan), "-o", str(tmp_path / "mask.nii.gz"), "--weights",
                    str(out / "model.safetensors"), "--device", "cpu", env=env)  # fmt: skip
    assert pred.returncode == 0, pred.stderr
    mask = read_image(tmp_path / "mask.nii.gz")
    assert mask.shape == read_image(scan).shape
    # --resume of a finished run re-exports the same weights
    again = run_inprocess(
        "train", str(prepared / "prep"), "-o", str(out), "--resume", "--json", monkeypatch=monkeypatch
    )
    assert again.exit_code == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["epochs"] == 2 and summary["iterations"] == 4 and summary["last_val_dice"] is not None


def test_train_cli_bad_input_is_one_line(prepared, tmp_path, monkeypatch):
    prep = str(prepared / "prep")
    few = run_inprocess("train", prep, "-o", str(tmp_path / "x"), "--folds", "5", *TRAIN, monkeypatch=monkeypatch)
    assert few.exit_code == 2
    assert few.stderr.strip() == (
        "liverctl: error: dataset prep: 4 cases are too few for 5-fold cross-validation (need >= 5)"
    )
    assert not (tmp_path / "x" / "last.pt").exists() and few.stdout == ""
    missing = run_inprocess("train", str(tmp_path / "nope"), "-o", str(tmp_path / "y"), monkeypatch=monkeypatch)
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1 and "nope" in missing.stderr
    resume = run_inprocess("train", prep, "-o", str(tmp_path / "z"), "--resume", monkeypatch=monkeypatch)
    assert resume.exit_code == 2 and "no checkpoint to resume from" in resume.stderr
    patch = run_inprocess("train", prep, "-o", str(tmp_path / "w"), "--patch", "30", monkeypatch=monkeypatch)
    assert patch.exit_code == 2 and "must be a multiple of 32" in patch.stderr
    # answered in the X,Y,Z the user gave, not in the arrays' (z, y, x)
    xyz = run_inprocess(
        "train", prep, "-o", str(tmp_path / "u"), "--method", "hdenseunet", "--patch", "16,64,6",
        "--arch-kwargs", '{"preset": "small"}', monkeypatch=monkeypatch,
    )  # fmt: skip
    assert xyz.exit_code == 2 and "--patch 16,64,6 must be a multiple of" in xyz.stderr and "(X,Y,Z)" in xyz.stderr
    kwargs = run_inprocess("train", prep, "-o", str(tmp_path / "v"), "--arch-kwargs", "{", monkeypatch=monkeypatch)
    assert kwargs.exit_code == 2 and "--arch-kwargs is not valid JSON" in kwargs.stderr


def test_train_cli_skips_a_corrupt_case_with_a_warning(prepared, tmp_path, monkeypatch):
    import shutil

    prep = tmp_path / "prep"
    shutil.copytree(prepared / "prep", prep)
    (prep / "images" / "ph_1.npy").write_bytes(b"\x93NUMPY garbage")
    out = tmp_path / "run"
    proc = run_inprocess("train", str(prep), "-o", str(out), *TRAIN, "--epochs", "1", "--iterations-per-epoch", "1",
                         "--val-every", "0", monkeypatch=monkeypatch)  # fmt: skip
    assert proc.exit_code == 0, proc.stderr
    assert "liverctl: warning: skipping case ph_1 of dataset prep" in proc.stderr
    assert "ph_1" in (out / "train_log.csv").read_text()
    assert os.path.exists(proc.stdout.strip())


def test_resume_from_an_unsafe_checkpoint_never_suggests_unsafe_loading(prepared, tmp_path, monkeypatch):
    # issue 8: the error repeated torch's advice to load with weights_only=False
    import pathlib

    import torch

    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": {}, "config": {}, "where": pathlib.PurePosixPath("x")}, out / "last.pt")
    proc = run_inprocess("train", str(prepared / "prep"), "-o", str(out), "--resume", monkeypatch=monkeypatch)
    assert proc.exit_code == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "unreadable checkpoint" in proc.stderr and "PurePosixPath" in proc.stderr
    for advice in ("weights_only", "trust", "safe_globals", "arbitrary code"):
        assert advice not in proc.stderr


def test_torch_load_errors_carry_no_unsafe_advice(tmp_path):
    import pathlib

    import torch

    from liverctl.errors import ConfigError, WeightsError
    from liverctl.training.checkpoint import load_checkpoint
    from liverctl.weights import load_state_dict
    from liverctl.weights.resolve import load_failure_reason

    path = tmp_path / "unsafe.pt"
    torch.save({"w": torch.zeros(2), "p": pathlib.PurePosixPath("x")}, path)
    with pytest.raises(ConfigError) as ckpt:
        load_checkpoint(path)
    with pytest.raises(WeightsError) as weights:
        load_state_dict(path)
    try:
        torch.load(path, weights_only=True)
    except Exception as exc:
        assert "weights_only" in str(exc)  # what torch says ...
        reason = load_failure_reason(exc)
    for message in (str(ckpt.value), str(weights.value), reason):  # ... and what liverctl says
        assert "weights_only=False" not in message and "trust" not in message and "safe_globals" not in message
        assert "\n" not in message and "\x1b" not in message


def test_train_output_inside_a_dataset_folder_is_refused(prepared, tmp_path, monkeypatch):
    # issue 8: preprocess, postprocess and crosstest refuse it; train wrote into the dataset
    import shutil

    prep = tmp_path / "prep"
    shutil.copytree(prepared / "prep", prep)
    before = sorted(p.relative_to(prep) for p in prep.rglob("*"))
    for out in (prep, prep / "run"):
        proc = run_inprocess("train", str(prep), "-o", str(out), *TRAIN, monkeypatch=monkeypatch)
        assert proc.exit_code == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("liverctl: error: output folder") and "input dataset" in proc.stderr
    assert sorted(p.relative_to(prep) for p in prep.rglob("*")) == before  # nothing written


def test_the_removed_labelled_fraction_option_points_to_preprocess(prepared, tmp_path, monkeypatch):
    """`train --labelled-fraction` split cases after label-derived preprocessing (a leak); it is
    gone from the help but refused with the commands that replace it, before any work."""
    out = tmp_path / "run"
    r = run_inprocess(
        "train", str(prepared / "prep"), "-o", str(out), "--labelled-fraction", "0.2", monkeypatch=monkeypatch
    )
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "preprocess DATASET -o OUT --labelled-fraction F" in r.stderr and "--unlabelled OUT/unlabelled" in r.stderr
    assert not out.exists()
    helped = run_inprocess("train", "--help", monkeypatch=monkeypatch)
    # no option row for it (the --unlabelled help still names `preprocess --labelled-fraction`)
    assert not re.search(r"^[│|]?\s*--labelled-fraction\s", helped.stdout, re.M)
