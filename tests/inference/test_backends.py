"""Compiled CPU backends (liverctl.inference.backends): exactness, the cache, the choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from liverctl.errors import ConfigError
from liverctl.inference.backends import (
    CHANNELS_LAST,
    available_backends,
    backend_network,
    cached_network,
    resolve_backend,
)
from liverctl.inference.exactness import GENERIC, TOLERANCE, noise_window, phantom_windows, probability_difference
from liverctl.models import build_model
from liverctl.predict import PredictOptions

SHAPE = (1, 1, 32, 32, 32)
INSTALLED = available_backends()
needs_runtime = pytest.mark.skipif(not INSTALLED, reason='no compiled runtime installed (pip install "liverctl[cpu]")')


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("segresnet", in_channels=1, out_channels=4, init_filters=8).eval()


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVERCTL_HOME", str(tmp_path / "home"))


def test_the_choice_is_made_in_one_place() -> None:
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu, exact=True) == ["torch"]  # --exact stays torch fp32
    assert resolve_backend("openvino" if "openvino" in INSTALLED else "torch", torch.device("cuda"), False) == ["torch"]
    assert resolve_backend("auto", cpu, exact=False) == [*INSTALLED, "torch"]
    assert resolve_backend("torch", cpu, exact=False) == ["torch"]
    with pytest.raises(ConfigError, match="unknown --backend"):
        PredictOptions(backend="tensorrt")


def test_a_runtime_that_is_not_installed_is_refused_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import liverctl.inference.backends as backends

    monkeypatch.setattr(backends, "available_backends", lambda: [])
    with pytest.raises(ConfigError, match="not installed"):
        PredictOptions(backend="openvino")
    net = _net()
    assert backend_network(net, "auto", torch.device("cpu"), False, "0" * 64, SHAPE) == (net, "torch")


@needs_runtime
@pytest.mark.parametrize("name", INSTALLED)
def test_window_probabilities_within_1e4_of_torch(name: str) -> None:
    net = _net()
    runner, recorded = cached_network(net, name, SHAPE, "a" * 64)
    assert recorded == probability_difference(net, runner, SHAPE, GENERIC)  # the gate's figure: all test windows
    noise = [noise_window(SHAPE)]
    assert probability_difference(net, runner, SHAPE, noise) <= TOLERANCE  # noise: every runtime
    # the nearly flat windows are the harder part of the test (normalisation layers amplify rounding)
    assert recorded >= probability_difference(net, runner, SHAPE, noise)
    x = torch.randn(SHAPE)  # the runner really is the runtime, and it is the same network
    assert runner.backend == name
    with torch.inference_mode():
        assert torch.allclose(torch.softmax(runner(x), 1), torch.softmax(net(x), 1), atol=TOLERANCE)


@needs_runtime
@pytest.mark.parametrize("name", INSTALLED)
def test_a_corrupt_or_stale_cache_entry_is_rebuilt(name: str, tmp_path: Path) -> None:
    net = _net()
    cached_network(net, name, SHAPE, "b" * 64)
    (entry,) = [p.parent for p in (tmp_path / "home" / "compiled").rglob("manifest.json")]
    manifest = json.loads((entry / "manifest.json").read_text())
    (entry / "model.onnx").write_bytes(b"not an onnx file")  # corrupt
    runner, _ = cached_network(net, name, SHAPE, "b" * 64)
    rebuilt = json.loads((entry / "manifest.json").read_text())
    assert rebuilt["files"]["model.onnx"] == manifest["files"]["model.onnx"]  # rebuilt: the same export again
    assert (entry / "model.onnx").read_bytes() != b"not an onnx file"
    assert probability_difference(net, runner, SHAPE, [noise_window(SHAPE)]) <= TOLERANCE
    other = _net(seed=1)  # stale: other numbers under the same weights sha256
    runner, _ = cached_network(other, name, SHAPE, "b" * 64)
    assert probability_difference(other, runner, SHAPE, [noise_window(SHAPE)]) <= TOLERANCE
    assert json.loads((entry / "manifest.json").read_text())["parameters_sha256"] != manifest["parameters_sha256"]


@needs_runtime
def test_auto_takes_the_fastest_backend_measured_here_that_passes(tmp_path: Path) -> None:
    from liverctl.inference.backend_timing import by_speed, machine_id, timing_file

    net, cpu = _net(), torch.device("cpu")
    candidates = ("torch", CHANNELS_LAST, *INSTALLED)
    runner, name = backend_network(net, "auto", cpu, False, "c" * 64, SHAPE, channels_last=True)
    (path,) = (tmp_path / "home" / "compiled" / ("c" * 64)).glob("timings-*/timings-*.json")
    assert path == timing_file(path.parent, SHAPE)
    record = json.loads(path.read_text())
    assert record["key"]["machine"] == machine_id() and record["key"]["exactness_test"] == GENERIC.name
    assert set(record["seconds"]) == set(candidates)  # channels-last and every installed runtime timed against torch

    def passes(b: str) -> bool:
        if b == CHANNELS_LAST:  # the same test as the runtimes: torch's default layout is the reference
            from liverctl.inference.backends import _as_the_engine_runs

            laid_out = _as_the_engine_runs(net, cpu, True)
            return probability_difference(_as_the_engine_runs(net, cpu, False), laid_out, SHAPE) <= TOLERANCE
        return b == "torch" or (cached_network(net, b, SHAPE, "c" * 64)[1] or 1.0) <= TOLERANCE

    passing = [b for b in candidates if passes(b)]
    assert name == next(b for b in by_speed(record["seconds"]) if b in passing)
    # the recorded figures decide (read, not measured again): each candidate in turn made the fastest
    for winner in candidates:
        record["seconds"] = {b: (0.5 if b == winner else 9.0) for b in record["seconds"]}
        record.pop("exactness", None)
        path.write_text(json.dumps(record))
        runner, name = backend_network(net, "auto", cpu, False, "c" * 64, SHAPE, channels_last=True)
        assert name == (winner if winner in passing else "torch")  # one that fails the test is skipped
        assert (runner is net) == (name in ("torch", CHANNELS_LAST))
        again = json.loads(path.read_text())
        assert again["seconds"][winner] == 0.5
        if winner != "torch":  # its exactness is recorded, and a failure is what refuses it
            assert (again["exactness"][winner] <= TOLERANCE) == (winner in passing)
        if name not in ("torch", CHANNELS_LAST):  # a runtime computes the features; the engine applies the head
            features, head = runner.split_head()
            assert features.backend == name and isinstance(head, torch.nn.Conv3d)
            x = torch.randn(1, 1, 32, 32, 16)  # another window shape than the compiled one (--fast): torch
            with torch.inference_mode():
                assert torch.equal(runner(x), net(x))
    # an engine that cannot run channels-last (nnU-Net's) is never offered it
    assert backend_network(net, "auto", cpu, False, "c" * 64, SHAPE)[1] != CHANNELS_LAST
    # figures from another machine or another test, or a file that cannot be read, are measured again
    stale_key = [{**record["key"], "machine": "elsewhere"}, {**record["key"], "exactness_test": "other windows"}]
    for stale in [json.dumps({**record, "key": key}) for key in stale_key] + ["{not json"]:
        path.write_text(stale)
        backend_network(net, "auto", cpu, False, "c" * 64, SHAPE, channels_last=True)
        again = json.loads(path.read_text())
        assert again["key"]["machine"] == machine_id() and 0.5 not in again["seconds"].values()
        assert again["key"]["exactness_test"] == GENERIC.name
    assert not net.training and net.convInit.conv.weight.is_contiguous()  # timing left the network as it was


@needs_runtime
def test_auto_never_takes_a_candidate_that_fails_the_test(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With a tolerance nothing meets, every candidate tested is refused, its figure recorded, and
    the reference runs; the recorded failures are not tested again."""
    import liverctl.inference.backends as backends
    import liverctl.inference.exactness as exactness

    monkeypatch.setattr(backends, "TOLERANCE", -1.0)
    monkeypatch.setattr("liverctl.inference.backend_timing.TOLERANCE", -1.0)
    net, cpu = _net(), torch.device("cpu")
    assert backend_network(net, "auto", cpu, False, "e" * 64, SHAPE, channels_last=True) == (net, "torch")
    (path,) = (tmp_path / "home" / "compiled" / ("e" * 64)).glob("timings-*/timings-*.json")
    record = json.loads(path.read_text())
    record["seconds"] = {b: 9.0 if b == "torch" else 0.5 + i / 10 for i, b in enumerate(record["seconds"])}
    record.pop("exactness", None)
    path.write_text(json.dumps(record))  # torch the slowest: every other candidate is tried first
    assert backend_network(net, "auto", cpu, False, "e" * 64, SHAPE, channels_last=True) == (net, "torch")
    tested = json.loads(path.read_text())["exactness"]
    assert set(tested) == {CHANNELS_LAST, *INSTALLED} and all(d >= 0 for d in tested.values())
    calls = []
    monkeypatch.setattr(exactness, "probability_difference", lambda *a, **k: calls.append(a) or 0.0)
    assert backend_network(net, "auto", cpu, False, "e" * 64, SHAPE, channels_last=True) == (net, "torch")
    assert calls == []


