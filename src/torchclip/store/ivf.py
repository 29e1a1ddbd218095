"""An inverted-file (IVF) index over the store's own rows: the table is sorted by each row's nearest
centroid, so a partition is one run of consecutive rows, and a query reads the few runs whose centroids
are nearest and scores every vector in them exactly (`torchclip.store.exact`).

Why not a quantised index at this size: on benchmarks/bench_store.py's 10M-row mixture a query's true
ten nearest rows are near-ties among ~2,400 rows of its cluster, which 64-byte PQ codes cannot rank
(Lance IVF_PQ: recall@10 0.59-0.90 however many candidates are re-ranked, docs/performance.md). Scoring
the full vectors of a few partitions ranks them exactly, and because each partition's rows lie together
on disk, reading them is a sequential read of ~4 MB, not thousands of random ones. The vectors are stored
once (the index adds only the centroids and a small bitmap index): disk stays ~ the raw vectors.

    build    k-means (faiss, spherical) on a sample of 256 rows per centroid; every row assigned to its
             nearest centroid; rows spilled by partition range to Arrow files in a temporary folder,
             each range sorted and written back as a new version of the table (one atomic commit,
             bounded memory: ~BUCKET_ROWS rows at a time); the centroids go to ivf/centroids-<n>.npy,
             named in the table's schema metadata, so a table version and its centroids always match
    search   the `nprobes` nearest centroids; their runs read with Lance's `take` (row offsets, which
             account for deleted rows) and scored exactly, best partition first so later runs are
             screened against the k-th best so far; rows committed after the build (partition -1, in
             fragments after the sorted ones) are scored exactly too, so they are found at once
    filters  `where` is evaluated by Lance over the probed partitions (a bitmap index on the partition
             column); when fewer than k rows match there, the search falls back to exact search

`nprobes` is chosen at build time: the smallest of PROBE_CHOICES whose measured recall@10 reaches
RECALL_TARGET (store/ann.py's measure_recall, each stored vector's own row left out).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import pyarrow as pa

from torchclip.store.exact import BLOCK_ROWS, TopK, block_candidates

if TYPE_CHECKING:
    from torchclip.store.table import EmbeddingStore

__all__ = ["PARTITION_COLUMN", "UNASSIGNED", "Partitions", "StoreIndexError", "build_ivf", "search_ivf"]

PARTITION_COLUMN = "ivf_partition"
UNASSIGNED = -1  # rows committed after the build (Lance's v1 files store no nulls for integers)
CENTROIDS_KEY = "torchclip.ivf_centroids"  # schema metadata: the centroids file of this table version
CENTROIDS_FOLDER = "ivf"
SPILL_PREFIX = ".ivf-build-"  # the temporary folder of a build's rows, spilled by partition range
ROWS_PER_PARTITION = 4096
SAMPLE_PER_CENTROID = 256  # 64 gave recall@10 0.92 at 4 probes on 1M mixture rows, 256 gave 0.96
KMEANS_ITERATIONS = 20
BUCKET_ROWS = 250_000  # rows sorted in memory at a time while rewriting the table (~300 MB at 512-d float16)
PROBE_CHOICES = (2, 4, 8, 16, 32, 64, 128)
RECALL_TARGET = 0.95


class StoreIndexError(RuntimeError):
    """The store's index no longer matches its rows; `torchclip index` rebuilds it."""


