"""liverctl.weights: the weights registry, sha256 checks, safe loading, and Hub downloads end to end.

Downloads run the real ``huggingface_hub.hf_hub_download`` in a subprocess (``HF_ENDPOINT``
is read when huggingface_hub is imported) against the Hub imitation in tests/support/hub_server.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hub_server import HubServer, client_env, registry_entry, write_registry

from liverctl import weights as lw
from liverctl.errors import ConfigError, WeightsError

REPO = "test/tiny"
FILE = "models/w.pt"
PIN_KEY_MAIN = f"{REPO}@{{commit}}/{FILE}"

# Runs library calls (the "steps") in one fresh interpreter; prints one JSON summary per step.
_API = r"""
import json, sys, warnings
from liverctl import weights as lw
from liverctl.errors import LiverctlError, LiverctlWarning
steps, options = sys.argv[1].split(","), sys.argv[2].split(",")
if "nosleep" in options:
    import time
    time.sleep = lambda seconds: None  # skip huggingface_hub's retry back-off waits (23 s), nothing else
for step in steps:
    out = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if step == "download":
                calls = []
                path = lw.download("tiny", force="force" in options, progress=lambda *a: calls.append(a))
                out.update(path=str(path), progress=calls[-1] if calls else None)
            elif step == "resolve":
                r = lw.resolve_weights("tiny")
                state = lw.load_state_dict(r.path, expected_sha256=r.sha256)
                out.update(path=str(r.path), sha256=r.sha256, source=r.source, keys=sorted(state))
            elif step == "verify":
                out.update(lw.verify("tiny").to_dict())
            elif step == "path":
                out["path"] = str(lw.weights_path("tiny"))
        except LiverctlError as exc:
            out["error"] = str(exc)
            out["error_type"] = type(exc).__name__
    out["warnings"] = [str(w.message) for w in caught if issubclass(w.category, LiverctlWarning)]
    print(json.dumps(out))
