"""An embedding store for a collection of photos (or captions), kept in step with its source, and search.

Layout of a store folder::

    store.json          the committed state: kind (image/text), model, source, generation, chunk files
    chunks/*.npz        immutable blocks of rows: key (absolute path, or file#row for texts), size,
                        mtime_ns, text, and the L2-normalised float32 vectors
    failures.json       the files the last run could not read, with their errors
    parts/rank-*.json   a distributed run's per-process journals, merged into store.json at its end
    faiss.index, faiss.json   optional approximate-nearest-neighbour index (`build_faiss_index`)

Crash safety: every file is written to a temporary name, flushed to disk and renamed over the old one
(an atomic replace on POSIX file systems), and only `store.json` says which chunks exist. A kill at any
moment therefore leaves either the previous `store.json` or the new one, each naming complete chunks;
chunk files left unreferenced by a kill are deleted at the next run. Runs commit a chunk every
`commit_every` rows, so an interrupted run resumes where it stopped: rows already committed are not
embedded again, and since a key is only ever embedded when the committed state lacks it, nothing is
duplicated.

Incremental updates: a re-run compares the source with the store by key and (size, mtime) (texts by their
content), drops rows of files that were deleted or changed, and embeds only new and changed files.

Search is exact by default (one matrix product in torch). With faiss installed, `build_faiss_index`
picks an index by collection size (`choose_faiss_type`): up to 10,000 vectors a flat index (exact; brute
force is fast at that size); up to 1,000,000 HNSW (graph search, M=32, efSearch=128: the best speed and
recall when the vectors fit in memory); beyond that IVF-Flat with 4*sqrt(N) lists and nprobe=32 (memory
bound, trains in minutes). Its recall@10 against exact search is measured when it is built and reported.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from torchclip.image_files import embed_image_files, find_images

__all__ = [
    "EmbeddingStore",
    "Hit",
    "Item",
    "UpdateReport",
    "build_faiss_index",
    "choose_faiss_type",
    "image_items",
    "model_fingerprint",
    "text_items",
    "update_store",
]

FORMAT_VERSION = 1
MANIFEST = "store.json"
CHUNKS = "chunks"
PARTS = "parts"
FAILURES = "failures.json"
FAISS_INDEX, FAISS_META = "faiss.index", "faiss.json"


# ---------------------------------------------------------------------- atomic files


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write via `write(handle)` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def _write_json(path: Path, data: Any) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(data, indent=1, sort_keys=True) + "\n"), mode="w")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON ({exc}); is this an embedding store?") from None


# ---------------------------------------------------------------------- items: what a source holds


@dataclass(frozen=True)
class Item:
    """One thing to embed: an image file (`text` empty) or a caption. `key` is unique in a store."""

    key: str
    size: int
    mtime_ns: int
    text: str = ""


def image_items(source: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> list[Item]:
    """Every image under a folder (recursively, see `find_images`), or every path listed in a text file
    (one per line, relative to the file's folder; blank lines and lines starting with # skipped)."""
    source = Path(source)
    if source.is_dir():
        paths = find_images(source, exclude)
    elif source.is_file():
        lines = source.read_text(encoding="utf-8").splitlines()
        paths = [source.parent / line.strip() for line in lines if line.strip() and not line.startswith("#")]
    else:
        raise FileNotFoundError(f"{str(source)!r}: no such folder or list file")
    items = {}
    for path in paths:
        path = path.resolve()
        try:
            stat = path.stat()
        except OSError:  # listed but missing: keep it, the embedding step reports it as unreadable
            items[str(path)] = Item(str(path), -1, -1)
            continue
        items[str(path)] = Item(str(path), stat.st_size, stat.st_mtime_ns)
    return sorted(items.values(), key=lambda item: item.key)


def text_items(source: str | os.PathLike, column: str | None = None) -> list[Item]:
    """Captions to embed: a .txt file holds one per line; a .csv/.tsv file one per row, from the column
    named `column` (default: the first of caption/text/title/label in a header row, else the first column).
    Keys are `file#N` (N the 1-based line or row), so an edited line is re-embedded."""
    path = Path(source).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r}: no such text file")
    mtime = path.stat().st_mtime_ns
    if path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
        header = [cell.strip().lower() for cell in rows[0]] if rows else []
        wanted = [column.lower()] if column else ["caption", "text", "title", "label"]
        index = next((header.index(name) for name in wanted if name in header), None)
        if column and index is None:
            raise ValueError(f"{str(path)!r}: no column named {column!r} in its header {rows[0] if rows else []}")
        start = 1 if index is not None else 0
        index = index or 0
        texts = [(n + 1, row[index] if index < len(row) else "") for n, row in enumerate(rows) if n >= start]
    else:
        texts = list(enumerate(path.read_text(encoding="utf-8").splitlines(), start=1))
    return [Item(f"{path}#{n}", len(text.strip().encode()), mtime, text.strip()) for n, text in texts if text.strip()]


