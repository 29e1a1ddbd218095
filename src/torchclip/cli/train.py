"""`torchclip train`: contrastive training or fine-tuning; `torchrun ... -m torchclip.train` for several processes."""

from __future__ import annotations

import argparse
import json
import logging
from typing import TYPE_CHECKING

from torchclip.datasets.bad_samples import MAX_BAD_IN_ROW

if TYPE_CHECKING:
    from torchclip.train.config import TrainConfig

EXAMPLES = """examples:
  torchclip train --recipe synthetic-small --output runs/small          # the bundled model, from scratch
  torchclip train --model openai/clip-vit-base-patch32 --data pairs.csv --output runs/ft --lr 1e-5 --steps 2000
  torchclip train --model runs/ft/model --data 'shards/{00000..00099}.tar' --lock-image --output runs/lit
  torchclip train --output runs/small --recipe synthetic-small --resume  # continue after a kill
  torchclip train --output runs/small --recipe synthetic-small --overwrite   # start that run again from step 0
  torchrun --nproc_per_node 4 -m torchclip.train --recipe synthetic-small --output runs/ddp
"""


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Every TrainConfig field as an option; unset options keep the recipe's (or the default) value."""
    add = parser.add_argument
    add("--recipe", default=None, help="start from a named recipe (e.g. synthetic-small); other options override it")
    add("--output", dest="output_dir", default=None, help="run folder: checkpoints, metrics, the final model")
    add("--data", default=None, help="'synthetic', a .csv/.tsv of (path, caption), a folder of image+.txt, tar shards")
    add("--model", default=None, help="checkpoint to fine-tune (HF folder, hub id, OpenAI/OpenCLIP file)")
    add("--model-config", dest="model_config", type=json.loads, default=None, help="CLIPConfig JSON for random init")
    add("--image-size", dest="image_size", type=int, default=None,
        help="fine-tune --model at this input size (its position embeddings resized)")  # fmt: skip
    add("--steps", type=int, default=None, help="optimiser steps")
    add("--batch-size", dest="batch_size", type=int, default=None, help="pairs per micro-batch per process")
    add("--accum-steps", dest="accum_steps", type=int, default=None, help="micro-batches per optimiser step")
    add("--lr", type=float, default=None, help="peak learning rate")
    add("--min-lr", dest="min_lr", type=float, default=None, help="learning rate at the end of the cosine")
    add("--warmup-steps", dest="warmup_steps", type=int, default=None)
    add("--weight-decay", dest="weight_decay", type=float, default=None, help="AdamW decay (not on gains/biases)")
    add("--grad-clip", dest="grad_clip", type=float, default=None, help="max gradient norm (0: no clipping)")
    add("--precision", choices=["fp32", "bf16"], default=None, help="bf16: autocast forward passes")
    add("--grad-checkpointing", dest="grad_checkpointing", action="store_true", default=None)
    add("--lock-image", dest="lock_image", action="store_true", default=None, help="freeze the image tower (LiT)")
    add("--lock-text", dest="lock_text", action="store_true", default=None, help="freeze the text tower")
    add("--local-loss", dest="local_loss", action="store_true", default=None, help="each rank: its rows only")
    add("--workers", type=int, default=None, help="DataLoader worker processes per rank")
    add("--seed", type=int, default=None)
    add("--save-every", dest="save_every", type=int, default=None, help="checkpoint every N steps")
    add("--log-every", dest="log_every", type=int, default=None, help="metrics line every N steps")
    add("--wise-ft", dest="wise_ft", type=float, default=None,
        help="export (1-A)*start + A*trained weights (WiSE-FT; fine-tuning only)")  # fmt: skip
    add("--save-dtype", dest="save_dtype", choices=["float32", "float16", "bfloat16"], default=None)
    add("--device", default=None, help="cpu, cuda (= cuda:LOCAL_RANK) or cuda:N; default: cuda if available, else cpu")
    add("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    add("--max-bad-in-row", dest="max_bad_in_row", type=int, default=None,
        help=f"stop when this many samples in a row are unusable (default: {MAX_BAD_IN_ROW})")  # fmt: skip
    add("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    add("--overwrite", action="store_true", help="start again in an --output folder that holds a run")
    add("--stop-after", dest="stop_after", type=int, default=None, help="stop (as if killed) after N steps")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The recipe's settings (if any), overridden by every option given."""
    # imported here, as in every subcommand: `torchclip --help` and the other commands start without torch
    from torchclip.train.config import TrainConfig
    from torchclip.train.recipes import get_recipe

    settings = get_recipe(args.recipe) if args.recipe else {}
    for name in TrainConfig.__dataclass_fields__:
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    for required in ("data", "output_dir"):
        if settings.get(required) is None:
            raise ValueError(f"--{required.removesuffix('_dir')} is required (or a --recipe that sets it)")
    return TrainConfig(**settings)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a CLIP model",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from torchclip.train.trainer import train  # imported here: see config_from_args

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = config_from_args(args)
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --output and --overwrite starts it again: give one")
    out = train(config, resume=args.resume, stop_after=args.stop_after, overwrite=args.overwrite)
    print(f"run folder: {out}")
    return 0
