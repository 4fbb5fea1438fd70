"""`liverctl weights list | download | verify | path`, run as a user would (subprocess, real Hub client)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hub_server import HubServer, client_env, registry_entry, write_registry

REPO = "test/tiny"


def liverctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "liverctl", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("liverctl: error:")]


@pytest.fixture
def hub_env(tmp_path: Path):
    """A Hub with two small real state dicts and a registry naming them (plus a missing one)."""
    files = {}
    for i, name in enumerate(("models/a.pt", "models/b.safetensors")):
        path = tmp_path / f"src{i}{Path(name).suffix}"
        state = {"w": torch.full((50,), float(i))}
        if name.endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(state, str(path))
        else:
            torch.save(state, path)
        files[name] = path.read_bytes()
    a_sha = hashlib.sha256(files["models/a.pt"]).hexdigest()
    reg = write_registry(
        tmp_path / "weights.toml",
        [
            registry_entry("alpha", REPO, "models/a.pt", sha256=a_sha),
            registry_entry("beta", REPO, "models/b.safetensors"),
        ],
        "alpha",
    )
    with HubServer() as server:
        for name, data in files.items():
            server.add(REPO, name, data)
        yield server, client_env(server.url, tmp_path, reg), files


def test_list_shipped_registry(tmp_path: Path, cli_env: dict[str, str]):
    env = dict(cli_env, HF_HOME=str(tmp_path / "hf"), LIVERCTL_HOME=str(tmp_path / "lc"), HF_HUB_OFFLINE="1")
    env.pop("LIVERCTL_WEIGHTS_TOML", None)
    proc = liverctl(env, "weights", "list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ARCH", "SPACING", "REPO", "FILE", "REVISION", "SHA256", "CACHED"]
    assert lines[1].split() == [
        "wholebody-ct-3mm",
        "*",
        "segresnet",
        "3x3x3",
        "MONAI/wholeBody_ct_segmentation",
        "models/model_lowres.pt",
        "13f6d33ae9de",
        "tofu",
        "no",
    ]
    assert lines[2].split()[:3] == ["wholebody-ct-1.5mm", "segresnet", "1.5x1.5x1.5"]
    rows = json.loads(liverctl(env, "weights", "list", "--json").stdout)
    assert [(r["name"], r["default"], r["cached"], r["pin"]) for r in rows] == [
        ("wholebody-ct-3mm", True, None, "tofu"),
        ("wholebody-ct-1.5mm", False, None, "tofu"),
    ]
    assert rows[0]["liver_channel"] == 5 and rows[0]["sliding_window"]["roi"] == [96, 96, 96]


def test_download_verify_path_list(hub_env):
    _, env, files = hub_env
    proc = liverctl(env, "weights", "download", "--all")
    assert proc.returncode == 0, proc.stderr
    paths = [Path(p) for p in proc.stdout.splitlines()]
    assert [p.read_bytes() for p in paths] == [files["models/a.pt"], files["models/b.safetensors"]]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("liverctl: warning:")]
    assert len(warnings) == 1 and "'beta'" in warnings[0] and "trust-on-first-use" in warnings[0]

    listing = liverctl(env, "weights", "list").stdout.splitlines()
    assert listing[1].split()[-2:] == ["pinned", "yes"] and listing[1].startswith("alpha *")
    assert listing[2].split()[-2:] == ["tofu-recorded", "yes"]

    verify = liverctl(env, "weights", "verify")
    assert verify.returncode == 0
    a_sha = hashlib.sha256(files["models/a.pt"]).hexdigest()
    assert verify.stdout.splitlines()[0] == f"alpha: ok sha256={a_sha}"
    assert verify.stdout.splitlines()[1].startswith("beta: recorded sha256=")
    assert [r["status"] for r in json.loads(liverctl(env, "weights", "verify", "--json").stdout)] == ["ok", "recorded"]

    path = liverctl(env, "weights", "path", "alpha")
    assert path.returncode == 0 and path.stdout == f"{paths[0]}\n"
    assert liverctl(env, "weights", "path").stdout == path.stdout  # default model

    # a cached file altered on disk: verify fails (exit 1), path refuses it and removes it
    blob = paths[0].resolve()
    blob.write_bytes(b"\x00" + files["models/a.pt"][1:])
    bad = liverctl(env, "weights", "verify", "alpha")
    assert bad.returncode == 1 and bad.stdout.startswith("alpha: mismatch")
    assert len(error_lines(bad)) == 1 and "liverctl weights download alpha --force" in bad.stderr
    refused = liverctl(env, "weights", "path", "alpha")
    assert refused.returncode == 2 and refused.stdout == ""
    assert len(error_lines(refused)) == 1 and "sha256 mismatch" in refused.stderr
    assert not blob.exists()
    missing = liverctl(env, "weights", "path", "alpha")
    assert missing.returncode == 2 and "not downloaded yet" in missing.stderr and "--weights PATH" in missing.stderr
    assert liverctl(env, "weights", "verify", "alpha").returncode == 1  # named and not cached
    assert liverctl(env, "weights", "verify").returncode == 0  # the others are fine


def test_download_errors_are_one_line(hub_env):
    server, env, _ = hub_env
    unknown = liverctl(env, "weights", "download", "gamma")
    assert unknown.returncode == 2 and error_lines(unknown) == [
        "liverctl: error: unknown model 'gamma' in " + env["LIVERCTL_WEIGHTS_TOML"] + "; known models: alpha, beta"
    ]
    both = liverctl(env, "weights", "download", "alpha", "--all")
    assert both.returncode == 2 and "either a model NAME or --all" in both.stderr
    offline = liverctl(dict(env, HF_HUB_OFFLINE="1"), "weights", "download")
    assert offline.returncode == 2 and len(error_lines(offline)) == 1
    assert (
        "models/a.pt" in offline.stderr and "HF_HUB_OFFLINE=1" in offline.stderr and "--weights PATH" in offline.stderr
    )
    assert server.requests == []


def test_weights_commands_do_not_import_torch(cli_env: dict[str, str], tmp_path: Path):
    env = dict(cli_env, HF_HOME=str(tmp_path / "hf"), LIVERCTL_HOME=str(tmp_path / "lc"))
    for args in (["weights", "--help"], ["weights", "list"]):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "liverctl", *args], env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
        assert "torch" not in imported


def test_force_download_without_the_hub_is_a_one_line_error(hub_env, tmp_path: Path):
    # issue 8: `--force` used to end as "internal error: ValueError: ..." (exit 3)
    server, env, files = hub_env
    assert liverctl(env, "weights", "download", "alpha").returncode == 0
    offline = liverctl(dict(env, HF_HUB_OFFLINE="1"), "weights", "download", "alpha", "--force")
    assert offline.returncode == 2 and len(error_lines(offline)) == 1, offline.stderr
    assert "internal error" not in offline.stderr and "ValueError" not in offline.stderr
    assert "HF_HUB_OFFLINE=1" in offline.stderr and "--force" in offline.stderr and "models/a.pt" in offline.stderr
    server.stop()
    down = liverctl(env, "weights", "download", "alpha", "--force")
    assert down.returncode == 2 and len(error_lines(down)) == 1, down.stderr
    assert "internal error" not in down.stderr and "Force download failed" not in down.stderr
    assert "cannot be reached" in down.stderr and "models/a.pt" in down.stderr
    # without --force the cached, verified file is still used
    cached = liverctl(env, "weights", "download", "alpha")
    assert cached.returncode == 0 and Path(cached.stdout.strip()).read_bytes() == files["models/a.pt"]
