"""`torchclip serve`: a search service (HTTP API and a web page) over a store written by `torchclip embed`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from torchclip.cli.common import add_command
from torchclip.serve.bind import check_bind

EXAMPLES = """examples:
  torchclip serve pictures.emb                         # http://127.0.0.1:8000/ : the page, and the API
  torchclip serve pictures.emb --port 9000 --workers 2
  TORCHCLIP_TOKEN=s3cret torchclip serve pictures.emb --host 0.0.0.0      # others on the network, with a token
  curl -s localhost:8000/api/search -H 'Content-Type: application/json' -d '{"text": "a dog on a beach"}'

Any host but the loopback needs --token (or TORCHCLIP_TOKEN; clients send Authorization: Bearer TOKEN), or
--insecure. While `torchclip embed` updates the store, the service answers from each new generation without a
restart. API reference: docs/serve.md.
"""

SETTINGS_ENV = "TORCHCLIP_SERVE_SETTINGS"  # how --workers N hands the settings to each worker process


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "serve", "an HTTP search API and a web page over an embedding store", __doc__, EXAMPLES
    )
    parser.add_argument("store", help="a folder written by torchclip embed")
    parser.add_argument("--model", default=None, help="checkpoint to embed queries with (default: the store's)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--token",
        default=os.environ.get("TORCHCLIP_TOKEN"),
        help="require Authorization: Bearer TOKEN (default: $TORCHCLIP_TOKEN)",
    )
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a token")
    parser.add_argument("--workers", type=int, default=1, help="server processes, each with its own model")
    parser.add_argument(
        "--cors",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser pages from ORIGIN to call the API (repeatable; default: none)",
    )
    parser.add_argument(
        "--max-upload", type=float, default=20, metavar="MB", help="largest query image accepted, in MB (default: 20)"
    )
    parser.add_argument("--max-queue", type=int, default=256, help="queries waiting for the model before 503s")
    parser.add_argument("--max-batch", type=int, default=32, help="queries per batched forward pass")
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=4.0,
        help="how long the first query of a batch waits for others (default: 4 ms)",
    )
    parser.add_argument("--thumbnail-size", type=int, default=256, help="longest side of thumbnails in px")
    parser.add_argument("--thumbnail-cache", default=None, help="folder for thumbnails (default: STORE/.thumbnails)")
    parser.add_argument("--device", default="cpu", help="torch device for the model (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnx"],
        help="onnx: --model is a folder from `torchclip export MODEL OUT --format onnx`, run in ONNX Runtime",
    )
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def run(args: argparse.Namespace) -> int:
    if args.workers < 1 or args.max_queue < 1 or args.max_batch < 1 or args.max_upload <= 0:
        raise ValueError("--workers, --max-queue, --max-batch and --max-upload must be positive")
    check_bind(args.host, args.token, args.insecure)  # before the slow imports: a refusal comes at once
    import uvicorn

    from torchclip.serve.app import ServeSettings, create_app

    # each option sets the field of its name (refresh_seconds has no option); --max-upload is in MB
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeSettings) if hasattr(args, f.name)}
    settings = ServeSettings(**{**given, "max_upload": int(args.max_upload * 1024 * 1024)})
    server_options = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "limit_concurrency": 2048,
        "timeout_keep_alive": 5,
        "server_header": False,
    }
    if args.workers == 1:
        uvicorn.run(create_app(settings), **server_options)
    else:
        os.environ[SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
        uvicorn.run("torchclip.serve.app:app_from_environment", factory=True, workers=args.workers, **server_options)
    return 0
