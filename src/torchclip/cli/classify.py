"""`torchclip classify`: zero-shot classification of images into labels given as words."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from torchclip.cli.common import add_model_options, load_model_and_processor

EXAMPLES = """examples:
  torchclip classify photo.jpg --labels cat dog "a bird"
  torchclip classify photos/*.jpg --labels-file imagenet_classes.txt --templates imagenet --top-k 5
  torchclip classify photo.jpg --labels cat dog --templates "a drawing of a {}." "a photo of a {}." --json

--templates takes a set's name (default, imagenet = the paper's 80 prompts, imagenet-7, photo, none) or
templates with {} where the label goes; the label embeddings average all of them (prompt ensembling).
Scores are softmax probabilities over the given labels. Unreadable images are reported and skipped (exit 1).
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "classify",
        help="zero-shot classification of images into the labels you name",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", help="image files")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", nargs="+", help="the candidate labels")
    labels.add_argument("--labels-file", help="a text file with one label per line")
    parser.add_argument("--templates", nargs="+", default=["default"], help="template set name or templates with {}")
    parser.add_argument("--top-k", type=int, default=5, help="labels to show per image (default: 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_model_options(parser)
    return parser


def read_labels(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"labels file {path!r} does not exist")
    labels = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not labels:
        raise ValueError(f"labels file {path!r} has no labels")
    return labels


def run(args: argparse.Namespace) -> int:
    import torch

    from torchclip.image_files import embed_image_files
    from torchclip.zero_shot import ZeroShotClassifier

    labels = args.labels or read_labels(args.labels_file)
    templates = args.templates[0] if len(args.templates) == 1 else args.templates
    for image in args.images:
        if not Path(image).is_file():
            raise FileNotFoundError(f"image {image!r} does not exist")
    model, processor = load_model_and_processor(args)
    classifier = ZeroShotClassifier(model, processor, labels, templates, batch_size=args.batch_size)
    indices, features, failures = [], [], []
    for batch in embed_image_files(model, processor.image_processor, args.images, args.batch_size):
        indices += batch.indices
        features.append(batch.features)
        failures += batch.failures
    rankings = classifier.rank(torch.cat(features), args.top_k) if indices else []
    results = [{"image": args.images[i], "labels": ranking} for i, ranking in zip(indices, rankings)]
    if args.json:
        errors = [{"image": args.images[i], "error": error} for i, error in failures]
        print(json.dumps(results + errors, indent=2))
    else:
        for result in results:
            print(result["image"])
            width = max(len(entry["label"]) for entry in result["labels"])
            for rank, entry in enumerate(result["labels"], 1):
                print(f"  {rank:>2}. {entry['label']:<{width}}  {100 * entry['score']:6.2f}%")
    for i, error in failures:
        print(f"torchclip classify: skipped {args.images[i]}: {error}", file=sys.stderr)
    return 1 if failures else 0