"""


def api(env: dict[str, str], *steps: str, nosleep: bool = False, force: bool = False) -> list[dict]:
    """Run library calls on model 'tiny' in a subprocess; one result dict per step."""
    options = ",".join(o for o, on in (("nosleep", nosleep), ("force", force)) if on) or "-"
    proc = subprocess.run(
        [sys.executable, "-c", _API, ",".join(steps), options],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    results = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert len(results) == len(steps), proc.stdout
    return results


def state_bytes(tmp_path: Path, n: int = 1000, seed: int = 0) -> bytes:
    """A real (small) state_dict saved by torch.save, as bytes."""
    g = torch.Generator().manual_seed(seed)
    path = tmp_path / f"state-{n}-{seed}.pt"
    torch.save({"conv.weight": torch.randn(n, generator=g), "conv.bias": torch.zeros(3)}, path)
    return path.read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_blobs(env: dict[str, str]) -> list[bytes]:
    """Contents of every blob of test/tiny in the HF cache."""
    blobs = Path(env["HF_HOME"]) / "hub" / "models--test--tiny" / "blobs"
    return (
        [p.read_bytes() for p in blobs.iterdir() if p.is_file() and not p.name.endswith(".incomplete")]
        if blobs.exists()
        else []
    )


def pins(env: dict[str, str]) -> dict:
    path = Path(env["LIVERCTL_HOME"]) / "pins.json"
    return json.loads(path.read_text())["pins"] if path.exists() else {}


@pytest.fixture
def server():
    with HubServer() as s:
        yield s


@pytest.fixture
def data(tmp_path: Path) -> bytes:
    return state_bytes(tmp_path)


def setup(tmp_path: Path, server: HubServer, data: bytes, *, sha256: str = "", revision: str = "main", filename=FILE):
    server.add(REPO, FILE, data)
    reg = write_registry(
        tmp_path / "weights.toml", [registry_entry("tiny", REPO, filename, sha256=sha256, revision=revision)], "tiny"
    )
    return client_env(server.url, tmp_path, reg)


# --------------------------------------------------------------------------- registry


def test_shipped_registry_matches_the_monai_bundle_config():
    """Values copied from MONAI wholeBody_ct_segmentation configs/inference.json and metadata.json."""
    reg = lw.load_registry(Path(__file__).resolve().parents[2] / "weights.toml")
    assert reg.default == "wholebody-ct-3mm"
    low, high = reg.get("wholebody-ct-3mm"), reg.get("wholebody-ct-1.5mm")
    assert reg.get() is low
    assert (low.filename, high.filename) == ("models/model_lowres.pt", "models/model.pt")
    assert (low.spacing, high.spacing) == ((3.0, 3.0, 3.0), (1.5, 1.5, 1.5))
    for e in (low, high):
        assert e.repo_id == "MONAI/wholeBody_ct_segmentation"
        assert e.revision_is_commit
        assert e.architecture == "segresnet"
        assert e.kwargs == {
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 105,
            "init_filters": 32,
            "blocks_down": [1, 2, 2, 4],
            "blocks_up": [1, 1, 1],
            "dropout_prob": 0.2,
        }
        assert (e.n_classes, e.liver_channel, e.labels["liver"], e.decision) == (105, 5, 5, "argmax")
        assert e.orientation == "RAS" and e.interpolation == "linear"
        assert e.intensity.method == "nonzero-zscore-minmax" and e.intensity.range == (-1.0, 1.0)
        assert e.sliding_window == lw.WindowRecipe((96, 96, 96), 0.25, "gaussian", "replicate")
        assert e.sha256 == "" and not e.pinned  # trust-on-first-use until a pin is known
        assert "Apache-2.0" in e.license and "TotalSegmentator" in e.citation


def test_shipped_registry_kwargs_build_a_network_of_the_published_file_size():
    """The Hub lists model.pt and model_lowres.pt at 75.2 MB: float32 parameters of these kwargs."""
    from liverctl.models.registry import build_model

    entry = lw.load_registry(Path(__file__).resolve().parents[2] / "weights.toml").get()
    net = build_model(entry.architecture, **entry.kwargs)
    n_bytes = 4 * sum(p.numel() for p in net.state_dict().values() if p.is_floating_point())
    assert abs(n_bytes / 1e6 - 75.2) < 0.1


def test_registry_path_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    reg = write_registry(tmp_path / "mine.toml", [registry_entry("a", "o/r", "w.safetensors")], "a")
    monkeypatch.setenv(lw.REGISTRY_ENV, str(reg))
    assert lw.registry_path() == reg
    assert lw.get_entry().filename == "w.safetensors"
    monkeypatch.delenv(lw.REGISTRY_ENV)
    assert lw.registry_path().name == "weights.toml" and lw.registry_path().is_file()


def test_unknown_model_lists_known_names(tmp_path: Path):
    reg = lw.load_registry(
        write_registry(
            tmp_path / "w.toml", [registry_entry("a", "o/r", "w.pt"), registry_entry("b", "o/r", "v.pt")], "a"
        )
    )
    with pytest.raises(WeightsError, match=r"unknown model 'c'.*known models: a, b"):
        reg.get("c")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("liver_channel = 1\n", "liver_channel = 2\n", r"models\.m\.liver_channel: must be in \[0, 1\]"),
        ('sha256 = ""', 'sha256 = "abc"', r"models\.m\.sha256: must be 64 hex"),
        ('repo_id = "o/r"', 'repo_id = "no-slash"', r"models\.m\.repo_id: must look like 'owner/name'"),
        ('filename = "w.pt"', 'filename = "w.pkl"', r"models\.m\.filename: must end with"),
        ('filename = "w.pt"', 'filename = "../w.pt"', r"models\.m\.filename: must be a relative path"),
        ('method = "window-zscore"', 'method = "magic"', r"models\.m\.intensity\.method: must be one of"),
        ("window = [-100.0, 300.0]", "window = [300.0, -100.0]", r"intensity\.window: must be \[lo, hi\]"),
        ("std = 60.0", "std = 0", r"intensity\.std: must be > 0"),
        ("spacing = [3.0, 3.0, 3.0]", "spacing = [3.0, 3.0]", r"models\.m\.spacing: must be a list of 3 numbers"),
        ('orientation = "RAS"', 'orientation = "RRS"', r"models\.m\.orientation: must be three axis codes"),
        ("labels = { liver = 1 }", "labels = { liver = 0 }", r"models\.m\.labels: must contain liver = 1"),
        ("overlap = 0.25", "overlap = 1.0", r"sliding_window\.overlap: must be in \[0, 1\)"),
        ('architecture = "segresnet"', 'architecture = "segresnet"\nspacng = 1', r"models\.m: unknown field 'spacng'"),
        ('repo_id = "o/r"\n', "", r"models\.m: missing field 'repo_id'"),
        ("n_classes = 2", 'n_classes = "2"', r"models\.m\.n_classes: must be an integer"),
    ],
)
def test_registry_validation_names_entry_and_field(tmp_path: Path, old: str, new: str, message: str):
    text = 'default = "m"\n' + registry_entry("m", "o/r", "w.pt")
    assert old in text
    path = tmp_path / "w.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message) as info:
        lw.load_registry(path)
    assert "\n" not in str(info.value) and str(info.value).startswith("w.toml: ")


def test_registry_default_must_exist_and_file_must_exist(tmp_path: Path):
    path = write_registry(tmp_path / "w.toml", [registry_entry("m", "o/r", "w.pt")], "other")
    with pytest.raises(ConfigError, match=r"default = 'other' names no \[models.NAME\] entry"):
        lw.load_registry(path)
    with pytest.raises(ConfigError, match="weights registry not found"):
        lw.load_registry(tmp_path / "absent.toml")
    (tmp_path / "bad.toml").write_text("default = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        lw.load_registry(tmp_path / "bad.toml")


# --------------------------------------------------------------------------- hashing and loading


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_sha256_file_streams_in_chunks(tmp_path: Path, chunk: int):
    payload = os.urandom(10_000)
    (tmp_path / "f").write_bytes(payload)
    assert lw.sha256_file(tmp_path / "f", chunk_size=chunk) == hashlib.sha256(payload).hexdigest()


def test_load_state_dict_torch_and_safetensors(tmp_path: Path):
    from safetensors.torch import save_file

    state = {"a.weight": torch.randn(4, 3), "a.bias": torch.arange(4, dtype=torch.float32)}
    torch.save(state, tmp_path / "w.pt")
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": state, "epoch": 7}, tmp_path / "ckpt.pt")  # training checkpoint wrapper
    for name in ("w.pt", "w.safetensors", "ckpt.pt"):
        path = tmp_path / name
        loaded = lw.load_state_dict(path, expected_sha256=lw.sha256_file(path))
        assert loaded.keys() == state.keys()
        for key in state:
            assert torch.equal(loaded[key], state[key])


def test_load_state_dict_checks_sha256_before_loading(tmp_path: Path):
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=r"sha256 mismatch.*not loading it"):
        lw.load_state_dict(tmp_path / "w.pt", expected_sha256="0" * 64)


class _Evil:
    """Unpickling this would create a file: weights_only=True must refuse before that happens."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_load_state_dict_refuses_pickled_code(tmp_path: Path):
    marker = tmp_path / "pwned"
    torch.save({"w": torch.ones(2), "payload": _Evil(marker)}, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(WeightsError) as info:
        lw.load_state_dict(tmp_path / "evil.pt")
    message = str(info.value)
    assert "refusing to load" in message and "io.open" in message and "\n" not in message
    assert not marker.exists()  # nothing was executed


def test_load_state_dict_rejects_non_state_dicts(tmp_path: Path):
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="holds list, not a state_dict"):
        lw.load_state_dict(tmp_path / "list.pt")
    torch.save({"w": torch.ones(2), "lr": 0.1}, tmp_path / "mixed.pt")
    with pytest.raises(WeightsError, match="entry 'lr' is not a tensor"):
        lw.load_state_dict(tmp_path / "mixed.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle at all")
    with pytest.raises(WeightsError, match="not a readable PyTorch weights file"):
        lw.load_state_dict(tmp_path / "junk.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        lw.load_state_dict(tmp_path / "junk.safetensors")


def test_local_weights(tmp_path: Path):
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    path, digest = lw.local_weights(tmp_path / "w.pt")
    assert path == tmp_path / "w.pt" and digest == sha((tmp_path / "w.pt").read_bytes())
    with pytest.raises(WeightsError, match="weights file not found"):
        lw.local_weights(tmp_path / "absent.pt")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(WeightsError, match="weights must be a"):
        lw.local_weights(tmp_path / "w.txt")


def test_resolve_weights_local_file_uses_entry_for_the_network(tmp_path: Path):
    torch.save({"w": torch.ones(2)}, tmp_path / "mine.pt")
    reg = lw.load_registry(write_registry(tmp_path / "w.toml", [registry_entry("m", "o/r", "w.pt")], "m"))
    resolved = lw.resolve_weights(None, tmp_path / "mine.pt", registry=reg)
    assert resolved.source == "local" and resolved.entry.name == "m"
    assert resolved.sha256 == lw.sha256_file(tmp_path / "mine.pt") and resolved.matches_registry_pin is None


# --------------------------------------------------------------------------- downloads end to end


def test_first_download_tofu_then_cache_hit_offline_and_server_down(tmp_path: Path, server: HubServer, data: bytes):
    env = setup(tmp_path, server, data)
    first, again, verified, found, resolved = api(env, "download", "download", "verify", "path", "resolve")
    assert "error" not in first, first
    path = Path(first["path"])
    assert path.read_bytes() == data
    assert f"snapshots/{server.commit}/models/w.pt" in path.as_posix()
    assert first["progress"] == ["download tiny", len(data), len(data)]
    # trust-on-first-use: one warning, hash recorded under repo@commit/file
    assert len(first["warnings"]) == 1 and "trust-on-first-use" in first["warnings"][0]
    assert sha(data) in first["warnings"][0]
    assert pins(env)[PIN_KEY_MAIN.format(commit=server.commit)]["sha256"] == sha(data)

    assert again == {"path": str(path), "progress": None, "warnings": []}  # recorded: no second warning
    gets = [r for r in server.requests if r.method == "GET" and r.role == "cdn"]
    assert len(gets) == 1  # the second call was served from the cache
    assert verified["status"] == "recorded" and verified["sha256"] == sha(data)
    assert found["path"] == str(path)
    assert resolved["sha256"] == sha(data) and resolved["source"] == "hub"
    assert resolved["keys"] == ["conv.bias", "conv.weight"]  # loaded with weights_only=True

    assert api(dict(env, HF_HUB_OFFLINE="1"), "download")[0]["path"] == str(path)
    server.stop()
    assert api(env, "download") == [{"path": str(path), "progress": None, "warnings": []}]


def test_pinned_download_and_pinned_commit_needs_no_network(tmp_path: Path, server: HubServer, data: bytes):
    env = setup(tmp_path, server, data, sha256=sha(data), revision=server.commit)
    first, verified, again = api(env, "download", "verify", "download")
    assert first["warnings"] == [] and Path(first["path"]).read_bytes() == data
    assert pins(env) == {}  # pinned in the registry: nothing to record
    assert verified["status"] == "ok"
    assert again["path"] == first["path"]
    # a cached commit revision needs no request at all: only the first download's HEAD + GET
    # (liverctl's resumable transfer) and the HEAD with which huggingface_hub links the blob
    assert [(r.method, r.role) for r in server.requests] == [("HEAD", "hub"), ("GET", "cdn"), ("HEAD", "hub")]


def test_pinned_hash_rejects_different_bytes_and_keeps_the_hubs_blob(tmp_path: Path, server: HubServer, data: bytes):
    """Issue 19: the Hub serves other bytes, consistently (their announced sha256 is theirs): the
    registry's pin is what disagrees. They are refused, and stay in the shared cache, where another
    registry's pin may be the right one; the message names the registry file actually used."""
    other = state_bytes(tmp_path, seed=1)
    env = setup(tmp_path, server, other, sha256=sha(data))
    out, verified, found = api(env, "download", "verify", "path")
    assert out["error_type"] == "WeightsError"
    registry = str((tmp_path / "weights.toml").resolve())
    assert "sha256 mismatch" in out["error"] and f"{registry} expects {sha(data)}" in out["error"]
    assert "the file the Hub serves has sha256 " + sha(other) in out["error"] and "check that pin" in out["error"]
    assert cache_blobs(env) == [other]  # not deleted: another registry may trust it
    assert verified["status"] == "mismatch" and "sha256 mismatch" in found["error"]


def test_tampered_transfer_rejected_on_first_use(tmp_path: Path, server: HubServer, data: bytes):
    env = setup(tmp_path, server, data)
    server.tamper(REPO, FILE)  # same size, headers still announce the original sha256
    (out,) = api(env, "download")
    assert "sha256 mismatch" in out["error"] and "the sha256 the Hub announced" in out["error"]
    assert cache_blobs(env) == [] and pins(env) == {}  # neither used nor trusted
    server.tamper(REPO, FILE, on=False)
    assert Path(api(env, "download")[0]["path"]).read_bytes() == data


def test_tofu_record_rejects_a_changed_file(tmp_path: Path, server: HubServer, data: bytes):
    env = setup(tmp_path, server, data)
    api(env, "download")
    # huggingface_hub keeps a cached file whose commit did not change, so start from an empty
    # cache (another machine sharing the pin store, or a cleared cache) ...
    shutil.rmtree(env["HF_HOME"])
    # ... and let the Hub serve other bytes for the same commit, with consistent headers
    server.add(REPO, FILE, state_bytes(tmp_path, seed=2))
    (out,) = api(env, "download")
    assert "sha256 mismatch" in out["error"] and "trust-on-first-use record" in out["error"]
    assert out["warnings"] == []
    assert len(cache_blobs(env)) == 1  # refused, but the Hub's own bytes stay in the shared cache


def test_cached_file_modified_on_disk_is_caught(tmp_path: Path, server: HubServer, data: bytes):
    env = setup(tmp_path, server, data, sha256=sha(data))
    path = Path(api(env, "download")[0]["path"])
    blob = path.resolve()
    blob.write_bytes(b"\x00" + data[1:])
    verified, found = api(env, "verify", "path")
    assert verified["status"] == "mismatch"  # verify only reports ...
    assert "sha256 mismatch" in found["error"]  # ... a use refuses the file and removes it
    assert not blob.exists() and not path.exists()


def test_server_down_without_cache_one_line_error(tmp_path: Path, server: HubServer, data: bytes):
    env = setup(tmp_path, server, data)
    server.stop()
    err = api(env, "download", nosleep=True)[0]["error"]
    assert "\n" not in err
    assert "cannot be reached" in err and "models/w.pt" in err and "test/tiny" in err
    assert "liverctl weights download tiny" in err and "--weights PATH" in err


def test_an_unreachable_hub_is_noticed_in_seconds(tmp_path: Path, server: HubServer, data: bytes):
    """Issue 19: huggingface_hub retried an unreachable Hub for ~24 s (with its real sleeps, as
    here: no ``nosleep``); one quick connection probe answers at once, with or without a cache."""
    env = setup(tmp_path, server, data)
    path = api(env, "download")[0]["path"]
    server.stop()  # nothing listens on its port any more
    start = time.monotonic()
    assert api(env, "download") == [{"path": path, "progress": None, "warnings": []}]  # the cached file
    fresh = dict(env, HF_HOME=str(tmp_path / "empty-hf-home"))
    err = api(fresh, "download")[0]["error"]
    assert "cannot be reached" in err and "\n" not in err
    assert time.monotonic() - start < 15  # two subprocesses (imports ~2 s each), not 2 x 24 s


def test_offline_mode_without_cache_one_line_error(tmp_path: Path, server: HubServer, data: bytes):
    env = setup(tmp_path, server, data)
    err = api(dict(env, HF_HUB_OFFLINE="1"), "download")[0]["error"]
    assert "\n" not in err
    assert "HF_HUB_OFFLINE=1" in err and "models/w.pt" in err and "--weights PATH" in err
    assert server.requests == []  # offline means offline


def test_dropped_connection_resumes_with_range(tmp_path: Path, server: HubServer):
    # huggingface_hub writes 10 MiB chunks: the file must be larger for a resume to start past 0
    big = state_bytes(tmp_path, n=3_000_000)
    env = setup(tmp_path, server, big)
    server.drop_next(11 * 1024 * 1024)
    (out,) = api(env, "download")
    assert "error" not in out, out
    assert Path(out["path"]).read_bytes() == big
    assert out["progress"] == ["download tiny", len(big), len(big)]  # progress callback saw every byte once
    cdn = [r for r in server.requests if r.role == "cdn"]
    assert [(r.range, r.status) for r in cdn] == [(None, 200), ("bytes=10485760-", 206)]


def test_a_killed_download_resumes_in_the_next_command(tmp_path: Path, server: HubServer):
    big = state_bytes(tmp_path, n=4_000_000)  # 16 MB: huggingface_hub writes 10 MiB chunks
    env = setup(tmp_path, server, big)
    server.stall_next(11 * 1024 * 1024)
    proc = subprocess.Popen(
        [sys.executable, "-c", _API, "download", "-"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    blobs = Path(env["HF_HOME"]) / "hub" / "models--test--tiny" / "blobs"
    deadline = time.monotonic() + 60
    partial: list[Path] = []
    while time.monotonic() < deadline:
        partial = list(blobs.glob(f"*{lw.PARTIAL_SUFFIX}")) if blobs.exists() else []
        if partial and partial[0].stat().st_size >= 10 * 1024 * 1024:
            break
        time.sleep(0.05)
    proc.kill()  # SIGKILL mid-transfer: no clean-up runs
    proc.wait(timeout=30)
    server.release()
    assert partial, "the download never wrote its partial file"
    have = partial[0].stat().st_size
    assert 0 < have < len(big)
    (out,) = api(env, "download")
    assert "error" not in out, out
    assert Path(out["path"]).read_bytes() == big
    cdn = [(r.range, r.status) for r in server.requests if r.role == "cdn"]
    assert cdn == [(None, 200), (f"bytes={have}-", 206)]  # the second command fetched only the rest
    assert not list(blobs.glob(f"*{lw.PARTIAL_SUFFIX}"))
    assert api(env, "verify")[0]["status"] == "recorded"  # matches its trust-on-first-use record


@pytest.mark.parametrize(
    ("filename", "revision", "repo", "message"),
    [
        ("models/missing.pt", "main", REPO, "the file does not exist in the repository"),
        (FILE, "v9", REPO, "revision not found"),
        (FILE, "main", "test/absent", "repository not found"),
    ],
)
def test_hub_errors_are_one_line(tmp_path, server, data, filename, revision, repo, message):
    server.add(REPO, FILE, data)
    reg = write_registry(tmp_path / "w.toml", [registry_entry("tiny", repo, filename, revision=revision)], "tiny")
    (out,) = api(client_env(server.url, tmp_path, reg), "download")
    assert out["error_type"] == "WeightsError" and message in out["error"] and "\n" not in out["error"]


# --------------------------------------------------------------------------- local entries (liverctl train exports)


def test_local_entry_written_by_liverctl_train(tmp_path: Path):
    from liverctl.models import build_model
    from liverctl.training.export import export_model

    kwargs = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "init_filters": 8}
    net = build_model("segresnet", **kwargs)
    weights, toml = export_model(
        net,
        tmp_path / "run",
        name="mini",
        architecture="segresnet",
        kwargs=kwargs,
        plans=[
            {"target_spacing": [1.5, 1.5, 2.0], "window": [-100, 200], "mean": 50.0, "std": 40.0},
            {"target_spacing": [1.5, 1.5, 2.0], "mean": 10.0, "std": 20.0},
        ],
        dataset_names=["lits", "sliver"],
        labels={"liver": 1},
        liver_channel=1,
        patch_size=[32, 48, 48],
    )
    reg = lw.load_registry(toml)
    entry = reg.get()
    assert entry.local and entry.local_path == weights and entry.pinned
    assert entry.datasets == ("lits", "sliver")
    assert entry.datasets_intensity["sliver"] == lw.IntensityRecipe("window-zscore", window=None, mean=10.0, std=20.0)
    assert entry.intensity == lw.IntensityRecipe("window-zscore", window=(-100.0, 200.0), mean=50.0, std=40.0)

    # no network and no Hub cache involved: the file beside the registry, checked against its pin
    assert lw.download("mini", registry=reg) == weights
    assert lw.weights_path("mini", registry=reg) == weights
    assert lw.verify("mini", registry=reg).status == "ok"
    assert lw.list_weights(registry=reg)[0].pin == "sha256"
    resolved = lw.resolve_weights("mini", registry=reg)
    assert (resolved.path, resolved.source, resolved.sha256) == (weights, "local", entry.sha256)
    state = lw.load_state_dict(resolved.path, resolved.sha256)
    assert state.keys() == net.state_dict().keys()

    # the user's file altered: refused everywhere, and never deleted
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert lw.verify("mini", registry=reg).status == "mismatch"
    for call in (
        lambda: lw.download("mini", registry=reg),
        lambda: lw.resolve_weights("mini", registry=reg),
        lambda: lw.resolve_weights(None, weights, registry=reg),  # --weights with its weights.toml beside it
    ):
        with pytest.raises(WeightsError, match=r"sha256 mismatch for local weights 'mini'.*not using it"):
            call()
    assert weights.exists()
