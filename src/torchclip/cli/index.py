"""`torchclip index`: build a faiss index over a store, for fast approximate search of large collections."""

from __future__ import annotations

import argparse
import json

EXAMPLES = """examples:
  torchclip index pictures.emb                 # type chosen by size: flat <= 10k, hnsw <= 1M, ivf beyond
  torchclip index pictures.emb --type ivf      # force a type

The index answers `torchclip search` until the store changes (re-run this after torchclip embed).
Its recall@K against exact search, measured on up to 1,000 stored vectors as queries, is printed and kept
in STORE/faiss.json. Needs faiss: pip install 'torchclip[faiss]'.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "index",
        help="build a faiss index over an embedding store (needs faiss)",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("store", help="a folder written by torchclip embed")
    parser.add_argument("--type", default="auto", choices=["auto", "flat", "hnsw", "ivf"], help="index type")
    parser.add_argument("-k", type=int, default=10, help="K of the recall@K measured against exact search")
    parser.add_argument("--json", action="store_true", help="print the index's description as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    from torchclip.index import EmbeddingStore, build_faiss_index

    info = build_faiss_index(EmbeddingStore(args.store), args.type, args.k)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(
            f"{args.store}: {info['type']} faiss index over {info['n']} vectors; recall@{info['k']} against "
            f"exact search {info['recall_at_k']:.4f} ({info['queries']} queries)"
        )
    return 0
