"""torchclip against OpenCLIP, side by side in one process on the same random ViT-B-32 (QuickGELU) weights.

OpenCLIP needs torchvision, which the project's own environment does not install, so this runs in a separate
environment that has both (torchclip itself is imported from this checkout's `src/`):

    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch==2.14.1 torchvision==0.29.1 open_clip_torch
    /tmp/refenv/bin/python benchmarks/bench_openclip.py [--threads N] [--repeats 5]

OpenCLIP's weights are converted with `torchclip.convert.load` (the OpenCLIP checkpoint path users take),
and both models get identical inputs: OpenCLIP's own tokenizer output (always 77 tokens) and the same pixels.
Rows: images (batch 32) and the realistic caption mix of `torchclip bench` (256 captions of 6-16 words,
batches of 64), in fp32 and bf16 (both models cast with `.to(torch.bfloat16)`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from torchclip.bench import interleaved, realistic_captions  # noqa: E402
from torchclip.convert import load  # noqa: E402


def measure(ours, theirs, pixels: torch.Tensor, batches: list, captions: int, repeats: int) -> list[tuple]:
    """(task, precision, {"torchclip": rate, "OpenCLIP": rate}, unit) for images and the caption mix."""
    with torch.inference_mode():
        images = interleaved(
            {"torchclip": lambda: ours.get_image_features(pixels), "OpenCLIP": lambda: theirs.encode_image(pixels)},
            len(pixels),
            repeats,
        )
        texts = interleaved(
            {
                "torchclip": lambda: [ours.get_text_features(b) for b in batches],
                "OpenCLIP": lambda: [theirs.encode_text(b) for b in batches],
            },
            captions,
            repeats,
        )
    precision = str(pixels.dtype).removeprefix("torch.")
    return [("images", precision, images, "img/s"), ("texts, caption mix", precision, texts, "txt/s")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions; the best counts")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    import open_clip

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    theirs = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "openclip_vit_b_32.pt"
        torch.save(theirs.state_dict(), path)
        ours, _ = load(path, model_name="ViT-B-32-quickgelu")
    tokenizer = open_clip.get_tokenizer("ViT-B-32-quickgelu")
    pixels = torch.randn(args.batch_size, 3, 224, 224)
    captions = realistic_captions(256)
    batches = [tokenizer(captions[i : i + 64]) for i in range(0, len(captions), 64)]

    with torch.inference_mode():
        ours_text = torch.cat([ours.get_text_features(b) for b in batches])
        theirs_text = torch.cat([theirs.encode_text(b) for b in batches])
        same_images = (ours.get_image_features(pixels) - theirs.encode_image(pixels)).abs().max().item()
        same_texts = (ours_text - theirs_text).abs().max().item()
    print(f"fp32 outputs agree: images max abs diff {same_images:.2g}, texts {same_texts:.2g}")

    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        rows += measure(ours.to(dtype), theirs.to(dtype), pixels.to(dtype), batches, len(captions), args.repeats)

    print(f"\ntorch {torch.__version__}, open_clip {open_clip.__version__}, {torch.get_num_threads()} threads\n")
    print("| task | precision | torchclip | OpenCLIP | ratio |")
    print("|---|---|---:|---:|---:|")
    for task, precision, rates, unit in rows:
        ratio = rates["torchclip"] / rates["OpenCLIP"]
        print(f"| {task} | {precision} | {rates['torchclip']:.1f} {unit} | {rates['OpenCLIP']:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