def _changed(stored: Item, current: Item) -> bool:
    if current.text or stored.text:
        return stored.text != current.text
    return (stored.size, stored.mtime_ns) != (current.size, current.mtime_ns)


# ---------------------------------------------------------------------- the store


@dataclass
class Hit:
    """One search result: the stored item's key (a path, or file#row), its text (texts only), cosine score."""

    key: str
    score: float
    text: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "score": self.score, **({"text": self.text} if self.text else {})}


class EmbeddingStore:
    """A store folder's committed state (see the module docstring); rows load lazily, all at once."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        manifest = self.folder / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(
                f"{str(self.folder)!r} is not an embedding store (no {MANIFEST}); run torchclip embed"
            )
        self.manifest = _read_json(manifest)
        if self.manifest.get("format") != FORMAT_VERSION:
            raise ValueError(f"{str(manifest)!r}: unsupported store format {self.manifest.get('format')!r}")
        self._rows: tuple[list[Item], np.ndarray] | None = None

    @classmethod
    def create(cls, folder: str | os.PathLike, kind: str, model: dict[str, Any], source: str) -> EmbeddingStore:
        folder = Path(folder)
        (folder / CHUNKS).mkdir(parents=True, exist_ok=True)
        manifest = {"format": FORMAT_VERSION, "kind": kind, "model": model, "source": source}
        _write_json(folder / MANIFEST, {**manifest, "generation": 0, "chunks": []})
        return cls(folder)

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def model(self) -> dict[str, Any]:
        return self.manifest["model"]

    @property
    def generation(self) -> int:
        return self.manifest["generation"]

    def _load(self) -> tuple[list[Item], np.ndarray]:
        if self._rows is None:
            items, vectors = [], []
            for name in self.manifest["chunks"]:
                rows, chunk_vectors = _read_chunk(self.folder / CHUNKS / name)
                items += rows
                vectors.append(chunk_vectors)
            dim = self.model["dim"]
            self._rows = items, np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
        return self._rows

    @property
    def items(self) -> list[Item]:
        return self._load()[0]

    @property
    def vectors(self) -> np.ndarray:
        """[N, D] float32, L2-normalised, row i belonging to `items[i]`."""
        return self._load()[1]

    def __len__(self) -> int:
        return len(self.items)

    def commit(self, chunks: list[str], drop: Iterable[str] = ()) -> None:
        """Atomically make the committed state: the current chunks minus rows whose key is in `drop`
        (their chunks rewritten without them), plus the new `chunks` (already written in chunks/)."""
        drop = set(drop)
        kept, replaced = [], []
        for name in self.manifest["chunks"]:
            if not drop:
                kept.append(name)
                continue
            rows, vectors = _read_chunk(self.folder / CHUNKS / name)
            keep = [i for i, row in enumerate(rows) if row.key not in drop]
            if len(keep) == len(rows):
                kept.append(name)
                continue
            replaced.append(name)
            if keep:
                kept.append(_write_chunk(self.folder, [rows[i] for i in keep], vectors[keep]))
        manifest = {**self.manifest, "generation": self.generation + 1, "chunks": kept + list(chunks)}
        _write_json(self.folder / MANIFEST, manifest)
        self.manifest, self._rows = manifest, None
        for name in replaced:  # no committed state names them any more
            (self.folder / CHUNKS / name).unlink(missing_ok=True)

    def remove_unreferenced(self) -> None:
        """Delete chunk files no committed state names (left by a kill) and stray temporary files."""
        live = set(self.manifest["chunks"])
        for part in _read_parts(self.folder):
            live |= set(part["chunks"])
        for path in (self.folder / CHUNKS).iterdir():
            if path.name not in live:
                path.unlink(missing_ok=True)
        for path in self.folder.glob(".*.tmp-*"):
            path.unlink(missing_ok=True)

    def merge_parts(self) -> None:
        """Fold the journals of a distributed run (finished or killed) into the committed state."""
        parts = _read_parts(self.folder)
        if not parts:
            return
        known = set(self.manifest["chunks"])
        new = [name for part in parts for name in part["chunks"] if name not in known]
        if new:
            self.commit(new)
        for path in (self.folder / PARTS).glob("rank-*.json"):
            path.unlink(missing_ok=True)

    def search(self, queries: torch.Tensor, k: int = 10, exact: bool = False) -> list[list[Hit]]:
        """The `k` stored items most similar (cosine) to each query vector [Q, D]; uses the faiss index
        when one was built for the current state (unless `exact`), else an exact matrix product."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        queries = torch.nn.functional.normalize(torch.as_tensor(queries).float().reshape(-1, self.model["dim"]), dim=-1)
        k = min(k, len(self))
        if k == 0:
            return [[] for _ in range(len(queries))]
        index = None if exact else self.faiss_index()
        if index is not None:
            scores, order = index.search(np.ascontiguousarray(queries.numpy()), k)
            scores, order = torch.from_numpy(scores), torch.from_numpy(order)
        else:
            scores, order = (queries @ torch.from_numpy(self.vectors).t()).topk(k, dim=1)
        items = self.items
        return [
            [Hit(items[i].key, s, items[i].text) for s, i in zip(row_s.tolist(), row_i.tolist()) if i >= 0]
            for row_s, row_i in zip(scores, order)
        ]

    def faiss_index(self) -> Any:
        """The faiss index built for exactly this committed state, or None (none built, faiss missing,
        or the store changed since; `stale_faiss_index` tells which)."""
        meta = self.folder / FAISS_META
        if not meta.is_file() or self.stale_faiss_index():
            return None
        try:
            import faiss
        except ImportError:  # built elsewhere; exact search gives the same answers
            return None

        index = faiss.read_index(str(self.folder / FAISS_INDEX))
        params = _read_json(meta)
        if params["type"] == "hnsw":
            index.hnsw.efSearch = params["ef_search"]
        elif params["type"] == "ivf":
            index.nprobe = params["nprobe"]
        return index

    def stale_faiss_index(self) -> bool:
        """True when a faiss index exists but was built for an earlier state of the store."""
        meta = self.folder / FAISS_META
        return meta.is_file() and _read_json(meta).get("generation") != self.generation

    def failures(self) -> list[dict[str, str]]:
        """The last run's unreadable files: [{"key", "error"}]."""
        path = self.folder / FAILURES
        return _read_json(path) if path.is_file() else []


