"""nnU-Net v2 results folders as models: plans, safe checkpoints, and parity with nnUNetPredictor.

The results folder under tests/data/nnunet was made by nnU-Net 2.5.1 itself
(tests/data/make_nnunet_phantom.py: nnU-Net's planner, preprocessor and trainer on phantoms).
The parity tests run ``nnUNetPredictor`` (the ``test`` extra pins nnunetv2==2.5.1) on the same
files in the same process and compare.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunet_cases import CASES, FOLDER, dice, write_cases

from liverctl.errors import WeightsError
from liverctl.io import read_image
from liverctl.nnunet import NnUNetModel
from liverctl.nnunet.checkpoint import load_checkpoint
from liverctl.nnunet.network import build_network
from liverctl.nnunet.plans import liver_labels, plans_from_dicts, read_plans
from liverctl.nnunet.predictor import compute_gaussian, compute_steps, mirror_combinations

PLANS = json.loads((FOLDER / "plans.json").read_text())
DATASET = json.loads((FOLDER / "dataset.json").read_text())
CKPT = FOLDER / "fold_0" / "checkpoint_final.pth"


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------- plans


def test_plans_of_the_reference_folder() -> None:
    plans = read_plans(FOLDER)
    assert plans.configuration == "3d_fullres"
    assert plans.patch_size == (16, 32, 32)
    # the planner puts the coarsest axis (x, 10 mm) first: (z, y, x) -> (x, z, y)
    assert plans.transpose_forward == (2, 0, 1) and plans.transpose_backward == (1, 2, 0)
    assert plans.spacing == (10.0, 8.0, 8.0)
    assert plans.normalization == "CTNormalization"
    assert set(plans.intensity) >= {"mean", "std", "percentile_00_5", "percentile_99_5"}
    assert plans.num_classes == 3 and plans.liver_labels == (1, 2)
    assert plans.resampling_data.order == 3 and plans.resampling_probabilities.order == 1
    assert plans.network_class == "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def test_liver_labels_by_name() -> None:
    assert liver_labels({"background": 0, "liver": 1, "cancer": 2}) == (1, 2)  # MSD Task03
    assert liver_labels({"background": 0, "spleen": 1, "liver": 5, "kidney_left": 3}) == (5,)
    assert liver_labels({"background": 0, "Liver": 1, "Liver Tumor": 2}) == (1, 2)
    assert liver_labels({"background": 0, "hepatic_vessel": 1, "tumour": 2}) == ()  # MSD Task08: no liver


def test_inherited_configuration_is_resolved() -> None:
    plans = copy.deepcopy(PLANS)
    plans["configurations"]["3d_small"] = {"inherits_from": "3d_fullres", "patch_size": [16, 16, 16]}
    p = plans_from_dicts(plans, DATASET, "3d_small")
    assert p.patch_size == (16, 16, 16) and p.spacing == (10.0, 8.0, 8.0)


def _config(plans: dict) -> dict:
    return plans["configurations"]["3d_fullres"]


BAD_PLANS = {
    "2d": (lambda p, d: _config(p).update(patch_size=[32, 32]), "only 3D"),
    "cascade": (lambda p, d: _config(p).update(previous_stage="3d_lowres"), "cascade"),
    "normalisation": (lambda p, d: _config(p).update(normalization_schemes=["MyNorm"]), "normalization scheme"),
    "resampling": (lambda p, d: _config(p).update(resampling_fn_data="my_resample"), "not supported"),
    "transpose": (lambda p, d: p.update(transpose_forward=[0, 0, 1]), "permutation"),
    "transpose-mismatch": (lambda p, d: p.update(transpose_backward=[2, 0, 1]), "does not undo"),
    "regions": (lambda p, d: d["labels"].update(liver=[1, 2]), "region"),
    "no-liver": (lambda p, d: d.update(labels={"background": 0, "spleen": 1, "tumour": 2}), "no 'liver'"),
    "two-channels": (lambda p, d: d.update(channel_names={"0": "CT", "1": "PET"}), "one input channel"),
    "loop": (lambda p, d: _config(p).update(inherits_from="3d_fullres"), "loops"),
    "no-intensity": (lambda p, d: p.pop("foreground_intensity_properties_per_channel"), "CTNormalization needs"),
    "reader": (lambda p, d: p.update(image_reader_writer="NibabelIOWithReorient"), "SimpleITKIO"),
    "old-plans": (lambda p, d: _config(p).pop("architecture"), "architecture"),
}


@pytest.mark.parametrize("case", sorted(BAD_PLANS))
def test_bad_plans_are_refused_in_one_line(case: str) -> None:
    plans, dataset = copy.deepcopy(PLANS), copy.deepcopy(DATASET)
    change, words = BAD_PLANS[case]
    change(plans, dataset)
    with pytest.raises(WeightsError) as exc:
        plans_from_dicts(plans, dataset, "3d_fullres")
    assert words in _one_line(exc)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("network_class_name", "os.system"),
        ("network_class_name", "somewhere.else.PlainConvUNet"),
        ("nonlin", "builtins.eval"),
    ],
)
def test_only_allowlisted_classes_are_imported(key: str, value: str) -> None:
    plans = copy.deepcopy(PLANS)
    arch = _config(plans)["architecture"]
    if key == "network_class_name":
        arch[key] = value
    else:
        arch["arch_kwargs"][key] = value
    with pytest.raises(WeightsError) as exc:
        build_network(plans_from_dicts(plans, DATASET))
    assert "not" in _one_line(exc)


# --------------------------------------------------------------------------- checkpoints

EXECUTED: list[str] = []


def _payload() -> None:  # what a malicious __reduce__ would run
    EXECUTED.append("ran")
    Path(os.environ.get("NNUNET_TEST_MARKER", "/nonexistent")).write_text("pwned")


class Malicious:
    def __reduce__(self):
        return (_payload, ())


def test_real_checkpoint_loads_with_the_minimal_allowlist() -> None:
    ckpt = load_checkpoint(CKPT)
    assert ckpt.trainer_name == "nnUNetTrainer" and ckpt.configuration == "3d_fullres" and ckpt.fold == 0
    assert ckpt.mirror_axes == (0, 1, 2)
    assert all(isinstance(v, torch.Tensor) for v in ckpt.state_dict.values())
    # the file really holds more than tensors: numpy float64 scalars in nnU-Net's training log
    with pytest.raises(Exception, match="numpy"):
        torch.load(CKPT, map_location="cpu", weights_only=True)


def test_checkpoint_with_a_custom_object_is_refused_and_never_run(tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "marker"
    monkeypatch.setenv("NNUNET_TEST_MARKER", str(marker))
    real = torch.load(CKPT, map_location="cpu", weights_only=False)  # our own file, trusted
    real["logging"]["extra"] = Malicious()
    bad = tmp_path / "fold_0" / "checkpoint_final.pth"
    bad.parent.mkdir()
    torch.save(real, bad)
    with pytest.raises(WeightsError) as exc:
        load_checkpoint(bad)
    assert "refusing to load" in _one_line(exc) and "_payload" in str(exc.value)
    assert not EXECUTED and not marker.exists()


def test_checkpoint_with_a_non_numeric_numpy_value_is_refused(tmp_path: Path) -> None:
    real = torch.load(CKPT, map_location="cpu", weights_only=False)
    real["logging"]["note"] = np.str_("text")
    bad = tmp_path / "c.pth"
    torch.save(real, bad)
    with pytest.raises(WeightsError) as exc:
        load_checkpoint(bad)
    assert "refusing to load" in _one_line(exc)


def test_sha256_is_checked_before_loading(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as exc:
        load_checkpoint(CKPT, "0" * 64)
    assert "sha256 mismatch" in _one_line(exc)
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        NnUNetModel.load(FOLDER, folds=(0,), sha256={"plans.json": "1" * 64}, device="cpu")
    # a tampered file fails its pin even when it would load
    copy_dir = tmp_path / FOLDER.name
    shutil.copytree(FOLDER, copy_dir)
    pins = {"fold_0/checkpoint_final.pth": load_checkpoint(CKPT).sha256}
    with (copy_dir / "fold_0" / "checkpoint_final.pth").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        NnUNetModel.load(copy_dir, folds=(0,), sha256=pins, device="cpu")


def test_missing_fold_is_one_line() -> None:
    with pytest.raises(WeightsError) as exc:
        NnUNetModel.load(FOLDER, folds=(0, 3), device="cpu")
    assert "fold 3" in _one_line(exc)


# --------------------------------------------------------------------------- parity with nnU-Net


def _need_nnunetv2() -> None:
    pytest.importorskip("nnunetv2", reason="the parity tests need nnunetv2==2.5.1 (the test extra)")


def test_window_steps_gaussian_and_mirrors_are_nnunets() -> None:
    _need_nnunetv2()
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian as nn_gaussian
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    for size, tile in [((40, 48, 38), (16, 32, 32)), ((110, 64, 32), (64, 64, 32)), ((17, 33, 100), (16, 32, 32))]:
        assert compute_steps(size, tile, 0.5) == compute_steps_for_sliding_window(size, tile, 0.5)
    ours = compute_gaussian((16, 32, 32), dtype=torch.float16)
    theirs = nn_gaussian((16, 32, 32), sigma_scale=1.0 / 8, value_scaling_factor=10, device=torch.device("cpu"))
    assert torch.equal(ours, theirs)
    assert mirror_combinations((0, 1, 2)) == [(2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_cases(tmp_path_factory.mktemp("nnunet_scans"))


@pytest.fixture(scope="module")
def reference(scans: dict[str, Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """nnUNetPredictor's (label map, probabilities) for every case, folds 0 and 1."""
    _need_nnunetv2()
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # nnU-Net 2.5.1 unpickles whole; our own file
    try:
        predictor = nnUNetPredictor(
            tile_step_size=0.5,
            use_gaussian=True,
            use_mirroring=True,
            perform_everything_on_device=False,
            device=torch.device("cpu"),
            allow_tqdm=False,
        )
        predictor.initialize_from_trained_model_folder(str(FOLDER), (0, 1), "checkpoint_final.pth")
    finally:
        mp.undo()
    out = {}
    for name, path in scans.items():
        image, props = SimpleITKIO().read_images([str(path)])
        seg, probs = predictor.predict_single_npy_array(image, props, None, None, True)
        out[name] = (seg, probs)
    return out


