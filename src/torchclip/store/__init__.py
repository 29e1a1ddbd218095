"""The embedding store: photos (or captions) with their embeddings in a Lance table, kept in step with
their source by `torchclip embed`, searched exactly or through an ANN index.

    table.py    the store itself (`EmbeddingStore`, `Hit`): rows, commits, the writer lock, search
    sources.py  what a store follows: image folders, path lists, caption files; image metadata
    update.py   an embed run: find what changed, embed it, commit
    ann.py      the ANN index: chosen by size, recall measured at build
    upgrade.py  stores of torchclip 0.1 (.npz chunks) upgraded in place
    exact.py    exact search, one block of vectors at a time
    malloc.py   glibc's malloc set up so that streamed blocks reuse memory

    from torchclip.store import EmbeddingStore
    store = EmbeddingStore("pictures.emb")
    hits = store.search(query_vectors, k=10, where="taken_at >= '2024-01-01'")
"""

from torchclip.store.ann import choose_index_type
from torchclip.store.sources import Item, image_items, image_metadata, text_items
from torchclip.store.table import EmbeddingStore, Hit, StoreBusyError, StoreDamagedError
from torchclip.store.update import UpdateReport, find_changes, model_fingerprint, update_store
from torchclip.store.upgrade import upgrade_npz_store

__all__ = [
    "EmbeddingStore",
    "Hit",
    "Item",
    "StoreBusyError",
    "StoreDamagedError",
    "UpdateReport",
    "choose_index_type",
    "find_changes",
    "image_items",
    "image_metadata",
    "model_fingerprint",
    "text_items",
    "update_store",
    "upgrade_npz_store",
]
