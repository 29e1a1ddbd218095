"""`torchclip store`: look after an embedding store: what it holds, and upgrading an old one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EXAMPLES = """examples:
  torchclip store info pictures.emb        # rows, model, source, generation, index and its recall
  torchclip store upgrade pictures.emb     # a store made by torchclip 0.1 (.npz chunks) -> Lance, in place

An old store is also upgraded on its first use by any command; `upgrade` does it ahead of time. The old
files are deleted only once the new store is committed.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "store",
        help="show what an embedding store holds, or upgrade a store of an older torchclip",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["info", "upgrade"], help="what to do")
    parser.add_argument("store", help="a folder written by torchclip embed")
    parser.add_argument("--json", action="store_true", help="info: print JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    from torchclip.store import EmbeddingStore, upgrade_npz_store

    if args.action == "upgrade":
        if not (Path(args.store) / "store.json").is_file():
            raise FileNotFoundError(f"{args.store!r} is not an embedding store (no store.json)")
        upgraded = upgrade_npz_store(args.store)
        store = EmbeddingStore(args.store)
        print(f"{args.store}: {'upgraded to' if upgraded else 'already'} a Lance store, {len(store)} rows")
        return 0
    store = EmbeddingStore(args.store)
    info = {
        "rows": len(store),
        "kind": store.kind,
        "model": store.model,
        "source": store.source,
        "generation": store.generation,
        "vector_dtype": store.vector_dtype,
        "index": store.index_info(),
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for name, value in info.items():
            print(f"{name:>12}: {value}")
    return 0
