"""`python -m torchclip.train` (and `torchrun --nproc_per_node N -m torchclip.train`): the `torchclip train` command."""

import sys

from torchclip.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
