"""Compiled CPU backends for the network forward: OpenVINO and ONNX Runtime behind ``--backend``.

The sliding window (:mod:`liverctl.inference.engine`) calls a network on one window at a time;
on the CPU that call is nearly all of ``predict``'s time. :func:`backend_network` gives the
engine a callable that runs the same network through another runtime:

* ``torch``: the network itself (eager PyTorch, fp32);
* ``onnxruntime``: the network exported to ONNX (opset 18, fixed window shape) and run by ONNX
  Runtime's CPU execution provider;
* ``openvino``: the same ONNX file read by OpenVINO and compiled for the CPU with
  ``INFERENCE_PRECISION_HINT=f32`` (no bf16/fp16 rewrites, whatever the CPU offers);
* ``auto`` (the default): of torch, torch with channels-last weights (where the caller's engine
  can run them so) and the installed runtimes, the fastest on this machine (timed once,
  :mod:`liverctl.inference.backend_timing`) that passes the exactness test. Exact mode
  (``--exact``) and every non-CPU device are torch.

Exactness test (:mod:`liverctl.inference.exactness`): on the test windows, every class's softmax
probability within 1e-4 of torch fp32. It runs when a compiled model is built; the result is
written into the cache entry's manifest. ``auto`` holds torch's channels-last layout to the same
test (:data:`CHANNELS_LAST`).

Cache: ``$LIVERCTL_HOME/compiled`` (else ``$XDG_CACHE_HOME/liverctl/compiled``, else
``~/.cache/liverctl/compiled``), one folder per weights sha256, backend and version, and window
shape, holding ``model.onnx`` (and OpenVINO's ``model.xml``/``model.bin``) and ``manifest.json``
with the sha256 of each file. An entry whose manifest is missing, unreadable, for another key,
or whose files do not hash to it is removed and rebuilt, never used.

Runtimes come with the extra ``pip install "liverctl[cpu]"`` (openvino, onnxruntime, onnx).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liverctl.errors import ConfigError
from liverctl.inference.exactness import GENERIC, TOLERANCE, TestWindows, probability_difference

__all__ = [
    "BACKENDS",
    "CHANNELS_LAST",
    "SPEED_ORDER",
    "available_backends",
    "backend_network",
    "backend_version",
    "compiled_cache_dir",
    "export_onnx",
    "resolve_backend",
    "runtime_network",
]

BACKENDS = ("auto", "torch", "openvino", "onnxruntime")
SPEED_ORDER = ("openvino", "onnxruntime")
"""The runtimes ``auto`` builds and times against torch, in this order."""
CHANNELS_LAST = "torch:channels-last"
"""What ``auto`` returns when torch with channels-last convolution weights is the fastest that
passes the exactness test: the caller then runs the network with
``SlidingWindow.channels_last``."""
OPSET = 18
_PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime"}
_MANIFEST = "manifest.json"


def available_backends() -> list[str]:
    """The compiled runtimes importable here (exporting needs ``onnx`` as well)."""
    if importlib.util.find_spec("onnx") is None:
        return []
    return [name for name in SPEED_ORDER if importlib.util.find_spec(_PACKAGES[name]) is not None]


def backend_version(name: str) -> str:
    """``torch`` or a runtime's installed version."""
    return importlib.metadata.version("torch" if name == "torch" else _PACKAGES[name])


