"""The embedding store: one row per photo (or caption) in a Lance table, with versioned atomic commits.

Layout of a store folder (a local path, or an object-store URI such as ``s3://bucket/photos.emb``)::

    store.json      what the rows are: format, kind (image/text), model identity, source followed,
                    the next row id to hand out, the vector dtype, and the ANN index's description
    rows.lance/     the Lance dataset: id, key, size, mtime, text, width, height, taken_at, vector
    failures.json   the files the last `embed` run could not read, with their errors
    writer.lock     held (flock) by the one process writing to the store
    ivf/            an ivf_flat index's centroids (store/ivf.py), one file per build, named by the table
    parts/          a distributed run's per-process rows, merged into rows.lance at its end

Why Lance: every append, delete and index build is one atomic commit that makes a new version
(``store.generation``); a reader pins the version it opened and never sees a half-written one; deletes
write small deletion files instead of rewriting data; vector indexes live on disk next to the data; and
the same code reads local disk or S3. Rows added after the last index build sit in fragments the index
does not cover, and Lance searches those exactly and merges the results, so a new photo is found at once.

Row ids (`id`) are handed out from `next_id` in store.json, which is raised *before* the rows are
committed: a kill in between only skips some ids, so an id is never given to two rows, even after a delete.
"""

from __future__ import annotations

import fcntl
import functools
import io
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from pyarrow import fs

os.environ.setdefault("LANCE_LOG", "error")  # Lance warns on stderr about things that are normal here
os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")
import lance  # noqa: E402

from torchclip.io import write_bytes_atomic  # noqa: E402
from torchclip.store.ann import build_vector_index, measure_recall  # noqa: E402
from torchclip.store.exact import BLOCK_ROWS, TopK, block_candidates, stored_vectors  # noqa: E402
from torchclip.store.ivf import (  # noqa: E402
    CENTROIDS_FOLDER,
    PARTITION_COLUMN,
    UNASSIGNED,
    Partitions,
    nearest_positions,
    search_filtered,
)
from torchclip.store.malloc import keep_freed_blocks  # noqa: E402
from torchclip.store.positions import Positions  # noqa: E402

__all__ = [
    "EmbeddingStore",
    "Hit",
    "StoreBusyError",
    "StoreDamagedError",
    "check_folder_is_a_store_or_empty",
    "row_schema",
    "rows_table",
    "writer_lock",
]

FORMAT_VERSION = 2
CONFIG, TABLE, FAILURES, LOCK, PARTS = "store.json", "rows.lance", "failures.json", "writer.lock", "parts"
VECTOR_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}
METADATA_COLUMNS = ["size", "mtime", "width", "height", "taken_at"]
ROW_COLUMNS = ["id", "key", "text", *METADATA_COLUMNS]
NUMBERS_UNKNOWN_AS_ZERO = ("size", "mtime", "width", "height")
# Lance's first (v1, "legacy") file layout: plain Arrow buffers, which Lance reads near memory speed. The
# newer layouts decode fixed-size vectors through structural encodings several times slower (300k 512-d
# float16 vectors scanned at 5.9 GB/s in v1 against 0.95 in 2.1 and 0.74 in 2.2 on the 2-core test machine:
# `benchmarks/bench_store.py --step formats`), and exact search is a scan of every vector. v1 files hand
# the scanner one row group per batch whatever its batch_size, so groups are written BLOCK_ROWS long (Lance's
# default 1,024 made exact search pay its per-block cost 32 times over: 0.86-0.94 s against 0.46-0.59 s per
# 1M float16 rows, same run).
FILE_FORMAT = "legacy"
ANN_THREADS = max(2, os.cpu_count() or 1)  # threads answering a batch of ANN queries


@functools.cache
def _ann_workers() -> ThreadPoolExecutor:
    """The threads that answer ANN queries, one query each. Lance releases the GIL, so a batch of queries
    runs side by side (16 queries on a 10M-row IVF_PQ store: ~3x faster with 2 threads on 2 cores;
    docs/performance.md). Each worker scores with one torch thread: an ivf_flat query scores ~8,000 rows,
    and two torch threads per query contended with Lance's reader threads (10M rows on 2 cores: p50 16-25
    ms with two, 13.7 ms with one; benchmarks/bench_store.py --step measure)."""
    return ThreadPoolExecutor(ANN_THREADS, "torchclip-ann", initializer=torch.set_num_threads, initargs=(1,))


class StoreBusyError(RuntimeError):
    """Another process holds the store's writer lock."""


class StoreDamagedError(RuntimeError):
    """A file of the store cannot be read; re-running `torchclip embed` on its source repairs it."""


