"""An `embed` run: bring a store in step with its source, in three steps.

1. `find_changes`: compare the source's items with the stored rows by key and (size, mtime) (texts by
   their content): rows of deleted or changed files are stale, items not in the store are pending.
2. embed the pending items in batches (`embed_items`), decoding images in worker processes.
3. commit (`Commits`): every `commit_every` rows or `commit_seconds`, whichever comes first, the rows are
   appended to the store in one atomic commit, so a killed run resumes where it stopped: an item is only
   embedded when the committed state lacks its key, so nothing is embedded twice or duplicated.

The run holds the store's writer lock from start to end: a second `embed` on the same store stops at
once with a message saying who is writing. A distributed run (torchrun) has every process embed every
world_size-th pending item into its own part table under parts/; rank 0 holds the lock and merges the
parts into the store at the end (and a killed run's parts at the next start, skipping keys already in).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from torchclip.datasets.bad_samples import MAX_UNREADABLE_FILES_IN_ROW
from torchclip.embed import EmbeddedBatch, embed_image_files, embed_text_batches
from torchclip.store.sources import Item, image_metadata
from torchclip.store.table import (
    CONFIG,
    PARTS,
    EmbeddingStore,
    StoreDamagedError,
    check_folder_is_a_store_or_empty,
    rows_table,
    writer_lock,
)

__all__ = ["UpdateReport", "find_changes", "model_fingerprint", "update_store"]


@dataclass
class UpdateReport:
    """What one `update_store` run did; in a distributed run rank 0's report counts all processes' rows
    added, other ranks' their own."""

    added: int = 0
    removed: int = 0
    unchanged: int = 0
    total: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    repaired: str | None = None  # why a damaged store was rebuilt, if it was


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


def find_changes(store: EmbeddingStore, items: list[Item]) -> tuple[list[int], list[Item]]:
    """(ids of stale rows: gone from the source or changed, items not in the store in key order)."""
    current = {item.key: item for item in items}
    stale, stored = [], set()
    for batch in store.iter_batches(columns=["id", "key", "size", "mtime", "text"]):
        for row_id, key, size, mtime, text in zip(*(batch.column(i).to_pylist() for i in range(5))):
            item = current.get(key)
            if item is None or item.changed_from(size, mtime, text or ""):
                stale.append(row_id)
            else:
                stored.add(key)
    return stale, [item for key, item in sorted(current.items()) if key not in stored]


class Commits:
    """Collects embedded rows and commits them every `every` rows or `seconds`, whichever comes first:
    to the store (one process) or to this process's part table (a distributed run)."""

    def __init__(self, store: EmbeddingStore, every: int, seconds: float, part: str | None):
        self.store, self.every, self.seconds, self.part = store, every, seconds, part
        self.items: list[Item] = []
        self.vectors: list[torch.Tensor] = []
        self.metadata: list[dict[str, Any]] = []
        self.committed = 0
        self.last = time.monotonic()

    def add(self, items: list[Item], vectors: torch.Tensor, metadata: list[dict[str, Any]]) -> None:
        self.items += items
        self.vectors.append(vectors)
        self.metadata += metadata
        if len(self.items) >= self.every or time.monotonic() - self.last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        self.last = time.monotonic()
        if not self.items:
            return
        vectors = torch.cat(self.vectors).numpy()
        table = rows_table(
            self.store.dim,
            self.store.vector_dtype,
            [item.key for item in self.items],
            vectors,
            [item.text for item in self.items],
            self.metadata,
        )
        if self.part is None:
            self.store.append_new(table)
        else:
            mode = "append" if Path(self.part).exists() else "create"
            lance.write_dataset(table, self.part, mode=mode)
        self.committed += len(self.items)
        self.items, self.vectors, self.metadata = [], [], []


def _row_metadata(item: Item, kind: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"size": item.size, "mtime": item.mtime}
    if kind == "image":
        try:
            metadata.update(image_metadata(item.key))
        except Exception:  # noqa: BLE001 - it decoded for the model; a header we cannot parse just lacks metadata
            pass
    return metadata


