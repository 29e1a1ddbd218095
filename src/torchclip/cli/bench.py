"""`torchclip bench`: torchclip and transformers (the reference) side by side, one process, same weights and inputs."""

from __future__ import annotations

import argparse
import datetime
import platform

EXAMPLES = """examples:
  torchclip bench                       # ViT-B/32 sizes, batch 32, fp32 and bf16, with transformers
  torchclip bench --precision float32   # fp32 only
  torchclip bench --tiny --repeats 1    # a quick smoke run on a tiny model (no loading measurement)
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bench",
        help="inference speed and memory against transformers, as ratios",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions; the best counts")
    parser.add_argument("--precision", action="append", choices=["float32", "bfloat16"], help="repeatable")
    parser.add_argument("--no-reference", action="store_true", help="measure torchclip alone")
    parser.add_argument(
        "--memory-model",
        choices=["vit-l-14", "vit-b-32", "none"],
        default=None,
        help="model whose loading peak memory and time are measured (default: vit-l-14, none with --tiny; none skips)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model instead of ViT-B/32 (a quick smoke test)")
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from torchclip import bench
    from torchclip.config import CLIPConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    config = None
    memory_model = args.memory_model or ("none" if args.tiny else "vit-l-14")  # a smoke run loads no 1.7 GB model
    if args.tiny:
        small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
        config = CLIPConfig(text_config=small, vision_config={**small, "image_size": 64, "patch_size": 16})
    report = bench.run(
        batch_size=args.batch_size,
        repeats=args.repeats,
        config=config,
        reference=not args.no_reference,
        memory_config={"vit-l-14": bench.VIT_L_14, "vit-b-32": CLIPConfig(), "none": None}[memory_model],
        precisions=tuple(args.precision or ("float32", "bfloat16")),
        log=lambda line: print(f"  {line}", flush=True),
        matmul_size=512 if args.tiny else 2048,
    )
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    print(f"\ntorchclip bench, {when}, {platform.machine()}, {report.facts.get('threads')} threads")
    print(report.table())
    return 0
