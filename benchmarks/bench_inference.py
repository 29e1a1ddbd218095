"""Inference speed and loading memory, torchclip vs transformers, side by side in one process.

    python benchmarks/bench_inference.py [--precision float32] [--repeats 5]

Same as `torchclip bench`; see src/torchclip/bench.py for what each row measures.
"""

import sys

from torchclip.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
