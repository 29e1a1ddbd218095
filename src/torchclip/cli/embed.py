"""`torchclip embed`: embed a photo collection (or captions) into a store that later runs keep up to date.

Under torchrun, one process per rank, through the package's `python -m torchclip.cli` (= `torchclip`):

    torchrun --nproc_per_node 4 -m torchclip.cli embed PHOTOS --out STORE

Each process embeds every 4th file not yet in the store and rank 0 merges their parts. Across machines,
run torchrun on each with --nnodes/--node_rank/--rdzv_endpoint as usual; STORE must be on a file system
every machine sees.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchclip.cli.common import add_model_options, add_truncate_option, bundled_model_path, load_model_and_processor

EXAMPLES = """examples:
  torchclip embed ~/Pictures --out pictures.emb           # every image under the folder, recursively
  torchclip embed ~/Pictures --out pictures.emb           # again later: only added/changed/deleted files
  torchclip embed list.txt --out picked.emb                # image paths listed one per line
  torchclip embed captions.csv --texts --column caption --out captions.emb
  torchclip embed --vectors vectors.npy --keys keys.txt --out mine.emb   # bring your own embeddings
  torchrun --nproc_per_node 4 -m torchclip.cli embed ~/Pictures --out pictures.emb   # 4 processes share it

An interrupted run resumes where it stopped when started again with the same --out (rows are committed
every --commit-every rows or 30 seconds). Files that cannot be read are listed in OUT/failures.json and
skipped (exit code 1); after 1,000 unreadable files in a row the run stops. Without --model, a store keeps
the model it was first embedded with (else the bundled model). One process writes to a store at a time.
Then: torchclip index OUT (for large stores), torchclip search OUT "a query".
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "embed",
        help="embed a folder of images (or a caption file) into a resumable, incremental store",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source", nargs="?", help="a folder of images, a text file listing image paths, or (--texts) captions"
    )
    parser.add_argument("--out", required=True, help="the store folder (created, or updated when it exists)")
    parser.add_argument("--texts", action="store_true", help="SOURCE is captions: a .txt (one per line) or .csv/.tsv")
    parser.add_argument("--column", default=None, help="--texts with a CSV: the caption column's name")
    parser.add_argument("--rebuild", action="store_true", help="discard the store's contents and embed everything")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: cores, max 8)")
    parser.add_argument(
        "--commit-every", type=int, default=1024, help="rows per atomic commit (default: 1024; also every 30 s)"
    )
    parser.add_argument(
        "--vector-dtype",
        default="float32",
        choices=["float32", "float16"],
        help="how a new store keeps its vectors: float16 halves the disk (--dtype is the model's weights)",
    )
    parser.add_argument("--vectors", default=None, help="bring your own: an [N, D] .npy of embeddings (with --keys)")
    parser.add_argument("--keys", default=None, help="with --vectors: a text file of N keys, one per line")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_truncate_option(parser)
    parser.add_argument(
        "--fast-decode",
        action="store_true",
        help="decode JPEGs at reduced size (Pillow's draft mode, at least 2x the model's input): about 2x faster "
        "decoding, pixels within ~1 intensity level on average of the exact path (off by default). With "
        "--device cuda and torchvision: JPEGs decoded by nvJPEG on the GPU and resized there bit-exactly",
    )
    add_model_options(parser)
    return parser


def add_own_vectors(args: argparse.Namespace) -> int:
    """`--vectors FILE.npy --keys FILE.txt`: add precomputed embeddings (a key already stored is replaced)."""
    import numpy as np

    from torchclip.store import EmbeddingStore

    if not args.keys:
        raise ValueError("--vectors needs --keys: a text file with one key per row of the .npy")
    vectors = np.load(args.vectors, allow_pickle=False, mmap_mode="r")
    if vectors.ndim != 2:
        raise ValueError(f"{args.vectors!r}: expected an [N, D] array, got shape {list(vectors.shape)}")
    keys = [line for line in Path(args.keys).read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(keys) != len(vectors):
        raise ValueError(f"{args.keys!r} holds {len(keys)} keys but {args.vectors!r} {len(vectors)} vectors")
    out = Path(args.out)
    if (out / "store.json").is_file() and not args.rebuild:
        store = EmbeddingStore(out)
    else:
        model = {"name": args.model, "fingerprint": None, "dim": int(vectors.shape[1])}
        store = EmbeddingStore.create(
            out,
            kind="text" if args.texts else "image",
            model=model,
            source=str(Path(args.vectors).resolve()),
            vector_dtype=args.vector_dtype,
            replace=args.rebuild,
        )
    step = 65_536
    with store.writing():
        for start in range(0, len(keys), step):
            store.add(keys[start : start + step], np.asarray(vectors[start : start + step], dtype=np.float32))
    print(f"{out}: {len(store)} {store.kind} embeddings ({len(keys)} added from {args.vectors})")
    return 0


def run(args: argparse.Namespace) -> int:
    import torch.distributed

    from torchclip.distributed import init_distributed
    from torchclip.embed import check_text_lengths
    from torchclip.store import EmbeddingStore, image_items, text_items, update_store
    from torchclip.store.update import validate_options

    kind = "text" if args.texts else "image"
    validate_options(kind, args.batch_size, args.workers, args.commit_every, 30.0, 1)  # before anything is made
    if args.vectors:
        return add_own_vectors(args)
    if not args.source:
        raise ValueError("give the SOURCE to embed (a folder, a list of paths, or --texts captions), or --vectors")
    env, device = init_distributed(args.device)  # under torchrun: this process's rank and device
    rank, world, args.device = env.rank, env.world_size, str(device)
    out = Path(args.out)
    if args.model is None and (out / "store.json").is_file() and not args.rebuild:
        args.model = EmbeddingStore(out).model["name"]
    model_name = args.model or str(bundled_model_path())
    if Path(model_name).exists():
        model_name = str(Path(model_name).resolve())
    model, processor = load_model_and_processor(args)
    processor.image_processor.fast_jpeg_decode = args.fast_decode
    if args.texts:
        items = text_items(args.source, args.column)
        check_text_lengths(processor.tokenizer, [item.text for item in items], args.truncate)
    else:
        items = image_items(args.source, exclude=[out])
    barrier = torch.distributed.barrier if world > 1 else (lambda: None)
    report = update_store(
        out,
        items,
        model,
        processor,
        kind=kind,
        model_name=model_name,
        source=str(Path(args.source).resolve()),
        batch_size=args.batch_size,
        num_workers=args.workers,
        commit_every=args.commit_every,
        vector_dtype=args.vector_dtype,
        rebuild=args.rebuild,
        progress=not args.quiet,
        rank=rank,
        world_size=world,
        barrier=barrier,
    )
    if rank != 0:
        return 0
    store = EmbeddingStore(out)
    failures = store.failures()
    print(
        f"{out}: {len(store)} {kind} embeddings ({report.added} new, {report.removed} removed, "
        f"{report.unchanged} unchanged){f' in {world} processes' if world > 1 else ''}"
    )
    if failures:
        print(
            f"{len(failures)} file(s) could not be read and were skipped (see {out / 'failures.json'}):",
            file=sys.stderr,
        )
        for failure in failures[:20]:
            print(f"  {failure['key']}: {failure['error']}", file=sys.stderr)
        return 1
    return 0
