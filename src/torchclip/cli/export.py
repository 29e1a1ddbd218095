"""`torchclip export`: an HF-layout CLIP folder -> a state dict in OpenAI's key layout.

The file is what OpenAI's `build_model` and OpenCLIP's `build_model_from_openai_state_dict` read. OpenAI's
layout does not record the activation: load the file back with --activation / activation= (printed below).
"""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  torchclip export clip-vit-b-32/ ViT-B-32.pt                    # plain torch.save dict of tensors
  torchclip export clip-vit-b-32/ ViT-B-32.pt --dtype float16    # half the size, as OpenAI's files
  torchclip export clip-vit-b-32/ open_clip_model.safetensors    # safetensors by file suffix
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="write an HF-layout CLIP folder as an OpenAI-layout state dict",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="an HF-layout CLIP folder (or hub id)")
    parser.add_argument("output", help="the file to write: .safetensors, or anything else for torch.save")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None, help="cast weights")
    return parser


def run(args: argparse.Namespace) -> int:
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
