"""liverctl.weights.registry: entries are read and written by one schema (issue 9)."""

from __future__ import annotations

from pathlib import Path

from liverctl import weights
from liverctl.weights.registry import WindowRecipe

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_registry_round_trips_through_the_writer(tmp_path: Path):
    shipped = weights.load_registry(ROOT / "weights.toml")
    path = weights.save_registry(tmp_path / "weights.toml", list(shipped.models.values()), shipped.default)
    again = weights.load_registry(path)
    assert again.default == shipped.default
    assert {n: e.to_dict() for n, e in again.models.items()} == {n: e.to_dict() for n, e in shipped.models.items()}


def test_exported_entry_reads_back_as_written(tmp_path: Path):
    from liverctl.models import build_model
    from liverctl.training.export import export_model

    kwargs = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "init_filters": 8}
    net = build_model("segresnet", **kwargs)
    plans = [{"target_spacing_zyx": [2.0, 1.5, 1.25], "window": [-100, 200], "mean": 50.0, "std": 40.0}]
    model, toml = export_model(
        net,
        tmp_path / "run",
        name="my run",
        architecture="segresnet",
        kwargs={**kwargs, "unused": None},
        plans=plans,
        dataset_names=["lits"],
        labels={"background": 0, "liver": 1},
        liver_channel=1,
        patch_size=[32, 48, 64],  # (z, y, x), as the training patch
    )
    entry = weights.load_registry(toml).get()
    assert entry.name == "my run" and entry.local_path == model and entry.sha256 == weights.sha256_file(model)
    assert entry.spacing == (1.25, 1.5, 2.0)  # (x, y, z)
    assert entry.sliding_window.roi == (64, 48, 32) and entry.sliding_window.roi_zyx == (32, 48, 64)
    assert entry.kwargs == kwargs and entry.labels == {"liver": 1} and entry.n_classes == 2
    assert (model.parent / "model.safetensors.sha256").read_text().split()[0] == entry.sha256


def test_window_recipe_axis_order():
    w = WindowRecipe.from_zyx((16, 32, 48), overlap=0.5)
    assert w.roi == (48, 32, 16) and w.roi_zyx == (16, 32, 48) and w.overlap == 0.5
    from liverctl.training.export import sha256_file

    assert sha256_file is weights.sha256_file


def test_a_model_preprocessed_with_image_normalization_z_scores_each_scan_as_training_did(tmp_path: Path):
    """``preprocess --normalization image`` z-scores each scan with its own statistics (PIPO-FAN's
    README protocol); the exported entry says so (``window-image-zscore``), so predict feeds the
    network what training fed it: apply_plan's output, not windowed HU (mean 0, std 1)."""
    import numpy as np

    from liverctl.io import Geometry, Image
    from liverctl.models import build_model
    from liverctl.preprocessing import apply_plan
    from liverctl.preprocessing.intensity import normalise
    from liverctl.preprocessing.planning import Plan
    from liverctl.spatial import resample
    from liverctl.training.export import export_model

    kwargs = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "init_filters": 8}
    plan = Plan(dataset="d", target_spacing=(2.0, 2.0, 3.0), window=(-100.0, 200.0), normalization="image")
    _, toml = export_model(
        build_model("segresnet", **kwargs),
        tmp_path / "run",
        name="image-norm",
        architecture="segresnet",
        kwargs=kwargs,
        plans=[plan.to_dict()],
        dataset_names=["d"],
        labels={"background": 0, "liver": 1},
        liver_channel=1,
        patch_size=[16, 16, 16],
    )
    entry = weights.load_registry(toml).get()
    assert entry.intensity.method == "window-image-zscore" and entry.intensity.window == (-100.0, 200.0)
    assert entry.intensity.mean is None and entry.intensity.std is None
    rng = np.random.default_rng(0)
    scan = Image(rng.normal(40, 150, (12, 20, 18)).astype(np.float32), Geometry((1.5, 1.5, 2.0)))
    expected = apply_plan(scan, plan).array
    ours = normalise(resample(scan, plan.target_spacing).array, entry.intensity)
    assert abs(float(expected.mean())) < 1e-5 and abs(float(expected.std()) - 1) < 1e-4  # a real z-score
    np.testing.assert_allclose(ours, expected, atol=1e-5)