def partition_count(rows: int) -> int:
    return max(1, min(65_536, rows // ROWS_PER_PARTITION))


# ---------------------------------------------------------------------- build


def build_ivf(store: EmbeddingStore) -> dict[str, Any]:
    """Train the centroids, rewrite the table sorted by partition and write the centroids file; returns
    {"partitions": P}. The caller holds the writer lock and measures recall to pick nprobes."""
    partitions = partition_count(len(store))
    centroids = _train_centroids(store, partitions)
    built = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    name = f"{CENTROIDS_FOLDER}/centroids-{built}-{uuid.uuid4().hex[:8]}.npy"  # names sort by build time
    store.folder.write_array(name, centroids)
    _rewrite_sorted(store, centroids, name)
    store.refresh()
    store.dataset.create_scalar_index(PARTITION_COLUMN, "BITMAP", replace=True)
    store.refresh()
    _remove_old_centroids(store, keep=name)
    return {"partitions": partitions}


def _train_centroids(store: EmbeddingStore, partitions: int) -> np.ndarray:
    rows = len(store)
    count = min(rows, SAMPLE_PER_CENTROID * partitions)
    positions = np.sort(np.random.default_rng(0).choice(rows, count, replace=False))
    sample = store.take(positions, ["vector"]).column("vector").combine_chunks()
    vectors = _as_float32(sample, store.dim)
    if partitions == 1:
        return _normalised(vectors.mean(axis=0, keepdims=True))
    kmeans = faiss.Kmeans(
        store.dim,
        partitions,
        niter=KMEANS_ITERATIONS,
        spherical=True,
        seed=1,
        max_points_per_centroid=SAMPLE_PER_CENTROID,
    )
    kmeans.train(vectors)
    return _normalised(kmeans.centroids)


def _rewrite_sorted(store: EmbeddingStore, centroids: np.ndarray, centroids_name: str) -> None:
    """One new version of the table: every row with its partition, sorted by (partition, id). Rows are
    first spilled to one Arrow file per range of partitions, then each range is sorted in memory."""
    import lance  # noqa: PLC0415 - imported by table.py first, with its environment settings

    from torchclip.store.table import FILE_FORMAT, TABLE  # noqa: PLC0415 - cycle: table imports this module

    dataset = store.dataset
    nearest = faiss.IndexFlatIP(store.dim)
    nearest.add(centroids)
    partitions, buckets = len(centroids), max(1, math.ceil(len(store) / BUCKET_ROWS))
    schema = _schema_with_partition(dataset.schema).with_metadata({CENTROIDS_KEY: centroids_name})
    spill_in = str(store.folder.path) if store.folder.path is not None else None  # (beside the data: as large)
    if store.folder.path is not None:  # left by a build that was killed (this one holds the writer lock)
        for stale in store.folder.path.glob(f"{SPILL_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=SPILL_PREFIX, dir=spill_in) as spill:
        paths = [f"{spill}/{bucket}.arrow" for bucket in range(buckets)]
        sinks = [pa.ipc.new_file(path, schema) for path in paths]
        for batch in dataset.to_batches(columns=schema.names[:-1], batch_size=BLOCK_ROWS):
            _, best = nearest.search(_as_float32(batch.column("vector"), store.dim), 1)
            partition = best[:, 0].astype(np.int32)
            batch = pa.RecordBatch.from_arrays([*batch.columns, pa.array(partition)], schema=schema)
            bucket = partition.astype(np.int64) * buckets // partitions
            for b in np.unique(bucket):
                sinks[b].write_batch(batch.filter(pa.array(bucket == b)))
        for sink in sinks:
            sink.close()

        def sorted_batches() -> Any:
            for path in paths:
                with pa.memory_map(path) as source:
                    table = pa.ipc.open_file(source).read_all()
                table = table.sort_by([(PARTITION_COLUMN, "ascending"), ("id", "ascending")])
                yield from table.to_batches(max_chunksize=BLOCK_ROWS)
                del table

        lance.write_dataset(
            pa.RecordBatchReader.from_batches(schema, sorted_batches()),
            store.folder.uri(TABLE),
            schema=schema,
            mode="overwrite",
            max_rows_per_group=BLOCK_ROWS,
            data_storage_version=FILE_FORMAT,
            storage_options=store.folder.storage_options,
        )


def _schema_with_partition(schema: pa.Schema) -> pa.Schema:
    """The row schema with the partition column last (once), without schema metadata."""
    fields = [field for field in schema if field.name != PARTITION_COLUMN]
    return pa.schema([*fields, pa.field(PARTITION_COLUMN, pa.int32(), nullable=False)])


def _remove_old_centroids(store: EmbeddingStore, keep: str) -> None:
    """Keep this build's centroids and the previous build's (a reader may still hold the version before)."""
    older = sorted(name for name in store.folder.list(CENTROIDS_FOLDER) if name != keep)
    for name in older[:-1]:
        store.folder.remove(name)


def drop_ivf(store: EmbeddingStore) -> None:
    """Forget an earlier IVF build (another index type replaces it): the schema no longer names centroids."""
    metadata = store.dataset.schema.metadata or {}
    if CENTROIDS_KEY.encode() in metadata:
        store.dataset.update_schema_metadata({}, replace=True)
        store.refresh()


# ---------------------------------------------------------------------- search


@dataclass
class Partitions:
    """Where each partition's rows lie in one table version. Rows are numbered by live-row offset across
    the fragments in order (deleted rows do not count); partition p is rows starts[p]:starts[p+1], and rows
    from `indexed` on were committed after the build. Runs are read fragment by fragment (Lance's
    fragment-level take: the dataset-level one was ~10 s a call on a 1M-row table with deletions)."""

    centroids: np.ndarray  # [P, D] float32, unit length
    starts: np.ndarray  # [P + 1] int64
    indexed: int
    fragments: list[Any]  # the version's LanceFragments, in order
    offsets: np.ndarray  # [F + 1] int64: the first row of each fragment

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    @classmethod
    def of(cls, store: EmbeddingStore) -> Partitions | None:
        """The partitions of the store's current version, or None when it has no IVF build."""
        dataset = store.dataset
        name = (dataset.schema.metadata or {}).get(CENTROIDS_KEY.encode())
        if name is None or PARTITION_COLUMN not in dataset.schema.names:
            return None
        centroids = store.folder.read_array(name.decode())
        fragments = dataset.get_fragments()
        columns = [fragment.to_table(columns=[PARTITION_COLUMN]).column(0).to_numpy() for fragment in fragments]
        offsets = np.cumsum([0, *map(len, columns)]).astype(np.int64)
        column = np.concatenate(columns) if columns else np.zeros(0, np.int32)
        indexed = int(np.searchsorted(column == UNASSIGNED, True))
        sorted_run, rest = column[:indexed], column[indexed:]
        if (rest != UNASSIGNED).any() or (sorted_run == UNASSIGNED).any() or (np.diff(sorted_run) < 0).any():
            raise StoreIndexError(
                f"{store.folder.name!r}: the rows are no longer sorted by partition; run torchclip index"
            )
        starts = np.searchsorted(sorted_run, np.arange(len(centroids) + 1)).astype(np.int64)
        return cls(centroids, starts, indexed, fragments, offsets)

    def probe(self, query: np.ndarray, nprobes: int) -> np.ndarray:
        """The `nprobes` partitions nearest to `query`, nearest first."""
        scores = self.centroids @ query
        nprobes = min(nprobes, len(scores))
        nearest = np.argpartition(-scores, nprobes - 1)[:nprobes]
        return nearest[np.argsort(-scores[nearest], kind="stable")]

    def read(self, start: int, stop: int) -> Iterator[pa.Table]:
        """Rows start:stop (id and vector), one table per fragment they lie in."""
        fragment = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while start < stop:
            end = min(stop, int(self.offsets[fragment + 1]))
            first = int(self.offsets[fragment])
            if end > start:
                yield self.fragments[fragment].take(np.arange(start - first, end - first), columns=["id", "vector"])
            start, fragment = end, fragment + 1


def search_ivf(
    store: EmbeddingStore, partitions: Partitions, query: np.ndarray, k: int, nprobes: int, where: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """(ids [k'], scores [k']) of one normalised float32 query, best first."""
    probed = partitions.probe(query, nprobes)
    if where is not None:
        return _search_filtered(store, probed, query, k, where)
    best = TopK(1, k)
    runs = [(int(partitions.starts[p]), int(partitions.starts[p + 1])) for p in probed]
    unindexed = range(partitions.indexed, partitions.rows, BLOCK_ROWS)
    runs += [(start, min(start + BLOCK_ROWS, partitions.rows)) for start in unindexed]
    for start, stop in runs:
        for rows in partitions.read(start, stop):
            _score(rows, query, store.dim, best)
    ids, scores = best.result()
    return ids[0], scores[0]


def _search_filtered(
    store: EmbeddingStore, probed: np.ndarray, query: np.ndarray, k: int, where: str
) -> tuple[np.ndarray, np.ndarray]:
    in_partitions = f"{PARTITION_COLUMN} IN ({', '.join(map(str, probed.tolist()))}, {UNASSIGNED})"
    best = TopK(1, k)
    batches = store.iter_batches(BLOCK_ROWS, ["id", "vector"], where=f"({in_partitions}) AND ({where})")
    for batch in batches:
        _score(batch, query, store.dim, best)
    ids, scores = best.result()
    if len(ids[0]) < k:  # the probed partitions hold fewer than k matching rows: look at every row
        ids, scores = store.exact_top_k(query[None], k, where)
    return ids[0], scores[0]


def _score(rows: pa.Table | pa.RecordBatch, query: np.ndarray, dim: int, best: TopK) -> None:
    if rows.num_rows == 0:
        return
    vector = rows.column("vector")
    vectors = _stored(vector.combine_chunks() if isinstance(vector, pa.ChunkedArray) else vector, dim)
    positions, scores = block_candidates(vectors, query[None], best.k, floor=best.floor())
    best.add(rows.column("id").to_numpy()[positions], scores)


def _stored(column: pa.Array, dim: int) -> np.ndarray:
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def _as_float32(column: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return np.ascontiguousarray(_stored(column, dim), dtype=np.float32)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
