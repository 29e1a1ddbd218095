"""Deployment speed and accuracy: ONNX Runtime fp32 and int8 against torchclip fp32 and bf16, side by side.

    flock /tmp/torchclip-bench.lock python benchmarks/bench_deploy.py [--repeats 5] [--batch-size 32]
    python benchmarks/bench_deploy.py --accuracy-only      # the bundled model's table alone (~1 min, any load)

Speed: ViT-B/32-sized random weights (the default CLIPConfig), `batch-size` images; texts as the caption mix
(256 captions of 6-16 words, batches of `batch-size`, padded to the longest) and as full 77-token batches.
Rates are the best of `repeats` calls, the backends interleaved so that machine noise hits all alike.
int8 is ONNX Runtime's dynamic quantization (torchclip.quantize, which measured faster than PyTorch's:
see src/torchclip/deploy/quantize.py). Accuracy: the bundled model on its synthetic zero-shot evaluation
(held-out compositions), each variant against torchclip fp32 (random weights do not quantize like trained
ones). The tables go to docs/performance.md and docs/deployment.md.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from torchclip.bench import interleaved, realistic_captions
from torchclip.config import CLIPConfig
from torchclip.convert import load
from torchclip.deploy.onnx_export import TEXT_GRAPH, VISION_GRAPH, export_onnx
from torchclip.deploy.onnx_runtime import load_onnx
from torchclip.deploy.quantize import agreement_with, quantize, quantize_graph
from torchclip.hub import bundled_model_path
from torchclip.modeling import CLIPModel
from torchclip.tokenizer import CLIPTokenizer


def speed(batch_size: int, repeats: int) -> list[tuple[str, dict[str, float]]]:
    torch.manual_seed(0)
    fp32 = CLIPModel(CLIPConfig()).eval()
    bf16 = CLIPModel(CLIPConfig()).eval()
    bf16.load_state_dict(fp32.state_dict())
    bf16 = bf16.to(torch.bfloat16)
    scratch = Path(tempfile.mkdtemp(prefix="torchclip-bench-deploy-"))
    try:
        start = time.perf_counter()
        export_onnx(fp32, scratch / "fp32")
        print(f"ViT-B/32 fp32 export + verification: {time.perf_counter() - start:.0f} s")
        shutil.copytree(scratch / "fp32", scratch / "int8")
        for graph in (TEXT_GRAPH, VISION_GRAPH):
            quantize_graph(scratch / "int8" / graph)
        ort32, ort8 = load_onnx(scratch / "fp32"), load_onnx(scratch / "int8")
    finally:
        shutil.rmtree(scratch)
    size = fp32.config.vision_config.image_size
    pixels = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokenizer = CLIPTokenizer()
    captions = realistic_captions(256)
    mix = [
        tokenizer(captions[i : i + batch_size], padding=True, return_tensors="pt")
        for i in range(0, len(captions), batch_size)
    ]
    full = tokenizer(realistic_captions(batch_size, words=(90, 100)), truncation=True, return_tensors="pt")
    results = []
    with torch.inference_mode():
        images_bf16 = pixels.bfloat16()
        results.append(("images", interleaved({
            "torch fp32": lambda: fp32.get_image_features(pixels),
            "torch bf16": lambda: bf16.get_image_features(images_bf16),
            "onnx fp32": lambda: ort32.get_image_features(pixels),
            "onnx int8": lambda: ort8.get_image_features(pixels),
        }, batch_size, repeats)))  # fmt: skip
        results.append(("texts, caption mix", interleaved({
            name: (lambda m=m: [m.get_text_features(b["input_ids"], b["attention_mask"]) for b in mix])
            for name, m in (("torch fp32", fp32), ("torch bf16", bf16), ("onnx fp32", ort32), ("onnx int8", ort8))
        }, len(captions), repeats)))  # fmt: skip
        results.append(("texts, 77 tokens", interleaved({
            name: (lambda m=m: m.get_text_features(full["input_ids"], full["attention_mask"]))
            for name, m in (("torch fp32", fp32), ("torch bf16", bf16), ("onnx fp32", ort32), ("onnx int8", ort8))
        }, batch_size, repeats)))  # fmt: skip
        random_inputs = {
            "images": (fp32.get_image_features(pixels), ort8.get_image_features(pixels)),
            "texts": (fp32.get_text_features(**full), ort8.get_text_features(**full)),
        }
    for task, (reference, quantized) in random_inputs.items():
        cosine = torch.nn.functional.cosine_similarity(reference.float(), quantized, dim=-1)
        print(f"random ViT-B/32, int8 vs fp32 {task}: cosine mean {cosine.mean():.4f}, min {cosine.min():.4f}")
    return results


def accuracy(per_class: int) -> dict[str, dict[str, float]]:
    model, processor = load(bundled_model_path())
    bf16 = load(bundled_model_path(), dtype=torch.bfloat16)[0]
    scratch = Path(tempfile.mkdtemp(prefix="torchclip-bench-deploy-"))
    try:
        export_onnx(model, scratch / "fp32", processor)
        variants = {"onnx fp32": load_onnx(scratch / "fp32"), "onnx int8": quantize(model), "torch bf16": bf16}
    finally:
        shutil.rmtree(scratch)
    with torch.inference_mode():
        return {name: agreement_with(other, model, processor, per_class=per_class) for name, other in variants.items()}


def print_speed(batch_size: int, repeats: int) -> None:
    rows = speed(batch_size, repeats)
    print("\n| task (ViT-B/32, random weights) | torch fp32 | torch bf16 | ONNX Runtime fp32 | ONNX Runtime int8 |")
    print("|---|---|---|---|---|")
    for task, rates in rows:
        base = rates["torch fp32"]
        cells = [f"{rates[name]:.1f}/s ({rates[name] / base:.2f}x)" for name in rates]
        print(f"| {task} | " + " | ".join(cells) + " |")
    int8_vs_bf16 = ", ".join(f"{task} {rates['onnx int8'] / rates['torch bf16']:.2f}x" for task, rates in rows)
    print(f"\nONNX Runtime int8 vs torch bf16: {int8_vs_bf16}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=50, help="accuracy: synthetic images per class")
    parser.add_argument(
        "--accuracy-only", action="store_true", help="skip the speed table (timings need a quiet machine)"
    )
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}")
    if not args.accuracy_only:
        print_speed(args.batch_size, args.repeats)
    print("\n| bundled model vs torch fp32 | top-1 | reference top-1 | agreement | image cosine mean / min | "
          "text cosine mean / min |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, m in accuracy(args.per_class).items():
        print(
            f"| {name} | {100 * m['top1']:.2f}% | {100 * m['reference_top1']:.2f}% | {100 * m['agreement']:.2f}% | "
            f"{m['image_cosine_mean']:.5f} / {m['image_cosine_min']:.5f} | "
            f"{m['text_cosine_mean']:.5f} / {m['text_cosine_min']:.5f} |"
        )
    print(f"({m['images']} held-out synthetic images)")


if __name__ == "__main__":
    main()
