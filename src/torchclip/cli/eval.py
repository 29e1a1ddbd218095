"""`torchclip eval`: zero-shot classification (top-1/top-5, prompt ensembling) and image<->text retrieval (recall@K)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from torchclip.cli.common import add_model_options, bundled_model_path

EXAMPLES = """examples:
  torchclip eval --task zeroshot --data synthetic-heldout       # the bundled model on unseen colour x shape pairs
  torchclip eval --model runs/ft/model --task zeroshot --data imagenet_val/ --templates "a photo of a {}."
  torchclip eval --model runs/ft/model --task retrieval --data val_pairs.csv --json metrics.json

--data for zeroshot: synthetic-heldout, synthetic-seen, or a folder with one sub-folder of images per class
(the sub-folder name, with '_' read as a space, is the class name). For retrieval: synthetic, a .csv/.tsv of
(path, caption), a folder of images with same-named .txt captions, or tar shards.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="zero-shot accuracy and retrieval recall of a model",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    parser.add_argument("--task", choices=["zeroshot", "retrieval"], required=True)
    parser.add_argument("--data", required=True, help="what to evaluate on (see below)")
    parser.add_argument("--templates", nargs="+", default=None, help="prompt templates with {} for the class name")
    parser.add_argument("--per-class", type=int, default=50, help="synthetic zero-shot: images per class")
    parser.add_argument("--num-samples", type=int, default=1000, help="retrieval: pairs to use (at most)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the synthetic evaluation images")
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    return parser


def _image_folder(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    from torchclip.train.data import IMAGE_EXTENSIONS

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{folder}: expected one sub-folder of images per class")
    paths, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(path)
                labels.append(label)
    if not paths:
        raise ValueError(f"{folder}: no images in its class sub-folders")
    return paths, labels, [name.replace("_", " ") for name in classes]


def _retrieval_pairs(spec: str, limit: int, seed: int, image_size: int) -> tuple[list, list[str]]:
    """Up to `limit` good (image, caption) pairs from any training data source, bad ones skipped."""
    from torchclip.train.data import BadSample, open_source

    source = open_source(spec, seed, image_size)
    images, captions = [], []
    for item in source.items(0, 0, 1):
        try:
            image, caption = source.decode(item)
        except BadSample:
            continue
        images.append(image)
        captions.append(caption)
        if len(images) == limit:
            break
    return images, captions


def run(args: argparse.Namespace) -> int:
    import torch

    from torchclip import evaluate
    from torchclip.train.trainer import load_checkpoint

    model, processor = load_checkpoint(str(args.model or bundled_model_path()))
    model = model.to(args.device, getattr(torch, args.dtype)).eval()
    if processor is None:
        raise ValueError(f"{args.model}: no tokenizer/preprocessor files next to the weights")
    if args.task == "zeroshot":
        if args.data in ("synthetic-heldout", "synthetic-seen"):
            split = args.data.removeprefix("synthetic-")
            metrics = evaluate.synthetic_zero_shot(model, processor, split, args.per_class, args.seed)
        else:
            paths, labels, classes = _image_folder(Path(args.data))
            templates = args.templates or evaluate.DEFAULT_TEMPLATES
            metrics = evaluate.zero_shot_accuracy(model, processor, paths, labels, classes, templates)
            metrics.update(images=len(paths), classes=len(classes))
    else:
        images, captions = _retrieval_pairs(
            args.data, args.num_samples, args.seed, model.config.vision_config.image_size
        )
        metrics = evaluate.retrieval_metrics(model, processor, images, captions)
        metrics["pairs"] = len(images)
    metrics = {"task": args.task, "data": args.data, "model": str(args.model or bundled_model_path()), **metrics}
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0
