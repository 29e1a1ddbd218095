"""`torchclip similarity`: cosine similarity between images and texts, as a table, JSON or heat map."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from torchclip.cli.common import (
    add_model_options,
    add_truncate_option,
    load_model_and_processor,
    progress_bar,
    read_labels,
    usable_images,
)
from torchclip.display import printable, shorten

TEXT_COLUMN = 60  # characters of each text shown in the table (JSON has them whole)

EXAMPLES = """examples:
  torchclip similarity cat.jpg dog.jpg --texts "a cat" "a dog"
  torchclip similarity photos/*.jpg --texts-file captions.txt --plot similarity.png
  torchclip similarity a.jpg b.jpg --texts "x" "y" --json --plot out.png --plot-size 1200x800

The plot is the heat map of CLIP's notebook: one row per text, one column per image, the images as
thumbnails on top. Plots need matplotlib (pip install 'torchclip[plot]'). Unreadable or missing images are
reported and left out (exit 1). A progress bar shows on a terminal (--quiet: none).
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "similarity",
        help="image-text cosine similarity matrix (table, JSON or heat map)",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", help="image files")
    texts = parser.add_mutually_exclusive_group(required=True)
    texts.add_argument("--texts", nargs="+", help="the texts")
    texts.add_argument("--texts-file", help="a text file with one text per line")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_truncate_option(parser)
    add_plot_options(parser)
    add_model_options(parser)
    return parser


def add_plot_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plot", default=None, help="also draw the result into this PNG file")
    parser.add_argument("--plot-size", type=parse_size, default=None, help="the PNG's WIDTHxHEIGHT in pixels")


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 1200x800, got {text!r}") from None
    from torchclip.plots import MAX_SIDE

    if not (50 <= width <= MAX_SIDE and 50 <= height <= MAX_SIDE):
        raise argparse.ArgumentTypeError(f"a plot is 50 to {MAX_SIDE} pixels a side, got {text!r}")
    return width, height


def run(args: argparse.Namespace) -> int:
    import torch

    from torchclip.embed import check_finite, embed_image_files, embed_texts, join_batches

    texts = args.texts or read_labels(args.texts_file, what="texts")
    candidates, failures = usable_images(args.images)
    model, processor = load_model_and_processor(args)
    with torch.inference_mode():
        text_features = embed_texts(model, processor.tokenizer, texts, args.batch_size, truncate=args.truncate)
    with progress_bar(len(candidates), args.quiet) as bar:
        batches = embed_image_files(model, processor.image_processor, candidates, args.batch_size, on_batch=bar.update)
        embedded = join_batches(batches, text_features.shape[1])
    failures += [(candidates[i], error) for i, error in embedded.failures]
    images = [candidates[i] for i in embedded.indices]
    similarity = text_features.cpu() @ embedded.features.t()  # image embeddings come back on the CPU
    similarity = check_finite(model, similarity, "similarities").numpy()
    if args.json:
        shown = [printable(image) for image in images]
        print(
            json.dumps(
                {"images": shown, "texts": [printable(t) for t in texts], "similarity": similarity.tolist()}, indent=2
            )
        )
    elif images:
        names = [printable(Path(image).name) for image in images]
        rows = [shorten(printable(text), TEXT_COLUMN) for text in texts]
        width = max(len(row) for row in rows)
        print(" " * width + "".join(f"  {shorten(name, 12):>12}" for name in names))
        for text, values in zip(rows, similarity):
            print(f"{text:<{width}}" + "".join(f"  {value:12.4f}" for value in values))
    if args.plot and images:
        from torchclip.plots import similarity_heatmap

        similarity_heatmap(images, texts, similarity, args.plot, size=args.plot_size)
    for path, error in failures:
        print(f"torchclip similarity: skipped {printable(path)}: {printable(error)}", file=sys.stderr)
    return 1 if failures else 0