def check_backend(name: str) -> None:
    """Refuse an unknown or uninstalled ``--backend`` (before anything is downloaded or run)."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown --backend {name!r}: use one of {', '.join(BACKENDS)}")
    if name not in ("auto", "torch") and name not in available_backends():
        raise ConfigError(f'--backend {name}: {name} is not installed; pip install "liverctl[cpu]"')


def resolve_backend(requested: str, device: torch.device, exact: bool) -> list[str]:
    """The one place the backend is chosen: the runtimes to try, in order (``torch`` last, always).

    Exact mode and any device but the CPU run torch; ``auto`` tries the installed runtimes of
    :data:`SPEED_ORDER`; a named runtime is that runtime."""
    check_backend(requested)
    if exact or device.type != "cpu" or requested == "torch":
        return ["torch"]
    if requested == "auto":
        return [*available_backends(), "torch"]
    return [requested]


def compiled_cache_dir() -> Path:
    """Where compiled models are kept (see the module docs)."""
    from liverctl.weights.pins import HOME_ENV

    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / "compiled"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "liverctl" / "compiled"


def export_onnx(network: torch.nn.Module, shape: Sequence[int], path: Path) -> Path:
    """``network`` as an ONNX file for inputs of ``shape`` (B, C, z, y, x), fp32, opset 18."""
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            torch.onnx.export(
                network,
                (torch.zeros(tuple(shape)),),
                str(path),
                opset_version=OPSET,
                input_names=["image"],
                output_names=["logits"],
                dynamo=False,
            )
    finally:
        network.train(was_training)
    return path


def _runner(name: str, folder: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a float32 (1, C, z, y, x) array to the runtime's logits."""
    if name == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # --threads, as torch runs
        session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        return lambda a: session.run(None, {"image": a})[0]
    if name == "openvino":
        import openvino as ov

        core = ov.Core()
        source = folder / "model.xml"
        if not source.is_file():
            ov.save_model(core.read_model(str(folder / "model.onnx")), str(source), compress_to_fp16=False)
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        compiled = core.compile_model(str(source), "CPU", config)
        request = compiled.create_infer_request()
        output = compiled.output(0)
        return lambda a: np.array(request.infer({0: a})[output], copy=True)
    raise ConfigError(f"no compiled runtime called {name!r}")


class RuntimeNetwork:
    """The engine's predictor on a compiled runtime: ``(B, C, z, y, x)`` tensor -> logits tensor.

    Inputs of another window shape than the compiled one (``--fast`` shrinks windows) run on
    the torch ``network`` it was made from."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], shape: Sequence[int], network: Any, name: str):
        self.run = run
        self.shape = tuple(int(s) for s in shape)
        self.network = network
        self.backend = name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.shape[1:] or x.device.type != "cpu":
            return self.network(x)
        parts = [self.run(np.ascontiguousarray(x[i : i + 1].detach().float().numpy())) for i in range(x.shape[0])]
        return torch.from_numpy(np.concatenate(parts, 0))


def runtime_network(network: torch.nn.Module, name: str, shape: Sequence[int], folder: Path) -> RuntimeNetwork:
    """``network`` exported into ``folder`` (no cache checks) and loaded by runtime ``name``."""
    if not (folder / "model.onnx").is_file():
        export_onnx(network, shape, folder / "model.onnx")
    return RuntimeNetwork(_runner(name, folder), shape, network, name)


class _Features(torch.nn.Module):
    """A network's feature part (``split_head()``'s first item, a bound method) as a module to export."""

    def __init__(self, network: torch.nn.Module, features: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.inner = network
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class _Headed(torch.nn.Module):
    """A runtime's features followed by the network's 1x1x1 head in torch; offers ``split_head``
    like the network it stands for, so the engine still blends features, not logits."""

    def __init__(self, features: Any, head: torch.nn.Module, like: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.spatial_dims = 3
        if like is not None and getattr(like, "min_input_multiple", None) is not None:
            self.min_input_multiple = like.min_input_multiple
        self.backend = getattr(features, "backend", "torch")

    def split_head(self) -> tuple[Any, torch.nn.Module]:
        return self.features, self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _features_and_head(network: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """``(features as a module, head)`` of a network whose last layer is a 1x1x1 convolution
    (the engine's own test, :func:`liverctl.inference.networks._split_head`), else ``None``."""
    from liverctl.inference.networks import _split_head

    parts = _split_head(network)
    if parts is None:
        return None
    # the wrapper takes the network's mode: a fresh module is in training mode, and export_onnx
    # restores the mode it found, which would put the network itself into training (dropout on)
    return _Features(network, parts[0]).train(network.training), parts[1]


def parameters_digest(network: torch.nn.Module) -> str:
    """sha256 of the network's class, repr, plain attributes (numbers, strings, tuples of every
    submodule) and state (names, shapes and bytes): a cache entry made from another network or
    other numbers under the same weights sha256 (an edited file, a test's stand-in) is stale."""
    import hashlib

    digest = hashlib.sha256()
    # the class and its repr too: two networks without parameters (or with the same ones but
    # another forward) under one weights sha256 must not share a compiled model
    digest.update(f"{type(network).__module__}.{type(network).__qualname__}\n{network!r}".encode())
    for name, module in network.named_modules():  # plain attributes that shape the forward
        for key, value in sorted(vars(module).items()):
            if key != "training" and not key.startswith("_") and isinstance(value, (bool, int, float, str, tuple)):
                digest.update(f"{name}.{key}={value!r}\n".encode())
    for key, value in network.state_dict().items():
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _file_hashes(folder: Path) -> dict[str, str]:
    from liverctl.weights.pins import sha256_file

    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != _MANIFEST}


