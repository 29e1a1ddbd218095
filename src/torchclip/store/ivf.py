"""An inverted-file (IVF) index over the store's own rows: the table is sorted by each row's nearest
centroid, so a partition is one run of consecutive rows, and a query reads the few runs whose centroids
are nearest and scores every vector in them exactly (`torchclip.store.exact`).

Why not a quantised index at this size: on benchmarks/bench_store.py's 10M-row mixture a query's true
ten nearest rows are near-ties among ~2,400 rows of its cluster, which 64-byte PQ codes cannot rank
(Lance IVF_PQ: recall@10 0.59-0.90 however many candidates are re-ranked, docs/performance.md). Scoring
the full vectors of a few partitions ranks them exactly, and because each partition's rows lie together
on disk, reading them is a sequential read of ~4 MB, not thousands of random ones. The vectors are stored
once (the index adds only the centroids and a small bitmap index): disk stays ~ the raw vectors.

    build    k-means (faiss, spherical) on a sample of 256 rows per centroid (at most SAMPLE_MAX_ROWS),
             ~4,096 rows per partition; every row assigned to its
             nearest centroid; rows spilled by partition range to Arrow files in a temporary folder,
             each range sorted and written back as a new version of the table (one atomic commit,
             bounded memory: ~BUCKET_ROWS rows at a time); the centroids go to ivf/centroids-*.npy,
             named in the table's schema metadata, so a table version and its centroids always match
    search   the `nprobes` nearest centroids; their runs read by position (store/positions.py: live
             rows, so deletes need no rebuild) and scored exactly, best partition first so later runs
             are screened against the k-th best so far; the best rows' columns are read last, a batch
             of queries' rows in one read (8 queries' 21 rows at 10M: 5.5-7.9 ms, against 12-13 ms in 8
             reads, each with Lance's fixed cost); rows
             committed after the build (partition -1, in fragments after the sorted ones) are scored
             exactly too, so they are found at once
    filters  `where` is evaluated by Lance over the probed partitions (a bitmap index on the partition
             column); when fewer than k rows match there, the search falls back to exact search

`nprobes` is chosen at build time: the smallest of PROBE_CHOICES whose measured recall@10 reaches
RECALL_TARGET by two standard errors (store/ann.py's measure_recall, each stored vector's own row left out).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import pyarrow as pa

from torchclip.store.exact import BLOCK_ROWS, TopK, block_candidates, stored_vectors
from torchclip.store.positions import Positions

if TYPE_CHECKING:
    from torchclip.store.table import EmbeddingStore

__all__ = [
    "PARTITION_COLUMN",
    "UNASSIGNED",
    "Partitions",
    "StoreIndexError",
    "build_ivf",
    "nearest_positions",
    "search_filtered",
]

PARTITION_COLUMN = "ivf_partition"
UNASSIGNED = -1  # rows committed after the build (Lance's v1 files store no nulls for integers)
CENTROIDS_KEY = "torchclip.ivf_centroids"  # schema metadata: the centroids file of this table version
CENTROIDS_FOLDER = "ivf"
SPILL_PREFIX = ".ivf-build-"  # the temporary folder of a build's rows, spilled by partition range
ROWS_PER_PARTITION = 4096
SAMPLE_PER_CENTROID = 256  # 64 gave recall@10 0.92 at 4 probes on 1M mixture rows, 256 gave 0.96
SAMPLE_MAX_ROWS = 655_360  # k-means sample cap (1.3 GB of float32 at 512-d): 256 a centroid up to ~10M rows
KMEANS_ITERATIONS = 20
BUCKET_ROWS = 250_000  # rows sorted in memory at a time while rewriting the table (~300 MB at 512-d float16)
UNINDEXED_IN_MEMORY_BYTES = 64 << 20  # rows committed since the build, read once a generation up to this size
PROBE_CHOICES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
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
    previous = (store.dataset.schema.metadata or {}).get(CENTROIDS_KEY.encode(), b"").decode()
    centroids = _train_centroids(store, partitions)
    built = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    name = f"{CENTROIDS_FOLDER}/centroids-{built}-{uuid.uuid4().hex[:8]}.npy"  # names sort by build time
    store.folder.write_array(name, centroids)
    _rewrite_sorted(store, centroids, name)
    store.refresh()
    store.dataset.create_scalar_index(PARTITION_COLUMN, "BITMAP", replace=True)
    store.refresh()
    for old in store.folder.list(CENTROIDS_FOLDER):  # the version before may still be read for a while
        if old not in (name, previous):
            store.folder.remove(old)
    return {"partitions": partitions}


def _train_centroids(store: EmbeddingStore, partitions: int) -> np.ndarray:
    rows = len(store)
    count = min(rows, SAMPLE_PER_CENTROID * partitions, SAMPLE_MAX_ROWS)
    positions = np.sort(np.random.default_rng(0).choice(rows, count, replace=False))
    vectors = _as_float32(store.take(positions, ["vector"]).column("vector"), store.dim)
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


def drop_ivf(store: EmbeddingStore) -> None:
    """Forget an earlier IVF build (another index type replaces it): the schema no longer names centroids."""
    metadata = store.dataset.schema.metadata or {}
    if CENTROIDS_KEY.encode() in metadata:
        store.dataset.update_schema_metadata({}, replace=True)
        store.refresh()


# ---------------------------------------------------------------------- search


@dataclass
class Partitions:
    """Where each partition's rows lie in one table version (`Positions`: live rows, fragments in order):
    partition p is rows starts[p]:starts[p+1]; rows from `indexed` on were committed after the build.
    Those (one small fragment per commit) are read once for the version into `unindexed` while they fit
    in UNINDEXED_IN_MEMORY_BYTES: read per query, each fragment cost ~2 ms of fixed overhead."""

    centroids: np.ndarray  # [P, D] float32, unit length
    starts: np.ndarray  # [P + 1] int64
    indexed: int
    positions: Positions
    unindexed: np.ndarray | None  # [rows - indexed, D] their vectors, or None: too many, read per query

    @classmethod
    def of(cls, store: EmbeddingStore) -> Partitions | None:
        """The partitions of the store's current version, or None when it has no IVF build."""
        dataset = store.dataset
        name = (dataset.schema.metadata or {}).get(CENTROIDS_KEY.encode())
        if name is None or PARTITION_COLUMN not in dataset.schema.names:
            return None
        centroids = store.folder.read_array(name.decode())
        positions = Positions.of(dataset)
        columns = [
            fragment.to_table(columns=[PARTITION_COLUMN]).column(0).to_numpy() for fragment in positions.fragments
        ]
        column = np.concatenate(columns) if columns else np.zeros(0, np.int32)
        indexed = int(np.searchsorted(column == UNASSIGNED, True))
        sorted_run, rest = column[:indexed], column[indexed:]
        if (rest != UNASSIGNED).any() or (sorted_run == UNASSIGNED).any() or (np.diff(sorted_run) < 0).any():
            raise StoreIndexError(
                f"{store.folder.name!r}: the rows are no longer sorted by partition; run torchclip index"
            )
        starts = np.searchsorted(sorted_run, np.arange(len(centroids) + 1)).astype(np.int64)
        unindexed = None
        if (positions.rows - indexed) * store.dim * np.dtype(store.vector_dtype).itemsize <= UNINDEXED_IN_MEMORY_BYTES:
            ranges = positions.ranges(indexed, positions.rows, ["vector"])
            unindexed = np.concatenate(
                [np.zeros((0, store.dim), store.vector_dtype)]
                + [stored_vectors(rows.column("vector"), store.dim) for rows in ranges]
            )
        return cls(centroids, starts, indexed, positions, unindexed)

    def probe(self, query: np.ndarray, nprobes: int) -> np.ndarray:
        """The `nprobes` partitions nearest to `query`, nearest first."""
        scores = self.centroids @ query
        nprobes = min(nprobes, len(scores))
        nearest = np.argpartition(-scores, nprobes - 1)[:nprobes]
        return nearest[np.argsort(-scores[nearest], kind="stable")]


