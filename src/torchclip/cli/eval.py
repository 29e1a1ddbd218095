"""`torchclip eval`: zero-shot classification (top-1/top-5, prompt ensembling) and image<->text retrieval (recall@K)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from torchclip.cli.common import (
    add_model_options,
    add_templates_option,
    add_truncate_option,
    bundled_model_path,
    chosen_templates,
    load_model_and_processor,
    progress_bar,
)
from torchclip.datasets.bad_samples import MAX_BAD_IN_ROW, BadInRow
from torchclip.display import printable

EXAMPLES = """examples:
  torchclip eval --task zeroshot --data synthetic-heldout       # the bundled model on unseen colour x shape pairs
  torchclip eval --model runs/ft/model --task zeroshot --data imagenet_val/ --templates imagenet
  torchclip eval --model runs/ft/model --task zeroshot --data imagenet_val/ --templates "a photo of a {}."
  torchclip eval --model runs/ft/model --task retrieval --data val_pairs.csv --json metrics.json

--data for zeroshot: synthetic-heldout, synthetic-seen (the classic drawing style), synthetic-varied-heldout,
synthetic-varied-seen (varied styles), synthetic-unseen-style-heldout, synthetic-unseen-style-seen (styles
training never draws), or a folder with one sub-folder of images per class (the sub-folder name, with '_' read
as a space, is the class name). For retrieval: synthetic, synthetic-varied, a .csv/.tsv of (path, caption), a
folder of images with same-named .txt captions, or tar shards.

--templates takes what `torchclip classify --templates` takes (default: the "default" set); the synthetic
data brings its own prompts.

Unreadable images are skipped, counted ("skipped" in the metrics) and listed on stderr (exit 1); 200
unusable samples in a row stop the run with an error. A progress bar shows on a terminal (--quiet: none).
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
    add_templates_option(parser, what="class name")
    parser.add_argument("--per-class", type=int, default=50, help="synthetic zero-shot: images per class")
    parser.add_argument("--num-samples", type=int, default=1000, help="retrieval: pairs to use (at most)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the synthetic evaluation images")
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_truncate_option(parser)
    return parser


def _image_folder(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    from torchclip.image_files import IMAGE_EXTENSIONS

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


def _retrieval_pairs(spec: str, limit: int, seed: int) -> tuple[list, list[str], list[str]]:
    """Up to `limit` good (image, caption) pairs from any training data source, and the bad samples
    skipped (their messages); `MAX_BAD_IN_ROW` bad ones in a row end it with an error."""
    from torchclip.train.data import BadSample, open_source

    source = open_source(spec, seed)
    images, captions, skipped = [], [], []
    in_row = BadInRow(MAX_BAD_IN_ROW)
    for item in source.items(0, 0, 1):
        try:
            image, caption = source.decode(item)
        except BadSample as exc:
            skipped.append(str(exc))
            if in_row.bad():
                raise ValueError(
                    f"{spec}: {MAX_BAD_IN_ROW} samples in a row could not be used ({len(images)} usable before "
                    f"them); the last: {exc}"
                ) from None
            continue
        in_row.good()
        images.append(image)
        captions.append(caption)
        if len(images) == limit:
            break
    if not images:
        raise ValueError(f"{spec}: no usable (image, caption) pair among {len(skipped)}")
    return images, captions, skipped


def _embed_paths(model, processor, paths: list[Path], batch_size: int, quiet: bool):
    """Embeddings of the image files that decode, their indices in `paths`, and (index, error) of the others."""
    from torchclip.embed import embed_image_files, join_batches

    with progress_bar(len(paths), quiet) as bar:
        batches = embed_image_files(model, processor.image_processor, paths, batch_size, on_batch=bar.update)
        embedded = join_batches(batches, model.config.projection_dim)
    return embedded.features, embedded.indices, embedded.failures


def run(args: argparse.Namespace) -> int:
    from torchclip import evaluate
    from torchclip.datasets.synthetic import SyntheticCaptions

    templates = chosen_templates(args)  # a bad template fails first
    model, processor = load_model_and_processor(args)
    skipped: list[str] = []
    if args.task == "zeroshot":
        if args.data in evaluate.SYNTHETIC_ZERO_SHOT:
            split, style = evaluate.SYNTHETIC_ZERO_SHOT[args.data]
            compositions = len(SyntheticCaptions(seed=args.seed, split=split).pairs)
            with progress_bar(args.per_class * compositions, args.quiet) as bar:
                metrics = evaluate.synthetic_zero_shot(
                    model, processor, split, args.per_class, args.seed, bar.update, args.batch_size, style
                )
        else:
            paths, labels, classes = _image_folder(Path(args.data))
            classifier = evaluate.zero_shot_classifier(model, processor.tokenizer, classes, templates, args.truncate)
            features, indices, failures = _embed_paths(model, processor, paths, args.batch_size, args.quiet)
            if not indices:
                raise ValueError(f"{args.data}: none of its {len(paths)} images could be read")
            metrics = evaluate.topk_accuracy(features, classifier, [labels[i] for i in indices])
            metrics.update(images=len(indices), classes=len(classes))
            skipped = [f"{printable(paths[i])}: {printable(error)}" for i, error in failures]
    else:
        images, captions, skipped = _retrieval_pairs(args.data, args.num_samples, args.seed)
        with progress_bar(len(images), args.quiet) as bar:
            metrics = evaluate.retrieval_metrics(
                model,
                processor,
                images,
                captions,
                truncate=args.truncate,
                on_batch=bar.update,
                batch_size=args.batch_size,
            )
        metrics["pairs"] = len(images)
    metrics = {
        "task": args.task,
        "data": printable(args.data),
        "model": printable(str(args.model or bundled_model_path())),
        **{key: round(value, 6) if isinstance(value, float) else value for key, value in metrics.items()},
        "skipped": len(skipped),
    }
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    for message in skipped[:20]:
        print(f"torchclip eval: skipped {printable(message)}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"torchclip eval: ... and {len(skipped) - 20} more skipped", file=sys.stderr)
    return 1 if skipped else 0
