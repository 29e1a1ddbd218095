"""`torchclip similarity`: cosine similarity between images and texts, as a table, JSON or heat map."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from torchclip.cli.common import add_model_options, load_model_and_processor

EXAMPLES = """examples:
  torchclip similarity cat.jpg dog.jpg --texts "a cat" "a dog"
  torchclip similarity photos/*.jpg --texts-file captions.txt --plot similarity.png
  torchclip similarity a.jpg b.jpg --texts "x" "y" --json --plot out.png --plot-size 1200x800

The plot is the heat map of CLIP's notebook: one row per text, one column per image, the images as
thumbnails on top. Plots need matplotlib (pip install 'torchclip[plot]').
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
    return width, height


def run(args: argparse.Namespace) -> int:
    import torch

    from torchclip.evaluate import encode_images, encode_texts

    texts = args.texts
    if texts is None:
        from torchclip.cli.classify import read_labels

        texts = read_labels(args.texts_file)
    for image in args.images:
        if not Path(image).is_file():
            raise FileNotFoundError(f"image {image!r} does not exist")
    model, processor = load_model_and_processor(args)
    with torch.inference_mode():
        image_features = encode_images(model, processor.image_processor, args.images, args.batch_size)
        text_features = encode_texts(model, processor.tokenizer, texts, args.batch_size)
    similarity = (text_features @ image_features.t()).cpu().numpy()  # [texts, images]
    if args.json:
        print(json.dumps({"images": args.images, "texts": texts, "similarity": similarity.tolist()}, indent=2))
    else:
        names = [Path(image).name for image in args.images]
        width = max(len(text) for text in texts)
        print(" " * width + "".join(f"  {name[:12]:>12}" for name in names))
        for text, row in zip(texts, similarity):
            print(f"{text:<{width}}" + "".join(f"  {value:12.4f}" for value in row))
    if args.plot:
        from torchclip.plots import similarity_heatmap

        similarity_heatmap(args.images, texts, similarity, args.plot, size=args.plot_size)
    return 0