@pytest.fixture(scope="module")
def exact_model() -> NnUNetModel:
    return NnUNetModel.load(FOLDER, folds=(0, 1), device="cpu", exact=True)


@pytest.fixture(scope="module")
def default_model() -> NnUNetModel:
    return NnUNetModel.load(FOLDER, folds=(0, 1), device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_exact_mode_equals_nnunet_predictor(case: str, scans, reference, exact_model) -> None:
    image = read_image(scans[case])
    result = exact_model.predict(image, probabilities=True)
    seg, probs = reference[case]
    assert result.labels.array.shape == image.shape and result.labels.geometry == image.geometry
    assert np.array_equal(result.labels.array, seg)
    assert result.probabilities is not None
    assert float(np.abs(result.probabilities - probs).max()) <= 1e-3
    assert float(np.abs(result.liver_probability.array - probs[1:].sum(0)).max()) <= 1e-3
    assert 0.01 < float((seg > 0).mean()) < 0.6  # the briefly trained networks do find a liver


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_defaults_agree_with_nnunet_predictor(case: str, scans, reference, default_model) -> None:
    image = read_image(scans[case])
    labels, liver_p, stats = default_model.predict(image)
    seg, probs = reference[case]
    assert labels.array.shape == image.shape and labels.geometry == image.geometry
    assert dice(labels.array > 0, seg > 0) >= 0.9999  # measured: at most 1 voxel apart (float16 sums, as nnU-Net)
    assert float(np.abs(liver_p.array - probs[1:].sum(0)).max()) <= 1e-3  # measured 2.3e-4
    assert stats["windows"] + stats["skipped_windows"] == 2 * int(
        np.prod([len(s) for s in _steps(default_model, image)])
    )


def _steps(model: NnUNetModel, image) -> list[list[int]]:
    from liverctl.nnunet.preprocess import preprocess

    pre = preprocess(image, model.plans)
    shape = [max(s, p) for s, p in zip(pre.data.shape[1:], model.plans.patch_size, strict=True)]
    return compute_steps(shape, model.plans.patch_size, 0.5)
