"""`torchclip classify`: zero-shot classification of images into labels given as words."""

from __future__ import annotations

import argparse
import json
import sys

from torchclip.cli.common import (
    add_model_options,
    add_templates_option,
    add_truncate_option,
    chosen_templates,
    load_model_and_processor,
    progress_bar,
    read_labels,
    usable_images,
)
from torchclip.display import printable, shorten

LABEL_COLUMN = 60  # characters of each label shown in the table (JSON has them whole)

EXAMPLES = """examples:
  torchclip classify photo.jpg --labels cat dog "a bird"
  torchclip classify photos/*.jpg --labels-file imagenet_classes.txt --templates imagenet --top-k 5
  torchclip classify photo.jpg --labels cat dog --templates "a drawing of a {}." "a photo of a {}." --json

--templates takes a set's name (default, imagenet = the paper's 80 prompts, imagenet-7, photo, none) or
templates with {} where the label goes; the label embeddings average all of them (prompt ensembling).
Scores are softmax probabilities over the given labels. Unreadable or missing images are reported and skipped
(exit 1). A progress bar shows on a terminal (--quiet: none).
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
    add_templates_option(parser)
    parser.add_argument("--top-k", type=int, default=5, help="labels to show per image (default: 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_truncate_option(parser)
    add_model_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from torchclip.embed import embed_image_files, join_batches
    from torchclip.zero_shot import ZeroShotClassifier

    labels = args.labels or read_labels(args.labels_file)
    templates = chosen_templates(args)
    images, failures = usable_images(args.images)
    model, processor = load_model_and_processor(args)
    classifier = ZeroShotClassifier(
        model, processor, labels, templates, batch_size=args.batch_size, truncate=args.truncate
    )
    classifier.class_embeddings  # noqa: B018 (built now: a bad label or template fails before the images)
    with progress_bar(len(images), args.quiet) as bar:
        batches = embed_image_files(model, processor.image_processor, images, args.batch_size, on_batch=bar.update)
        embedded = join_batches(batches, model.config.projection_dim)
    failures += [(images[i], error) for i, error in embedded.failures]
    rankings = classifier.rank(embedded.features, args.top_k) if embedded.indices else []
    results = [{"image": printable(images[i]), "labels": ranking} for i, ranking in zip(embedded.indices, rankings)]
    if args.json:
        errors = [{"image": printable(path), "error": printable(error)} for path, error in failures]
        print(json.dumps(results + errors, indent=2))
    else:
        for result in results:
            print(result["image"])
            shown = [shorten(printable(entry["label"]), LABEL_COLUMN) for entry in result["labels"]]
            width = max(len(label) for label in shown)
            for rank, (label, entry) in enumerate(zip(shown, result["labels"]), 1):
                print(f"  {rank:>2}. {label:<{width}}  {100 * entry['score']:6.2f}%")
    for path, error in failures:
        print(f"torchclip classify: skipped {printable(path)}: {printable(error)}", file=sys.stderr)
    return 1 if failures else 0
