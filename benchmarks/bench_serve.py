"""`torchclip serve` under load: latency (p50/p99) and QPS of text, image and key ("more like this") queries at
1 and 16 concurrent clients, against a real server process on 127.0.0.1 with the bundled model, side by side
in one run with:

- the same server with micro-batching off (`--max-batch 1`): what batching buys at 16 clients;
- `torchclip search STORE QUERY` run in a loop (a process per query): what a resident service buys.

The store holds `--rows` vectors of the bundled model's dimension drawn from bench_store.py's mixture (4,096
clusters, as photo embeddings have neighbours; their keys name no files:
image queries upload a generated photo, key queries pick stored keys), searched exactly unless `--index`
builds the store's ANN index first.

The clients run on the same 2 cores as the server, so the figures are the whole system's. Two load generators
(`--load`): `wrk` (Debian's `wrk`, one event-driven thread in C with a Lua script cycling through the same
request bodies), and `threads`, Python threads in this process with keep-alive `httpx` connections. The
threads share this process's GIL: at 16 clients each request cost the client ~5.5 ms of CPU against ~2 ms at
1 client (10M-row store, 2026-12-03), CPU the server then lacks, so they measure the client as much as the
server. The default, `both`, runs each row with each (`threads` alone where `wrk` is not installed).

    flock /tmp/torchclip-bench.lock .venv/bin/python benchmarks/bench_serve.py                 # 100,000 rows
    flock /tmp/torchclip-bench.lock .venv/bin/python benchmarks/bench_serve.py --rows 1000000 --index

Target: 16 concurrent clients with text queries >= 3x the QPS of one client at a time, p99 <= 4x p50,
no error.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
from bench_store import mixture  # benchmarks/ is this script's folder
from PIL import Image

from torchclip.convert import load
from torchclip.store import EmbeddingStore, model_fingerprint

BUNDLED = Path(__file__).resolve().parent.parent / "src" / "torchclip" / "data" / "default_model"
WORDS = ["red", "blue", "green", "yellow", "circle", "square", "star", "a photo of", "small", "large", "bright"]


def make_store(folder: Path, rows: int, vector_dtype: str = "float32", seed: int = 0) -> tuple[Path, list[str]]:
    """A store of `rows` mixture vectors (bench_store.mixture) made by the bundled model's identity (kept and
    reused when `folder` already holds one of that size and dtype); returns (store, some keys)."""
    rng = np.random.default_rng(seed)
    if (folder / "store.json").is_file():
        kept = EmbeddingStore(folder)
        if len(kept) == rows and kept.vector_dtype == vector_dtype:
            return folder, [f"/bench/photos/{n:08d}.jpg" for n in rng.choice(rows, 64, replace=False)]
    model, _ = load(BUNDLED)
    dim = model.config.projection_dim
    identity = {"name": str(BUNDLED), "fingerprint": model_fingerprint(model), "dim": dim}
    store = EmbeddingStore.create(
        folder, kind="image", model=identity, source=None, vector_dtype=vector_dtype, replace=True
    )
    for start in range(0, rows, 100_000):
        count = min(100_000, rows - start)
        vectors = mixture(count, seed=seed * 1_000_003 + start, dim=dim)
        keys = [f"/bench/photos/{n:08d}.jpg" for n in range(start, start + count)]
        store.add(keys, vectors, metadata=[{"width": 640 + n % 3000, "height": 480} for n in range(count)])
    return folder, [f"/bench/photos/{n:08d}.jpg" for n in rng.choice(rows, 64, replace=False)]


def query_photo() -> str:
    """A generated 640x480 JPEG, base64, as a client would upload it."""
    rng = np.random.default_rng(1)
    pixels = (rng.random((480, 640, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return base64.b64encode(buffer.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, store: Path, *options: str):
        self.url = f"http://127.0.0.1:{free_port()}"
        command = [
            sys.executable,
            "-m",
            "torchclip.cli",
            "serve",
            str(store),
            "--port",
            self.url.rsplit(":", 1)[1],
            "--log-level",
            "warning",
            *options,
        ]
        self.process = subprocess.Popen(command)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError("torchclip serve did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def warm_up(url: str, bodies: list[dict]) -> None:
    """Send each distinct body once, 16 at a time, so that every measurement (whichever load generator runs
    first) finds the partitions and files its queries read already opened and cached: a fresh server's first
    8 s of text queries at 10M had a p99 of 470 ms against 37 ms in the next 8 s."""
    distinct = list({json.dumps(body): body for body in bodies}.values())
    with httpx.Client(base_url=url, timeout=120) as http, ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda body: http.post("/api/search", json=body), distinct))


def run_clients(url: str, clients: int, per_client: int, body_of: Callable[[int], dict]) -> dict[str, float]:
    """`clients` threads, each sending `per_client` searches one after another; latency and QPS of them all."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for n in range(per_client):
                start = time.perf_counter()
                response = http.post("/api/search", json=body_of(index * per_client + n))
                took = time.perf_counter() - start
                with lock:
                    latencies.append(took)
                    errors[0] += response.status_code != 200

    with ThreadPoolExecutor(clients) as pool:  # warm-up: one query per client
        list(pool.map(lambda i: httpx.post(url + "/api/search", json=body_of(i), timeout=120), range(clients)))
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "qps": len(ordered) / elapsed,
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[max(0, int(round(0.99 * len(ordered))) - 1)] * 1000,
        "errors": errors[0],
        "queries": len(ordered),
    }