def row_schema(dim: int, vector_dtype: str = "float32") -> pa.Schema:
    """The Lance table's columns. `mtime` is seconds since the epoch (st_mtime_ns / 1e9); `taken_at` is
    the EXIF date as ISO 8601 text; width/height/taken_at are null where unknown (texts, bring-your-own).
    Lance's v1 files keep no nulls for numbers: an unknown size, mtime, width or height is stored as 0
    (what a filter sees) and read back by `rows` and `search` as None."""
    if vector_dtype not in VECTOR_DTYPES:
        raise ValueError(f"vector dtype must be one of {sorted(VECTOR_DTYPES)}, got {vector_dtype!r}")
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("key", pa.string(), nullable=False),
            pa.field("size", pa.int64()),
            pa.field("mtime", pa.float64()),
            pa.field("text", pa.string()),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("taken_at", pa.string()),
            pa.field("vector", pa.list_(VECTOR_DTYPES[vector_dtype], dim)),
        ]
    )


@dataclass
class Hit:
    """One search result. `id` is the row's stable id (unique, never reused); `key` its path (or file#row);
    `score` the cosine similarity; `text` the caption of a text row ("" for images); `metadata` width,
    height, taken_at, size and mtime where known."""

    id: int
    key: str
    score: float
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "score": self.score,
            **({"text": self.text} if self.text else {}),
            **self.metadata,
        }


def _quote(text: str) -> str:
    """A SQL string literal, as Lance's filters (DataFusion) read it."""
    return "'" + text.replace("'", "''") + "'"


def _in_list(column: str, values: Sequence[Any]) -> str:
    """A filter `column IN (...)` for string or integer values."""
    literals = (_quote(v) if isinstance(v, str) else str(int(v)) for v in values)
    return f"{column} IN ({', '.join(literals)})"


def _is_uri(folder: str) -> bool:
    return "://" in folder and not folder.startswith("file://")


