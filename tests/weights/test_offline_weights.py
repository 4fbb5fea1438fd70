"""Air-gapped weights (issue 22): `liverctl weights pack` on a connected machine, `weights import`
on an offline one, then `predict --model NAME` with HF_HUB_OFFLINE=1; run as a user would
(subprocesses, the real Hub client against tests/support/hub_server.py, an nnU-Net export zip
written by nnunetv2's own export function)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from hub_server import HubServer, client_env, registry_entry, write_registry
from nnunet_cases import FOLDER, make_case

from liverctl.io import write_image

DEAD_HUB = "http://127.0.0.1:9"  # nothing listens: any network use would fail


def liverctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "liverctl", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("liverctl: error:")]


def offline_env(tmp: Path, name: str) -> dict[str, str]:
    """A machine without the network: fresh caches, a Hub address nothing answers, HF_HUB_OFFLINE=1."""
    env = client_env(DEAD_HUB, tmp / name)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def store_of(env: dict[str, str]) -> Path:
    return Path(env["LIVERCTL_HOME"]) / "weights"


def store_is_empty(env: dict[str, str]) -> bool:
    store = store_of(env)
    return not store.exists() or [p.name for p in store.iterdir()] in ([], [".import.lock"])


@pytest.fixture(scope="module")
def online(tmp_path_factory: pytest.TempPathFactory):
    """A Hub holding a small segresnet ('seg', unpinned: trusted on first use) and its registry."""
    from liverctl.models import build_model

    tmp = tmp_path_factory.mktemp("online")
    torch.manual_seed(0)
    net = build_model("segresnet", spatial_dims=3, in_channels=1, out_channels=2, init_filters=8)
    torch.save(net.state_dict(), tmp / "w.pt")
    entry = registry_entry("seg", "test/seg", "models/w.pt").replace(
        "out_channels = 2", "out_channels = 2\ninit_filters = 8"
    )
    entry = entry.replace("spacing = [3.0, 3.0, 3.0]", "spacing = [8.0, 8.0, 8.0]")  # a few windows: fast
    reg = write_registry(tmp / "weights.toml", [entry], "seg")
    with HubServer() as server:
        server.add("test/seg", "models/w.pt", (tmp / "w.pt").read_bytes())
        env = client_env(server.url, tmp, reg)
        archive = tmp / "seg-weights.zip"
        proc = liverctl(env, "weights", "pack", "seg", "-o", str(archive))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == str(archive)
        yield env, archive, tmp


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scan") / "phantom.nii.gz"
    write_image(make_case("native"), path)
    return path


def test_pack_holds_files_entries_and_pins(online):
    _, archive, tmp = online
    data = (tmp / "w.pt").read_bytes()
    with zipfile.ZipFile(archive) as zf:
        manifest = json.loads(zf.read("liverctl-weights.json"))
        registry = zf.read("weights.toml").decode()
        assert zf.read("seg/w.pt") == data
    sha = hashlib.sha256(data).hexdigest()
    assert manifest["format"] == "liverctl-weights-archive" and manifest["files"] == {"seg/w.pt": sha}
    assert manifest["models"][0]["source"]["repo_id"] == "test/seg"
    assert f'sha256 = "{sha}"' in registry and 'repo_id = ""' in registry and 'filename = "seg/w.pt"' in registry


def test_import_then_predict_offline_and_every_load_is_checked(online, scan: Path, tmp_path: Path):
    _, archive, tmp = online
    env = offline_env(tmp_path, "site")
    proc = liverctl(env, "weights", "import", str(archive))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["seg"]
    stored = store_of(env) / "seg" / "w.pt"
    assert stored.read_bytes() == (tmp / "w.pt").read_bytes()
    out = tmp_path / "out"
    proc = liverctl(env, "predict", str(scan), "--model", "seg", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)[0]
    assert report["model"]["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert liverctl(env, "weights", "verify", "seg").stdout.startswith("seg: ok")

    again = liverctl(env, "weights", "import", str(archive))  # the name is taken now
    assert again.returncode == 2 and len(error_lines(again)) == 1 and "already taken" in again.stderr
    assert sorted(p.name for p in store_of(env).iterdir() if not p.name.startswith(".")) == ["seg", "weights.toml"]

    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))  # altered after import: refused at load
    bad = liverctl(env, "predict", str(scan), "--model", "seg", "-o", str(tmp_path / "out2"))
    assert bad.returncode != 0 and "sha256 mismatch" in bad.stderr and stored.exists()


def test_tampered_archive_is_refused_and_nothing_registered(online, tmp_path: Path):
    _, archive, _ = online
    env = offline_env(tmp_path, "site")
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, data[:-1] + bytes([data[-1] ^ 1]) if info.filename.endswith(".pt") else data)
    proc = liverctl(env, "weights", "import", str(tampered))
    assert proc.returncode == 2 and len(error_lines(proc)) == 1
    assert "the archive was altered or damaged" in proc.stderr and "nothing was imported" in proc.stderr
    assert store_is_empty(env)
    # bytes flipped inside the zip itself: its CRC catches them
    raw = bytearray(archive.read_bytes())
    start = raw.index(b"PK\x03\x04", raw.index(b"seg/w.pt") - 60)
    raw[start + 200] ^= 0xFF
    flipped = tmp_path / "flipped.zip"
    flipped.write_bytes(bytes(raw))
    proc = liverctl(env, "weights", "import", str(flipped))
    assert proc.returncode == 2 and len(error_lines(proc)) == 1 and store_is_empty(env)


def test_plain_weights_file_with_its_recipe(online, tmp_path: Path):
    env0, _, tmp = online
    env = offline_env(tmp_path, "site")
    no_recipe = tmp_path / "lone.pt"
    shutil.copyfile(tmp / "w.pt", no_recipe)
    proc = liverctl(env, "weights", "import", str(no_recipe))
    assert proc.returncode == 2 and len(error_lines(proc)) == 1 and "--recipe" in proc.stderr and store_is_empty(env)
    proc = liverctl(
        env, "weights", "import", str(no_recipe), "--recipe", env0["LIVERCTL_WEIGHTS_TOML"], "--name", "mine"
    )
    assert proc.returncode == 0, proc.stderr
    path = liverctl(env, "weights", "path", "mine")
    assert path.returncode == 0 and Path(path.stdout.strip()).read_bytes() == no_recipe.read_bytes()


def _export_zip(tmp: Path) -> Path:
    """An nnU-Net export zip of the test results folder, written by nnunetv2's export_pretrained_model."""
    results = tmp / "nnUNet_results"
    trained = results / "Dataset914_LiverPhantom" / FOLDER.name
    shutil.copytree(FOLDER, trained)
    for fold in (0, 1):  # what a real training leaves beside the checkpoint, which the export reads
        (trained / f"fold_{fold}" / "progress.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        (trained / f"fold_{fold}" / "validation").mkdir()
        (trained / f"fold_{fold}" / "validation" / "summary.json").write_text("{}")
    (trained / "dataset_fingerprint.json").write_text("{}")
    out = tmp / "Dataset914_LiverPhantom.zip"
    code = (
        "from nnunetv2.model_sharing.model_export import export_pretrained_model\n"
        f"export_pretrained_model('Dataset914_LiverPhantom', {str(out)!r}, configurations=('3d_fullres',), folds=(0, 1))"
    )
    env = {**client_env(DEAD_HUB, tmp), "nnUNet_results": str(results)}
    env.update(nnUNet_raw=str(tmp / "raw"), nnUNet_preprocessed=str(tmp / "pre"))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


def test_nnunet_export_zip_and_results_folder_predict_offline(scan: Path, tmp_path: Path):
    exported = _export_zip(tmp_path)
    with zipfile.ZipFile(exported) as zf:
        assert f"Dataset914_LiverPhantom/{FOLDER.name}/fold_1/checkpoint_final.pth" in zf.namelist()
    env = offline_env(tmp_path, "site")
    proc = liverctl(env, "weights", "import", str(exported))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["Dataset914_LiverPhantom-3d_fullres"]
    proc = liverctl(env, "weights", "import", str(FOLDER), "--name", "phantom-folder")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    runs = {}
    for name in ("Dataset914_LiverPhantom-3d_fullres", "phantom-folder"):
        proc = liverctl(env, "predict", str(scan), "--model", name, "-o", str(out / name), "--json")
        assert proc.returncode == 0, proc.stderr
        runs[name] = json.loads(proc.stdout)[0]
    assert runs["phantom-folder"]["voxel_count"] == runs["Dataset914_LiverPhantom-3d_fullres"]["voxel_count"] > 0
    rel = "fold_0/checkpoint_final.pth"
    stored = store_of(env) / "phantom-folder" / FOLDER.name / rel
    assert stored.read_bytes() == (FOLDER / rel).read_bytes()
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))  # altered after import: refused at the next load, and kept
    bad = liverctl(env, "predict", str(scan), "--model", "phantom-folder", "-o", str(out / "again"))
    assert bad.returncode != 0 and "sha256 mismatch" in bad.stderr and "fold_0" in bad.stderr and stored.exists()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _no_plans(tmp: Path) -> Path:
    folder = tmp / "Dataset914_LiverPhantom" / FOLDER.name
    shutil.copytree(FOLDER, folder)
    (folder / "plans.json").unlink()
    return folder


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda t, a: t.joinpath("notes.txt").write_text("hello") and t / "notes.txt",
            "not a liverctl weights archive",
        ),
        (lambda t, a: t.joinpath("cut.zip").write_bytes(a.read_bytes()[:-400]) and t / "cut.zip", "truncated"),
        (lambda t, a: _zip(t / "slip.zip", {"../evil.pt": b"x", "ok/plans.json": b"{}"}), "outside the target folder"),
        (lambda t, a: _no_plans(t), "plans.json missing"),
    ],
    ids=["non-archive", "truncated-zip", "zip-slip", "no-plans"],
)
def test_bad_imports_are_one_line_and_register_nothing(online, tmp_path: Path, make, message: str):
    _, archive, _ = online
    env = offline_env(tmp_path, "site")
    source = make(tmp_path, archive)
    proc = liverctl(env, "weights", "import", str(source))
    assert proc.returncode == 2, proc.stderr
    assert len(error_lines(proc)) == 1 and message in proc.stderr, proc.stderr
    assert store_is_empty(env) and not (tmp_path.parent / "evil.pt").exists()


def test_pack_refuses_before_any_download(online, tmp_path: Path):
    env, archive, _ = online
    mine = tmp_path / "notes.zip"
    mine.write_text("the user's own file")
    for args, message in (
        (["weights", "pack", "nope", "-o", str(tmp_path / "w.zip")], "unknown model 'nope'"),
        (["weights", "pack", "seg", "seg", "-o", str(tmp_path / "w.zip")], "is given twice"),
        (["weights", "pack", "seg", "-o", str(mine)], "not a liverctl weights archive; not overwriting it"),
    ):
        proc = liverctl(env, *args)
        assert proc.returncode == 2 and len(error_lines(proc)) == 1 and message in proc.stderr, proc.stderr
    assert mine.read_text() == "the user's own file" and not (tmp_path / "w.zip").exists()
    again = liverctl(env, "weights", "pack", "seg", "-o", str(archive))  # its own archive: replaced
    assert again.returncode == 0, again.stderr
