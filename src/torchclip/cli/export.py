"""`torchclip export`: write a CLIP model for another runtime.

--format openai (the default when OUT is a file): a state dict in OpenAI's key layout, what OpenAI's
`build_model` and OpenCLIP's `build_model_from_openai_state_dict` read. OpenAI's layout does not record the
activation: load the file back with --activation / activation= (printed below).

--format onnx (the default when OUT is a folder or has no suffix): the two towers as ONNX graphs in the
folder OUT, with the tokenizer, preprocessor and a manifest, verified in ONNX Runtime against PyTorch before
they are kept (nothing is written if they differ). Run them with `--backend onnx --model OUT` or
`torchclip.load_onnx(OUT)`. See docs/deployment.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torchclip.cli.common import add_command

EXAMPLES = """examples:
  torchclip export clip-vit-b-32/ ViT-B-32.pt                    # plain torch.save dict of tensors
  torchclip export clip-vit-b-32/ ViT-B-32.pt --dtype float16    # half the size, as OpenAI's files
  torchclip export clip-vit-b-32/ open_clip_model.safetensors    # safetensors by file suffix
  torchclip export clip-vit-b-32/ clip-onnx/                     # ONNX: text_model.onnx + vision_model.onnx
  torchclip export ViT-B-32.pt clip-onnx-int8 --format onnx --dtype int8   # dynamic int8 linear layers
"""

ONNX_DTYPES = ("float32", "float16", "int8")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "export", "write a CLIP model as an OpenAI-layout state dict or as ONNX graphs", __doc__, EXAMPLES
    )
    parser.add_argument("model", help="openai: an HF-layout CLIP folder (or hub id); onnx: anything torchclip loads")
    parser.add_argument(
        "output", help="openai: the file (.safetensors, or anything else for torch.save); onnx: a new folder"
    )
    parser.add_argument(
        "--format", choices=["openai", "onnx"], default=None, help="default: openai if OUT has a suffix, else onnx"
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16", "int8"],
        default=None,
        help="openai: cast weights (float32, float16, bfloat16); onnx: float32 (default), float16 or int8",
    )
    parser.add_argument("--opset", type=int, default=None, help="onnx: the ONNX opset (default: 18)")
    return parser


def run(args: argparse.Namespace) -> int:
    output_format = args.format or ("openai" if Path(args.output).suffix and not Path(args.output).is_dir() else "onnx")
    if output_format == "onnx":
        return _run_onnx(args)
    if args.opset is not None:
        raise ValueError("--opset applies to --format onnx")
    if args.dtype == "int8":
        raise ValueError("OpenAI's layout holds float weights: --dtype int8 applies to --format onnx")
    from torchclip.convert import export_openai
    from torchclip.modeling import CLIPModel

    model = CLIPModel.from_pretrained(args.model, torch_dtype="auto")
    output = export_openai(model, args.output, dtype=args.dtype)
    activation = model.config.text_config.hidden_act
    print(
        f"{output}: {output.stat().st_size / 1e6:.1f} MB in OpenAI's layout; this model uses {activation}: "
        f"load it with activation={activation!r} (CLI: --activation {activation})"
    )
    return 0


def _run_onnx(args: argparse.Namespace) -> int:
    from torchclip.convert import load
    from torchclip.deploy.onnx_export import DEFAULT_OPSET, export_onnx

    dtype = args.dtype or "float32"
    if dtype not in ONNX_DTYPES:
        raise ValueError(f"--format onnx takes --dtype {', '.join(ONNX_DTYPES)}, not {dtype}")
    model, processor = load(args.model)
    manifest = export_onnx(model, args.output, processor, dtype=dtype, opset=args.opset or DEFAULT_OPSET)
    measure, shown = ("min cosine", "{:.5f}") if dtype == "int8" else ("max |difference|", "{:.2g}")
    verification = manifest["verification"].items()
    checks = ", ".join(f"{name.split('_')[0]} {shown.format(value)}" for name, value in verification)
    size = sum(f.stat().st_size for f in Path(args.output).iterdir()) / 1e6
    print(
        f"{args.output}: {manifest['text_model']} + {manifest['vision_model']} ({dtype}, opset {manifest['opset']}, "
        f"{size:.1f} MB); verified in ONNX Runtime against PyTorch ({measure}: "
        f"{checks}). Run it with --backend onnx --model {args.output}"
    )
    return 0
