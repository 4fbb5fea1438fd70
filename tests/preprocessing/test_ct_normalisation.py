"""nnU-Net's CT normalisation as a named preprocessing scheme (``--normalization ct``, He et al. 2021):
its statistics against nnU-Net's own foreground sampling, the plan, and predict feeding a trained
model exactly what preprocess fed it; and the SD-Net ``window`` scheme."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from liverctl import preprocessing as pp
from liverctl.errors import ConfigError
from liverctl.io import read_image, read_label
from liverctl.phantoms.dataset import phantom
from liverctl.preprocessing.planning import ct_statistics


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """Three contrast phantoms (liver + tumour labels) of different liver sizes, 6 mm voxels."""
    root = tmp_path_factory.mktemp("ct_norm") / "raw"
    phantom(root, "contrast", n=3, seed=1, shape=(32, 48, 48), spacing=(6.0, 6.0, 6.0))
    return root


def _cases(raw: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    images = sorted((raw / "imagesTr").glob("*.nii.gz"))
    labels = sorted((raw / "labelsTr").glob("*.nii.gz"))
    return [(read_image(i).array, read_label(lab).array) for i, lab in zip(images, labels, strict=True)]


def test_ct_statistics_are_what_nnunet_samples(raw, tmp_path):
    fingerprint_extractor = pytest.importorskip(
        "nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor"
    )
    collect = fingerprint_extractor.DatasetFingerprintExtractor.collect_foreground_intensities
    pooled = np.concatenate(
        [collect(lab[None], img[None].astype(np.float32), num_samples=200_000)[0][0] for img, lab in _cases(raw)]
    )  # nnU-Net: the same number of foreground voxels from every case, with replacement, pooled
    nn_lo, nn_hi = np.percentile(pooled, [0.5, 99.5])
    result = pp.preprocess(raw, tmp_path / "prep", normalization="ct", crop=False)
    stats = ct_statistics(result.fingerprint)
    assert stats["cases"] == 3
    assert stats["p0.5"] == pytest.approx(nn_lo, abs=2.0) and stats["p99.5"] == pytest.approx(nn_hi, abs=2.0)
    assert stats["mean"] == pytest.approx(pooled.mean(), abs=0.5) and stats["std"] == pytest.approx(
        pooled.std(), abs=0.5
    )
    # every case weighs the same (nnU-Net's sampling), not every voxel: not the pooled liver mean
    sizes = [int((lab > 0).sum()) for _, lab in _cases(raw)]
    assert len(set(sizes)) > 1
    by_voxel = result.fingerprint.liver_intensity()["mean"]
    by_case = np.mean([img[lab > 0].mean() for img, lab in _cases(raw)])
    assert stats["mean"] == pytest.approx(by_case, abs=1e-6) and abs(by_voxel - by_case) > 1e-3
    # the plan records the scheme: the percentiles as its clip window, the foreground mean/std
    plan = json.loads((tmp_path / "prep" / "plan.json").read_text())
    assert plan["normalization"] == "ct" and plan["window_name"] == "ct-percentiles"
    assert plan["window"] == [stats["p0.5"], stats["p99.5"]]
    assert (plan["mean"], plan["std"]) == (stats["mean"], stats["std"])


def test_apply_plan_clips_to_the_percentiles_then_zscores(raw, tmp_path):
    result = pp.preprocess(raw, tmp_path / "prep", normalization="ct", crop=False, target_spacing=(6.0, 6.0, 6.0))
    plan = result.plan
    image = read_image(sorted((raw / "imagesTr").glob("*.nii.gz"))[0])
    out = pp.apply_plan(image, plan).array
    expected = (np.clip(image.array.astype(np.float32), *plan.window) - np.float32(plan.mean)) / np.float32(plan.std)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    assert out.min() == pytest.approx((plan.window[0] - plan.mean) / plan.std, abs=1e-5)  # air clipped


def test_ct_and_window_schemes_refuse_what_they_cannot_do(raw, tmp_path):
    with pytest.raises(ConfigError, match="leave --window at none"):
        pp.preprocess(raw, tmp_path / "a", normalization="ct", window="liver", crop=False)
    with pytest.raises(ConfigError, match="give a --window"):
        pp.preprocess(raw, tmp_path / "b", normalization="window", crop=False)
    with pytest.raises(ConfigError, match="unknown normalization"):
        pp.preprocess(raw, tmp_path / "c", normalization="nnunet", crop=False)


def test_window_scheme_maps_the_window_to_0_1(raw, tmp_path):
    result = pp.preprocess(raw, tmp_path / "w", normalization="window", window="sdnet", crop=False)
    assert (result.plan.window, result.plan.mean, result.plan.std) == ((0.0, 400.0), 0.0, 400.0)
    arrays = [np.load(p) for p in sorted((tmp_path / "w" / "images").glob("*.npy"))]
    assert min(a.min() for a in arrays) == 0.0 and max(a.max() for a in arrays) <= 1.0


def test_predict_feeds_the_model_what_preprocess_fed_it(raw, tmp_path):
    import torch

    from liverctl.predict import LiverModel
    from liverctl.training import TrainConfig, train

    prep = tmp_path / "prep"
    pp.preprocess(raw, prep, normalization="ct", crop=False, target_spacing=(8.0, 7.0, 9.0))
    torch.set_num_threads(1)
    cfg = TrainConfig(
        arch_kwargs={"base_features": 2, "n_levels": 2},
        patch_size=(16, 16, 16),
        epochs=1,
        iterations_per_epoch=1,
        device="cpu",
    )
    result = train([prep], tmp_path / "run", cfg)
    entry = json.loads((prep / "plan.json").read_text())
    model = LiverModel.load(weights=result.model_path, device="cpu")
    assert model.entry.intensity.method == "window-zscore"
    assert list(model.entry.intensity.window) == entry["window"] and model.entry.intensity.mean == entry["mean"]
    assert "nnU-Net CT normalisation" in model.entry.description
    for scan in sorted((raw / "imagesTr").glob("*.nii.gz")):
        case = scan.name.removesuffix("_0000.nii.gz")
        net_input = model.to_model_space(read_image(scan)).net_input
        np.testing.assert_array_equal(net_input, np.load(prep / "images" / f"{case}.npy"))
