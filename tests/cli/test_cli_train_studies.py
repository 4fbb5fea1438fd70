"""The studies' defaults as `liverctl` writes them (config.json, plan.json), and one end-to-end run per
recipe on phantoms with --folds 2: the commands of docs/studies/he2021.md and docs/studies/sdnet.md at
phantom sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from liverctl.cli import app

TINY = ["--epochs", "2", "--iterations-per-epoch", "1", "--device", "cpu", "--seed", "1"]
NETS = {  # the smallest network of each recipe, and a patch it accepts (x, y, z)
    "he2021": ["--patch", "32,32,16", "--base-features", "4", "--levels", "3"],
    "di2in-an": ["--patch", "32,32,16", "--base-features", "4", "--levels", "3", "--pretrain-iterations", "1",
                 "--d-steps", "1", "--d-batch-size", "2"],
    "sdnet": ["--patch", "32,32,16", "--base-features", "4", "--select-on", "iteration:1"],
    "hdenseunet": ["--patch", "32,32,8", "--arch-kwargs", '{"features": 8, "blocks_2d": [1, 1, 1], "growth_2d": 4, '
                   '"blocks_3d": [1, 1], "growth_3d": 4}', "--stage-iterations", "1,0"],
    "pipofan": ["--patch", "16,16,1", "--base-features", "4", "--arch-kwargs", '{"n_scales": 3}',
                "--stage-iterations", "1,1"],
}  # fmt: skip


def liverctl(*args: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LIVERCTL_NO_PROGRESS", "1")
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Four contrast and ten tumour phantoms (9 x 9 x 10 mm voxels, liver + tumour labels)."""
    from liverctl.phantoms.dataset import phantom

    root = tmp_path_factory.mktemp("studies")
    phantom(root / "contrast", "contrast", n=4, seed=1, shape=(24, 40, 40), spacing=(9.0, 9.0, 10.0))
    phantom(root / "lits-like", "tumour", n=10, seed=3, shape=(24, 40, 40), spacing=(9.0, 9.0, 10.0))
    return root


@pytest.fixture(scope="module")
def he_prep(data, tmp_path_factory) -> Path:
    """The He et al. 2021 preprocessing (docs/studies/he2021.md) at the phantoms' own spacing."""
    out = tmp_path_factory.mktemp("he_prep") / "contrast"
    with pytest.MonkeyPatch.context() as mp:
        liverctl("preprocess", str(data / "contrast"), "-o", str(out), "--normalization", "ct", "--spacing", "9,9,10",
                 monkeypatch=mp)  # fmt: skip
    return out


