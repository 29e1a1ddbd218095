"""Upgrading a store of torchclip 0.1 (store.json naming .npz chunks) to the Lance store, in place.

The rows are written to rows.lance beside the old files, then store.json is replaced (atomically) by the
new format's: that rename is the commit. A kill before it leaves the old store as it was (the next open
upgrades again, from scratch); the chunks and any faiss index are deleted only after it. Row ids are
given in the old order (0, 1, 2, ...); width, height and taken_at are read from the image files that are
still there unchanged (headers only).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa

from torchclip.store.exact import BLOCK_ROWS
from torchclip.store.sources import image_metadata
from torchclip.store.table import (
    CONFIG,
    FILE_FORMAT,
    FORMAT_VERSION,
    PARTS,
    TABLE,
    _Folder,
    row_schema,
    rows_table,
    writer_lock,
)

__all__ = ["upgrade_npz_store"]

OLD_CHUNKS, OLD_FAISS = "chunks", ("faiss.index", "faiss.json")


def upgrade_npz_store(folder: str | Path) -> bool:
    """Upgrade the 0.1 store in `folder` in place; False if it already is a Lance store."""
    folder = Path(folder)
    with writer_lock(folder):
        manifest = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        if manifest.get("format") != 1:
            return False
        dim, kind = manifest["model"]["dim"], manifest["kind"]
        schema = row_schema(dim)
        counter = iter(range(1 << 62))

        def batches() -> Iterator[pa.RecordBatch]:
            for name in manifest["chunks"]:
                path = folder / OLD_CHUNKS / name
                try:
                    with np.load(path, allow_pickle=False) as chunk:
                        columns = {name: chunk[name] for name in ("keys", "sizes", "mtimes_ns", "texts", "vectors")}
                except (OSError, ValueError, KeyError) as exc:
                    raise ValueError(
                        f"cannot upgrade {str(folder)!r}: chunk {str(path)!r} is unreadable ({exc})"
                    ) from None
                keys = [str(key) for key in columns["keys"]]
                metadata = [
                    _metadata(key, int(size), int(mtime_ns), kind)
                    for key, size, mtime_ns in zip(keys, columns["sizes"], columns["mtimes_ns"])
                ]
                table = rows_table(
                    dim, "float32", keys, columns["vectors"], [str(t) for t in columns["texts"]], metadata
                )
                ids = pa.array([next(counter) for _ in keys], pa.int64())
                table = table.add_column(0, schema.field("id"), ids)
                yield from table.select(schema.names).to_batches()

        shutil.rmtree(folder / TABLE, ignore_errors=True)  # an upgrade that was killed before its commit
        batches_reader = pa.RecordBatchReader.from_batches(schema, batches())
        lance.write_dataset(
            batches_reader,
            str(folder / TABLE),
            schema=schema,
            data_storage_version=FILE_FORMAT,
            max_rows_per_group=BLOCK_ROWS,
        )
        rows = lance.dataset(str(folder / TABLE)).count_rows()
        config = {
            "format": FORMAT_VERSION,
            "kind": kind,
            "model": manifest["model"],
            "source": manifest.get("source"),
            "next_id": rows,
            "vector_dtype": "float32",
            "index": None,
            "upgraded_from": "npz (format 1)",
        }
        _Folder(folder, None).write_json(CONFIG, config)  # the commit
        shutil.rmtree(folder / OLD_CHUNKS, ignore_errors=True)
        shutil.rmtree(folder / PARTS, ignore_errors=True)
        for name in OLD_FAISS:
            (folder / name).unlink(missing_ok=True)
    return True


def _metadata(key: str, size: int, mtime_ns: int, kind: str) -> dict:
    metadata = {"size": size, "mtime": mtime_ns / 1e9}
    path = Path(key)
    if kind == "image":
        try:
            stat = path.stat()
            if (stat.st_size, stat.st_mtime_ns) == (size, mtime_ns):
                metadata.update(image_metadata(path))
        except Exception:  # noqa: BLE001 - gone or unreadable: the next embed run sees it
            pass
    return metadata
