"""``liverctl predict --weights RESULTS_DIR``: an nnU-Net v2 results folder through predict.

The folder is the one nnU-Net 2.5.1 made (tests/data/nnunet); the scans are the small nnU-Net
test cases (:mod:`nnunet_cases`).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from nnunet_cases import FOLDER, write_cases
from typer.testing import CliRunner

from liverctl.cli import app
from liverctl.errors import ConfigError
from liverctl.io import Geometry, Image, read_image
from liverctl.nnunet import NnUNetModel, available_folds
from liverctl.postprocessing import clean_liver_mask
from liverctl.predict import PredictOptions, predict
from liverctl.predict.nnunet_model import NnUNetLiverModel


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_cases(tmp_path_factory.mktemp("nnunet_predict_scans"))


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIVERCTL_NO_PROGRESS", "1")
    monkeypatch.setenv("LIVERCTL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LIVERCTL_DEBUG", raising=False)


def _same_grid(a: Image, b: Image) -> bool:
    """Same grid up to the float32 rounding of a NIfTI header."""
    ga, gb = a.geometry, b.geometry
    return all(
        np.allclose(x, y, atol=1e-5)
        for x, y in zip((ga.spacing, ga.origin, ga.direction), (gb.spacing, gb.origin, gb.direction), strict=True)
    )


def _cli(*args: str | Path) -> object:
    return CliRunner().invoke(app, ["predict", *map(str, args), "--device", "cpu"])


def test_cli_exact_mask_is_nnunets_liver_labels(scans: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _cli(scans["oblique"], "--weights", FOLDER, "-o", out, "--exact", "--no-postprocess")
    assert result.exit_code == 0, result.output
    image = read_image(scans["oblique"])
    mask = read_image(out / "oblique_0000.nii.gz")
    assert mask.shape == image.shape and _same_grid(mask, image)
    ref = NnUNetModel.load(FOLDER, folds=None, device="cpu", exact=True)
    labels = ref.predict(image).labels.array
    assert np.array_equal(mask.array.astype(bool), np.isin(labels, ref.plans.liver_labels))
    assert mask.array.any()
    assert "nnU-Net" in result.stderr  # the citation line

    report = json.loads((out / "oblique_0000.json").read_text())
    model = report["model"]
    folds = [str(f) for f in available_folds(FOLDER)]
    assert model["format"] == "nnunetv2" and model["folder"] == str(FOLDER) and model["folds"] == folds
    assert model["exact"] is True
    shas = {f"fold_{f}/checkpoint_final.pth": ref.hashes[f"fold_{f}/checkpoint_final.pth"] for f in folds}
    assert {k: model["files"][k] for k in shas} == shas and set(model["files"]) >= {"plans.json", "dataset.json"}
    if len(folds) > 1:
        assert [e["sha256"] for e in model["ensemble"]] == list(shas.values())
    assert report["options"]["shortcuts"] is False
    assert report["voxel_count"] == int(mask.array.sum()) and report["liver_volume_ml"] > 0
    assert "flags" in report["qc"]
    inference = report["inference"]
    assert inference["precision"] == "fp32" and inference["device"] == "cpu"
    assert inference["mirror_axes"]  # exact mode mirrors, as nnUNetPredictor
    assert inference["grid_windows"] >= 1 and inference["windows"] >= inference["grid_windows"]


def test_defaults_postprocess_mirroring_and_probabilities(scans: dict[str, Path], tmp_path: Path) -> None:
    image = read_image(scans["native"])
    net = NnUNetLiverModel.load(FOLDER)
    # torch: this compares with nnU-Net's own arithmetic voxel for voxel (auto may pick a runtime
    # measured faster here, within 1e-4 on the exactness test's windows, not bit for bit)
    seg = net.segment(image, PredictOptions(save_probabilities=True, backend="torch"))
    raw = NnUNetModel.load(FOLDER, folds=None, device="cpu").predict(image)  # mirrored, nnU-Net's default
    liver = np.isin(raw.labels.array, raw.stats["liver_labels"])
    assert np.array_equal(seg.mask.array, clean_liver_mask(liver)[0])
    assert seg.probabilities is not None and seg.probabilities.geometry == image.geometry
    assert np.array_equal(seg.probabilities.array, raw.liver_probability.array)
    assert seg.report["inference"]["mirror_axes"] == raw.stats["mirror_axes"] != []  # mirrored without --tta
    with pytest.raises(ConfigError, match="exact"):
        net.segment(image, PredictOptions(shortcuts=False))


def test_an_all_air_scan_gives_an_empty_mask(tmp_path: Path) -> None:
    air = Image(np.full((20, 24, 20), -1000, dtype=np.int16), Geometry((8.0, 8.0, 10.0)))
    seg = NnUNetLiverModel.load(FOLDER).segment(air)
    assert not seg.mask.array.any() and "no_body" in seg.report["qc"]["flags"]


def test_batch_summary_and_resume(scans: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    two = [scans["native"], scans["anisotropic"]]
    result = _cli(*two, "--weights", FOLDER, "-o", out, "--save-probabilities")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[0]["model"] == "Dataset914_LiverPhantom/nnUNetTrainer__nnUNetPlans__3d_fullres"
    assert (out / "anisotropic_0000_probabilities.nii.gz").is_file()
    again = predict(
        two, out, weights=FOLDER, options=PredictOptions(device="cpu", save_probabilities=True), resume=True
    )
    assert [c.skipped for c in again.cases] == [True, True]
    other = predict(
        [scans["native"]], out, weights=FOLDER, options=PredictOptions(device="cpu", save_probabilities=True, tta=True)
    )
    assert other.cases[0].ok and not other.cases[0].skipped


def _no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a scan was read")

    monkeypatch.setattr("liverctl.predict.batch.read_ct", refuse)


def test_folder_without_checkpoints_is_one_line(
    scans: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "Dataset914_LiverPhantom" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy(FOLDER / name, folder / name)
    _no_reading(monkeypatch)
    result = _cli(scans["native"], "--weights", folder, "-o", tmp_path / "out")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "fold_N/checkpoint_final.pth" in lines[0], result.stderr


def test_bad_plans_is_one_line(scans: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "Dataset914_LiverPhantom" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(FOLDER, folder)
    (folder / "plans.json").write_text("{not json")
    _no_reading(monkeypatch)
    result = _cli(scans["native"], "--weights", folder, "-o", tmp_path / "out")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "plans.json" in lines[0], result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.nii.gz"))
