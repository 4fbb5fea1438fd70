"""`liverctl weights export`: a network as a file another runtime loads, checked before writing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from liverctl.errors import ConfigError, WeightsError
from liverctl.inference.backends import available_backends
from liverctl.models import build_model
from liverctl.weights.export import export_network

INSTALLED = available_backends()
SHAPE = (1, 1, 32, 32, 32)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("segresnet", in_channels=1, out_channels=4, init_filters=8).eval()


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown --format"):
        export_network(_net(), SHAPE, "tflite", Path("unused"), "x", {})


@pytest.mark.skipif("onnxruntime" not in INSTALLED, reason="needs onnxruntime (liverctl[cpu])")
def test_onnx_export_runs_elsewhere_with_its_recipe_beside_it(tmp_path: Path) -> None:
    import onnxruntime as ort

    net = _net()
    info = export_network(net, SHAPE, "onnx", tmp_path, "bundle-like", {"labels": {"liver": 2}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle-like.json", "bundle-like.onnx"]
    side = json.loads((tmp_path / "bundle-like.json").read_text())
    assert side == json.loads(json.dumps(info)) and side["labels"] == {"liver": 2}
    assert side["input_shape"] == list(SHAPE) and side["check"]["max_probability_difference"] <= 1e-4
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    (out,) = ort.InferenceSession(str(tmp_path / "bundle-like.onnx")).run(None, {"image": x})
    with torch.inference_mode():
        ref = torch.softmax(net(torch.from_numpy(x)), 1).numpy()
    assert np.abs(torch.softmax(torch.from_numpy(out), 1).numpy() - ref).max() <= 1e-4


@pytest.mark.skipif("openvino" not in INSTALLED, reason="needs openvino (liverctl[cpu])")
def test_openvino_export_writes_ir(tmp_path: Path) -> None:
    info = export_network(_net(), SHAPE, "openvino", tmp_path, "m", {})
    assert info["files"] == ["m.xml", "m.bin"] and (tmp_path / "m.bin").stat().st_size > 0


@pytest.mark.skipif(not INSTALLED, reason="needs a compiled runtime (liverctl[cpu])")
def test_an_export_that_disagrees_with_torch_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    import liverctl.inference.exactness as exactness

    monkeypatch.setattr(exactness, "probability_difference", lambda *a, **k: 0.3)
    fmt = "onnx" if "onnxruntime" in INSTALLED else "openvino"
    with pytest.raises(WeightsError, match="differs from torch"):
        export_network(_net(), SHAPE, fmt, tmp_path, "m", {})
    assert list(tmp_path.iterdir()) == []
