"""The `torchclip` command: one entry point, one module per subcommand.

Each subcommand module defines `register(subparsers) -> argparse.ArgumentParser` and
`run(args) -> int` (the exit code). Errors print as one line unless --debug is given.

Exit codes: 0 success, 1 the job ran but some items failed (listed in its report), 2 bad usage or
bad input (a missing file, an unreadable checkpoint), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

COMMANDS = [
    "classify", "similarity", "embed", "index", "search", "store", "convert", "export", "train", "eval", "bench",
    "serve",
]

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchclip",
        description="CLIP image-text models: classify, embed, search, convert, train, evaluate, benchmark.",
        epilog="Run `torchclip COMMAND --help` for each command's options and examples.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"torchclip.cli.{name}")
        sub = module.register(subparsers)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if not args.debug:
        warnings.formatwarning = _one_line_warning
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("torchclip: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # one clear line for users; the traceback with --debug
        if args.debug:
            raise
        print(f"torchclip {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 (warnings' signature)
    """A warning (e.g. Pillow's DecompressionBombWarning) as one line, not a source excerpt."""
    return f"torchclip: warning: {message} ({category.__name__})\n"


if __name__ == "__main__":
    sys.exit(main())
