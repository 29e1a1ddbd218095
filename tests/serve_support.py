"""Shared by the `torchclip serve` tests: a folder of generated photos embedded by `torchclip embed`, and real
`torchclip serve` processes on 127.0.0.1, started once per test session and stopped at its end."""

from __future__ import annotations

import atexit
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from apps_fixtures import has_bundled_model, subprocess_env, synthetic_photos
from PIL import Image

from torchclip.hub import bundled_model_path

CLASSES = ["red circle", "blue square", "green star", "yellow square"]
XSS_NAME = "<img src=x onerror=alert(1)>.jpg"


def torchclip(*args: str, check: int | None = 0, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torchclip.cli", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=timeout)
    if check is not None:
        assert result.returncode == check, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    """A running `torchclip serve` process and what it serves."""

    process: subprocess.Popen
    url: str
    store: Path
    photos: Path
    token: str | None
    log: Path

    def client(self, **options) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **options)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def launch_server(store: Path, photos: Path, *options: str, token: str | None = None) -> Server:
    """Start `torchclip serve` on a free port (see `wait_until_ready`)."""
    port = free_port()
    log = store.parent / f"serve-{port}.log"
    command = [sys.executable, "-m", "torchclip.cli", "serve", str(store), "--port", str(port), *options]
    if token:
        command += ["--token", token]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=subprocess_env())
    return Server(process, f"http://127.0.0.1:{port}", store, photos, token, log)


def wait_until_ready(server: Server, timeout: float = 90) -> Server:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"torchclip serve exited with {server.process.returncode}:\n{server.log.read_text()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"torchclip serve did not answer within {timeout} s:\n{server.log.read_text()[-3000:]}")


def photo_folder(folder: Path, per_class: int) -> Path:
    """Synthetic photos of CLASSES (the bundled model's world), one more named like an XSS attack, and a PNG."""
    photos = folder / "photos"
    made = synthetic_photos(photos, CLASSES, per_class=per_class)
    shutil.copy(next(iter(made)), photos / XSS_NAME)
    synthetic_photos(photos / "png", ["green star"], per_class=1, fmt="PNG")
    return photos


def embed_command(photos: Path, store: Path) -> list[str]:
    model = str(bundled_model_path())
    return [
        sys.executable,
        "-m",
        "torchclip.cli",
        "embed",
        str(photos),
        "--out",
        str(store),
        "--workers",
        "0",
        "--quiet",
        "--model",
        model,
    ]


def store_of_vectors(folder: Path, distinct: int, copies: int) -> Path:
    """A store built through the public API (no embed run): `distinct` random unit vectors of the bundled
    model's size, each stored `copies` times, as duplicate photos are (equal scores, which pages must cut
    neither into repeats nor into gaps). Each row is a small PNG of its own, 20 to 59 px wide (for `where`)."""
    from torchclip.store import EmbeddingStore

    model = str(bundled_model_path())
    dim = json.loads((bundled_model_path() / "config.json").read_text())["projection_dim"]
    vectors = np.random.default_rng(7).normal(size=(distinct, dim)).astype(np.float32)
    (folder / "tiles").mkdir(parents=True)
    keys, metadata = [], []
    for row in range(distinct * copies):
        width = 20 + row % 40
        path = folder / "tiles" / f"tile_{row:04d}.png"
        Image.new("RGB", (width, 24), (row * 37 % 256, row * 91 % 256, row * 53 % 256)).save(path)
        info = path.stat()
        keys.append(str(path))
        metadata.append({"width": width, "height": 24, "size": info.st_size, "mtime": info.st_mtime_ns / 1e9})
    store = EmbeddingStore.create(folder / "tiles.emb", model={"dim": dim, "name": model})
    store.add(keys, np.tile(vectors, (copies, 1)), metadata=metadata)
    return folder / "tiles.emb"


_servers: dict[str, Server] = {}
_root = Path(tempfile.mkdtemp(prefix="torchclip-serve-test-"))


def _cleanup() -> None:
    for server in _servers.values():
        server.stop()
    shutil.rmtree(_root, ignore_errors=True)


atexit.register(_cleanup)


SERVERS = {  # name: (photos per class, serve options, token)
    "main": (3, (), None),
    "live": (1, ("--max-queue", "4", "--max-batch", "2", "--max-upload", "1"), "s3cret-t0ken"),
}


def shared_server(name: str) -> Server:
    """One server per name for the whole session (both test modules use them), all started together at the
    first call (embedding and model loading overlap): "main", 3 photos per class, default settings; "live",
    1 per class, which the tests change, with a token, a queue of 4 (for the burst test) and --max-upload 1."""
    if not _servers:
        embeds = {}
        for server_name, (per_class, _, _) in SERVERS.items():
            photos = photo_folder(_root / server_name, per_class)
            store = _root / server_name / "photos.emb"
            embeds[server_name] = (
                photos,
                store,
                subprocess.Popen(
                    embed_command(photos, store), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=subprocess_env()
                ),
            )
        for server_name, (photos, store, process) in embeds.items():
            output = process.communicate(timeout=180)[0].decode()
            assert process.returncode == 0, f"torchclip embed exited with {process.returncode}:\n{output}"
            _, options, token = SERVERS[server_name]
            _servers[server_name] = launch_server(store, photos, *options, token=token)
        for server in _servers.values():
            wait_until_ready(server)
    return _servers[name]


def paging_server() -> Server:
    """A server on 150 rows (`store_of_vectors`: 50 vectors, 3 copies each), more than three of the page's
    pages of 40; started at the first call, for the whole session."""
    if "pages" not in _servers:
        store = store_of_vectors(_root / "pages", distinct=50, copies=3)
        _servers["pages"] = wait_until_ready(launch_server(store, store.parent / "tiles"))
    return _servers["pages"]


__all__ = [
    "CLASSES",
    "XSS_NAME",
    "Server",
    "has_bundled_model",
    "paging_server",
    "shared_server",
    "store_of_vectors",
    "synthetic_photos",
    "torchclip",
]
