"""Options every model-using subcommand shares: --model, --device, --dtype, --batch-size, --backend."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from torchclip.display import printable
from torchclip.hub import bundled_model_path
from torchclip.templates import get_templates


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="checkpoint: an HF folder, a hub id, or an OpenAI/OpenCLIP .pt file (default: the bundled model)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16", "int8"],
        help="weights dtype; int8: dynamic int8 linear layers on the CPU (see docs/deployment.md)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images or texts per forward pass")
    parser.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnx"],
        help="onnx: run in ONNX Runtime; --model is then a folder from `torchclip export MODEL OUT --format onnx`",
    )


def load_model_and_processor(args: argparse.Namespace) -> tuple[Any, Any]:
    """(CLIPModel, CLIPProcessor) for --model, on --device in --dtype, in eval mode; with --backend onnx an
    `ONNXCLIPEncoder` in the model's place."""
    import torch

    from torchclip.convert import load

    if getattr(args, "backend", "torch") == "onnx":
        from torchclip.deploy.onnx_runtime import load_onnx_and_processor

        return load_onnx_and_processor(args.model, args.device, args.dtype)
    note_if_bundled(args.model)
    dtype = torch.float32 if args.dtype == "int8" else getattr(torch, args.dtype)
    model, processor = load(args.model or bundled_model_path(), device=args.device, dtype=dtype)
    if args.dtype == "int8":
        from torchclip.deploy.quantize import quantize

        model = quantize(model, "int8")
    return model, processor


def note_if_bundled(model: str | None) -> None:
    """One line on stderr when the bundled model answers: it knows coloured shapes, not photos."""
    if model is None or Path(model).resolve() == bundled_model_path():
        print(
            "torchclip: using the bundled model, a small CLIP trained only on coloured shapes (not a photo model); "
            "pass --model for another checkpoint",
            file=sys.stderr,
        )


def add_truncate_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--truncate",
        choices=["warn", "error", "silent"],
        default="warn",
        help="a text longer than the model's context (77 tokens) is cut to fit: warn (default), error, silent",
    )


def add_templates_option(parser: argparse.ArgumentParser, what: str = "label") -> None:
    parser.add_argument(
        "--templates",
        nargs="+",
        default=["default"],
        help=f"a template set (default, imagenet, imagenet-7, photo, none) or templates with {{}} for the {what}",
    )


def chosen_templates(args: argparse.Namespace) -> list[str]:
    """--templates as prompts: one set's name (see `torchclip.templates`), or the templates given."""
    return get_templates(args.templates[0] if len(args.templates) == 1 else args.templates)


def add_command(
    subparsers: argparse._SubParsersAction, name: str, summary: str, description: str | None, examples: str
) -> argparse.ArgumentParser:
    """A subcommand's parser: `summary` in `torchclip --help`, then in its own help the module's
    `description` above the options and its `examples` below them, as written (line breaks kept)."""
    return subparsers.add_parser(
        name,
        help=summary,
        description=description,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def read_labels(path: str, what: str = "labels") -> list[str]:
    """One label (or text) per non-blank line of a UTF-8 file; a byte-order mark is not part of the first."""
    file = Path(path)
    if file.is_dir():
        raise IsADirectoryError(f"{what} file {printable(path)!r} is a folder, not a text file")
    if not file.is_file():
        raise FileNotFoundError(f"{what} file {printable(path)!r} does not exist")
    try:
        content = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = file.read_bytes()[: exc.start].count(b"\n") + 1
        raise ValueError(f"{what} file {printable(path)!r}, line {line}: not UTF-8 text ({exc.reason})") from None
    labels = [line.strip() for line in content.splitlines() if line.strip()]
    if not labels:
        raise ValueError(f"{what} file {printable(path)!r} has no {what}")
    return labels


def usable_images(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(the paths that are files, (path, why not) for the others); an error when none is."""
    good, missing = [], []
    for path in paths:
        if Path(path).is_dir():
            missing.append((path, "is a folder, not an image file (`torchclip embed FOLDER` takes folders)"))
        elif not Path(path).is_file():
            missing.append((path, "does not exist"))
        else:
            good.append(path)
    if not good:
        path, why = missing[0]
        more = f" (nor do the other {len(missing) - 1})" if len(missing) > 1 else ""
        raise FileNotFoundError(f"image {printable(path)!r} {why}{more}")
    return good, missing


def progress_bar(total: int, quiet: bool, unit: str = "img"):  # -> tqdm
    """Count, rate and ETA on stderr when it is a terminal, unless --quiet."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, disable=True if quiet else None, leave=False, dynamic_ncols=True)
