"""Embed a collection too large for one machine with Ray Data, writing Lance fragments into a torchclip
store, committed at the end in one atomic append. UNTESTED: `ray` is not installed in this project's
environment (see docs/applications.md, "Beyond one machine"); the store calls it uses are tested.

    pip install "ray[data]"
    python examples/ray_embed_to_lance.py s3://bucket/photos/ s3://bucket/photos.emb --model /models/clip

The store must exist (make it once with `torchclip embed` on a small folder, or EmbeddingStore.create);
only files whose path is not yet in the store are embedded. Every worker loads the model once and writes
its blocks as Lance fragments (files, not yet part of any version); the driver commits them all in one
`LanceOperation.Append`, so a failed job leaves the store as it was.
"""

from __future__ import annotations

import argparse
import io

import lance
import numpy as np
import pyarrow as pa
import ray
from PIL import Image
from pyarrow import fs

from torchclip.convert import load
from torchclip.embed import embed_images
from torchclip.image_files import IMAGE_EXTENSIONS
from torchclip.store import EmbeddingStore
from torchclip.store.table import rows_table


class Embedder:
    """One per Ray worker: the model and processor, loaded once."""

    def __init__(self, model: str, dim: int, vector_dtype: str):
        self.model, self.processor = load(model)
        self.dim, self.vector_dtype = dim, vector_dtype

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        filesystem, _ = fs.FileSystem.from_uri(str(batch["path"][0]))
        data = [filesystem.open_input_file(fs.FileSystem.from_uri(str(p))[1]).read() for p in batch["path"]]
        images = [Image.open(io.BytesIO(item)).convert("RGB") for item in data]
        vectors = embed_images(self.model, self.processor.image_processor, images).cpu().numpy()
        metadata = [
            {"size": len(data), "width": image.width, "height": image.height} for item, image in zip(data, images)
        ]
        table = rows_table(self.dim, self.vector_dtype, list(batch["path"]), vectors, None, metadata)
        table = table.add_column(0, "id", pa.array(batch["id"], pa.int64()))
        return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a folder or bucket prefix of images")
    parser.add_argument("store", help="an existing torchclip store (local path or s3:// URI)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    store = EmbeddingStore(args.store)
    with store.writing():  # one writer: this job
        stored = {key for batch in store.iter_batches(columns=["key"]) for key in batch.column("key").to_pylist()}
        filesystem, root = fs.FileSystem.from_uri(args.source)
        scheme = args.source.split("://")[0] + "://" if "://" in args.source else ""
        listing = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
        new = sorted(scheme + f.path for f in listing if f.is_file and f".{f.extension.lower()}" in IMAGE_EXTENSIONS)
        new = [path for path in new if path not in stored]
        first = store.reserve_ids(len(new))  # numbered on the driver: unique across all workers
        files = ray.data.from_items([{"path": path, "id": first + n} for n, path in enumerate(new)])
        rows = files.map_batches(
            Embedder,
            fn_constructor_args=(args.model, store.dim, store.vector_dtype),
            concurrency=args.workers,
            batch_size=64,
        )
        schema = store.dataset.schema
        fragments = []
        for block in rows.iter_batches(batch_size=100_000, batch_format="pyarrow"):
            fragments += lance.fragment.write_fragments(store.conform(block), store.dataset.uri, schema=schema)
        operation = lance.LanceOperation.Append(fragments)
        lance.LanceDataset.commit(store.dataset.uri, operation, read_version=store.generation)
    print(f"{args.store}: {len(EmbeddingStore(args.store))} rows")


if __name__ == "__main__":
    main()
