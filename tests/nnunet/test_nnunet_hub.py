"""nnU-Net v2 results folders from the Hub: ``weights add``, ``predict --model NAME``, tampering (issue 14).

The phantom results folder of tests/data/nnunet is served by the Hub imitation of
tests/support/hub_server.py; ``liverctl`` runs in subprocesses (``HF_ENDPOINT`` is read when
huggingface_hub is imported), so downloads go through the real ``hf_hub_download``. The scan is
a 16 x 28 x 28 crop of a phantom, one window of the folder's 16 x 32 x 32 patch, so that each
prediction takes about a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hub_server import HubServer, client_env
from nnunet_cases import FOLDER
from typer.testing import CliRunner

from liverctl.cli import app
from liverctl.io import Image, read_image, write_image
from liverctl.phantoms import make_phantom
from liverctl.weights import NnUNetEntry, load_registry, sha256_file

ROOT = Path(__file__).resolve().parents[2]
REPO = "test/liver-nnunet"
IN_REPO = f"Dataset914_LiverPhantom/{FOLDER.name}"
FILES = {p.relative_to(FOLDER).as_posix(): p for p in sorted(FOLDER.rglob("*")) if p.is_file()}


@pytest.fixture
def hub():
    with HubServer() as server:
        for rel, path in FILES.items():
            server.add(REPO, f"{IN_REPO}/{rel}", path.read_bytes())
        server.add(REPO, "README.md", b"# a liver model\n")  # not part of the folder
        yield server


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ct, labels = make_phantom(domain="tumour", seed=915, case=0, shape=(40, 48, 38), spacing=(10.0, 8.0, 8.0))
    centre = [int((a.min() + a.max()) // 2) for a in np.nonzero(labels.array == 1)]
    box = tuple(slice(c - s // 2, c - s // 2 + s) for c, s in zip(centre, (16, 28, 28), strict=True))
    return write_image(Image(ct.array[box].copy(), ct.geometry), tmp_path_factory.mktemp("hub_scan") / "crop.nii.gz")


def liverctl(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess:
    env = {**env, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "liverctl", *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if "error" in line]


def snapshot_file(env: dict[str, str], commit: str, rel: str) -> Path:
    return Path(env["HF_HOME"]) / "hub" / "models--test--liver-nnunet" / "snapshots" / commit / IN_REPO / rel


def pinned_registry(tmp_path: Path, commit: str) -> Path:
    entry = NnUNetEntry(
        "phantom", REPO, commit, IN_REPO, (0, 1), sha256={rel: sha256_file(p) for rel, p in FILES.items()}
    )
    path = tmp_path / "weights.toml"
    path.write_text('default = "phantom"\n\n' + entry.to_toml(), encoding="utf-8")
    return path


@pytest.mark.slow
def test_add_then_predict_model_equals_predict_weights(hub: HubServer, scan: Path, tmp_path: Path):
    registry = tmp_path / "weights.toml"
    shipped = "# my own notes\n" + (ROOT / "weights.toml").read_text(encoding="utf-8")
    registry.write_text(shipped, encoding="utf-8")
    env = client_env(hub.url, tmp_path / "adder", registry)
    add = ["weights", "add", REPO, "--revision", "main", "--folder", IN_REPO, "--name", "phantom"]
    proc = liverctl(env, *add)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(registry)
    text = registry.read_text(encoding="utf-8")
    assert text.startswith(shipped.rstrip("\n"))  # comments and the other entries stay as they were
    reg = load_registry(registry)
    entry = reg.get("phantom")
    assert isinstance(entry, NnUNetEntry) and reg.default == "wholebody-ct-3mm"
    assert entry.revision == hub.commit and entry.folder == IN_REPO and entry.folds == (0, 1)
    assert entry.sha256 == {rel: sha256_file(p) for rel, p in FILES.items()}  # the real files' hashes

    again = liverctl(env, *add)  # the name is taken: refused before any download, file untouched
    assert again.returncode != 0 and len(errors(again)) == 1 and "already exists" in again.stderr
    assert registry.read_text(encoding="utf-8") == text

    env = client_env(hub.url, tmp_path / "user", registry)  # a fresh cache: predict downloads
    out = tmp_path / "from_hub"
    proc = liverctl(env, "predict", scan, "--model", "phantom", "-o", out, "--threads", "1", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    fetched = {r.path for r in hub.requests if r.method == "GET" and r.role == "cdn"}
    assert len(fetched) == 2  # the two checkpoints (LFS); plans.json and dataset.json from the Hub itself
    assert snapshot_file(env, hub.commit, "fold_1/checkpoint_final.pth").is_file()
    report = json.loads((out / "crop.json").read_text())
    model = report["model"]
    assert model["name"] == "phantom" and model["source"] == "hub" and model["revision"] == hub.commit
    assert model["files"] == entry.sha256 and model["folds"] == ["0", "1"]
    verify = liverctl(env, "weights", "verify", "phantom")
    assert verify.returncode == 0 and verify.stdout.strip() == "phantom: ok"

    local = tmp_path / "from_folder"
    result = CliRunner().invoke(
        app, ["predict", str(scan), "--weights", str(FOLDER), "-o", str(local), "--threads", "1", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    from_hub, from_folder = read_image(out / "crop.nii.gz").array, read_image(local / "crop.nii.gz").array
    assert from_hub.any() and np.array_equal(from_hub, from_folder)


def test_tampered_files_are_refused_with_one_line_and_removed(hub: HubServer, scan: Path, tmp_path: Path):
    registry = pinned_registry(tmp_path, hub.commit)
    env = client_env(hub.url, tmp_path, registry)

    hub.tamper(REPO, f"{IN_REPO}/plans.json")  # a small file: stored as served, caught by the pin
    out = tmp_path / "out"
    proc = liverctl(env, "predict", scan, "--model", "phantom", "-o", out, "--device", "cpu")
    assert proc.returncode == 2 and len(errors(proc)) == 1, proc.stderr
    assert "sha256 mismatch" in proc.stderr and "plans.json" in proc.stderr and "removed from the cache" in proc.stderr
    assert not snapshot_file(env, hub.commit, "plans.json").exists()
    assert not (out / "crop.nii.gz").exists()
    hub.tamper(REPO, f"{IN_REPO}/plans.json", on=False)

    hub.tamper(REPO, f"{IN_REPO}/fold_0/checkpoint_final.pth")  # LFS: caught against the Hub's sha256
    proc = liverctl(env, "weights", "download", "phantom")
    assert proc.returncode != 0 and len(errors(proc)) == 1, proc.stderr
    assert "sha256 mismatch" in proc.stderr and "fold_0/checkpoint_final.pth" in proc.stderr
    blobs = Path(env["HF_HOME"]) / "hub" / "models--test--liver-nnunet" / "blobs"
    assert not any(b.name.startswith(sha256_file(FILES["fold_0/checkpoint_final.pth"])) for b in blobs.iterdir())
    assert not snapshot_file(env, hub.commit, "fold_0/checkpoint_final.pth").exists()
    assert snapshot_file(env, hub.commit, "plans.json").is_file()  # the good files stay cached
    verify = liverctl(env, "weights", "verify", "phantom")
    assert verify.stdout.strip() == "phantom: not-cached"


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("onnxruntime") is None, reason="needs onnxruntime (liverctl[cpu])"
)
def test_weights_export_writes_each_fold_with_its_plans(hub: HubServer, tmp_path: Path):
    """``weights export`` of an nnU-Net entry: downloaded and verified through the Hub, one ONNX
    file per fold that ONNX Runtime runs as torch does, and the plans' patch and normalisation beside it."""
    import onnxruntime
    import torch

    from liverctl.nnunet import NnUNetModel

    env = client_env(hub.url, tmp_path, pinned_registry(tmp_path, hub.commit))
    out = tmp_path / "export"
    proc = liverctl(env, "weights", "export", "phantom", "--format", "onnx", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "phantom_fold_0.json",
        "phantom_fold_0.onnx",
        "phantom_fold_1.json",
        "phantom_fold_1.onnx",
    ]
    plans = json.loads((FOLDER / "plans.json").read_text())["configurations"]["3d_fullres"]
    reference = NnUNetModel.load(FOLDER, folds=(0, 1), device="cpu")
    x = torch.randn(1, 1, *plans["patch_size"], generator=torch.Generator().manual_seed(3))
    for fold, net in zip((0, 1), reference.networks, strict=True):
        side = json.loads((out / f"phantom_fold_{fold}.json").read_text())
        assert side["window"]["roi"] == plans["patch_size"] and side["architecture"] == "nnunetv2"
        assert side["normalization"] and side["files_sha256"][f"fold_{fold}/checkpoint_final.pth"]
        assert side["check"]["max_probability_difference"] <= 1e-4
        session = onnxruntime.InferenceSession(str(out / f"phantom_fold_{fold}.onnx"))
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        with torch.inference_mode():
            want = net.eval()(x)
        assert float((got.softmax(1) - want.softmax(1)).abs().max()) <= 1e-4
