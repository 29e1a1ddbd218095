"""The embedding store at scale: the Lance store (torchclip.store) beside torchclip 0.1's .npz store.

    python benchmarks/bench_store.py --rows 1000000 --folder /tmp/bench_store            # everything
    python benchmarks/bench_store.py --rows 10000000 --vector-dtype float16 --no-old ...  # 10M

Rows are made through the public API (`EmbeddingStore.create` + `add`, 100,000 rows a commit) from a
Gaussian mixture that looks like CLIP embeddings rather than uniform noise: 4,096 random unit centres in
512-d, each row a centre plus isotropic noise (sigma 0.035 per dimension), normalised; a row's cosine to
its centre is ~0.78, to another row of its cluster ~0.6, to an unrelated row ~0 (uniform random vectors
have no neighbours at all, which makes every ANN index look bad and is not what photo embeddings do).
Queries are 200 fresh draws from the same mixture (not stored rows).

Each measurement runs in a fresh process (so its peak RSS is its own): open (constructor + len), the first
exact query and the median of 5 (streamed in blocks), ANN queries k=10 (p50/p99 over 200, after 10 warm-up
queries), recall@10 of the ANN results against exact search (ties count as hits), peak RSS of a process that
opens the store and answers 100 ANN queries, removing one row (median of 5), appending 1,000 new rows
(`append_new`, what an embed run's commit does) and `add` of 1,000 rows (a key lookup first), disk against
the raw vectors, and the index build's time and peak RSS. Step "malloc" times exact search with glibc's
default malloc beside the store's settings (`torchclip/store/malloc.py`); step "lookups" times lookups by id
and key through the lookup indexes; step "screen" scores one float16 block screened and copied, for 1 to
1,000 queries (`torchclip/store/exact.py`). The old store (git show
c2b5b6a:src/torchclip/index.py, passed as --old-module) is measured the same way where it can run.

Timed parts should run under `flock /tmp/torchclip-bench.lock`; data generation and the index build under
`nice -n 10` (`--step`). Prints a markdown table; `--json FILE` keeps the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

DIM, CLUSTERS, SIGMA, COMMIT_ROWS = 512, 4096, 0.035, 100_000


def mixture(rows: int, seed: int, dtype=np.float32, dim: int = DIM) -> np.ndarray:
    """`rows` normalised draws from the Gaussian mixture (the centres are the same for every seed); at
    another `dim` the noise is scaled so that a row's cosine to its centre stays ~0.78."""
    centres = np.random.default_rng(12345).standard_normal((CLUSTERS, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    sigma = SIGMA * (DIM / dim) ** 0.5
    vectors = centres[rng.integers(0, CLUSTERS, rows)] + sigma * rng.standard_normal((rows, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(dtype)


def key(i: int) -> str:
    return f"/photos/{i // 1000:05d}/IMG_{i:08d}.jpg"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


# ---------------------------------------------------------------------- steps (each in its own process)


def generate(folder: Path, rows: int, vector_dtype: str) -> dict:
    from torchclip.store import EmbeddingStore

    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    store = EmbeddingStore.create(
        folder, kind="image", model={"name": "bench", "fingerprint": None, "dim": DIM}, vector_dtype=vector_dtype
    )
    for start in range(0, rows, COMMIT_ROWS):
        count = min(COMMIT_ROWS, rows - start)
        metadata = [
            {"size": 100_000 + i % 5000, "mtime": 1.7e9 + i, "width": 640 + i % 3000, "height": 480}
            for i in range(start, start + count)
        ]
        store.add([key(i) for i in range(start, start + count)], mixture(count, seed=start), metadata=metadata)
    return {"generate_s": time.perf_counter() - started, "rows": len(store)}


def build(folder: Path, index_type: str) -> dict:
    from torchclip.store import EmbeddingStore

    store = EmbeddingStore(folder)
    info = store.build_index(index_type)
    result = {"index": info, "build_peak_rss_mb": peak_rss_mb(), "disk_after_build_mb": disk_mb(folder)}
    # the versions the build replaced stay for readers still holding them (the next `torchclip index` removes
    # those over an hour old); disk is measured without them, as the store stands from then on
    store.dataset.cleanup_old_versions(older_than=timedelta(0))
    return result


def measure(folder: Path, rows: int) -> dict:
    from torchclip.store import EmbeddingStore
    from torchclip.store.table import rows_table

    queries = mixture(200, seed=10**9)
    started = time.perf_counter()
    store = EmbeddingStore(folder)
    count = len(store)
    result = {"open_s": time.perf_counter() - started, "rows": count}
    started = time.perf_counter()
    store.search(queries[:1], k=10, exact=True)
    result["exact_first_s"] = time.perf_counter() - started
    times = []
    for query in queries[1:6]:
        started = time.perf_counter()
        store.search(query, k=10, exact=True)
        times.append(time.perf_counter() - started)
    result["exact_p50_s"] = float(np.median(times))
    started = time.perf_counter()
    for _ in store.iter_batches(columns=["id", "key", "size", "mtime", "text"]):
        pass
    result["stored_keys_scan_s"] = time.perf_counter() - started  # the store's side of an embed run's find_changes
    result["exact_rss_mb"] = peak_rss_mb()
    _, exact_scores = store.exact_top_k(queries[:100], 10)
    for query in queries[:10]:
        store.search(query, k=10)
    times, found = [], []
    for query in queries:
        started = time.perf_counter()
        found.append(store.search(query, k=10)[0])
        times.append(time.perf_counter() - started)
    result["ann_p50_ms"], result["ann_p99_ms"] = (1000 * float(np.percentile(times, p)) for p in (50, 99))
    ids = sorted({hit.id for hits_ in found[:100] for hit in hits_})
    by_id = dict(zip(ids, store.vectors_of(ids)))
    hits = sum(
        float(by_id[hit.id] @ query) >= best[-1] - 1e-5
        for hits_, best, query in zip(found[:100], exact_scores, queries[:100])
        for hit in hits_
    )
    result["recall@10"] = hits / 1000
    times, run = [], store.generation  # (keys of this run: the step may run again on the same store)
    positions = np.sort(np.random.default_rng(run).choice(len(store), 5, replace=False))
    for stored in store.take(positions, ["key"]).column("key").to_pylist():
        started = time.perf_counter()
        removed = store.remove([stored])
        times.append(time.perf_counter() - started)
        assert removed == 1
    result["remove_one_s"] = float(np.median(times))
    new = mixture(1000, seed=2 * 10**9 + run)
    started = time.perf_counter()
    store.append_new(rows_table(DIM, store.vector_dtype, [f"/new/{run}/{i}.jpg" for i in range(1000)], new))
    result["append_1000_s"] = time.perf_counter() - started
    started = time.perf_counter()
    store.add([f"/added/{run}/{i}.jpg" for i in range(1000)], new)
    result["add_1000_s"] = time.perf_counter() - started
    started = time.perf_counter()
    found = store.search(new[0], k=1)[0][0].key
    result["new_row_found"] = found in (f"/new/{run}/0.jpg", f"/added/{run}/0.jpg")
    result["search_after_append_ms"] = 1000 * (time.perf_counter() - started)
    return result


def exact_only(folder: Path) -> dict:
    """Exact search alone (first query, median of 5, peak RSS): run once with the store's malloc settings and
    once with TORCHCLIP_MALLOC=default (step "malloc"), each in its own process."""
    from torchclip.store import EmbeddingStore
    from torchclip.store.malloc import keep_freed_blocks

    queries = mixture(6, seed=10**9)
    store = EmbeddingStore(folder)
    times = []
    for query in queries:
        started = time.perf_counter()
        store.search(query, k=10, exact=True)
        times.append(time.perf_counter() - started)
    gigabytes = len(store) * DIM * (2 if store.vector_dtype == "float16" else 4) / 1e9
    return {
        "malloc_settings": keep_freed_blocks(),
        "exact_first_s": times[0],
        "exact_p50_s": float(np.median(times[1:])),
        "vectors_gb_s": gigabytes / float(np.median(times[1:])),
        "exact_rss_mb": peak_rss_mb(),
    }


def malloc_settings(args: argparse.Namespace) -> dict:
    """Exact search with glibc's default malloc beside the store's settings (store/malloc.py), alternating
    three times each, every run in a fresh process."""
    runs: dict[str, list[dict]] = {"default": [], "store": []}
    for _ in range(3):
        runs["default"].append(in_process("exact", args, {"TORCHCLIP_MALLOC": "default"}))
        runs["store"].append(in_process("exact", args))
    return {
        name: {field: float(np.median([run[field] for run in done])) for field in done[0]}
        for name, done in runs.items()
    }


def file_formats(folder: Path) -> dict:
    """Scan speed of 300,000 512-d float16 vectors in each of Lance's file layouts (why the store writes v1:
    exact search is a scan of every vector). Best of 3 scans of the vector column, from the page cache."""
    import lance
    import pyarrow as pa

    vectors = mixture(300_000, seed=7, dtype=np.float16)
    table = pa.table({"vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM)})
    result = {}
    for version in ("legacy", "2.0", "2.1", "2.2"):
        path = folder / f"format-{version}.lance"
        shutil.rmtree(path, ignore_errors=True)
        dataset = lance.write_dataset(table, path, data_storage_version=version, max_rows_per_file=100_000)
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _batch in dataset.scanner(columns=["vector"]).to_batches():
                pass
            best = min(best, time.perf_counter() - started)
        result[f"scan_gb_s_{version}"] = vectors.nbytes / best / 1e9
        shutil.rmtree(path)
    return result


def screen_or_copy() -> dict:
    """Scoring one block of 32,768 512-d float16 rows for Q queries: screened in float16
    (`exact._screened_candidates`) against copied to float32 first (what `block_candidates` does above
    SCREEN_MAX_QUERIES), best of 3, the store's malloc settings applied."""
    import torch

    from torchclip.store import exact
    from torchclip.store.malloc import keep_freed_blocks

    keep_freed_blocks()
    block = mixture(exact.BLOCK_ROWS, seed=11, dtype=np.float16)
    paths = {
        "screened": lambda queries: exact._screened_candidates(block, queries, 10, None),
        "copied": lambda queries: exact.block_candidates(torch.from_numpy(block).float().numpy(), queries, 10),
    }
    result = {}
    for count in (1, 4, 8, 16, 32, 64, 256, 1000):
        queries = mixture(count, seed=12)
        for name, run in paths.items():
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                run(queries)
                best = min(best, time.perf_counter() - started)
            result[f"{name}_ms_{count}_queries"] = 1000 * best
    return result


def lookups(folder: Path) -> dict:
    """Lookups by id and key through the store's API (its lookup indexes) on rows drawn at random: the
    first call (which loads the index) and the median of 5 more; then one `add` that replaces 1,000
    stored rows (its key lookup first) and one `remove_ids` of 1,000 rows spread over the table."""
    from torchclip.store import EmbeddingStore

    store = EmbeddingStore(folder)
    positions = np.sort(np.random.default_rng(store.generation).choice(len(store), 1100, replace=False))
    sample = store.take(positions, ["id", "key"])
    keys, ids = sample.column("key").to_pylist(), sample.column("id").to_pylist()
    calls = {
        "id_of": lambda n: store.id_of(keys[n]),
        "rows_20_ids": lambda n: store.rows(ids[20 * n : 20 * n + 20]),
        "vectors_of_1_id": lambda n: store.vectors_of([ids[200 + n]]),
        "remove_1_key": lambda n: store.remove([keys[1000 + n]]),
    }
    result = {}
    for name, call in calls.items():
        times = []
        for n in range(6):
            started = time.perf_counter()
            call(n)
            times.append(1000 * (time.perf_counter() - started))
        result[name] = {"first_ms": times[0], "median_ms": float(np.median(times[1:]))}
    started = time.perf_counter()
    store.add(keys[:1000], mixture(1000, seed=store.generation))
    result["add_replacing_1000_rows_ms"] = 1000 * (time.perf_counter() - started)
    positions = np.sort(np.random.default_rng(store.generation).choice(len(store), 1000, replace=False))
    scattered = store.take(positions, ["id"]).column("id").to_pylist()  # (what an embed run does for changed files)
    started = time.perf_counter()
    store.remove_ids(scattered)
    result["remove_1000_scattered_ids_ms"] = 1000 * (time.perf_counter() - started)
    return result


def ann_rss(folder: Path) -> dict:
    """Peak RSS of a process that opens the store and answers 100 ANN queries (and nothing else)."""
    from torchclip.store import EmbeddingStore

    store = EmbeddingStore(folder)
    for query in mixture(100, seed=10**9):
        store.search(query, k=10)
    return {"ann_rss_mb": peak_rss_mb()}


def measure_old(folder: Path, old_module: str, rows: int, generate_rows: bool) -> dict:
    """torchclip 0.1's store: chunks of 100,000 rows written as it writes them, then opened and queried."""
    import torch

    spec = importlib.util.spec_from_file_location("old_index", old_module)
    old = importlib.util.module_from_spec(spec)
    sys.modules["old_index"] = old  # its dataclasses look their module up
    spec.loader.exec_module(old)
    result = {}
    if generate_rows:
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        store = old.EmbeddingStore.create(folder, "image", {"name": "bench", "fingerprint": "x", "dim": DIM}, "/photos")
        for start in range(0, rows, COMMIT_ROWS):
            count = min(COMMIT_ROWS, rows - start)
            items = [old.Item(key(i), 100_000, 1) for i in range(start, start + count)]
            store.commit([old._write_chunk(folder, items, mixture(count, seed=start))])
        result["generate_s"] = time.perf_counter() - started
        return result
    queries = torch.from_numpy(mixture(200, seed=10**9))
    started = time.perf_counter()
    store = old.EmbeddingStore(folder)
    result["open_s"] = time.perf_counter() - started
    started = time.perf_counter()
    store.search(queries[:1], k=10, exact=True)
    result["exact_first_s"] = time.perf_counter() - started
    times = []
    for query in queries[1:6]:
        started = time.perf_counter()
        store.search(query[None], k=10, exact=True)
        times.append(time.perf_counter() - started)
    result["exact_p50_s"] = float(np.median(times))
    started = time.perf_counter()
    for _ in store.iter_batches(columns=["id", "key", "size", "mtime", "text"]):
        pass
    result["stored_keys_scan_s"] = time.perf_counter() - started  # the store's side of an embed run's find_changes
    result["rows"] = len(store)
    result["exact_rss_mb"] = peak_rss_mb()
    started = time.perf_counter()
    store.commit([], drop=[key(0)])
    result["remove_one_s"] = time.perf_counter() - started
    return result


# ---------------------------------------------------------------------- the driver


def in_process(step: str, args: argparse.Namespace, env: dict[str, str] | None = None) -> dict:
    command = [
        sys.executable,
        __file__,
        "--step",
        step,
        "--rows",
        str(args.rows),
        "--folder",
        str(args.folder),
        "--vector-dtype",
        args.vector_dtype,
        "--type",
        args.type,
        "--old-module",
        str(args.old_module),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"step {step} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench_store"))
    parser.add_argument("--vector-dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--type", default="auto", help="index type for the build (auto: by size)")
    parser.add_argument("--old-module", type=Path, default=Path("/tmp/old_index.py"))
    parser.add_argument("--no-old", action="store_true", help="skip torchclip 0.1's store")
    parser.add_argument(
        "--step",
        default="all",
        choices=[
            *("all", "generate", "build", "ann-rss", "measure", "lookups", "formats", "exact", "malloc", "screen"),
            *("old-generate", "old-measure", "report"),
        ],
    )
    parser.add_argument("--json", type=Path, default=None, help="all: write the figures here too")
    args = parser.parse_args()
    lance_folder, old_folder = args.folder / "lance.emb", args.folder / "old.emb"
    steps = {
        "generate": lambda: generate(lance_folder, args.rows, args.vector_dtype),
        "build": lambda: build(lance_folder, args.type),
        "measure": lambda: measure(lance_folder, args.rows),
        "ann-rss": lambda: ann_rss(lance_folder),
        "formats": lambda: file_formats(args.folder),
        "exact": lambda: exact_only(lance_folder),
        "malloc": lambda: malloc_settings(args),
        "screen": screen_or_copy,
        "lookups": lambda: lookups(lance_folder),
        "old-generate": lambda: measure_old(old_folder, str(args.old_module), args.rows, True),
        "old-measure": lambda: measure_old(old_folder, str(args.old_module), args.rows, False),
    }
    if args.step in steps:
        result = steps[args.step]()
        (args.folder / f"{args.step}.json").write_text(json.dumps(result))
        print(json.dumps(result))
        return
    if args.step == "all":
        figures = {"rows": args.rows, "vector_dtype": args.vector_dtype, "date": time.strftime("%Y-%m-%d")}
        for step in ("generate", "build", "ann-rss", "measure"):
            figures[step] = in_process(step, args)
            print(step, figures[step], file=sys.stderr)
        figures["disk_mb"] = disk_mb(lance_folder)
        if not args.no_old and args.old_module.is_file():
            figures["old-generate"] = in_process("old-generate", args)
            figures["old-measure"] = in_process("old-measure", args)
            figures["old_disk_mb"] = disk_mb(old_folder)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))
    else:  # the steps were run one by one (e.g. the timed ones under flock): gather their figures
        figures = {"rows": args.rows, "vector_dtype": args.vector_dtype, "date": time.strftime("%Y-%m-%d")}
        for path in sorted(args.folder.glob("*.json")):
            figures[path.stem] = json.loads(path.read_text())
        figures["disk_mb"] = disk_mb(lance_folder)
        if old_folder.is_dir():
            figures["old_disk_mb"] = disk_mb(old_folder)
    print(report(figures))


def report(figures: dict) -> str:
    rows, dtype = figures["rows"], figures["vector_dtype"]
    raw_mb = rows * DIM * (2 if dtype == "float16" else 4) / 2**20
    new, old, index = figures["measure"], figures.get("old-measure", {}), figures["build"]["index"]

    def cell(value, unit="", digits=2):
        return "-" if value is None else f"{value:.{digits}f}{unit}"

    lines = [
        f"{rows:,} rows, 512-d {dtype}, {figures['date']}; index {index['type']} "
        f"(built in {index['build_seconds']:.0f} s, peak RSS {figures['build']['build_peak_rss_mb']:.0f} MB)",
        "",
        "| | Lance store | 0.1 .npz store | target |",
        "|---|---|---|---|",
        f"| open | {cell(new['open_s'], ' s', 3)} | {cell(old.get('open_s'), ' s', 3)} | <= 1 s |",
        f"| first exact query | {cell(new['exact_first_s'], ' s')} | {cell(old.get('exact_first_s'), ' s')} | |",
        f"| exact query (median) | {cell(new['exact_p50_s'], ' s')} | {cell(old.get('exact_p50_s'), ' s')} | "
        "<= 3 s at 10M |",
        f"| ANN query k=10 p50 / p99 | {new['ann_p50_ms']:.1f} / {new['ann_p99_ms']:.1f} ms | - | <= 20 / 100 ms |",
        f"| ANN recall@10 vs exact | {new['recall@10']:.4f} | - | >= 0.95 |",
        f"| recall@10 measured at build | {index['recall@10']:.4f} ({index['recall_queries']} stored vectors) | - | |",
        f"| stored keys read (embed's find_changes) | {cell(new.get('stored_keys_scan_s'), ' s')} | - | |",
        f"| RSS: open + exact queries | {new['exact_rss_mb']:.0f} MB | {cell(old.get('exact_rss_mb'), ' MB', 0)} | |",
        f"| RSS: open + 100 ANN queries | {figures['ann-rss']['ann_rss_mb']:.0f} MB | - | <= 1.5 GB at 10M |",
        f"| remove one row | {cell(new['remove_one_s'], ' s', 3)} | {cell(old.get('remove_one_s'), ' s', 3)} | "
        "<= 0.1 s |",
        f"| commit 1,000 new rows (embed's commit) | {new['append_1000_s']:.3f} s | - | ~ the 1,000 |",
        f"| add() 1,000 rows (key lookup first) | {new['add_1000_s']:.3f} s | - | |",
        f"| disk / raw vectors ({raw_mb:,.0f} MB) | {figures['disk_mb'] / raw_mb:.2f}x "
        f"({figures['build'].get('disk_after_build_mb', 0) / raw_mb:.2f}x before the replaced version is removed) | "
        f"{cell(figures.get('old_disk_mb', 0) / raw_mb if 'old_disk_mb' in figures else None, 'x')} | <= 1.1x |",
    ]
    if "formats" in figures:
        layouts = figures["formats"].items()
        speeds = ", ".join(f"{name.removeprefix('scan_gb_s_')} {value:.2f}" for name, value in layouts)
        lines += ["", f"Vector scan speed by Lance file layout (GB/s): {speeds}"]
    if "malloc" in figures:
        lines += ["", "| exact search (k=10) | glibc's default malloc | the store's settings |", "|---|---|---|"]
        for field, unit in (
            ("exact_first_s", "s"),
            ("exact_p50_s", "s"),
            ("vectors_gb_s", "GB/s"),
            ("exact_rss_mb", "MB"),
        ):
            default, tuned = figures["malloc"]["default"][field], figures["malloc"]["store"][field]
            lines.append(f"| {field} | {default:.2f} {unit} | {tuned:.2f} {unit} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
