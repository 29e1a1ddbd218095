"""`torchclip search`: the stored images (or captions) most similar to a text or an image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from torchclip.cli.common import add_command, add_model_options, add_truncate_option, load_model_and_processor
from torchclip.cli.similarity import add_plot_options

EXAMPLES = """examples:
  torchclip search pictures.emb "a dog on a beach"             # text -> images
  torchclip search pictures.emb --image query.jpg -k 20        # image -> similar images
  torchclip search captions.emb --image photo.jpg              # image -> captions (a store of --texts)
  torchclip search pictures.emb "sunset" "snow" --json --plot top.png

  torchclip search pictures.emb "a beach" --where "taken_at >= '2024-06-01' AND width > 1000"
  torchclip search pictures.emb "a cat" --where "key LIKE '/photos/2024/%'"

The model defaults to the one the store was embedded with. Search goes through the index built by
`torchclip index` when there is one (rows added since are searched exactly), else exactly (--exact forces
exact search). --where filters on the stored columns: key, size, mtime (seconds since 1970), text, width,
height, taken_at (EXIF date, ISO 8601 text), in SQL.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "search",
        "text-to-image, image-to-image and image-to-text search in an embedding store",
        __doc__,
        EXAMPLES,
    )
    parser.add_argument("store", help="a folder written by torchclip embed")
    parser.add_argument("queries", nargs="*", help="text queries")
    parser.add_argument("--image", action="append", default=[], help="an image query (repeatable)")
    parser.add_argument("-k", type=int, default=10, help="results per query (default: 10)")
    parser.add_argument("--exact", action="store_true", help="exact search even when an ANN index exists")
    parser.add_argument("--where", default=None, help='SQL filter on the stored columns, e.g. "width > 1000"')
    parser.add_argument("--json", action="store_true", help="print JSON instead of a list")
    add_plot_options(parser)
    add_truncate_option(parser)
    add_model_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from torchclip.embed import embed_images, embed_texts
    from torchclip.store import EmbeddingStore, model_fingerprint

    if not args.queries and not args.image:
        raise ValueError("give a text query, or --image FILE")
    store = EmbeddingStore(args.store)
    for image in args.image:
        if not Path(image).is_file():
            raise FileNotFoundError(f"query image {image!r} does not exist")
    if store.model.get("fingerprint") is None and args.model is None:  # vectors brought by the user
        raise ValueError(f"{args.store} holds vectors from an outside model: say which with --model")
    args.model = args.model or store.model["name"]
    model, processor = load_model_and_processor(args)
    if store.model.get("fingerprint") not in (None, model_fingerprint(model)):
        raise ValueError(f"{args.store} was embedded with another model ({store.model['name']}); search with that one")
    with torch.inference_mode():
        parts = []
        if args.queries:
            parts.append(embed_texts(model, processor.tokenizer, args.queries, args.batch_size, args.truncate))
        if args.image:
            parts.append(embed_images(model, processor.image_processor, args.image, args.batch_size))
    queries = [*args.queries, *(f"image {image}" for image in args.image)]
    hits = store.search(torch.cat(parts).cpu(), args.k, exact=args.exact, where=args.where)
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
