"""Model selection never sees the scored cases: for every recipe, the weights exported for a fold
do not depend on that fold's labels (they are only monitored), by default (the final epoch) and
with an inner validation split; config.json records what chose them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from liverctl.errors import ConfigError
from liverctl.io import Geometry, Image
from liverctl.training import ArrayDataset, TrainConfig, train
from liverctl.training.config import parse_selection
from liverctl.training.data import TrainingData, inner_split

SPACING = (2.0, 2.0, 3.0)

# the smallest network of each recipe, and a patch it accepts
RECIPES = {
    "he2021": {"arch_kwargs": {"base_features": 4, "n_levels": 3, "dropout": 0.0}, "patch_size": (16, 32, 32)},
    "di2in-an": {
        "arch_kwargs": {"base_features": 4, "n_levels": 3},
        "patch_size": (16, 32, 32),
        "pretrain_iterations": 1,
        "d_steps": 1,
        "d_batch_size": 2,
        "batch_size": 2,
    },
    "sdnet": {"arch_kwargs": {"base_features": 4}, "patch_size": (16, 32, 32)},
    "hdenseunet": {
        "arch_kwargs": {"features": 8, "blocks_2d": [1, 1, 1], "growth_2d": 4, "blocks_3d": [1, 1], "growth_3d": 4},
        "patch_size": (8, 32, 32),
        "stage_iterations": (1, 1),
    },
    "pipofan": {
        "arch_kwargs": {"base_features": 4, "n_scales": 3},
        "patch_size": (1, 16, 16),
        "stage_iterations": (2, 1),
    },
}


def dataset(n: int = 4, scramble: set[str] = frozenset(), seed: int = 0) -> ArrayDataset:
    """Ellipsoidal "livers" brighter than a noisy background; the labels of the cases in
    ``scramble`` are replaced by a cube elsewhere (the images stay the same)."""
    rng = np.random.default_rng(seed)
    shape = (16, 32, 32)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    images, labels = {}, {}
    for i in range(n):
        c = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
        lab = (np.sqrt(((zz - c[0]) * 1.5) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) < 6).astype(np.uint8)
        img = 1.5 * lab + rng.normal(0, 0.3, shape)
        name = f"c{i}"
        if name in scramble:
            lab = np.zeros_like(lab)
            lab[2:6, 2:10, 2:10] = 1
        images[name] = Image(img.astype(np.float32), Geometry(SPACING))
        labels[name] = Image(lab, Geometry(SPACING))
    plan = {"labels": {"background": 0, "liver": 1}, "target_spacing": list(SPACING), "mean": 0.0, "std": 1.0}
    return ArrayDataset(images, labels, plan, name="toy")


def config(method: str, **kw) -> TrainConfig:
    base = dict(
        method=method,
        epochs=3,
        iterations_per_epoch=1,
        folds=2,
        fold=0,
        val_every=1,
        device="cpu",
        seed=7,
        checkpoint_every=0,
        **RECIPES[method],
    )
    if method == "sdnet":
        base["select_on"] = "iteration:2"  # SD-Net exports an iteration's weights (the paper's 1000)
    base.update(kw)
    return TrainConfig(**base)


def _run(tmp_path, name: str, data: ArrayDataset, cfg: TrainConfig):
    result = train([data], tmp_path / name, cfg)
    return result, load_file(str(result.model_path))


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


@pytest.mark.filterwarnings("ignore:SD-Net without unlabelled data")  # sdnet's 100:0 run, on purpose
@pytest.mark.parametrize("method", list(RECIPES))
def test_exported_weights_do_not_depend_on_the_held_out_folds_labels(tmp_path, method):
    cfg = config(method)
    held_out = set(TrainingData([dataset()], folds=2, fold=0, scan=False).val[0])
    plain, w_plain = _run(tmp_path, "plain", dataset(), cfg)
    other, w_other = _run(tmp_path, "other", dataset(scramble=held_out), cfg)
    assert _same(w_plain, w_other)
    # ... while the fold was monitored: its Dice is in the log of every epoch (validated at each)
    assert plain.val_dice is not None and other.val_dice is not None
    rows = [r.split(",") for r in plain.log_path.read_text().splitlines()]
    # (the staged recipes, and DI2IN-AN's pre-training, are validated only in their last phase)
    staged = ("hdenseunet", "pipofan", "di2in-an")
    assert rows[0][3] == "val_dice" and all(r[3] != "" for r in rows[1:]) == (method not in staged)
    assert rows[-1][3] != ""
    saved = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert saved["held_out"] == sorted(held_out)
    assert saved["model_selection"] == ("iteration:2" if method == "sdnet" else "final")
    assert saved["config"]["select_on"] == saved["model_selection"]


def test_the_test_can_fail_a_training_label_changes_the_weights(tmp_path):
    cfg = config("he2021")
    trained_on = TrainingData([dataset()], folds=2, fold=0, scan=False).train[0]
    _, w_plain = _run(tmp_path, "plain", dataset(), cfg)
    _, w_other = _run(tmp_path, "other", dataset(scramble={trained_on[0]}), cfg)
    assert not _same(w_plain, w_other)


def test_an_inner_split_chooses_the_epoch_without_the_held_out_fold(tmp_path):
    cfg = config("he2021", select_on="inner:0.5", epochs=3)
    data = TrainingData([dataset(6)], folds=2, fold=0, inner_fraction=0.5, inner_seed=7, scan=False)
    held_out, inner = set(data.val[0]), data.select[0]
    assert not held_out & set(inner) and not set(inner) & set(data.train[0]) and len(inner) == 2
    plain, w_plain = _run(tmp_path, "plain", dataset(6), cfg)
    _, w_other = _run(tmp_path, "other", dataset(6, scramble=held_out), cfg)
    assert _same(w_plain, w_other)
    saved = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert saved["model_selection"] == inner
    rows = plain.log_path.read_text().splitlines()
    assert rows[0].split(",")[3] == "val_dice" and rows[0].split(",")[7] == "select_dice"
    dices = [float(r.split(",")[7]) for r in rows[1:]]
    assert plain.selected_epoch == 1 + int(np.argmax(dices)) and plain.selection_dice == pytest.approx(max(dices))
    import torch

    selected = torch.load(plain.selected_checkpoint, weights_only=True)["model"]
    assert all(np.array_equal(w_plain[k].numpy(), v.numpy()) for k, v in selected.items())


def test_selection_options_are_checked():
    assert parse_selection("final") == ("final", 0.0)
    assert parse_selection("inner:0.2") == ("inner", 0.2)
    assert parse_selection("iteration:1000") == ("iteration", 1000)
    for bad in ("val", "fold", "inner:1.5", "inner:0", "iteration:0", "iteration:2.5", "best"):
        with pytest.raises(ConfigError, match="held-out fold that is reported is not offered"):
            parse_selection(bad)
    with pytest.raises(ConfigError, match="val-every"):
        TrainConfig(select_on="inner:0.2", val_every=0)
    with pytest.raises(ConfigError, match="only 20 iterations"):
        TrainConfig(method="sdnet", epochs=2, iterations_per_epoch=10)  # the paper's iteration 1000 is past it
    assert TrainConfig().select_on == "final" and TrainConfig(method="sdnet").select_on == "iteration:1000"
    train_names, inner = inner_split([f"c{i}" for i in range(10)], 0.2, seed=1)
    assert len(inner) == 2 and sorted(train_names + inner) == sorted(f"c{i}" for i in range(10))
    assert inner_split([f"c{i}" for i in range(10)], 0.2, seed=1) == (train_names, inner)  # seeded
    with pytest.raises(ConfigError, match="too few"):
        inner_split(["c0"], 0.5, seed=0)
