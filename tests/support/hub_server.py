"""A small Hugging Face Hub imitation on 127.0.0.1 for end-to-end download tests.

It answers ``HEAD``/``GET /{repo_id}/resolve/{revision}/{path}`` the way the Hub does for
``huggingface_hub.hf_hub_download`` (see ``../shared/docs/HUB.md``):

* every answer carries ``X-Repo-Commit`` (the branch ``main`` resolves to :attr:`HubServer.commit`);
* small files: ``200`` with ``ETag`` (git blob sha1) and ``Content-Length``;
* "LFS" files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``, ``.safetensors``): ``302`` to a second
  listener on another port (the "CDN", another origin, so the client does not follow the
  redirect on ``HEAD``) with ``X-Linked-Etag`` (the sha256), ``X-Linked-Size`` and ``ETag``;
  the client then ``GET``\\s the CDN itself;
* ``Range: bytes=N-`` -> ``206`` with ``Content-Range``;
* ``GET /api/models/{repo_id}/tree/{revision}/{path}`` (``HfApi.list_repo_tree``): the files
  below ``path`` as one JSON page, LFS files with ``lfs.oid`` = their sha256;
* errors: ``404`` + ``X-Error-Code: EntryNotFound`` / ``RevisionNotFound``; unknown repository:
  ``401`` + ``X-Error-Code: RepoNotFound``.

Faults for tests: :meth:`HubServer.drop_next` (the next body is cut after N bytes, once: the
connection closes with ``Content-Length`` unmet), :meth:`HubServer.stall_next` (the next body
stops after N bytes and hangs until :meth:`HubServer.release`, for killing a client
mid-transfer) and :meth:`HubServer.tamper` (a file's bytes are served altered, same size,
while the headers still announce the original sha256).

Use as a context manager (or ``start()``/``stop()``)::

    with HubServer() as hub:
        hub.add("owner/repo", "models/w.pt", data)
        env["HF_ENDPOINT"] = hub.url

The client reads ``HF_ENDPOINT`` when huggingface_hub is imported: run it in a subprocess
(or set the variable before the import) and set ``HF_HUB_DISABLE_XET=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

DEFAULT_COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub sends as ETag for small files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Request:
    """One request the server saw: method, role ("hub" or "cdn"), path, Range header, status."""

    method: str
    role: str
    path: str
    range: str | None
    status: int = 0


@dataclass
class _State:
    commit: str
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    tampered: set[tuple[str, str]] = field(default_factory=set)
    drop_after: int | None = None
    stall_after: int | None = None
    released: threading.Event = field(default_factory=threading.Event)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeHub/1.0"
    protocol_version = "HTTP/1.1"

    # set on the subclass made for each listener
    state: _State
    role: str
    hub: HubServer

    def log_message(self, format: str, *args: object) -> None:  # silence stderr
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    # -- helpers

    def _record(self, status: int) -> None:
        with self.state.lock:
            self.state.requests.append(
                Request(self.command, self.role, unquote(self.path), self.headers.get("Range"), status)
            )

    def _error(self, status: int, code: str, message: str) -> None:
        self._record(status)
        payload = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("X-Repo-Commit", self.state.commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _payload(self, key: tuple[str, str]) -> bytes:
        data = self.state.files[key]
        if key in self.state.tampered:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    def _serve(self, body: bool) -> None:
        path = unquote(self.path.split("?", 1)[0]).lstrip("/")
        if self.role == "cdn":
            self._serve_cdn(path, body)
            return
        parts = path.split("/")
        if parts[0] == "api":
            self._serve_tree(parts, body)
            return
        # {owner}/{name}/resolve/{revision}/{path...}
        if len(parts) < 5 or parts[2] != "resolve":
            self._error(404, "EntryNotFound", "not a resolve URL")
            return
        repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        repos = {r for r, _ in self.state.files}
        if repo_id not in repos:
            self._error(401, "RepoNotFound", f"Repository {repo_id} not found")
            return
        if revision not in ("main", self.state.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        key = (repo_id, filename)
        if key not in self.state.files:
            self._error(404, "EntryNotFound", f"{filename} does not exist at {revision}")
            return
        original = self.state.files[key]
        if filename.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(original).hexdigest()
            self._record(302)
            self.send_response(302)
            self.send_header("Location", f"{self.hub.cdn_url}/lfs/{repo_id}/{sha}")
            self.send_header("X-Repo-Commit", self.state.commit)
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(original)))
            self.send_header("ETag", f'"{git_blob_sha1(original)}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_bytes(self._payload(key), body, etag=git_blob_sha1(original))

    def _serve_tree(self, parts: list[str], body: bool) -> None:
        """``GET /api/models/{owner}/{name}/tree/{revision}/{path}?recursive=...`` (``list_repo_tree``):
        one page (no ``Link`` header) of the files below ``path``, LFS files with their sha256."""
        if len(parts) < 6 or parts[1] != "models" or parts[4] != "tree":
            self._error(404, "EntryNotFound", "not a tree URL")
            return
        repo_id, revision, folder = "/".join(parts[2:4]), parts[5], "/".join(parts[6:]).strip("/")
        recursive = "recursive=true" in self.path.lower()
        if repo_id not in {r for r, _ in self.state.files}:
            self._error(401, "RepoNotFound", f"Repository {repo_id} not found")
            return
        if revision not in ("main", self.state.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        prefix = f"{folder}/" if folder else ""
        items, folders = [], set()
        for (r, name), data in sorted(self.state.files.items()):
            if r != repo_id or not name.startswith(prefix):
                continue
            rest = name[len(prefix) :].split("/")
            if len(rest) > 1:
                folders.add(prefix + rest[0])
                if not recursive:
                    continue
                folders.update(prefix + "/".join(rest[:i]) for i in range(1, len(rest)))
            item = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": name}
            if name.endswith(LFS_SUFFIXES):
                item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            items.append(item)
        if not items:
            self._error(404, "EntryNotFound", f"{folder} does not exist at {revision}")
            return
        items += [{"type": "directory", "oid": "0" * 40, "path": f} for f in sorted(folders)]
        payload = json.dumps(items).encode()
        self._record(200)
        self.send_response(200)
        self.send_header("X-Repo-Commit", self.state.commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _serve_cdn(self, path: str, body: bool) -> None:
        # lfs/{owner}/{name}/{sha256}
        parts = path.split("/")
        if len(parts) != 4 or parts[0] != "lfs":
            self._error(404, "EntryNotFound", "no such object")
            return
        repo_id, sha = "/".join(parts[1:3]), parts[3]
        for (r, name), data in self.state.files.items():
            if r == repo_id and hashlib.sha256(data).hexdigest() == sha:
                self._send_bytes(self._payload((r, name)), body, etag=sha)
                return
        self._error(404, "EntryNotFound", "no such object")

    def _send_bytes(self, data: bytes, body: bool, etag: str) -> None:
        start = 0
        status = 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes=") : -1])
            status = 206
        chunk = data[start:]
        self._record(status)
        self.send_response(status)
        self.send_header("X-Repo-Commit", self.state.commit)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(chunk)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        with self.state.lock:
            drop, self.state.drop_after = self.state.drop_after, None
            stall, self.state.stall_after = self.state.stall_after, None
        if stall is not None and stall < len(chunk):
            self.wfile.write(chunk[:stall])
            self.wfile.flush()
            self.state.released.wait(timeout=120)
            self.close_connection = True
            return
        if drop is not None and drop < len(chunk):
            self.wfile.write(chunk[:drop])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)


class HubServer:
    """A threaded Hub imitation (see the module docstring). ``url`` is the ``HF_ENDPOINT``."""

    def __init__(self, commit: str = DEFAULT_COMMIT) -> None:
        self.state = _State(commit=commit)
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.url = ""
        self.cdn_url = ""

    @property
    def commit(self) -> str:
        return self.state.commit

    @property
    def requests(self) -> list[Request]:
        with self.state.lock:
            return list(self.state.requests)

    def add(self, repo_id: str, path: str, data: bytes) -> None:
        """Serve ``data`` as ``path`` in ``repo_id`` (at ``main`` and at :attr:`commit`)."""
        self.state.files[(repo_id, path)] = bytes(data)

    def tamper(self, repo_id: str, path: str, on: bool = True) -> None:
        """Serve altered bytes (first byte flipped, same size) for this file; headers unchanged."""
        (self.state.tampered.add if on else self.state.tampered.discard)((repo_id, path))

    def drop_next(self, after_bytes: int) -> None:
        """Cut the next file body after ``after_bytes`` bytes by closing the connection (once)."""
        with self.state.lock:
            self.state.drop_after = after_bytes

    def stall_next(self, after_bytes: int) -> None:
        """Send ``after_bytes`` bytes of the next file body, then hang until :meth:`release` (once)."""
        with self.state.lock:
            self.state.stall_after = after_bytes
            self.state.released.clear()

    def release(self) -> None:
        """End a stalled transfer (its connection closes)."""
        self.state.released.set()

    def _listen(self, role: str) -> str:
        handler = type(f"_{role}Handler", (_Handler,), {"state": self.state, "role": role, "hub": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self._servers.append(server)
        self._threads.append(thread)
        return f"http://127.0.0.1:{server.server_address[1]}"

    def start(self) -> HubServer:
        if not self._servers:
            self.cdn_url = self._listen("cdn")
            self.url = self._listen("hub")
        return self

    def stop(self) -> None:
        """Shut both listeners down; later connections are refused."""
        self.release()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- helpers for tests


def client_env(hub_url: str, tmp: Path, registry: Path | None = None) -> dict[str, str]:
    """Environment for a subprocess that downloads from ``hub_url`` into caches under ``tmp``.

    Fresh ``HF_HOME`` and ``LIVERCTL_HOME`` (pin store) under ``tmp``, no Xet, no telemetry,
    no token, no offline flag, no progress bars; ``LIVERCTL_WEIGHTS_TOML`` = ``registry``.
    """
    env = dict(os.environ)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE"):
        env.pop(key, None)
    env.pop("LIVERCTL_DEBUG", None)
    env.update(
        HF_ENDPOINT=hub_url,
        HF_HOME=str(tmp / "hf-home"),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        LIVERCTL_HOME=str(tmp / "liverctl-home"),
        LIVERCTL_NO_PROGRESS="1",
    )
    if registry is not None:
        env["LIVERCTL_WEIGHTS_TOML"] = str(registry)
    return env


def registry_entry(
    name: str,
    repo_id: str,
    filename: str,
    *,
    sha256: str = "",
    revision: str = "main",
    n_classes: int = 2,
    liver_channel: int = 1,
) -> str:
    """TOML text of one small ``[models.NAME]`` entry (a 2-class network by default)."""
    return f"""
[models."{name}"]
repo_id = "{repo_id}"
filename = "{filename}"
revision = "{revision}"
sha256 = "{sha256}"
architecture = "segresnet"
spacing = [3.0, 3.0, 3.0]
orientation = "RAS"
intensity = {{ method = "window-zscore", window = [-100.0, 300.0], mean = 80.0, std = 60.0 }}
n_classes = {n_classes}
liver_channel = {liver_channel}
decision = "argmax"
labels = {{ liver = {liver_channel} }}

[models."{name}".kwargs]
spatial_dims = 3
in_channels = 1
out_channels = {n_classes}

[models."{name}".sliding_window]
roi = [32, 32, 32]
overlap = 0.25
mode = "gaussian"
"""


def write_registry(path: Path, entries: list[str], default: str) -> Path:
    """Write a ``weights.toml`` made of ``registry_entry`` texts; returns ``path``."""
    path.write_text(f'default = "{default}"\n' + "".join(entries), encoding="utf-8")
    return path