def _saved(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def test_he2021_defaults_from_plan_and_config(he_prep, tmp_path, monkeypatch):
    plan = json.loads((he_prep / "plan.json").read_text())
    # nnU-Net's CT normalisation per dataset; the paper's liver z-crop of 60 mm
    assert plan["normalization"] == "ct" and plan["window_name"] == "ct-percentiles"
    assert plan["window"][0] < plan["mean"] < plan["window"][1] and plan["std"] > 0
    assert plan["crop"] and plan["crop_margin_mm"] == 60.0
    run = tmp_path / "fold0"
    liverctl("train", str(he_prep), "-o", str(run), "--folds", "2", "--fold", "0", "--val-every", "2",
             *NETS["he2021"], *TINY, monkeypatch=monkeypatch)  # fmt: skip
    saved = _saved(run)
    cfg = saved["config"]
    assert cfg["method"] == "he2021" and cfg["architecture"] == "unet3d"
    assert cfg["arch_kwargs"]["dropout"] == 0.5  # after every conv, at the stated rate
    assert (cfg["optimizer"], cfg["lr"], cfg["scheduler"], cfg["plateau_patience"]) == (None, None, "plateau", 30)
    from liverctl.training import TrainConfig

    paper = TrainConfig()  # the options the phantom run shrank: the paper's values by default
    assert (paper.epochs, paper.iterations_per_epoch, paper.patch_size, paper.initial_lr) == (
        400,
        250,
        (128,) * 3,
        3e-4,
    )
    assert (cfg["batch_size"], cfg["loss"], cfg["sampler"], cfg["tumour_class"]) == (2, "dice_ce", "dos", False)
    assert (cfg["stop_window"], cfg["stop_min_improvement"], cfg["stop_min_lr"]) == (60, 5e-3, 1e-6)
    assert cfg["select_on"] == "final" and saved["model_selection"] == "final"
    assert saved["held_out"] == ["phantom_contrast_000", "phantom_contrast_001"]
    assert saved["intensity"][0]["normalization"] == "ct"
    rows = (run / "train_log.csv").read_text().splitlines()
    assert rows[-1].split(",")[3] != ""  # the held-out fold is monitored (its Dice logged), never chooses
    entry = (run / "weights.toml").read_text()
    assert "nnU-Net CT normalisation" in entry
    assert not (run / "selected.pt").exists()


def test_sdnet_defaults_from_plan_and_config(data, tmp_path, monkeypatch):
    prep = tmp_path / "sdnet-0.2"
    liverctl("preprocess", str(data / "lits-like"), "-o", str(prep), "--labelled-fraction", "0.2", "--window",
             "sdnet", "--normalization", "window", "--no-crop", "--spacing", "median", monkeypatch=monkeypatch)  # fmt: skip
    plans = [json.loads((prep / half / "plan.json").read_text()) for half in ("labelled", "unlabelled")]
    assert plans[0] == plans[1]  # both halves: the same recipe
    assert (plans[0]["window"], plans[0]["window_name"], plans[0]["normalization"]) == ([0.0, 400.0], "sdnet", "window")
    assert not plans[0]["crop"]  # no label-driven crop on the labelled half
    split = json.loads((prep / "split.json").read_text())
    assert len(split["labelled"]) == 2 and len(split["unlabelled"]) == 8  # 20:80
    run = tmp_path / "run"
    liverctl("train", str(prep / "labelled"), "--unlabelled", str(prep / "unlabelled"), "--method", "sdnet",
             "-o", str(run), *NETS["sdnet"], *TINY, monkeypatch=monkeypatch)  # fmt: skip
    saved = _saved(run)
    cfg = saved["config"]
    assert (cfg["architecture"], cfg["second_architecture"], cfg["lr_step"]) == ("vnet", "resvnet", 200)
    assert cfg["tumour_class"] is False and saved["model_selection"] == "iteration:1"
    from liverctl.training import TrainConfig
    from liverctl.training.recipes.sdnet import SDNET_AUGMENTATION

    assert TrainConfig(method="sdnet").select_on == "iteration:1000"  # the paper's reported model
    assert (SDNET_AUGMENTATION.p_scale, SDNET_AUGMENTATION.p_elastic, SDNET_AUGMENTATION.p_gamma) == (0, 0, 0)
    assert SDNET_AUGMENTATION.p_flip > 0 and SDNET_AUGMENTATION.p_rotation > 0
    from liverctl.preprocessing import resolve_window

    assert resolve_window("sdnet-w400-l0") == (-200.0, 200.0)  # the paper's other window, one option away


@pytest.mark.parametrize("method", list(NETS))
def test_every_recipe_end_to_end_with_two_folds(he_prep, tmp_path, monkeypatch, method):
    run = tmp_path / method
    result = liverctl("train", str(he_prep), "-o", str(run), "--method", method, "--folds", "2", "--fold", "1",
                      "--val-every", "2", "--json", *NETS[method], *TINY, monkeypatch=monkeypatch)  # fmt: skip
    summary = json.loads(result.stdout)
    assert summary["iterations"] == 2 and Path(summary["model"]).is_file()
    saved = _saved(run)
    assert saved["config"]["folds"] == 2 and saved["held_out"] == ["phantom_contrast_002", "phantom_contrast_003"]
    expected = "iteration:1" if method == "sdnet" else "final"
    assert saved["model_selection"] == summary["model_selection"] == expected
    assert summary["last_val_dice"] is not None  # the held-out fold, monitored
