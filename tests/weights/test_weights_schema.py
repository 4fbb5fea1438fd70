"""liverctl.weights.registry: entries are read and written by one schema (issue 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from liverctl import hub, weights
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


def test_window_recipe_axis_order_and_former_names():
    w = WindowRecipe.from_zyx((16, 32, 48), overlap=0.5)
    assert w.roi == (48, 32, 16) and w.roi_zyx == (16, 32, 48) and w.overlap == 0.5
    assert hub.SlidingWindow is WindowRecipe is weights.SlidingWindow
    assert hub.sha256_file is weights.sha256_file
    from liverctl.training.export import sha256_file

    assert sha256_file is weights.sha256_file


FORMER_HUB_NAMES = [
    "DECISIONS",
    "INTENSITY_METHODS",
    "IntensityRecipe",
    "ModelEntry",
    "Registry",
    "ResolvedWeights",
    "SlidingWindow",
    "VerifyResult",
    "WeightsInfo",
    "download",
    "get_entry",
    "list_weights",
    "load_registry",
    "load_state_dict",
    "local_weights",
    "pins_path",
    "registry_path",
    "resolve_weights",
    "sha256_file",
    "verify",
    "verify_all",
    "weights_path",
    "REGISTRY_ENV",
    "HOME_ENV",
    "PARTIAL_SUFFIX",
    "NETWORK_AXES",
    "INTERPOLATIONS",
    "WINDOW_MODES",
    "PADDING_MODES",
    "WEIGHT_SUFFIXES",
]


@pytest.mark.parametrize("name", FORMER_HUB_NAMES)
def test_hub_shim_keeps_every_public_name(name: str):
    assert getattr(hub, name) is getattr(weights, name)
