"""`torchclip search`: the stored images (or captions) most similar to a text or an image."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from torchclip.cli.common import add_model_options, add_truncate_option, load_model_and_processor
from torchclip.cli.similarity import add_plot_options

EXAMPLES = """examples:
  torchclip search pictures.emb "a dog on a beach"             # text -> images
  torchclip search pictures.emb --image query.jpg -k 20        # image -> similar images
  torchclip search captions.emb --image photo.jpg              # image -> captions (a store of --texts)
  torchclip search pictures.emb "sunset" "snow" --json --plot top.png

The model defaults to the one the store was embedded with. Search is exact unless a faiss index built by
`torchclip index` matches the store (--exact forces exact search).
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "search",
        help="text-to-image, image-to-image and image-to-text search in an embedding store",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("store", help="a folder written by torchclip embed")
    parser.add_argument("queries", nargs="*", help="text queries")
    parser.add_argument("--image", action="append", default=[], help="an image query (repeatable)")
    parser.add_argument("-k", type=int, default=10, help="results per query (default: 10)")
    parser.add_argument("--exact", action="store_true", help="exact search even when a faiss index exists")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a list")
    add_plot_options(parser)
    add_truncate_option(parser)
    add_model_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from torchclip.evaluate import encode_images, encode_texts
    from torchclip.index import EmbeddingStore, model_fingerprint

    if not args.queries and not args.image:
        raise ValueError("give a text query, or --image FILE")
    store = EmbeddingStore(args.store)
    for image in args.image:
        if not Path(image).is_file():
            raise FileNotFoundError(f"query image {image!r} does not exist")
    args.model = args.model or store.model["name"]
    model, processor = load_model_and_processor(args)
    if model_fingerprint(model) != store.model["fingerprint"]:
        raise ValueError(f"{args.store} was embedded with another model ({store.model['name']}); search with that one")
    with torch.inference_mode():
        parts = []
        if args.queries:
            parts.append(encode_texts(model, processor.tokenizer, args.queries, args.batch_size, args.truncate))
        if args.image:
            parts.append(encode_images(model, processor.image_processor, args.image, args.batch_size))
    queries = [*args.queries, *(f"image {image}" for image in args.image)]
    if store.stale_faiss_index() and not args.exact:
        print(f"torchclip search: the faiss index is older than {args.store}; searching exactly", file=sys.stderr)
    hits = store.search(torch.cat(parts).cpu(), args.k, exact=args.exact)
    if args.json:
        print(json.dumps([{"query": q, "results": [h.as_dict() for h in r]} for q, r in zip(queries, hits)], indent=2))
    else:
        for query, results in zip(queries, hits):
            print(query)
            for rank, hit in enumerate(results, 1):
                print(f"  {rank:>3}. {hit.score:.4f}  {hit.key}" + (f"  {hit.text}" if hit.text else ""))
    if args.plot:
        if store.kind != "image":
            raise ValueError("--plot draws image results; this store holds texts")
        from torchclip.plots import search_grid

        results = [(hit.key, f"{hit.score:.3f}  {Path(hit.key).name}") for hit in hits[0]]
        search_grid(results, args.plot, size=args.plot_size, title=f"top {len(results)}: {queries[0]}")
    return 0