def _write_chunk(folder: Path, rows: list[Item], vectors: np.ndarray) -> str:
    name = f"chunk-{uuid.uuid4().hex}.npz"
    columns = {
        "keys": np.array([row.key for row in rows], dtype=str),
        "sizes": np.array([row.size for row in rows], dtype=np.int64),
        "mtimes_ns": np.array([row.mtime_ns for row in rows], dtype=np.int64),
        "texts": np.array([row.text for row in rows], dtype=str),
        "vectors": np.ascontiguousarray(vectors, dtype=np.float32),
    }
    _atomic_write(folder / CHUNKS / name, lambda f: np.savez(f, **columns))
    return name


def _read_chunk(path: Path) -> tuple[list[Item], np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        rows = [
            Item(str(k), int(s), int(m), str(t))
            for k, s, m, t in zip(data["keys"], data["sizes"], data["mtimes_ns"], data["texts"])
        ]
        return rows, data["vectors"]


def _read_parts(folder: Path) -> list[dict[str, Any]]:
    return [_read_json(path) for path in sorted((folder / PARTS).glob("rank-*.json"))]


def model_fingerprint(model: Any) -> str:
    """A short hash of the projection weights (in float32): tells whether two models embed alike."""
    exported = getattr(model, "fingerprint", None)  # an ONNX export (torchclip.load_onnx) records its model's
    if isinstance(exported, str):
        return exported
    digest = hashlib.sha256()
    for name in ("text_projection", "visual_projection"):
        weight = getattr(getattr(model, name), "weight", None)
        if weight is not None:
            digest.update(weight.detach().float().cpu().numpy().tobytes())
    digest.update(model.logit_scale.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------- embedding runs


@dataclass
class UpdateReport:
    """What one `update_store` run did; in a distributed run rank 0's report counts all processes' rows
    added, other ranks' their own."""

    added: int = 0
    removed: int = 0
    unchanged: int = 0
    total: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def _embed_texts(
    model: Any, tokenizer: Any, texts: list[str], batch_size: int, on_batch: Callable[[int], None]
) -> Iterator[tuple[list[int], torch.Tensor, list[tuple[int, str]]]]:
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            tokens = tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
            features = model.get_text_features(
                tokens["input_ids"].to(model.device), tokens["attention_mask"].to(model.device)
            )
            on_batch(len(batch))
            yield (
                list(range(start, start + len(batch))),
                torch.nn.functional.normalize(features.float(), dim=-1).cpu(),
                [],
            )


def update_store(
    folder: str | os.PathLike,
    items: list[Item],
    model: Any,
    processor: Any,
    *,
    kind: str,
    model_name: str,
    source: str,
    batch_size: int = 32,
    num_workers: int | None = None,
    commit_every: int = 1024,
    rebuild: bool = False,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
) -> UpdateReport:
    """Bring the store in `folder` in step with `items`: drop rows of gone or changed items, embed the
    new ones (committing every `commit_every` rows), record unreadable files in failures.json.

    For a distributed run every process calls this with its `rank`, the `world_size` and a `barrier`;
    rank 0 prepares the store, each process embeds every world_size-th pending item and journals its
    chunks under parts/, and rank 0 merges the journals at the end.
    """
    if kind not in ("image", "text"):
        raise ValueError(f"kind must be 'image' or 'text', got {kind!r}")
    if commit_every < 1:
        raise ValueError(f"commit_every must be at least 1, got {commit_every}")
    folder = Path(folder)
    identity = {"name": model_name, "fingerprint": model_fingerprint(model), "dim": model.config.projection_dim}
    current = {item.key: item for item in items}
    report = UpdateReport(total=len(current))
    if rank == 0:
        store = _prepare(folder, kind, identity, source, rebuild)
        stale = [row.key for row in store.items if row.key not in current or _changed(row, current[row.key])]
        if stale:
            store.commit([], drop=stale)
        report.removed = len(stale)
    barrier()
    store = EmbeddingStore(folder)
    stored = {row.key for row in store.items}
    pending = [item for key, item in sorted(current.items()) if key not in stored]
    report.unchanged = len(current) - len(pending)
    mine = pending[rank::world_size]

    journal = folder / PARTS / f"rank-{rank}.json"
    written: list[str] = []
    rows: list[Item] = []
    vectors: list[torch.Tensor] = []

    def flush() -> None:
        if not rows:
            return
        written.append(_write_chunk(folder, rows, torch.cat(vectors).numpy()))
        if world_size == 1:
            store.commit(written[-1:])
        else:
            journal.parent.mkdir(exist_ok=True)
            _write_json(journal, {"rank": rank, "chunks": written})
        report.added += len(rows)
        rows.clear()
        vectors.clear()

    bar = tqdm(total=len(mine), unit="img" if kind == "image" else "text", disable=not progress or rank != 0)
    if kind == "image":
        image_processor = getattr(processor, "image_processor", processor)
        batches = embed_image_files(
            model, image_processor, [item.key for item in mine], batch_size, num_workers, on_batch=bar.update
        )
        batches = ((b.indices, b.features, b.failures) for b in batches)
    else:
        batches = _embed_texts(model, processor.tokenizer, [item.text for item in mine], batch_size, bar.update)
    try:
        for indices, features, failures in batches:
            rows.extend(mine[i] for i in indices)
            vectors.append(features)
            report.failures += [(mine[i].key, error) for i, error in failures]
            if len(rows) >= commit_every:
                flush()
        flush()
    finally:
        bar.close()

    if world_size > 1:
        failure_file = folder / PARTS / f"failures-{rank}.json"
        failure_file.parent.mkdir(exist_ok=True)
        _write_json(failure_file, report.failures)
    barrier()
    if rank == 0:
        final = EmbeddingStore(folder)
        final.merge_parts()
        report.added = len(final) - report.unchanged  # every process's rows, not only this one's
        all_failures = list(report.failures)
        for path in sorted((folder / PARTS).glob("failures-*.json")):
            if path.name != f"failures-{rank}.json":
                all_failures += [tuple(f) for f in _read_json(path)]
            path.unlink()
        _write_json(folder / FAILURES, [{"key": key, "error": error} for key, error in sorted(all_failures)])
    barrier()
    return report


def _prepare(folder: Path, kind: str, identity: dict[str, Any], source: str, rebuild: bool) -> EmbeddingStore:
    """Open (recovering from a killed run) or create the store; refuse to mix models or kinds."""
    if (folder / MANIFEST).is_file() and not rebuild:
        store = EmbeddingStore(folder)
        if store.kind != kind:
            raise ValueError(f"{str(folder)!r} holds {store.kind} embeddings, not {kind}; use another --out")
        if store.model["fingerprint"] != identity["fingerprint"]:
            raise ValueError(
                f"{str(folder)!r} was embedded with another model ({store.model['name']}); "
                "pass that --model, or --rebuild to start over with this one"
            )
        store.merge_parts()
        store.remove_unreferenced()
        if store.manifest["source"] != source:
            store.manifest["source"] = source
            store.commit([])
        return store
    leftovers = [
        p.name
        for p in (folder.iterdir() if folder.exists() else [])
        if p.name not in (CHUNKS, PARTS, MANIFEST, FAILURES, FAISS_INDEX, FAISS_META) and not p.name.startswith(".")
    ]
    if leftovers:  # never write into (or, with --rebuild, delete from) a folder that holds other things
        raise FileExistsError(f"{str(folder)!r} exists and is not an embedding store; choose an empty or new folder")
    store = EmbeddingStore.create(folder, kind, identity, source)
    store.remove_unreferenced()
    for path in [folder / FAISS_INDEX, folder / FAISS_META, *(folder / PARTS).glob("*.json")]:
        path.unlink(missing_ok=True)
    return store


# ---------------------------------------------------------------------- faiss


def choose_faiss_type(n: int) -> str:
    """flat up to 10,000 vectors, hnsw up to 1,000,000, ivf beyond (see the module docstring for why)."""
    if n <= 10_000:
        return "flat"
    return "hnsw" if n <= 1_000_000 else "ivf"


def build_faiss_index(store: EmbeddingStore, index_type: str = "auto", k: int = 10, seed: int = 0) -> dict[str, Any]:
    """Build and save a faiss inner-product index over the store's vectors; returns its description with
    `recall_at_k`: the mean overlap of its top-k with exact search's, for up to 1,000 stored vectors used
    as queries."""
    try:
        import faiss
    except ImportError:
        raise ImportError("the faiss index needs faiss: pip install 'torchclip[faiss]' (faiss-cpu)") from None
    vectors = np.ascontiguousarray(store.vectors, dtype=np.float32)
    n, dim = vectors.shape
    if n == 0:
        raise ValueError(f"{str(store.folder)!r} holds no embeddings to index")
    index_type = choose_faiss_type(n) if index_type == "auto" else index_type
    params: dict[str, Any] = {"type": index_type}
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        params["ef_search"] = index.hnsw.efSearch = 128
    elif index_type == "ivf":
        nlist = max(1, min(int(4 * n**0.5), n // 39))  # faiss wants >= 39 training points per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        index.train(vectors[rng.choice(n, min(n, 256 * nlist), replace=False)])
        params.update(nlist=nlist, nprobe=min(nlist, 32))
        index.nprobe = params["nprobe"]
    else:
        raise ValueError(f"index type must be auto, flat, hnsw or ivf, got {index_type!r}")
    index.add(vectors)

    queries = vectors[np.random.default_rng(seed).choice(n, min(n, 1000), replace=False)]
    k = min(k, n)
    _, approximate = index.search(queries, k)
    exact = (torch.from_numpy(queries) @ torch.from_numpy(vectors).t()).topk(k, dim=1).indices.numpy()
    recall = float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approximate, exact)]))
    params.update(n=n, dim=dim, generation=store.generation, recall_at_k=recall, k=k, queries=len(queries))
    _atomic_write(store.folder / FAISS_INDEX, lambda f: f.write(faiss.serialize_index(index).tobytes()))
    _write_json(store.folder / FAISS_META, params)
    return params