def _filesystem(uri: str, options: dict[str, str]) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for an object-store URI; S3 takes the same options as Lance
    (aws_access_key_id, aws_secret_access_key, aws_region, aws_endpoint, allow_http), else the environment."""
    if not uri.startswith("s3://"):
        return fs.FileSystem.from_uri(uri)
    endpoint = options.get("aws_endpoint") or os.environ.get("AWS_ENDPOINT_URL")
    s3 = fs.S3FileSystem(
        access_key=options.get("aws_access_key_id"),
        secret_key=options.get("aws_secret_access_key"),
        region=options.get("aws_region") or os.environ.get("AWS_REGION", "us-east-1"),
        endpoint_override=endpoint.split("://", 1)[-1] if endpoint else None,
        scheme="http" if endpoint and endpoint.startswith("http://") else "https",
    )
    return s3, uri.removeprefix("s3://")


class _Folder:
    """Where a store's files live: plain files on local disk (written atomically: temporary file, fsync,
    rename), or objects on an object store through pyarrow.fs (one PUT each, atomic by itself)."""

    def __init__(self, folder: str | os.PathLike, storage_options: dict[str, str] | None):
        self.name = str(folder).rstrip("/")
        self.remote = _is_uri(self.name)
        self.storage_options = storage_options
        if self.remote:
            self._fs, self._root = _filesystem(self.name, storage_options or {})
        self.path = None if self.remote else Path(self.name)

    def uri(self, name: str) -> str:
        return f"{self.name}/{name}"

    def exists(self, name: str) -> bool:
        if self.remote:
            return self._fs.get_file_info(f"{self._root}/{name}").type != fs.FileType.NotFound
        return (self.path / name).exists()

    def read_bytes(self, name: str) -> bytes:
        if self.remote:
            with self._fs.open_input_stream(f"{self._root}/{name}") as handle:
                return handle.read()
        return (self.path / name).read_bytes()

    def write_bytes(self, name: str, data: bytes) -> None:
        if not self.remote:
            (self.path / name).parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(self.path / name, data, durable=True)
            return
        with self._fs.open_output_stream(f"{self._root}/{name}") as handle:
            handle.write(data)

    def read_json(self, name: str) -> Any:
        text = self.read_bytes(name).decode("utf-8")
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise StoreDamagedError(
                f"{self.uri(name)!r} is not valid JSON ({exc}); is this an embedding store?"
            ) from None

    def write_json(self, name: str, data: Any) -> None:
        self.write_bytes(name, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"))

    def read_array(self, name: str) -> np.ndarray:
        """A NumPy .npy file (no pickled objects)."""
        try:
            return np.load(io.BytesIO(self.read_bytes(name)), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise StoreDamagedError(f"{self.uri(name)!r} cannot be read ({exc}); run torchclip index again") from None

    def write_array(self, name: str, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        self.write_bytes(name, buffer.getvalue())

    def list(self, subfolder: str) -> list[str]:
        """The names ("subfolder/file") of the files in a subfolder of the store."""
        if self.remote:
            selector = fs.FileSelector(f"{self._root}/{subfolder}", allow_not_found=True)
            return [f"{subfolder}/{info.base_name}" for info in self._fs.get_file_info(selector) if info.is_file]
        folder = self.path / subfolder
        return [f"{subfolder}/{p.name}" for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []

    def remove(self, name: str) -> None:
        if self.remote:
            self._fs.delete_file(f"{self._root}/{name}")
        else:
            (self.path / name).unlink(missing_ok=True)

    def remove_tree(self, name: str) -> None:
        if self.remote:
            if self.exists(name):
                self._fs.delete_dir(f"{self._root}/{name}")
        else:
            shutil.rmtree(self.path / name, ignore_errors=True)


_HELD_LOCKS: dict[str, list[Any]] = {}  # lock file -> [open handle, depth]: re-entrant within a process


@contextmanager
def writer_lock(folder: str | os.PathLike | _Folder) -> Iterator[None]:
    """Hold the store's exclusive writer lock: flock on writer.lock, released by the kernel when the
    process dies, so a killed writer never leaves the store locked; re-entrant within one process. A second
    process gets StoreBusyError at once. Object stores have no such lock: one writer at a time is then
    the caller's job."""
    folder = folder if isinstance(folder, _Folder) else _Folder(folder, None)
    if folder.remote:
        yield
        return
    name = str((folder.path / LOCK).resolve())
    if name in _HELD_LOCKS:
        _HELD_LOCKS[name][1] += 1
    else:
        folder.path.mkdir(parents=True, exist_ok=True)
        handle = open(name, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StoreBusyError(
                f"{folder.name!r} is being written by {holder}; wait for it to finish (only one process "
                "may write to a store at a time)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} (since {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC)")
        handle.flush()
        _HELD_LOCKS[name] = [handle, 1]
    try:
        yield
    finally:
        _HELD_LOCKS[name][1] -= 1
        if _HELD_LOCKS[name][1] == 0:
            _HELD_LOCKS.pop(name)[0].close()  # closing releases the flock


def check_folder_is_a_store_or_empty(folder: str | os.PathLike) -> None:
    """Refuse a local folder that holds anything but a store's files (never write into, or with
    --rebuild delete from, someone's photo folder)."""
    path = Path(folder)
    if _is_uri(str(folder)) or not path.exists():
        return
    if not path.is_dir():
        raise FileExistsError(f"{str(path)!r} exists and is not a folder; choose an empty or new folder")
    ours = {CONFIG, TABLE, FAILURES, LOCK, PARTS, CENTROIDS_FOLDER, "chunks", "faiss.index", "faiss.json"}
    if any(p.name not in ours and not p.name.startswith(".") for p in path.iterdir()):
        raise FileExistsError(f"{str(path)!r} exists and is not an embedding store; choose an empty or new folder")


def _lance_error(folder: _Folder, exc: Exception, dataset: lance.LanceDataset | None = None) -> Exception:
    """Lance's error as a StoreDamagedError naming the store and, where it can be found, the file."""
    message = str(exc).split(", /")[0]  # drop the Rust source location Lance appends
    damaged = _damaged_files(folder, dataset) if dataset is not None else []
    where = f"{', '.join(map(repr, damaged))} cannot be read" if damaged else "a file of the store cannot be read"
    return StoreDamagedError(
        f"{folder.name!r}: {where} ({message}); run `torchclip embed` on its source again to repair it"
    )


def _damaged_files(folder: _Folder, dataset: lance.LanceDataset) -> list[str]:
    """The data files of this version that are missing, truncated or unreadable (read in full: only
    called once something failed)."""
    damaged = []
    for fragment in dataset.get_fragments():
        paths = [folder.uri(f"{TABLE}/data/{data_file.path}") for data_file in fragment.data_files()]
        sizes = [data_file.file_size_bytes for data_file in fragment.data_files()]
        if folder.path is not None and any(
            not os.path.isfile(path) or (size is not None and os.path.getsize(path) != size)
            for path, size in zip(paths, sizes)
        ):
            damaged += paths
            continue
        try:
            for _ in fragment.to_batches(batch_size=BLOCK_ROWS):
                pass
        except (OSError, ValueError, RuntimeError):
            damaged += paths
    return damaged


class EmbeddingStore:
    """A store's committed state at one generation (see the module docstring). Opening reads only
    store.json and Lance's manifest; rows and vectors are read when a method needs them."""

    def __init__(self, folder: str | os.PathLike, *, storage_options: dict[str, str] | None = None):
        self.folder = _Folder(folder, storage_options)
        if not self.folder.exists(CONFIG):
            raise FileNotFoundError(
                f"{self.folder.name!r} is not an embedding store (no {CONFIG}); run torchclip embed"
            )
        config = self.folder.read_json(CONFIG)
        if config.get("format") == 1:  # the .npz store of torchclip 0.1: upgrade it in place
            from torchclip.store.upgrade import upgrade_npz_store  # noqa: PLC0415 - cycle: upgrade imports table

            upgrade_npz_store(self.folder.path)
            config = self.folder.read_json(CONFIG)
        if config.get("format") != FORMAT_VERSION:
            raise ValueError(f"{self.folder.uri(CONFIG)!r}: unsupported store format {config.get('format')!r}")
        self._config = config
        # Lance's caches of opened indexes and file metadata, kept across this handle's generations: a
        # lookup after a commit finds the id and key bloom filters (~40 MB each at 10M rows) already loaded
        self._lance_session = lance.Session()
        self._dataset = self._open_table()
        self._indexed_generation: tuple[int, bool] = (-1, False)
        self._partitions: Partitions | None = None  # an ivf_flat index's runs at _indexed_generation

    @classmethod
    def create(
        cls,
        folder: str | os.PathLike,
        kind: str = "image",
        model: dict[str, Any] | None = None,
        source: str | None = None,
        *,
        vector_dtype: str = "float32",
        storage_options: dict[str, str] | None = None,
        next_id: int = 0,
        replace: bool = False,
    ) -> EmbeddingStore:
        """A new, empty store. `model` must give "dim"; "name" and "fingerprint" say which model made the
        vectors (None for bring-your-own vectors). Refuses a folder that holds anything but a store, and an
        existing store unless `replace` (its rows are then discarded; `next_id` keeps ids unique)."""
        if kind not in ("image", "text"):
            raise ValueError(f"kind must be 'image' or 'text', got {kind!r}")
        if not model or not isinstance(model.get("dim"), int) or model["dim"] < 1:
            raise ValueError(f"model must say the vectors' dimension as model['dim'], got {model!r}")
        schema = row_schema(model["dim"], vector_dtype)
        location = _Folder(folder, storage_options)
        check_folder_is_a_store_or_empty(folder)
        if location.exists(CONFIG) and not replace:
            raise FileExistsError(f"{location.name!r} is already an embedding store (pass replace=True to start over)")
        with writer_lock(location):
            location.remove_tree(TABLE)  # a store being replaced (--rebuild), or a create that was killed
            location.remove_tree(PARTS)
            lance.write_dataset(
                schema.empty_table(),
                location.uri(TABLE),
                schema=schema,
                mode="create",
                data_storage_version=FILE_FORMAT,
                storage_options=storage_options,
            )
            config = {
                "format": FORMAT_VERSION,
                "kind": kind,
                "model": model,
                "source": source,
                "next_id": next_id,
                "vector_dtype": vector_dtype,
                "index": None,
            }
            location.write_json(CONFIG, config)  # the store exists from here on
        return cls(folder, storage_options=storage_options)

    def _open_table(self) -> lance.LanceDataset:
        keep_freed_blocks()  # before Lance's reader threads first allocate (see store/malloc.py)
        try:
            return lance.dataset(
                self.folder.uri(TABLE), storage_options=self.folder.storage_options, session=self._lance_session
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise _lance_error(self.folder, exc) from None

    # ------------------------------------------------------------------ what the store is

    @property
    def kind(self) -> str:
        return self._config["kind"]

    @property
    def model(self) -> dict[str, Any]:
        return self._config["model"]

    @property
    def source(self) -> str | None:
        return self._config["source"]

    @property
    def dim(self) -> int:
        return self.model["dim"]

    @property
    def vector_dtype(self) -> str:
        return self._config["vector_dtype"]

    @property
    def generation(self) -> int:
        """The committed version this handle reads (Lance's table version)."""
        return self._dataset.version

    @property
    def dataset(self) -> lance.LanceDataset:
        """The Lance dataset at this handle's generation, for tools that want Lance or Arrow directly."""
        return self._dataset

    def refresh(self) -> bool:
        """Move this handle to the newest committed generation; True if it changed."""
        before = self.generation
        self._config = self.folder.read_json(CONFIG)
        self._dataset = self._open_table()
        return self.generation != before

    def __len__(self) -> int:
        return self._dataset.count_rows()

    def __repr__(self) -> str:
        return f"EmbeddingStore({self.folder.name!r}: {len(self)} {self.kind} rows, generation {self.generation})"

    # ------------------------------------------------------------------ writing

    @contextmanager
    def writing(self) -> Iterator[EmbeddingStore]:
        """Hold the writer lock (re-entrant within a process) and read the newest generation, so every
        write lands on the latest committed state. A second writer gets StoreBusyError at once."""
        with writer_lock(self.folder):
            self.refresh()
            yield self

    def set_source(self, source: str | None) -> None:
        with self.writing():
            if self._config["source"] != source:
                self._config["source"] = source
                self.folder.write_json(CONFIG, self._config)

    def add(
        self,
        keys: Sequence[str],
        vectors: Any,
        texts: Sequence[str] | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Add rows for precomputed `vectors` ([N, D], normalised here), one commit. A key already in the
        store has its row replaced (with a new id). `metadata[i]` may give size, mtime, width, height,
        taken_at."""
        table = self._new_rows(keys, vectors, texts, metadata)
        if table is None:
            return
        with self.writing():
            table = self._with_ids(table)
            if len(self) == 0 or self._select(_in_list("key", table.column("key").to_pylist()), ["id"]).num_rows == 0:
                self._commit_append(table)
            else:
                self._dataset.merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(table)
                self.refresh()

    def append_new(self, table: pa.Table) -> None:
        """Append rows whose keys the caller knows are not in the store (the embed run's commits: no key
        lookup, so the cost does not grow with the store). `table` has every column but `id`."""
        with self.writing():
            self._commit_append(self._with_ids(table))

    def _commit_append(self, table: pa.Table) -> None:
        self._dataset = lance.write_dataset(
            table,
            self.folder.uri(TABLE),
            mode="append",
            max_rows_per_group=BLOCK_ROWS,
            storage_options=self.folder.storage_options,
            session=self._lance_session,
        )

    def reserve_ids(self, count: int) -> int:
        """Hand out `count` fresh row ids (the first is returned): next_id is raised and saved before any
        row uses them, so a kill in between only skips ids. For writers that commit rows themselves
        (e.g. Lance fragments written by Ray workers); call it holding `writing()`."""
        with self.writing():
            start = self._config["next_id"]
            self._config["next_id"] = start + count
            self.folder.write_json(CONFIG, self._config)
        return start

    def _with_ids(self, table: pa.Table) -> pa.Table:
        """`table` with fresh row ids (see `reserve_ids`)."""
        start = self.reserve_ids(len(table))
        ids = pa.array(np.arange(start, start + len(table), dtype=np.int64))
        return self.conform(table.add_column(0, pa.field("id", pa.int64(), nullable=False), ids))

    def conform(self, table: pa.Table) -> pa.Table:
        """`table` (rows with ids) in the column order and types of this store's table, with the columns an
        index build added filled in as "not indexed yet": what a commit of new rows must look like."""
        schema = self._dataset.schema
        if PARTITION_COLUMN in schema.names and PARTITION_COLUMN not in table.column_names:
            unassigned = pa.array(np.full(len(table), UNASSIGNED, np.int32))
            table = table.append_column(schema.field(PARTITION_COLUMN), unassigned)
        return table.select(schema.names).cast(schema)

    def _new_rows(
        self,
        keys: Sequence[str],
        vectors: Any,
        texts: Sequence[str] | None,
        metadata: Sequence[dict[str, Any]] | None,
    ) -> pa.Table | None:
        keys = [str(key) for key in keys]
        vectors = self._as_vectors(vectors, "vectors")
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys but {len(vectors)} vectors")
        if texts is not None and len(texts) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(texts)} texts")
        if metadata is not None and len(metadata) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(metadata)} metadata entries")
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                raise ValueError(f"key {key!r} is given twice")
            seen.add(key)
        if not keys:
            return None
        return rows_table(self.dim, self.vector_dtype, keys, vectors, texts, metadata)

    def _as_vectors(self, vectors: Any, what: str) -> np.ndarray:
        """[N, D] float32, L2-normalised; refuses the wrong width and non-finite values."""
        if hasattr(vectors, "detach"):  # a torch tensor
            vectors = vectors.detach().float().cpu().numpy()
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"{what} must be [N, {self.dim}] (the store's dimension), got {list(vectors.shape)}")
        if not np.isfinite(vectors).all():
            row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
            raise ValueError(f"{what}[{row}] holds NaN or infinite values")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def remove(self, keys: Sequence[str]) -> int:
        """Delete the rows of these keys (one commit); returns how many rows were deleted."""
        keys = [str(key) for key in keys]
        if not keys:
            return 0
        with self.writing():
            return self._delete(_in_list("key", keys))

    def remove_ids(self, ids: Sequence[int]) -> int:
        """Delete rows by id (one commit); returns how many rows were deleted."""
        ids = [int(i) for i in ids]
        if not ids:
            return 0
        with self.writing():
            return self._delete(_in_list("id", ids))

    def _delete(self, predicate: str) -> int:
        """Delete the rows matching a lookup `predicate` in one commit: their row ids are found first
        (through the lookup index), then deleted by id. Lance's delete with the predicate itself fails once
        matches lie both in indexed zones and in fragments committed after the build (it expects its
        bloom-filtered matches in row order)."""
        found = self._scanner(columns=["id"], filter=predicate, with_row_id=True).to_table().column("_rowid")
        if len(found) == 0:
            return 0
        self._dataset.delete(_in_list("_rowid", found.to_pylist()))
        self.refresh()
        return len(found)

    # ------------------------------------------------------------------ reading

    def iter_batches(
        self, batch_size: int = 65_536, columns: Sequence[str] | None = None, where: str | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The rows as Arrow record batches (all columns unless `columns`), optionally filtered."""
        scanner = self._scanner(columns=list(columns) if columns else None, filter=where, batch_size=batch_size)
        yield from self._guarded(scanner.to_batches(), where)

    def _scanner(self, **options: Any) -> lance.LanceScanner:
        try:
            return self._dataset.scanner(**options)
        except ValueError as exc:
            raise self._bad_filter(options.get("filter"), exc) from None

    def _guarded(self, batches: Iterator[pa.RecordBatch], where: str | None) -> Iterator[pa.RecordBatch]:
        try:
            yield from batches
        except ValueError as exc:
            raise self._bad_filter(where, exc) from None
        except (OSError, RuntimeError) as exc:
            raise _lance_error(self.folder, exc, self._dataset) from None

    def _bad_filter(self, where: str | None, exc: Exception) -> Exception:
        if where is None:
            return _lance_error(self.folder, exc, self._dataset)
        message = str(exc).split(", /")[0]
        return ValueError(f"bad filter {where!r}: {message}")

    def _select(self, predicate: str, columns: Sequence[str]) -> pa.Table:
        """The few rows matching a lookup `predicate` (by id or key). Late materialisation reads the other
        columns of the matching rows only, not of every row in the zones the lookup index names."""
        scanner = self._scanner(columns=list(columns), filter=predicate, late_materialization=True)
        return pa.Table.from_batches(
            list(self._guarded(scanner.to_batches(), predicate)),
            schema=pa.schema([self._dataset.schema.field(c) for c in columns]),
        )

    def take(self, positions: Sequence[int], columns: Sequence[str]) -> pa.Table:
        """The rows at these positions (0 .. len-1 over the live rows), in that order."""
        return Positions.of(self._dataset).take(positions, columns)

    def rows(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        """The rows with these ids, in that order, without their vectors: {"id", "key", "text", "size",
        "mtime", "width", "height", "taken_at"}. Ids not in the store are left out."""
        ids = [int(i) for i in ids]
        if not ids:
            return []
        found = [_unknowns_as_none(row) for row in self._select(_in_list("id", set(ids)), ROW_COLUMNS).to_pylist()]
        by_id = {row["id"]: row for row in found}
        return [by_id[i] for i in ids if i in by_id]

    def vectors_of(self, ids: Sequence[int]) -> np.ndarray:
        """[len(ids), D] float32 vectors of these rows (KeyError naming an id not in the store)."""
        ids = [int(i) for i in ids]
        if not ids:
            return np.zeros((0, self.dim), np.float32)
        table = self._select(_in_list("id", set(ids)), ["id", "vector"])
        position = {row_id: n for n, row_id in enumerate(table.column("id").to_pylist())}
        missing = [i for i in ids if i not in position]
        if missing:
            raise KeyError(f"no row with id {missing[0]} in {self.folder.name!r}")
        vectors = _vectors(table.column("vector").combine_chunks(), self.dim)
        return vectors[[position[i] for i in ids]]

    def id_of(self, key: str) -> int | None:
        """The id of the row with this key, or None."""
        ids = self._select(f"key = {_quote(str(key))}", ["id"]).column("id").to_pylist()
        return ids[0] if ids else None

    def keys(self) -> list[str]:
        """Every key, in row-id order (the order rows were added)."""
        table = pa.Table.from_batches(
            list(self.iter_batches(columns=["id", "key"])),
            schema=pa.schema([self._dataset.schema.field("id"), self._dataset.schema.field("key")]),
        )
        return table.sort_by("id").column("key").to_pylist()

    def failures(self) -> list[dict[str, str]]:
        """The last embed run's unreadable files: [{"key", "error"}]."""
        return self.folder.read_json(FAILURES) if self.folder.exists(FAILURES) else []

    def write_failures(self, failures: list[dict[str, str]]) -> None:
        self.folder.write_json(FAILURES, failures)

    # ------------------------------------------------------------------ search

    def search(self, queries: Any, k: int = 10, exact: bool = False, where: str | None = None) -> list[list[Hit]]:
        """The `k` rows most similar (cosine) to each query ([Q, D] or [D], numpy or torch), best first,
        among the rows matching the SQL filter `where` (e.g. "width > 1000", "taken_at >= '2024-01-01'",
        "key LIKE '/photos/2024/%'"). Uses the ANN index unless `exact` or none is built; rows added
        since the index was built are searched exactly either way."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        queries = self._as_vectors(queries, "queries")
        if len(self) == 0:
            return [[] for _ in queries]
        info = self._config.get("index")
        if exact or not self._has_vector_index():
            return self._hits(*self.exact_top_k(queries, k, where))
        if info["type"] == "ivf_flat":
            partitions, nprobes = self._partitions, info["search"]["nprobes"]
            if where is None:  # every query's positions, then all their rows in one read
                found = list(_ann_workers().map(lambda q: nearest_positions(partitions, q, k, nprobes), queries))
                return self._hits_at(partitions, found)

            def one(query: np.ndarray) -> list[Hit]:
                rows, scores = search_filtered(self, partitions, query, k, nprobes, where)
                return [_hit(row, float(score)) for row, score in zip(rows, scores)]

        else:

            def one(query: np.ndarray) -> list[Hit]:
                return self._ann_search(query, k, where, info["search"])

        # one query per worker thread, each worker with one torch thread (see _ann_workers)
        return list(_ann_workers().map(one, queries))

    def exact_top_k(self, queries: np.ndarray, k: int, where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids [Q, k'], scores [Q, k']) of exact search, best first: the vectors are read in blocks of
        BLOCK_ROWS rows and scored by `torchclip.store.exact`, so memory stays bounded at any store size.
        `queries` must be normalised float32."""
        best = TopK(len(queries), k)
        scanner = self._scanner(
            columns=["id", "vector"], filter=where, batch_size=BLOCK_ROWS, batch_readahead=2, fragment_readahead=1
        )
        for batch in self._guarded(scanner.to_batches(), where):
            if batch.num_rows:
                vectors = stored_vectors(batch.column("vector"), self.dim)
                positions, scores = block_candidates(vectors, queries, k, floor=best.floor())
                best.add(batch.column("id").to_numpy()[positions], scores)
        return best.result()

    def _hits(self, ids: np.ndarray, scores: np.ndarray) -> list[list[Hit]]:
        rows = {row["id"]: row for row in self.rows(np.unique(ids).tolist())}
        return [
            [_hit(rows[i], s) for i, s in zip(row_ids.tolist(), row_scores.tolist())]
            for row_ids, row_scores in zip(ids, scores)
        ]

    @staticmethod
    def _hits_at(partitions: Partitions, found: list[tuple[np.ndarray, np.ndarray]]) -> list[list[Hit]]:
        """Hits from each query's (positions, scores) in one version of the table, read in one take."""
        every = np.concatenate([np.zeros(0, np.int64), *(positions for positions, _ in found)])
        unique, where_in = np.unique(every, return_inverse=True)  # a row two queries found is read once
        rows = partitions.positions.take(unique, ROW_COLUMNS).to_pylist()
        hits, start = [], 0
        for positions, scores in found:
            picked = where_in[start : start + len(positions)].tolist()
            hits.append([_hit(rows[n], score) for n, score in zip(picked, scores.tolist())])
            start += len(positions)
        return hits

    def _ann_search(self, query: np.ndarray, k: int, where: str | None, params: dict[str, Any]) -> list[Hit]:
        nearest = {"column": "vector", "q": query, "k": k, "metric": "dot", **params}
        try:
            table = self._dataset.to_table(columns=ROW_COLUMNS, nearest=nearest, filter=where, prefilter=True)
        except ValueError as exc:
            raise self._bad_filter(where, exc) from None
        except (OSError, RuntimeError) as exc:
            raise _lance_error(self.folder, exc, self._dataset) from None
        scores = 1.0 - table.column("_distance").to_numpy()  # Lance's dot distance is 1 - dot
        return [_hit(row, float(score)) for row, score in zip(table.select(ROW_COLUMNS).to_pylist(), scores)]

    # ------------------------------------------------------------------ the ANN index

    def _has_vector_index(self) -> bool:
        """Whether this generation has the vector index store.json describes (looked up once per generation)."""
        if self._indexed_generation[0] != self.generation:
            info = self._config.get("index") or {"type": "flat"}
            self._partitions = None
            if info["type"] == "ivf_flat":
                self._partitions = Partitions.of(self)
                present = self._partitions is not None
            else:
                indexes = self._dataset.describe_indices()
                present = info["type"] != "flat" and any(index.name == "vector_idx" for index in indexes)
            self._indexed_generation = (self.generation, present)
        return self._indexed_generation[1]

    def index_info(self) -> dict[str, Any]:
        """The ANN index: {"type": "flat"|"hnsw"|"ivf_flat"|"ivf_pq"|None, "rows_indexed", "rows_unindexed",
        "recall@10", "built_at", "build_seconds", "search", ...}; type None when none was ever built.
        Rows added since the build ("rows_unindexed") are searched exactly."""
        info = {"type": None, "rows_indexed": 0, "recall@10": None, "built_at": None}
        info.update(self._config.get("index") or {})
        if info["type"] == "ivf_flat" and self._has_vector_index():
            info["rows_indexed"] = self._partitions.indexed
            info["rows_unindexed"] = self._partitions.positions.rows - self._partitions.indexed
        elif info["type"] not in (None, "flat") and self._has_vector_index():
            stats = self._dataset.stats.index_stats("vector_idx")
            info["rows_indexed"] = stats["num_indexed_rows"]
            info["rows_unindexed"] = stats["num_unindexed_rows"]
        else:
            info["rows_unindexed"] = max(0, len(self) - info["rows_indexed"])
        return info

    def build_index(self, index_type: str = "auto", k: int = 10, queries: int = 1000, seed: int = 0) -> dict[str, Any]:
        """Build the ANN index chosen by size (see `torchclip.store.ann`), measure its recall@k against
        exact search on up to `queries` stored vectors, and record both; returns `index_info()`."""
        with self.writing():
            info = build_vector_index(self, index_type)
            self._config["index"] = info
            self._dataset = self._open_table()
            tune = info["search"] if info["type"] == "ivf_flat" else None
            info.update(measure_recall(self, k, queries, seed, tune_nprobes=tune))
            self.folder.write_json(CONFIG, self._config)
        return self.index_info()


def _vectors(column: pa.Array, dim: int) -> np.ndarray:
    """A fixed-size-list column as a [N, D] float32 array."""
    return stored_vectors(column, dim).astype(np.float32, copy=False)


def _unknowns_as_none(row: dict[str, Any]) -> dict[str, Any]:
    """The row with the 0 that stands for an unknown number (see `row_schema`) as None."""
    return {name: None if name in NUMBERS_UNKNOWN_AS_ZERO and value == 0 else value for name, value in row.items()}


def _hit(row: dict[str, Any], score: float) -> Hit:
    known = _unknowns_as_none(row)
    metadata = {name: known[name] for name in METADATA_COLUMNS if known.get(name) is not None}
    return Hit(row["id"], row["key"], score, row.get("text") or "", metadata)


def rows_table(
    dim: int,
    vector_dtype: str,
    keys: Sequence[str],
    vectors: np.ndarray,
    texts: Sequence[str] | None = None,
    metadata: Sequence[dict[str, Any]] | None = None,
) -> pa.Table:
    """Rows without ids as an Arrow table of `row_schema` minus `id`; `vectors` already normalised."""
    schema = row_schema(dim, vector_dtype)
    metadata = metadata or [{}] * len(keys)
    columns: dict[str, Any] = {"key": list(keys)}
    for name in METADATA_COLUMNS:
        columns[name] = [entry.get(name) for entry in metadata]
    columns["text"] = list(texts) if texts is not None else [""] * len(keys)
    flat = np.ascontiguousarray(vectors, dtype=np.float16 if vector_dtype == "float16" else np.float32).ravel()
    columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(flat), dim)
    names = [name for name in schema.names if name != "id"]
    return pa.table({name: columns[name] for name in names}, schema=pa.schema([schema.field(n) for n in names]))
