"""The He et al. 2021 protocol of `liverctl crosstest` (issue 11 points 1 and 5): target scans
z-cropped as the paper preprocesses them (the reference liver +- 60 mm; `none` keeps the raw
scan), whole-liver training by default, `--dropout`, and `--method` training any supported
recipe (PIPO-FAN here) through the same train function; unsupported combinations refused."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import tomllib

from liverctl.crosstest import crosstest
from liverctl.crosstest.cells import crop_target
from liverctl.errors import ConfigError, LiverctlWarning
from liverctl.io import Geometry, Image, read_image, read_label
from liverctl.phantoms import write_dataset

SHAPE, SPACING = (24, 32, 32), (12.0, 12.0, 14.0)
DOMAINS = ("contrast", "plain")
NAMES = [f"phantom_{d}" for d in DOMAINS]
PREPROCESS = {"target_spacing": SPACING, "window": "liver"}


def pipofan_config(**kw):
    from liverctl.training import TrainConfig

    base = dict(
        method="pipofan",
        arch_kwargs={"base_features": 4, "n_scales": 3},
        patch_size=(2, 32, 32),
        batch_size=2,
        epochs=1,
        iterations_per_epoch=2,
        val_every=0,
        device="cpu",
        checkpoint_every=0,
        augment=False,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("protocol_data")
    for d in DOMAINS:
        write_dataset(root / d, d, 1, seed=0, shape=SHAPE, spacing=SPACING)  # one scan each: fast
    return root


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("protocol_out") / "ct"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LiverctlWarning)
            result = crosstest(
                [data / d for d in DOMAINS], out, train_config=pipofan_config(), preprocess_options=PREPROCESS
            )
    finally:
        torch.set_num_threads(threads)
    return out, result


def test_crop_target_keeps_the_reference_liver_plus_60_mm():
    g = Geometry((1.0, 1.0, 5.0), (10.0, 20.0, 30.0))  # x, y, z spacing: 60 mm = 12 slices
    image = Image(np.arange(40 * 4 * 4, dtype=np.float32).reshape(40, 4, 4), g)
    ref = np.zeros((40, 4, 4), np.uint8)
    ref[15:20, 1:3, 1:3] = 1  # liver in slices 15..19
    cropped, cref, z_range = crop_target(image, Image(ref, g), "paper")
    assert z_range == (3, 32) and cropped.shape == (29, 4, 4) and cref.shape == (29, 4, 4)
    np.testing.assert_array_equal(cropped.array, image.array[3:32])
    assert cropped.geometry.origin[2] == pytest.approx(30.0 + 3 * 5.0)  # slice 3 is the new first slice
    assert int(cref.array.sum()) == int(ref.sum())
    # near the end of the volume the slab is bounded by it
    edge = np.zeros_like(ref)
    edge[37:, 0, 0] = 1
    assert crop_target(image, Image(edge, g), "paper")[2] == (25, 40)
    # none: the raw scan
    same, _, z_range = crop_target(image, Image(ref, g), "none")
    assert same is image and z_range == (0, 40)
    with pytest.raises(ConfigError, match="--target-crop must be one of paper, none"):
        crop_target(image, Image(ref, g), "liver")


def test_crosstest_trains_pipofan_sources_through_train(run):
    out, result = run
    assert result.names == NAMES and result.trained == NAMES
    assert result.method == "pipofan" and result.target_crop == "paper"
    off = result.matrices["dice"][~np.eye(2, dtype=bool)]
    assert np.isfinite(off).all() and ((off >= 0) & (off <= 1)).all()
    for name in NAMES:
        saved = json.loads((out / "models" / name / "config.json").read_text())["config"]
        assert saved["method"] == "pipofan" and saved["tumour_class"] is False and saved["folds"] is None
        entry = next(iter(tomllib.loads((out / "models" / name / "weights.toml").read_text())["models"].values()))
        # whole liver: the phantoms' tumour label was folded into the liver, no tumour class
        assert entry["architecture"] == "pipofan" and entry["labels"] == {"liver": 1}
    doc = json.loads((out / "crosstest.json").read_text())
    assert (doc["method"], doc["target_crop"]) == ("pipofan", "paper")


def _with_intensity(model, cell: dict):
    """``model`` normalising scans with the intensity recipe the cell records for its target."""
    import dataclasses

    from liverctl.weights.recipes import parse_intensity

    if cell["target_intensity"] is not None:
        model.entry = dataclasses.replace(model.entry, intensity=parse_intensity(cell["target_intensity"], "cell"))
    return model


def _segment(model, image: Image) -> np.ndarray:
    from liverctl.predict import PredictOptions

    return model.segment(image, PredictOptions(device="cpu")).mask.array > 0


def test_paper_crop_scores_the_liver_slab_and_none_the_raw_scan(run, data, tmp_path):
    from liverctl.metrics import dice
    from liverctl.predict import LiverModel
    from liverctl.preprocessing.crop import liver_z_range

    out, _ = run
    cell = json.loads((out / "cells" / f"{NAMES[0]}__{NAMES[1]}.json").read_text())
    assert cell["target_crop"] == "paper" and cell["n"] == 1
    # the cell normalised the target with its own dataset's statistics (the default): so does predict here
    model = _with_intensity(
        LiverModel.load(weights=out / "models" / NAMES[0] / "model.safetensors", device="cpu"), cell
    )
    cropped_somewhere = False
    for row in cell["per_case"]:
        image = read_image(data / "plain" / "imagesTr" / f"{row['case']}_0000.nii.gz")
        ref = read_label(data / "plain" / "labelsTr" / f"{row['case']}.nii.gz")
        z0, z1 = liver_z_range(ref, 60.0)  # every label >= 1: the liver with its tumours
        case = json.loads((out / "cells" / f"{NAMES[0]}__{NAMES[1]}" / f"{row['case']}.json").read_text())
        assert case["z_range"] == [z0, z1] and case["target_crop"] == "paper"
        cropped_somewhere |= (z0, z1) != (0, SHAPE[0])
        crop, cref, _ = crop_target(image, ref.with_array((ref.array > 0).astype(np.uint8)), "paper")
        assert row["dice"] == pytest.approx(dice(_segment(model, crop), cref.array > 0), abs=1e-12)
    assert cropped_somewhere  # the phantoms' livers leave slices out of the slab
    # none: the same models, the raw scans; the paper's cells are not reused for it
    out2 = tmp_path / "raw"
    shutil.copytree(out / "models", out2 / "models")
    raw = crosstest(
        [data / d for d in DOMAINS],
        out2,
        train_config=pipofan_config(),
        preprocess_options=PREPROCESS,
        target_crop="none",
    )
    assert raw.trained == [] and len(raw.computed) == 2 and raw.target_crop == "none"
    model = _with_intensity(model, raw.cells[(NAMES[0], NAMES[1])])
    for row in raw.cells[(NAMES[0], NAMES[1])]["per_case"]:
        image = read_image(data / "plain" / "imagesTr" / f"{row['case']}_0000.nii.gz")
        ref = read_label(data / "plain" / "labelsTr" / f"{row['case']}.nii.gz").array > 0
        assert row["dice"] == pytest.approx(dice(_segment(model, image), ref), abs=1e-12)


def test_cli_crosstest_method_pipofan_reuses_the_same_models(run, data, monkeypatch):
    from typer.testing import CliRunner

    from liverctl.cli import app

    out, _ = run
    monkeypatch.setenv("LIVERCTL_NO_PROGRESS", "1")
    args = ["crosstest", *(str(data / d) for d in DOMAINS), "-o", str(out), "--method", "pipofan"]
    args += ["--arch-kwargs", '{"base_features": 4, "n_scales": 3}', "--patch", "32,32,2", "--epochs", "1"]
    args += ["--iterations-per-epoch", "2", "--no-augment", "--device", "cpu", "--spacing", "12,12,14"]
    args += ["--window", "liver"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "cells computed 0, reused 2; models trained 0, reused 2" in result.output  # same options as Python


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "sdnet"], "crosstest --method sdnet is not supported"),
        (["--method", "di2in-an", "--tumour-class"], "segments the whole liver only"),
        (["--target-crop", "liver"], "--target-crop must be one of paper, none"),
        (["--dropout", "1.5"], "--dropout must be paper, none or a rate in [0, 1)"),
        (["--method", "pipofan", "--dropout", "paper"], "--dropout: the pipofan network"),
    ],
)
def test_cli_crosstest_refuses_unsupported_combinations_before_any_work(extra, message, data, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from liverctl.cli import app

    monkeypatch.setenv("LIVERCTL_NO_PROGRESS", "1")
    out = tmp_path / "ct"
    result = CliRunner().invoke(app, ["crosstest", *(str(data / d) for d in DOMAINS), "-o", str(out), *extra])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_whole_liver_accepts_datasets_with_and_without_a_tumour_label(data, tmp_path):
    from liverctl.crosstest.sources import open_sources

    liver_only = tmp_path / "liver_only"
    shutil.copytree(data / "plain", liver_only)
    meta = json.loads((liver_only / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "liver": 1}  # the plain phantoms hold no tumour voxel
    (liver_only / "dataset.json").write_text(json.dumps(meta))
    sets = open_sources([data / "contrast", liver_only], tmp_path / "ct", False, whole_liver=True)
    assert [s.liver_values for s in sets] == [[1, 2], [1]]  # the tumour still counts as liver when scored
    with pytest.raises(ConfigError, match="different label sets"):
        open_sources([data / "contrast", liver_only], tmp_path / "ct", False, whole_liver=False)
