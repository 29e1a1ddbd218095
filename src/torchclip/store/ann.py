"""The approximate-nearest-neighbour index of a store, chosen by its size, and its measured recall.

    rows                 index                    why
    <= 10,000            flat (none: exact)       exact search streams every vector: ~6 ms at 10k rows,
                                                  ~0.2 s per 1M 512-d float16 rows (benchmarks/bench_store.py)
    <= 500,000           hnsw (Lance IVF_HNSW_SQ) graph search over 8-bit vectors, for mid-sized stores
                                                  whose graph fits in memory (tested for recall; not
                                                  benchmarked at scale: in benchmarks/bench_store.py a
                                                  200k build did not finish in 10 minutes on the
                                                  shared 2-core machine)
    beyond               ivf_flat (store/ivf.py)  the table itself sorted by nearest centroid (~4,096 rows a
                                                  partition), the nearest partitions scored exactly; no
                                                  second copy of the vectors, recall@10 >= 0.95 by
                                                  choice of nprobes at build (docs/performance.md)
    on request           ivf_pq (Lance IVF_PQ)    64-byte PQ codes (1/32 of float32), 8% of the partitions
                                                  probed (at most 64), the best 20*k (50*k above 2M rows)
                                                  re-ranked on the full vectors: a small index, but on
                                                  benchmarks/bench_store.py's 10M mixture its recall@10
                                                  stops at 0.85-0.90 (near-ties PQ codes cannot rank)

Lance builds hnsw and ivf_pq from a sample and on-disk shuffles, in bounded memory, and keeps them on disk
beside the rows; store/ivf.py builds ivf_flat the same way. Rows committed after the build are in fragments
the index does not cover and are searched exactly beside it, so they are found at once; `torchclip index`
again folds them in.

Recall@k is measured at every build: up to `queries` stored vectors (fewer for very large stores, at least
100) are searched through the index and exactly, each one's own row left out of both lists (a new query
has no such free hit); a result counts as a hit when its exact score is at least the exact k-th best
score, so ties between duplicates (equal scores) count as hits.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from torchclip.store.exact import BLOCK_ROWS, stored_vectors
from torchclip.store.ivf import PROBE_CHOICES, RECALL_TARGET, build_ivf, drop_ivf

if TYPE_CHECKING:
    from torchclip.store.table import EmbeddingStore

__all__ = ["INDEX_TYPES", "build_vector_index", "choose_index_type", "measure_recall"]

INDEX_TYPES = ("flat", "hnsw", "ivf_flat", "ivf_pq")
FLAT_MAX, HNSW_MAX = 10_000, 500_000
INDEX_NAME = "vector_idx"
LOOKUP_COLUMNS = ("id", "key")  # found by value: a search hit's row, a thumbnail's id, a removed photo's key
# Above this many rows IVF_PQ re-ranks 50*k candidates instead of 20*k: at 10M rows (512-d float16) recall@10
# rose from 0.59 to 0.77 at the same latency, at 1M it stayed 0.964 and cost 5 ms more (docs/performance.md)
RERANK_MORE_ABOVE = 2_000_000
TIE_TOLERANCE = 1e-5  # scores this close to the k-th best count as ties (float16 vectors round ~1e-3 apart)


def choose_index_type(rows: int) -> str:
    """flat up to 10,000 rows, hnsw up to 500,000, ivf_flat beyond (see the module docstring for why)."""
    if rows <= FLAT_MAX:
        return "flat"
    return "hnsw" if rows <= HNSW_MAX else "ivf_flat"


def build_vector_index(store: EmbeddingStore, index_type: str = "auto") -> dict[str, Any]:
    """Build (replacing any earlier one) the vector index and the lookup indexes on id and key (which keep
    `rows`, `id_of` and `remove` from scanning every row); returns the index's description, with the
    parameters `search` passes to Lance."""
    rows, dim = len(store), store.dim
    if rows == 0:
        raise ValueError(f"{store.folder.name!r} holds no embeddings to index")
    index_type = choose_index_type(rows) if index_type == "auto" else index_type
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index type must be auto, {', '.join(INDEX_TYPES)}; got {index_type!r}")
    started = time.perf_counter()
    if index_type != "ivf_flat":
        drop_ivf(store)
        _compact(store)  # (an ivf_flat build rewrites the whole table anyway)
    lance_index = any(index.name == INDEX_NAME for index in store.dataset.describe_indices())
    if lance_index and index_type in ("flat", "ivf_flat"):
        store.dataset.drop_index(INDEX_NAME)
        store.refresh()
    dataset = store.dataset
    info: dict[str, Any] = {"type": index_type, "rows_indexed": rows, "dim": dim}
    if index_type == "flat":
        info["search"] = {}
    elif index_type == "ivf_flat":
        info.update(build_ivf(store))
        _remove_old_versions(store)
        info["search"] = {"nprobes": PROBE_CHOICES[0]}  # raised by measure_recall until recall is reached
    elif index_type == "hnsw":
        partitions = max(1, rows // 100_000)
        dataset.create_index(
            "vector", "IVF_HNSW_SQ", name=INDEX_NAME, metric="dot", replace=True, num_partitions=partitions
        )
        info.update(partitions=partitions)
        info["search"] = {"nprobes": partitions, "ef": 128}
    else:
        partitions = max(1, min(8192, rows // 4096))
        sub_vectors = _sub_vectors(dim)
        dataset.create_index(
            "vector",
            "IVF_PQ",
            name=INDEX_NAME,
            metric="dot",
            replace=True,
            num_partitions=partitions,
            num_sub_vectors=sub_vectors,
        )
        info.update(partitions=partitions, sub_vectors=sub_vectors)
        probes = max(1, min(partitions, math.ceil(partitions * 0.08), 64))
        info["search"] = {"nprobes": probes, "refine_factor": 20 if rows <= RERANK_MORE_ABOVE else 50}
    _index_lookup_columns(store)
    info["build_seconds"] = round(time.perf_counter() - started, 2)
    info["built_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return info


def _index_lookup_columns(store: EmbeddingStore) -> None:
    """Bloom filters on id and key, one per zone of 8,192 rows: a lookup reads only the zones that may hold
    its value. Lance's B-trees answer the same lookups but cost ~60 bytes a row (0.06x the raw vectors at
    10M 512-d float16, past the store's disk budget); the filters cost 4 bytes. docs/performance.md has both
    lookup costs; a B-tree left by an older build is replaced."""
    for column in LOOKUP_COLUMNS:
        store.refresh()
        for index in store.dataset.describe_indices():
            if index.field_names == [column] and index.index_type != "BloomFilter":
                store.dataset.drop_index(index.name)
                store.refresh()
        store.dataset.create_scalar_index(column, "BLOOMFILTER", replace=True)
    store.refresh()


def _compact(store: EmbeddingStore) -> None:
    """Merge the small fragments that commits of 1,024 rows leave (one per commit) into large ones, with
    deleted rows dropped, and delete the files of versions older than an hour that no longer count (a reader
    holding such a version for longer would have to reopen). Fewer fragments: faster scans and searches."""
    dataset = store.dataset
    if len(dataset.get_fragments()) > 1 or dataset.stats.dataset_stats()["num_deleted_rows"]:
        dataset.optimize.compact_files(target_rows_per_fragment=1 << 20, max_rows_per_group=BLOCK_ROWS)
        store.refresh()
    _remove_old_versions(store)


def _remove_old_versions(store: EmbeddingStore) -> None:
    store.dataset.cleanup_old_versions(older_than=timedelta(hours=1))
    store.refresh()


def _sub_vectors(dim: int) -> int:
    """PQ sub-vectors: 8 dimensions each where the dimension allows, else the largest divisor <= dim/8."""
    wanted = max(1, dim // 8)
    return next(m for m in range(wanted, 0, -1) if dim % m == 0)


def measure_recall(
    store: EmbeddingStore, k: int = 10, queries: int = 1000, seed: int = 0, tune_nprobes: dict | None = None
) -> dict[str, Any]:
    """{"recall@k": ..., "recall_queries": ...}: the index's results against exact search, ties counted
    as hits (see the module docstring), for stored vectors as queries. `tune_nprobes`: the search
    parameters the store searches with (an ivf_flat index's), whose nprobes is raised in place through
    ivf.PROBE_CHOICES until the recall reaches ivf.RECALL_TARGET by two standard errors of its mean over
    the sample: new queries then reach it too (at 1M rows a measured 0.955 at 2 probes was 0.935 on 100
    fresh queries, benchmarks/bench_store.py)."""
    sample = _RecallSample(store, k, queries, seed)
    for nprobes in PROBE_CHOICES if tune_nprobes is not None else [None]:
        if tune_nprobes is not None:
            tune_nprobes["nprobes"] = nprobes
        recall, standard_error = sample.recall()
        if recall - 2 * standard_error >= RECALL_TARGET:
            break
    return {f"recall@{k}": round(recall, 4), "recall_queries": len(sample.vectors)}


class _RecallSample:
    """Stored vectors standing in for new queries: each one's own row is left out of both result lists
    (it would always be found, and a new photo's query has no such free hit)."""

    def __init__(self, store: EmbeddingStore, k: int, queries: int, seed: int):
        rows = len(store)
        count = min(rows, queries, max(100, 1_000_000_000 // max(rows, 1)))  # ~1e9 score products at most
        positions = np.sort(np.random.default_rng(seed).choice(rows, count, replace=False))
        sample = store.take(positions, ["id", "vector"])
        vectors = stored_vectors(sample.column("vector"), store.dim).astype(np.float32)
        self.vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self.own = sample.column("id").to_numpy()
        self.store, self.k = store, min(k, rows - 1)
        exact_ids, exact_scores = store.exact_top_k(self.vectors, self.k + 1)
        self.kth = np.array([best[ids != own][self.k - 1] for ids, best, own in zip(exact_ids, exact_scores, self.own)])

    def recall(self) -> tuple[float, float]:
        """(recall@k, the standard error of that mean over the sample's queries)."""
        if self.k < 1:
            return 1.0, 0.0
        results = self.store.search(self.vectors, self.k + 1)
        found = [[hit.id for hit in hits if hit.id != own][: self.k] for hits, own in zip(results, self.own)]
        ids = sorted({i for hits in found for i in hits})
        by_id = dict(zip(ids, self.store.vectors_of(ids)))
        per_query = np.array(
            [
                sum(float(by_id[i] @ query) >= kth - TIE_TOLERANCE for i in result) / self.k
                for query, result, kth in zip(self.vectors, found, self.kth)
            ]
        )
        return float(per_query.mean()), float(per_query.std() / np.sqrt(len(per_query)))