def embed_items(
    model: Any,
    processor: Any,
    items: list[Item],
    kind: str,
    batch_size: int,
    num_workers: int | None,
    on_batch: Callable[[int], None],
) -> Iterator[EmbeddedBatch]:
    """The items' embeddings batch by batch, indices pointing into `items` (image files that cannot be
    read among the batch's failures)."""
    if kind == "image":
        image_processor = getattr(processor, "image_processor", processor)
        paths = [item.key for item in items]
        return embed_image_files(model, image_processor, paths, batch_size, num_workers, on_batch=on_batch)
    return embed_text_batches(model, processor.tokenizer, [item.text for item in items], batch_size, on_batch)


def validate_options(
    kind: str,
    batch_size: int,
    num_workers: int | None,
    commit_every: int,
    commit_seconds: float,
    max_consecutive_failures: int,
) -> None:
    """Refuse bad options before anything is created or loaded."""
    if kind not in ("image", "text"):
        raise ValueError(f"kind must be 'image' or 'text', got {kind!r}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"--workers must be 0 (decode in this process) or more, got {num_workers}")
    if commit_every < 1:
        raise ValueError(f"--commit-every must be at least 1, got {commit_every}")
    if not commit_seconds > 0:
        raise ValueError(f"commit_seconds must be positive, got {commit_seconds}")
    if max_consecutive_failures < 1:
        raise ValueError(f"max_consecutive_failures must be at least 1, got {max_consecutive_failures}")


def update_store(
    folder: str | Path,
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
    commit_seconds: float = 30.0,
    max_consecutive_failures: int = MAX_UNREADABLE_FILES_IN_ROW,
    vector_dtype: str = "float32",
    rebuild: bool = False,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
) -> UpdateReport:
    """Bring the store in `folder` in step with `items`: drop rows of gone or changed items, embed the new
    ones (see the module docstring), record unreadable files in failures.json. Stops with an error after
    `max_consecutive_failures` unreadable items in a row (a source that points at nothing usable), having
    committed what it embedded. A damaged store (a file Lance cannot read) is reported and rebuilt.
    """
    validate_options(kind, batch_size, num_workers, commit_every, commit_seconds, max_consecutive_failures)
    folder = Path(folder)
    identity = {"name": model_name, "fingerprint": model_fingerprint(model), "dim": model.config.projection_dim}
    current = {item.key: item for item in items}
    report = UpdateReport(total=len(current))
    with ExitStack() as held:
        if rank == 0:
            check_folder_is_a_store_or_empty(folder)
            held.enter_context(writer_lock(folder))
            store = _prepare(folder, kind, identity, source, rebuild, vector_dtype, report)
            _merge_parts(store)
            try:
                stale, _ = find_changes(store, items)
            except StoreDamagedError as exc:
                store = _repair(folder, store, exc, report)
                stale = []
            report.removed = store.remove_ids(stale)
        barrier()
        if rank != 0:
            store = EmbeddingStore(folder)
        _, pending = find_changes(store, items)
        report.unchanged = len(current) - len(pending)
        mine = pending[rank::world_size]
        part = str(folder / PARTS / f"rank-{rank}.lance") if world_size > 1 else None
        if part is not None:
            (folder / PARTS).mkdir(exist_ok=True)
        commits = Commits(store, commit_every, commit_seconds, part)
        bar = tqdm(total=len(mine), unit="img" if kind == "image" else "text", disable=not progress or rank != 0)
        consecutive = 0
        try:
            for batch in embed_items(model, processor, mine, kind, batch_size, num_workers, bar.update):
                report.failures += [(mine[i].key, error) for i, error in batch.failures]
                good = [mine[i] for i in batch.indices]
                if good:
                    commits.add(good, batch.features, [_row_metadata(item, kind) for item in good])
                consecutive = _consecutive_failures(consecutive, batch.indices, batch.failures)
                if consecutive >= max_consecutive_failures:
                    commits.flush()
                    _write_failures(store, folder, rank, world_size, report)
                    last_key, last_error = report.failures[-1]
                    tried = len(commits.items) + commits.committed + len(report.failures)
                    raise RuntimeError(
                        f"stopped after {consecutive} unreadable files in a row ({tried} tried, "
                        f"{commits.committed} embedded, {len(report.failures)} unreadable; the last: "
                        f"{last_key}: {last_error}); is the source right? (see {folder / 'failures.json'})"
                    )
            commits.flush()
        finally:
            bar.close()
        report.added = commits.committed
        if world_size > 1:
            _write_failures(store, folder, rank, world_size, report)
        barrier()
        if rank == 0:
            if world_size > 1:
                _merge_parts(store)
                report.added = len(store) - report.unchanged  # every process's rows, not only this one's
            _write_failures(store, folder, rank, world_size, report, merge=world_size > 1)
    barrier()
    return report


def _consecutive_failures(run: int, good: list[int], failed: list[tuple[int, str]]) -> int:
    """The number of unreadable items in a row at the end of this batch, given `run` before it."""
    outcomes = sorted([(i, True) for i in good] + [(i, False) for i, _ in failed])
    for _, ok in outcomes:
        run = 0 if ok else run + 1
    return run


def _write_failures(
    store: EmbeddingStore, folder: Path, rank: int, world_size: int, report: UpdateReport, merge: bool = False
) -> None:
    """failures.json (a distributed run: each rank's parts/failures-N.json, merged by rank 0 at the end)."""
    if world_size > 1 and not merge:
        (folder / PARTS).mkdir(exist_ok=True)
        (folder / PARTS / f"failures-{rank}.json").write_text(json.dumps(report.failures))
        return
    failures = list(report.failures)
    if merge:
        for path in sorted((folder / PARTS).glob("failures-*.json")):
            if path.name != f"failures-{rank}.json":
                failures += [tuple(f) for f in json.loads(path.read_text())]
            path.unlink()
    store.write_failures([{"key": key, "error": error} for key, error in sorted(failures)])


def _prepare(
    folder: Path,
    kind: str,
    identity: dict[str, Any],
    source: str,
    rebuild: bool,
    vector_dtype: str,
    report: UpdateReport,
) -> EmbeddingStore:
    """Open (upgrading an old store) or create the store; refuse to mix models or kinds."""
    if (folder / CONFIG).is_file() and not rebuild:
        try:
            store = EmbeddingStore(folder)
        except StoreDamagedError as exc:
            return _repair(folder, None, exc, report, kind, identity, source, vector_dtype)
        if store.kind != kind:
            raise ValueError(f"{str(folder)!r} holds {store.kind} embeddings, not {kind}; use another --out")
        if store.model.get("fingerprint") != identity["fingerprint"]:
            raise ValueError(
                f"{str(folder)!r} was embedded with another model ({store.model.get('name')}); "
                "pass that --model, or --rebuild to start over with this one"
            )
        store.set_source(source)
        return store
    next_id = _next_id(folder) if rebuild else 0
    return EmbeddingStore.create(
        folder, kind, identity, source, vector_dtype=vector_dtype, next_id=next_id, replace=rebuild
    )


def _next_id(folder: Path) -> int:
    """The id counter of a store being rebuilt, so that ids stay unique over the store's whole life."""
    try:
        return int(json.loads((folder / CONFIG).read_text())["next_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _repair(
    folder: Path,
    store: EmbeddingStore | None,
    error: Exception,
    report: UpdateReport,
    kind: str | None = None,
    identity: dict[str, Any] | None = None,
    source: str | None = None,
    vector_dtype: str | None = None,
) -> EmbeddingStore:
    """Replace a damaged store by a new, empty one (same kind, model and id counter) that this run fills
    from the source; says so on stderr."""
    report.repaired = str(error)
    print(f"torchclip embed: {error}\n  rebuilding {str(folder)!r} from its source", file=sys.stderr)
    if store is not None:
        kind, identity, source, vector_dtype = store.kind, store.model, store.source, store.vector_dtype
    return EmbeddingStore.create(
        folder, kind, identity, source, vector_dtype=vector_dtype, next_id=_next_id(folder), replace=True
    )


def _merge_parts(store: EmbeddingStore) -> None:
    """Fold the part tables of a distributed run (finished or killed) into the store in one commit,
    skipping keys the store already holds (a merge that was killed after its commit), then delete them."""
    parts = sorted((store.folder.path / PARTS).glob("rank-*.lance")) if store.folder.path else []
    if not parts:
        return
    stored = set()
    for batch in store.iter_batches(columns=["key"]):
        stored.update(batch.column("key").to_pylist())
    tables = []
    for part in parts:
        table = lance.dataset(str(part)).to_table()
        keep = np.array([key not in stored for key in table.column("key").to_pylist()], dtype=bool)
        tables.append(table.filter(pa.array(keep)))
        stored.update(table.column("key").to_pylist())
    new = pa.concat_tables(tables)
    if len(new):
        store.append_new(new)
    store.folder.remove_tree(PARTS)
