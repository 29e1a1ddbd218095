"""`python -m torchclip.embed ...` = `torchclip embed ...`; the form torchrun starts, one process per rank:

    torchrun --nproc_per_node 4 -m torchclip.embed PHOTOS --out STORE

Each process embeds every 4th file not yet in the store and rank 0 merges their parts. Across machines,
run torchrun on each with --nnodes/--node_rank/--rdzv_endpoint as usual; STORE must be on a file system
every machine sees.
"""

from __future__ import annotations

import sys

from torchclip.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