WRK_SCRIPT = r"""
-- POST /api/search with the bodies of the file named after `--`, one JSON per line, in turn
local bodies = {}
local n = 0
function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
end
function request()
  n = n % #bodies + 1
  return wrk.format("POST", "/api/search", {["Content-Type"] = "application/json"}, bodies[n])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def run_wrk(url: str, clients: int, seconds: float, bodies: list[dict]) -> dict[str, float]:
    """`wrk` with `clients` keep-alive connections for `seconds`, each sending the next of `bodies` (cycled)
    as soon as its last answer came; latency and QPS of them all (errors: socket errors and non-2xx)."""
    with tempfile.TemporaryDirectory() as tmp:
        script, lines = Path(tmp) / "search.lua", Path(tmp) / "bodies.jsonl"
        script.write_text(WRK_SCRIPT)
        distinct = dict.fromkeys(json.dumps(body) for body in bodies)  # an image query's upload once, not 320 times
        lines.write_text("".join(text + "\n" for text in distinct))
        command = ["wrk", "-t", "1", "-c", str(clients), "-d", f"{seconds}s", "--timeout", "60s"]
        command += ["-s", str(script), url, "--", str(lines)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    requests, duration_us, p50_us, p99_us, errors = map(int, out.split("RESULT", 1)[1].split())
    return {
        "qps": requests / (duration_us / 1e6),
        "p50": p50_us / 1000,
        "p99": p99_us / 1000,
        "errors": errors,
        "queries": requests,
    }


def cli_loop(store: Path, repeats: int) -> dict[str, float]:
    """`torchclip search STORE TEXT` as a process per query."""
    latencies = []
    for n in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "torchclip.cli", "search", str(store), f"a red circle {n}", "-k", "20"],
            check=True,
            capture_output=True,
        )
        latencies.append(time.perf_counter() - start)
    ordered = sorted(latencies)
    return {
        "qps": repeats / sum(ordered),
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[-1] * 1000,
        "errors": 0,
        "queries": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--index", action="store_true", help="build the store's ANN index first (else exact search)")
    parser.add_argument("--queries", type=int, default=400, help="queries per measurement (split among clients)")
    parser.add_argument("--cli-repeats", type=int, default=3)
    parser.add_argument("--kinds", default="text,image,key")
    parser.add_argument("--vector-dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument(
        "--store", type=Path, default=None, help="keep the store here and reuse it on the next run (else a temp folder)"
    )
    parser.add_argument("--build-only", action="store_true", help="make the store (and --index) and stop")
    parser.add_argument(
        "--load",
        choices=["both", "wrk", "threads"],
        default="both" if shutil.which("wrk") else "threads",
        help="the load generator: wrk, Python threads, or each in turn (default: both where wrk is installed)",
    )
    parser.add_argument("--wrk-seconds", type=int, default=8, help="how long each wrk measurement runs")
    args = parser.parse_args()
    photo = query_photo()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        store, keys = make_store(args.store or Path(tmp) / "bench.emb", args.rows, args.vector_dtype)
        made = f"{args.rows:,} {args.vector_dtype} rows ready in {time.perf_counter() - start:.1f} s"
        if args.index and EmbeddingStore(store).index_info()["type"] in (None, "flat"):
            info = EmbeddingStore(store).build_index()
            made += f"; index {info['type']} recall@10 {info.get('recall@10')}"
        print(made, flush=True)
        if args.build_only:
            return
        bodies = {
            "text": lambda n: {"text": f"{WORDS[n % len(WORDS)]} {WORDS[(n * 7) % len(WORDS)]} {n}", "k": 20},
            "image": lambda n: {"image": photo, "k": 20},
            "key": lambda n: {"key": keys[n % len(keys)], "k": 20},
        }
        rows = []
        loads = ["wrk", "threads"] if args.load == "both" else [args.load]
        for label, options in (("batched", ()), ("batching off", ("--max-batch", "1"))):
            server = Server(store, *options)
            try:
                for kind in args.kinds.split(","):
                    warm_up(server.url, [bodies[kind](n) for n in range(args.queries)])
                    for clients in (1, 16):
                        if label == "batching off" and clients == 1:
                            continue  # identical to batched at 1 client
                        for load in loads:
                            if load == "wrk":
                                sent = [bodies[kind](n) for n in range(args.queries)]
                                result = run_wrk(server.url, clients, args.wrk_seconds, sent)
                            else:
                                per_client = max(1, args.queries // clients // (4 if kind == "image" else 1))
                                result = run_clients(server.url, clients, per_client, bodies[kind])
                            rows.append((kind, clients, label, load, result))
                            print(
                                f"{kind:6} {clients:2} clients ({load:7}) {label:13} {result['qps']:7.1f} QPS  p50 "
                                f"{result['p50']:7.1f} ms  p99 {result['p99']:7.1f} ms  errors {result['errors']}",
                                flush=True,
                            )
            finally:
                server.stop()
        loop = cli_loop(store, args.cli_repeats)
        rows.append(("text", 1, "`torchclip search` loop", "-", loop))
    print(
        f"\nbench_serve, {datetime.now():%Y-%m-%d %H:%M}, {platform.machine()}, {args.rows:,} rows, "
        f"{'ANN index' if args.index else 'exact search'}\n"
    )
    print("| query | clients | load | server | QPS | p50 ms | p99 ms | p99/p50 | errors |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|")
    for kind, clients, label, load, r in rows:
        print(
            f"| {kind} | {clients} | {load} | {label} | {r['qps']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | "
            f"{r['p99'] / r['p50']:.1f} | {r['errors']} |"
        )
    by = {(kind, clients, label, load): r for kind, clients, label, load, r in rows}
    for load in loads:
        for kind in args.kinds.split(","):
            one, many = by[(kind, 1, "batched", load)], by[(kind, 16, "batched", load)]
            off = by[(kind, 16, "batching off", load)]
            print(
                f"\n{kind} ({load}): 16 clients / 1 client = {many['qps'] / one['qps']:.2f}x QPS; "
                f"batched / batching off at 16 clients = {many['qps'] / off['qps']:.2f}x",
                end="",
            )
    one = by[("text", 1, "batched", loads[0])]
    print(f"\nserver / `torchclip search` loop, 1 client, text: {one['qps'] / loop['qps']:.0f}x")


if __name__ == "__main__":
    main()