def test_phantom_windows_are_the_models_own_input() -> None:
    """The test windows of a model: noise, then the centre and the first corner of a synthetic
    abdomen after the model's preprocessing; another preprocessing is another test."""
    seen = []

    def to_input(image):
        seen.append(image)
        return (image.array.astype("float32") + 1000.0) / 1000.0  # a recipe of its own: HU to [0, ~2]

    test = phantom_windows("recipe A", to_input, (3.0, 3.0, 3.0), (40, 40, 40))
    assert seen == []  # nothing is built until a test runs
    noise, centre, corner = test.windows(SHAPE)
    assert torch.equal(noise, noise_window(SHAPE))
    (image,) = seen
    assert image.array.shape == (40, 40, 40) and image.geometry.spacing == (3.0, 3.0, 3.0)
    expected = to_input(image)
    assert torch.equal(centre[0, 0], torch.from_numpy(expected[4:36, 4:36, 4:36]))
    assert torch.equal(corner[0, 0], torch.from_numpy(expected[:32, :32, :32]))
    assert float(centre.std()) > 0.05 and float(corner.min()) < 0.1  # tissue at the centre, air in the corner
    assert phantom_windows("recipe B", to_input, (3.0, 3.0, 3.0), (40, 40, 40)).name != test.name
    small = phantom_windows("recipe A", to_input, (3.0, 3.0, 3.0), (20, 40, 40)).windows(SHAPE)
    assert all(w.shape == SHAPE for w in small)  # a grid thinner than the window is padded with its edge


