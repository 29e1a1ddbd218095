"""`torchclip index`: build the approximate-nearest-neighbour index of a store, for fast search of large
collections, and measure its recall against exact search."""

from __future__ import annotations

import argparse
import json

from torchclip.cli.common import add_command

EXAMPLES = """examples:
  torchclip index pictures.emb                 # chosen by size: flat <= 10k, hnsw <= 500k, ivf_flat beyond
  torchclip index pictures.emb --type ivf_pq   # force a type (ivf_pq: a small quantised index)

Rows embedded after the build are searched exactly until the next build (re-run this after large
additions). Its recall@K against exact search, measured with up to 1,000 stored vectors as queries (ties
count as hits), is printed and kept in STORE/store.json.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "index", "build the ANN index of an embedding store, with its measured recall", __doc__, EXAMPLES
    )
    parser.add_argument("store", help="a folder written by torchclip embed")
    parser.add_argument(
        "--type",
        default="auto",
        choices=["auto", "flat", "hnsw", "ivf_flat", "ivf_pq", "ivf"],
        help="index type (ivf = ivf_flat)",
    )
    parser.add_argument("-k", type=int, default=10, help="K of the recall@K measured against exact search")
    parser.add_argument("--queries", type=int, default=1000, help="stored vectors used as recall queries")
    parser.add_argument("--json", action="store_true", help="print the index's description as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    from torchclip.store import EmbeddingStore

    index_type = "ivf_flat" if args.type == "ivf" else args.type
    info = EmbeddingStore(args.store).build_index(index_type, k=args.k, queries=args.queries)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(
            f"{args.store}: {info['type']} index over {info['rows_indexed']} vectors; recall@{args.k} against "
            f"exact search {info[f'recall@{args.k}']:.4f} ({info['recall_queries']} queries); "
            f"built in {info['build_seconds']:.1f} s"
        )
    return 0