def nearest_positions(partitions: Partitions, query: np.ndarray, k: int, nprobes: int) -> tuple[np.ndarray, np.ndarray]:
    """The positions of the best k rows for one normalised float32 query, best first, and their scores. Only
    vectors are read: the caller reads the rows' other columns, for a whole batch of queries at once."""
    best, dim = TopK(1, k), partitions.centroids.shape[1]
    runs = [(int(partitions.starts[p]), int(partitions.starts[p + 1])) for p in partitions.probe(query, nprobes)]
    indexed, rows = partitions.indexed, partitions.positions.rows
    if partitions.unindexed is None:  # committed since the build, too many to hold: read them too
        runs += [(start, min(start + BLOCK_ROWS, rows)) for start in range(indexed, rows, BLOCK_ROWS)]
    elif rows > indexed:
        _score_vectors(partitions.unindexed, np.arange(indexed, rows), query, best)
    for start, stop in runs:
        first = start
        for table in partitions.positions.ranges(start, stop, ["vector"]):
            _score(table, np.arange(first, first + table.num_rows), query, dim, best)
            first += table.num_rows
    positions, scores = best.result()
    return positions[0], scores[0]


def search_filtered(
    store: EmbeddingStore, partitions: Partitions, query: np.ndarray, k: int, nprobes: int, where: str
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The best k rows matching `where` for one normalised float32 query (their ROW_COLUMNS, best first) and
    their scores: Lance evaluates the filter over the probed partitions."""
    probed = partitions.probe(query, nprobes)
    in_partitions = f"{PARTITION_COLUMN} IN ({', '.join(map(str, probed.tolist()))}, {UNASSIGNED})"
    best = TopK(1, k)
    batches = store.iter_batches(BLOCK_ROWS, ["id", "vector"], where=f"({in_partitions}) AND ({where})")
    for batch in batches:
        _score(batch, batch.column("id").to_numpy(), query, store.dim, best)
    ids, scores = best.result()
    if len(ids[0]) < k:  # the probed partitions hold fewer than k matching rows: look at every row
        ids, scores = store.exact_top_k(query[None], k, where)
    return store.rows(ids[0].tolist()), scores[0]


def _score(rows: pa.Table | pa.RecordBatch, labels: np.ndarray, query: np.ndarray, dim: int, best: TopK) -> None:
    """Offer these rows' vectors to `best`, each under its label (its id or its position)."""
    if rows.num_rows:
        _score_vectors(stored_vectors(rows.column("vector"), dim), labels, query, best)


def _score_vectors(vectors: np.ndarray, labels: np.ndarray, query: np.ndarray, best: TopK) -> None:
    positions, scores = block_candidates(vectors, query[None], best.k, floor=best.floor())
    best.add(labels[positions], scores)


def _as_float32(column: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    return np.ascontiguousarray(stored_vectors(column, dim), dtype=np.float32)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