@needs_runtime
def test_compiling_leaves_a_dropout_network_in_eval_mode() -> None:
    """The bundle's SegResNet has dropout: compiling its features must not switch it to training."""
    torch.manual_seed(0)
    net = build_model("segresnet", in_channels=1, out_channels=4, init_filters=8, dropout_prob=0.2).eval()
    runner, name = backend_network(net, INSTALLED[0], torch.device("cpu"), False, "d" * 64, SHAPE)
    assert name == INSTALLED[0] and not net.training
    assert probability_difference(net, runner, SHAPE, GENERIC) <= TOLERANCE


class _TwoClasses(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), x], 1)


class _ThreeClasses(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), x, -x], 1)


class _Band(torch.nn.Module):
    def __init__(self, centre: float) -> None:
        super().__init__()
        self.centre = centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 4.0 - (x - self.centre) ** 2], 1)


@needs_runtime
def test_networks_without_parameters_never_share_a_compiled_model() -> None:
    """Under one weights sha256, two networks with no parameters (the same empty state) but
    different forwards get their own cache entries."""
    cached_network(_TwoClasses(), INSTALLED[0], SHAPE, "e" * 64)
    runner, _ = cached_network(_ThreeClasses(), INSTALLED[0], SHAPE, "e" * 64)
    x = torch.randn(SHAPE)
    with torch.inference_mode():
        assert torch.allclose(runner(x), _ThreeClasses()(x), atol=1e-6)
    # the same class with another plain attribute (a band's centre) is another network too
    cached_network(_Band(0.0), INSTALLED[0], SHAPE, "f" * 64)
    runner, _ = cached_network(_Band(1.0), INSTALLED[0], SHAPE, "f" * 64)
    with torch.inference_mode():
        assert torch.allclose(runner(x), _Band(1.0)(x), atol=1e-5)


@needs_runtime
def test_auto_keeps_torch_for_a_network_without_weights(tmp_path: Path) -> None:
    """A parameterless network (a test's pointwise stand-in) is not exported, compiled or timed:
    no runtime computes it faster, and one computed a HU band's edges differently (OpenVINO)."""
    net = _Band(150.0)
    assert backend_network(net, "auto", torch.device("cpu"), False, "9" * 64, SHAPE) == (net, "torch")
    assert not (tmp_path / "home" / "compiled").exists()
