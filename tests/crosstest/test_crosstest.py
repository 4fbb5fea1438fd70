"""`liverctl crosstest` on tiny phantom datasets of three domains: matrices, heatmap,
agreement with the real predict path, resumability, bad input."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from liverctl.crosstest import best_sources, crosstest, parse_metrics
from liverctl.errors import ConfigError, InputError, LiverctlWarning
from liverctl.phantoms import write_dataset

SHAPE, SPACING = (24, 32, 32), (12.0, 12.0, 14.0)
DOMAINS = ("contrast", "plain", "porcine")
NAMES = [f"phantom_{d}" for d in DOMAINS]
PREPROCESS = {"target_spacing": SPACING, "window": "liver"}


def tiny_config(**kw):
    from liverctl.training import TrainConfig

    base = dict(
        arch_kwargs={"base_features": 4, "n_levels": 2},
        patch_size=(16, 32, 32),
        batch_size=2,
        epochs=2,
        iterations_per_epoch=3,
        lr=1e-2,
        val_every=0,
        device="cpu",
        checkpoint_every=0,
        augment=False,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crosstest_data")
    for d in DOMAINS:
        write_dataset(root / d, d, 2, seed=0, shape=SHAPE, spacing=SPACING)
    return root


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("crosstest_out") / "ct"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LiverctlWarning)
            result = crosstest(
                [data / d for d in DOMAINS],
                out,
                train_config=tiny_config(),
                metrics="dice,assd",
                preprocess_options=PREPROCESS,
            )
    finally:
        torch.set_num_threads(threads)
    return out, result


def _read_matrix(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    rows = list(csv.reader(path.read_text().splitlines()))
    header = rows[0]
    values = np.array([[float(v) if v else np.nan for v in r[1:]] for r in rows[1:]])
    return header, [r[0] for r in rows[1:]], values


def test_matrix_files(run):
    out, result = run
    assert result.names == NAMES
    assert sorted(result.computed) == sorted((s, t) for s in NAMES for t in NAMES if s != t)
    assert result.trained == NAMES and not result.reused
    for metric in ("dice", "assd"):
        header, rows, values = _read_matrix(out / f"matrix_{metric}.csv")
        assert header == ["source\\target", *NAMES] and rows == NAMES
        assert values.shape == (3, 3)
        assert np.isnan(np.diag(values)).all()
        off = values[~np.eye(3, dtype=bool)]
        assert np.isfinite(off).all()
        np.testing.assert_allclose(values, result.matrices[metric], rtol=1e-5, equal_nan=True)
        image = mpimg.imread(out / f"matrix_{metric}.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    dice = result.matrices["dice"]
    assert ((dice[~np.eye(3, dtype=bool)] >= 0) & (dice[~np.eye(3, dtype=bool)] <= 1)).all()
    doc = json.loads((out / "crosstest.json").read_text())
    assert doc["names"] == NAMES and doc["metrics"] == ["dice", "assd"]
    for i in range(3):
        assert doc["matrices"]["dice"][i][i] is None
    # best source per target = the highest Dice of each column (lowest ASSD), among the others
    for j, t in enumerate(NAMES):
        col = [(dice[i, j], NAMES[i]) for i in range(3) if i != j]
        assert doc["best_source"]["dice"][t] == max(col)[1]
        acol = [(result.matrices["assd"][i, j], NAMES[i]) for i in range(3) if i != j]
        assert doc["best_source"]["assd"][t] == min(acol)[1]
    # each cell is the mean of its per-case values
    cell = json.loads((out / "cells" / f"{NAMES[0]}__{NAMES[1]}.json").read_text())
    assert cell["n"] == 2 and cell["scans"] == ["phantom_plain_000", "phantom_plain_001"]
    assert cell["summary"]["dice"]["mean"] == pytest.approx(np.mean([c["dice"] for c in cell["per_case"]]))
    assert dice[0, 1] == pytest.approx(cell["summary"]["dice"]["mean"])


def test_cell_equals_predict_on_the_cropped_target(run, data, tmp_path):
    """A cell's Dice is what `liverctl predict --weights` gives on the target scans z-cropped as
    the paper crops them (the raw scan's reference liver +- 60 mm; --target-crop none: the raw scan),
    the source model normalising them with the target dataset's own statistics (the default,
    per dataset as the paper) or, with --target-normalization source, with its own."""
    import dataclasses

    from liverctl.crosstest.cells import crop_target
    from liverctl.io import read_image, read_label
    from liverctl.metrics import dice
    from liverctl.predict import LiverModel, PredictOptions
    from liverctl.preprocessing import Plan
    from liverctl.training.export import intensity_recipe

    out, _ = run
    weights = out / "models" / NAMES[0] / "model.safetensors"
    own = LiverModel.load(weights=weights, device="cpu")
    target_plan = Plan.load(out / "preprocessed" / NAMES[1] / "plan.json")
    target = dataclasses.replace(own.entry, intensity=intensity_recipe(target_plan.to_dict()))
    assert target.intensity != own.entry.intensity  # the two datasets' statistics differ
    out2 = tmp_path / "source"
    shutil.copytree(out / "models", out2 / "models")  # reuse the trained models
    source = crosstest(
        [data / d for d in DOMAINS], out2, train_config=tiny_config(), preprocess_options=PREPROCESS,
        target_normalization="source",
    )  # fmt: skip
    assert source.trained == [] and source.to_dict()["target_normalization"] == "source"
    cells = {
        "target": json.loads((out / "cells" / f"{NAMES[0]}__{NAMES[1]}.json").read_text()),
        "source": source.cells[(NAMES[0], NAMES[1])],
    }
    for reading, entry in (("target", target), ("source", own.entry)):
        cell = cells[reading]
        assert cell["target_crop"] == "paper"
        assert cell["target_intensity"] == (entry.intensity.to_dict() if reading == "target" else None)
        model = LiverModel.load(weights=weights, device="cpu")
        model.entry = entry
        for row in cell["per_case"]:
            path = data / "plain" / "imagesTr" / f"{row['case']}_0000.nii.gz"
            ref = read_label(data / "plain" / "labelsTr" / f"{row['case']}.nii.gz")
            image, ref, _ = crop_target(read_image(path), ref.with_array((ref.array > 0).astype(np.uint8)), "paper")
            mask = model.segment(image, PredictOptions(device="cpu")).mask.array > 0
            assert row["dice"] == pytest.approx(dice(mask, ref.array > 0), abs=1e-12)


def test_rerun_recomputes_nothing(run, data, monkeypatch):
    out, first = run
    files = sorted((out / "cells").rglob("*.json")) + sorted((out / "models").rglob("model.safetensors"))
    mtimes = {p: p.stat().st_mtime_ns for p in files}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished model was retrained")

    def no_prediction(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    import liverctl.predict
    import liverctl.training

    monkeypatch.setattr(liverctl.training, "train", no_training)
    monkeypatch.setattr(liverctl.predict.LiverModel, "load", no_prediction)
    again = crosstest(
        [data / d for d in DOMAINS],
        out,
        train_config=tiny_config(device="auto"),  # runtime options do not invalidate a model
        metrics=["dice", "assd"],
        preprocess_options=PREPROCESS,
    )
    assert again.computed == [] and len(again.reused) == 6
    assert again.trained == [] and again.reused_models == NAMES
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    np.testing.assert_array_equal(again.matrices["dice"], first.matrices["dice"])


def test_other_training_options_refused(run, data):
    out, _ = run
    with pytest.raises(ConfigError, match="other options"):
        crosstest([data / d for d in DOMAINS], out, train_config=tiny_config(epochs=3), preprocess_options=PREPROCESS)


def test_corrupt_target_scan_is_skipped_with_warning(run, data, tmp_path):
    """A corrupt scan in the middle of a target dataset: skipped with a warning, listed in the
    cell; the models and the other scans are used as usual."""
    out, _ = run
    bad = tmp_path / "plain"
    shutil.copytree(data / "plain", bad)
    write_dataset(bad, "plain", 3, seed=0, shape=SHAPE, spacing=SPACING, overwrite=True)
    scan = bad / "imagesTr" / "phantom_plain_001_0000.nii.gz"
    scan.write_bytes(scan.read_bytes()[:200])  # truncated file
    out2 = tmp_path / "ct2"
    shutil.copytree(out / "models", out2 / "models")  # reuse the trained models
    with pytest.warns(LiverctlWarning, match="skipping scan phantom_plain_001"):
        result = crosstest(  # source: the target's own statistics would need every one of its scans
            [data / "contrast", bad], out2, train_config=tiny_config(), preprocess_options=PREPROCESS,
            target_normalization="source",
        )  # fmt: skip
    cell = result.cells[(NAMES[0], NAMES[1])]
    assert [s["case"] for s in cell["skipped"]] == ["phantom_plain_001"]
    assert cell["n"] == 2 and np.isfinite(result.matrices["dice"][0, 1])
    assert result.trained == []


def test_target_without_liver_voxels_is_skipped(run, data, tmp_path):
    from liverctl.io import read_label, write_image

    out, _ = run
    bad = tmp_path / "plain"
    shutil.copytree(data / "plain", bad)
    path = bad / "labelsTr" / "phantom_plain_000.nii.gz"
    lab = read_label(path)
    write_image(lab.with_array(np.zeros_like(lab.array)), path)
    out2 = tmp_path / "ct3"
    shutil.copytree(out / "models", out2 / "models")
    with pytest.warns(LiverctlWarning, match="no liver voxel"):
        result = crosstest([data / "contrast", bad], out2, train_config=tiny_config(), preprocess_options=PREPROCESS)
    assert result.cells[(NAMES[0], NAMES[1])]["n"] == 1


def test_different_label_sets_refused_before_training(data, tmp_path):
    other = tmp_path / "organs"
    write_dataset(other, "plain", 2, seed=0, shape=SHAPE, spacing=SPACING, include_organs=True)
    out = tmp_path / "ct"
    with pytest.raises(ConfigError, match="different label sets"):
        crosstest([data / "contrast", other], out, train_config=tiny_config())
    assert not (out / "models").exists()


def test_no_liver_label_refused(data, tmp_path):
    other = tmp_path / "noliver"
    shutil.copytree(data / "plain", other)
    meta = json.loads((other / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "organ": 1, "tumour": 2}
    (other / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="no label named 'liver'"):
        crosstest([data / "contrast", other], tmp_path / "ct", train_config=tiny_config(), liver_only=True)


def test_bad_arguments(data, tmp_path):
    with pytest.raises(ConfigError, match="at least two"):
        crosstest([data / "contrast"], tmp_path / "a", train_config=tiny_config())
    with pytest.raises(ConfigError, match="given twice"):
        crosstest([data / "contrast", data / "contrast"], tmp_path / "b", train_config=tiny_config())
    with pytest.raises(ConfigError, match="unknown metric"):
        crosstest([data / "contrast", data / "plain"], tmp_path / "c", metrics="dice,nope")
    with pytest.raises(InputError, match="no such dataset"):
        crosstest([data / "contrast", tmp_path / "missing"], tmp_path / "d", train_config=tiny_config())
    assert parse_metrics("assd, hd95") == ("dice", "assd", "hd95")


def test_best_sources_rules():
    nan = np.nan
    m = np.array([[nan, 0.9, 0.2], [0.5, nan, 0.4], [0.7, 0.9, nan]])
    names = ["a", "b", "c"]
    assert best_sources(m, names, "dice") == {"a": "c", "b": "a", "c": "b"}  # ties: first row
    assert best_sources(m, names, "assd") == {"a": "b", "b": "a", "c": "a"}
    rvd = np.array([[nan, -0.1, 0.3], [0.2, nan, -0.05], [-0.5, 0.05, nan]])
    assert best_sources(rvd, names, "rvd") == {"a": "b", "b": "c", "c": "b"}
    assert best_sources(np.full((2, 2), nan), ["a", "b"], "dice") == {"a": None, "b": None}


def test_cli_prints_matrix(run, data, cli_env):
    out, result = run
    cmd = [sys.executable, "-m", "liverctl", "crosstest", *(str(data / d) for d in DOMAINS), "-o", str(out)]
    cmd += ["--epochs", "2", "--iterations-per-epoch", "3", "--base-features", "4", "--levels", "2"]
    cmd += ["--patch", "32,32,16", "--lr", "0.01", "--no-augment", "--device", "cpu", "--metrics", "assd"]
    cmd += ["--spacing", "12,12,14", "--window", "liver"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "cells computed 0, reused 6" in proc.stdout
    dice = result.matrices["dice"]
    assert f"{dice[0, 1]:.4f}" in proc.stdout
    best_row = NAMES.index(result.best["dice"][NAMES[0]])
    assert f"{dice[best_row, 0]:.4f}*" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "liverctl", "crosstest", str(data / "contrast"), "-o", str(out)],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
    )
    assert bad.returncode == 2 and "at least two datasets" in bad.stderr and "Traceback" not in bad.stderr


def test_preprocessed_datasets_give_the_same_cells(run, tmp_path):
    """A preprocessed folder stands for its raw scans (cases.json): same cells as the raw run."""
    out, first = run
    out2 = tmp_path / "ct4"
    shutil.copytree(out / "models", out2 / "models")
    result = crosstest(
        [out / "preprocessed" / n for n in NAMES[:2]], out2, train_config=tiny_config(), preprocess_options=PREPROCESS
    )
    assert result.names == NAMES[:2] and result.trained == []
    np.testing.assert_allclose(result.matrices["dice"], first.matrices["dice"][:2, :2], rtol=0, atol=1e-12)


def test_interrupted_cell_reuses_finished_scans(run, data, tmp_path, monkeypatch):
    """A cell interrupted after its scans were scored (cell file missing) is rebuilt from the
    per-scan files without predicting again."""
    out, first = run
    out2 = tmp_path / "ct5"
    shutil.copytree(out, out2, ignore=shutil.ignore_patterns("preprocessed"))
    (out2 / "cells" / f"{NAMES[1]}__{NAMES[2]}.json").unlink()

    import liverctl.predict

    def no_prediction(*args, **kwargs):
        raise AssertionError("a scored scan was predicted again")

    monkeypatch.setattr(liverctl.predict.LiverModel, "load", no_prediction)
    result = crosstest(
        [data / d for d in DOMAINS],
        out2,
        train_config=tiny_config(),
        metrics="dice,assd",
        preprocess_options=PREPROCESS,
    )
    assert result.computed == [(NAMES[1], NAMES[2])] and len(result.reused) == 5
    np.testing.assert_array_equal(result.matrices["dice"], first.matrices["dice"])


def test_liver_only_compares_the_liver_region(run, data, tmp_path):
    """With liver_only, a target labelled with other organs too is scored on its liver region:
    the same phantoms labelled with organs give the same Dice as with liver labels only."""
    out, _ = run
    organs = tmp_path / "plain_organs"
    write_dataset(organs, "plain", 2, seed=0, shape=SHAPE, spacing=SPACING, include_organs=True)
    out2 = tmp_path / "ct6"
    shutil.copytree(out / "models", out2 / "models")
    with pytest.warns(LiverctlWarning, match="liver region only"):
        result = crosstest(
            [data / "contrast", organs],
            out2,
            train_config=tiny_config(),
            liver_only=True,
            preprocess_options=PREPROCESS,
            target_normalization="source",  # the organ labels would change the target's own liver statistics
        )
    assert result.trained == []
    out3 = tmp_path / "ct7"
    shutil.copytree(out / "models", out3 / "models")
    liver_labels = crosstest(
        [data / "contrast", data / "plain"], out3, train_config=tiny_config(), preprocess_options=PREPROCESS,
        target_normalization="source",
    )  # fmt: skip
    assert result.matrices["dice"][0, 1] == pytest.approx(liver_labels.matrices["dice"][0, 1], abs=1e-12)


def test_defaults_are_the_papers(data, tmp_path):
    """Without options a cross test runs He et al. 2021's protocol: nnU-Net's CT normalisation computed per
    dataset, each target normalised with its own dataset's statistics, dropout after every conv, the final
    weights of each source (no model chosen on any scored scan)."""
    import torch

    from liverctl.preprocessing import Plan
    from liverctl.training.export import intensity_recipe

    torch.set_num_threads(1)
    out = tmp_path / "paper"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LiverctlWarning)
        result = crosstest([data / "contrast", data / "plain"], out, train_config=tiny_config(),
                           preprocess_options={"target_spacing": SPACING})  # fmt: skip
    assert result.to_dict()["target_normalization"] == "target" and result.target_crop == "paper"
    for name in NAMES[:2]:
        plan = Plan.load(out / "preprocessed" / name / "plan.json")
        assert plan.normalization == "ct" and plan.window_name == "ct-percentiles"
        saved = json.loads((out / "models" / name / "config.json").read_text())
        assert saved["model_selection"] == "final" and saved["config"]["arch_kwargs"]["dropout"] == 0.5
        assert saved["config"]["tumour_class"] is False and not (out / "models" / name / "selected.pt").exists()
    target_plan = Plan.load(out / "preprocessed" / NAMES[1] / "plan.json").to_dict()
    cell = result.cells[(NAMES[0], NAMES[1])]
    assert cell["target_intensity"] == intensity_recipe(target_plan).to_dict()
    with pytest.raises(ConfigError, match="target-normalization"):
        crosstest([data / "contrast", data / "plain"], out, train_config=tiny_config(), target_normalization="mean")