def _trusted(folder: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of a cache entry if it is for ``key`` and its files hash as it says, else ``None``."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in key.items()):
        return None
    files = manifest.get("files")
    if not isinstance(files, dict) or "model.onnx" not in files or files != _file_hashes(folder):
        return None
    return manifest


def cached_network(
    network: torch.nn.Module,
    name: str,
    shape: Sequence[int],
    sha256: str,
    cache: Path | None = None,
    head: torch.nn.Module | None = None,
    check: bool = True,
    test: TestWindows = GENERIC,
) -> tuple[RuntimeNetwork, float | None]:
    """``network`` on runtime ``name`` for windows of ``shape``, from the cache or built into it;
    with its exactness (largest probability difference from torch on the windows of ``test``),
    run once and kept in the entry's manifest (``check=False``: not run now, ``None`` unless known).

    ``head``: ``network`` is the feature part of a model whose logits are ``head(features)``
    (the engine blends features and applies the 1x1x1 head itself); exactness is then that of
    ``head`` after the runtime against ``head`` after torch."""
    version = backend_version(name)
    part = "features" if head is not None else "network"
    shape_text = "x".join(str(int(s)) for s in shape)
    folder = (cache or compiled_cache_dir()) / sha256 / f"{name}-{version}" / f"{part}-{shape_text}"
    key = {
        "part": part,
        "weights_sha256": sha256,
        "parameters_sha256": parameters_digest(network),
        "backend": name,
        "version": version,
        "window": [int(s) for s in shape],
    }
    manifest = _trusted(folder, key) if folder.is_dir() else None
    runner = None
    if manifest is not None:
        try:
            runner = RuntimeNetwork(_runner(name, folder), shape, network, name)
        except Exception:  # a file the runtime cannot read: rebuilt below
            manifest = None
    if manifest is None:
        runner, manifest = _build(network, name, shape, folder, key)
    tested = manifest.get("exactness") if isinstance(manifest.get("exactness"), dict) else {}
    difference = tested.get(test.name)
    if difference is None and check:
        full = network if head is None else torch.nn.Sequential(network, head)
        difference = probability_difference(full, runner if head is None else _Headed(runner, head), shape, test)
        _write_manifest(folder, {**manifest, "exactness": {**tested, test.name: difference}})
    return runner, None if difference is None else float(difference)


def _build(
    network: torch.nn.Module, name: str, shape: Sequence[int], folder: Path, key: dict[str, Any]
) -> tuple[RuntimeNetwork, dict[str, Any]]:
    """Export and compile into a private folder, then rename it into place (exactness not yet run)."""
    shutil.rmtree(folder, ignore_errors=True)
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    runner = runtime_network(network, name, shape, building)
    manifest = {**key, "exactness": {}, "files": _file_hashes(building)}
    (building / _MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    try:
        building.rename(folder)
    except OSError:  # another process built it first: ours is as good, and removed
        shutil.rmtree(building, ignore_errors=True)
    return runner, manifest


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    import contextlib

    from liverctl.io import write_text_atomic

    with contextlib.suppress(OSError):  # a read-only cache: the figure is recomputed next time
        write_text_atomic(folder / _MANIFEST, json.dumps(manifest, indent=2))


def _on_runtime(
    network: torch.nn.Module, name: str, shape: Sequence[int], sha256: str, check: bool, test: TestWindows
) -> tuple[Any, float | None]:
    """``network`` on runtime ``name``: the whole network, or (a network with a 1x1x1 head) its
    features on the runtime and the head in torch."""
    split = _features_and_head(network)
    if split is None:
        return cached_network(network, name, shape, sha256, check=check, test=test)
    runner, difference = cached_network(split[0], name, shape, sha256, head=split[1], check=check, test=test)
    return _Headed(runner, split[1], network), difference


def backend_network(
    network: Any,
    requested: str,
    device: torch.device,
    exact: bool,
    sha256: str,
    shape: Sequence[int],
    *,
    test: TestWindows = GENERIC,
    channels_last: bool = False,
) -> tuple[Any, str]:
    """The predictor the engine runs for ``network`` and the backend it runs on (see the module
    docs: exact mode and non-CPU devices are torch; a named runtime that cannot be built or fails
    the exactness test on the windows of ``test`` is refused; ``auto`` takes the fastest of torch,
    torch channels-last (when ``channels_last``: the caller can run it so) and the runtimes,
    timed once per machine (:mod:`liverctl.inference.backend_timing`), that passes the test).
    Channels-last comes back as ``(network, CHANNELS_LAST)``."""
    candidates = resolve_backend(requested, device, exact)
    if not isinstance(network, torch.nn.Module) or candidates == ["torch"]:
        return network, "torch"
    if requested == "auto":
        if next(network.parameters(), None) is None:  # no weights: nothing a runtime could compute faster
            return network, "torch"
        return _auto(network, candidates[:-1], device, sha256, shape, test, channels_last)
    try:
        runner, difference = _on_runtime(network, requested, shape, sha256, True, test)
    except Exception as exc:
        raise ConfigError(f"--backend {requested}: cannot run this network: {exc}") from None
    if difference is not None and difference > TOLERANCE:
        raise ConfigError(
            f"--backend {requested}: probabilities {difference:.1e} from torch fp32 (more than {TOLERANCE:g}); "
            "use --backend torch"
        )
    return runner, requested


def _auto(
    network: torch.nn.Module,
    runtimes: Sequence[str],
    device: torch.device,
    sha256: str,
    shape: Sequence[int],
    test: TestWindows,
    channels_last: bool,
) -> tuple[Any, str]:
    """``auto``: the recorded (else measured) seconds per window, fastest first; a runtime is
    loaded only when it is the fastest left, and each is used only when it passes the test."""
    from liverctl.device import inference_memory_format
    from liverctl.inference.backend_timing import (
        by_speed,
        measured_seconds,
        record_exactness,
        recorded_exactness,
        recorded_seconds,
    )

    # per weights file and per network built from it (a test's stand-ins share one sha256)
    folder = compiled_cache_dir() / sha256 / f"timings-{parameters_digest(network)[:16]}"
    layout = channels_last and inference_memory_format(device, "fp32", network) == torch.channels_last_3d
    versions = {name: backend_version(name) for name in ("torch", *runtimes)}
    seconds = recorded_seconds(shape, folder, versions, test.name)
    if seconds is None:
        runs: dict[str, Callable[[torch.Tensor], Any]] = {"torch": _as_the_engine_runs(network, device, False)}
        if layout:
            runs[CHANNELS_LAST] = _as_the_engine_runs(network, device, True)
        for name in runtimes:
            try:
                runs[name] = _on_runtime(network, name, shape, sha256, False, test)[0]
            except Exception:  # cannot export or compile this network: not a candidate
                continue
        seconds = measured_seconds(runs, shape, folder, versions, test.name)
    tested = recorded_exactness(shape, folder)
    for name in by_speed(seconds):
        if name == "torch":
            return network, "torch"
        if name == CHANNELS_LAST and not layout:  # timed for a caller that could run it; this one cannot
            continue
        try:
            if name == CHANNELS_LAST:
                runner, difference = network, tested.get(name)
                if difference is None:
                    laid_out = _as_the_engine_runs(network, device, True)
                    difference = probability_difference(
                        _as_the_engine_runs(network, device, False), laid_out, shape, test
                    )
            else:
                runner, difference = _on_runtime(network, name, shape, sha256, True, test)
        except Exception:
            difference = None
        if name not in tested:
            record_exactness(shape, folder, name, float("inf") if difference is None else difference)
        if difference is not None and difference <= TOLERANCE:
            return runner, name
    return network, "torch"


def _as_the_engine_runs(
    network: torch.nn.Module, device: torch.device, channels_last: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``network`` as the engine runs it, in eval mode, its weights in the layout of
    :func:`liverctl.device.prepare_network` (with ``channels_last`` or not): for timing and
    the exactness test."""
    from liverctl.device import prepare_network, restore_layout

    def run(x: torch.Tensor) -> torch.Tensor:
        was_training = network.training
        changed = prepare_network(network, device, "fp32", channels_last=channels_last)
        try:
            return network(x)
        finally:
            restore_layout(changed)
            network.train(was_training)

    return run
