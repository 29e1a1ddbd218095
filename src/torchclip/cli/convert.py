"""`torchclip convert`: an OpenAI or OpenCLIP checkpoint file -> a complete HF-layout folder.

The folder (config.json, model.safetensors, tokenizer files, preprocessor_config.json sized for the model's
image size) loads with torchclip, and for ViT models with `transformers.CLIPModel` too. It is written to a
temporary folder and renamed at the end, so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  torchclip convert openai ViT-B-32.pt clip-vit-b-32/             # OpenAI's release (TorchScript) or its state dict
  torchclip convert openai RN50.pt clip-rn50/                     # ResNet towers too (torchclip-only folders)
  torchclip convert openclip epoch_32.pt out/ --model-name ViT-B-32            # OpenCLIP: GELU
  torchclip convert openclip open_clip_model.safetensors out/ --model-name ViT-H-14
  torchclip convert openclip laion.bin out/ --activation quick_gelu           # or name the activation

OpenCLIP files do not record their activation: give --model-name (names ending in -quickgelu, and OpenAI's
names such as ViT-B/32 or RN50, mean QuickGELU; OpenCLIP's other names GELU) or --activation.
`python -c "import torchclip; print(torchclip.available_models())"` lists the known names.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert an OpenAI or OpenCLIP checkpoint file into an HF-layout folder",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source",
        choices=["openai", "openclip"],
        help="openai: OpenAI's models (QuickGELU); openclip: OpenCLIP-trained (needs --model-name or --activation)",
    )
    parser.add_argument("checkpoint", help="the .pt / .bin / .safetensors file")
    parser.add_argument("output", help="the folder to write (must not exist or be empty, unless --overwrite)")
    parser.add_argument("--model-name", default=None, help="architecture name, e.g. ViT-B-32 or ViT-B-32-quickgelu")
    parser.add_argument("--activation", choices=["quick_gelu", "gelu"], default=None, help="the text/image activation")
    parser.add_argument(
        "--dtype", choices=["float32", "float16", "bfloat16"], default="float32", help="weights dtype written"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    return parser


def run(args: argparse.Namespace) -> int:
    from torchclip.config import CLIPResNetVisionConfig
    from torchclip.convert import convert_checkpoint
    from torchclip.modeling import CLIPModel

    activation = args.activation
    if args.source == "openai":
        if activation is not None or args.model_name is not None:
            raise ValueError(
                "--model-name and --activation are for `convert openclip`: OpenAI's models all use QuickGELU and "
                "their architecture is read from the weights"
            )
        activation = "quick_gelu"
    output = convert_checkpoint(
        args.checkpoint,
        args.output,
        activation=activation,
        model_name=args.model_name,
        dtype=args.dtype,
        overwrite=args.overwrite,
    )
    config = CLIPModel.config_class.from_pretrained(output)
    vision = config.vision_config
    resnet = isinstance(vision, CLIPResNetVisionConfig)
    tower = f"ResNet {list(vision.layers)} x{vision.width}" if resnet else f"ViT/{vision.patch_size}"
    files = ", ".join(sorted(p.name for p in output.iterdir()))
    print(
        f"{output}: CLIP {tower}, {vision.image_size} px images, {config.text_config.max_position_embeddings}-token "
        f"texts, {config.text_config.hidden_act}; files: {files}"
    )
    if resnet:
        print("note: the ResNet image tower is torchclip's own; transformers.CLIPModel cannot load this folder")
    return 0
