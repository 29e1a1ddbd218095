"""One check of torchclip on an accelerator, under 5 minutes on a CUDA machine (run by benchmarks/gpu_check.sh).

    benchmarks/gpu_check.sh                          # CUDA: ViT-B/32 and ViT-L/14 sizes, batch 256, 5,000 JPEGs
    benchmarks/gpu_check.sh --device cpu --small     # the same steps, tiny sizes (the test suite runs this)

Runs torchclip from src/ with whatever python3 has torch (+ transformers for the reference, + torchvision for
nvJPEG); every step states what it measured and prints one table row. Steps:
1. parity: the device in fp32 against the CPU in fp32 (same random weights; image and text embeddings and
   logits), max abs difference <= 1e-4, per model size, with TF32 off; on CUDA also with torch's defaults
   (cuDNN's TF32 for the patch convolution), reported but not checked;
2. images/s and texts/s, torchclip vs transformers, fp32 / bf16 / fp16 (fp16 on CUDA only), per model size;
3. preprocessing images/s: the exact CPU processor (threads); the tensor resize + crop on the device from
   Pillow-decoded pixels, which must be bit-exact; with a CUDA device and torchvision, nvJPEG decode alone
   and the device path (nvJPEG + device resize, `fast_jpeg_decode`), with its distance from the exact
   pixels in 8-bit levels (the JPEG decoder's);
4. a folder of JPEGs end to end (`embed_image_files`) against model-only, exact and (CUDA) device-decoded.
Exit code 1 when a parity check fails or the device resize is not bit-exact.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_image_processor import make_photo_folder  # noqa: E402

from torchclip.bench import interleaved, realistic_captions  # noqa: E402
from torchclip.config import CLIPConfig  # noqa: E402
from torchclip.embed import embed_image_files  # noqa: E402
from torchclip.image_files import JpegBytesOrPixels, _decode_on_device, _nvjpeg_decoder  # noqa: E402
from torchclip.image_processor import OPENAI_CLIP_STD, CLIPImageProcessor  # noqa: E402
from torchclip.modeling import CLIPModel  # noqa: E402
from torchclip.tokenizer import CLIPTokenizer  # noqa: E402

TOKENIZER = ROOT / "src" / "torchclip" / "data" / "default_model"
SIZES = {
    "ViT-B/32": {},
    "ViT-L/14": {
        "projection_dim": 768,
        "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12},
        "vision_config": {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "patch_size": 14,
        },
    },
    "tiny": {
        "projection_dim": 32,
        "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2},
        "vision_config": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
    },
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """`fn` followed by a device synchronisation, so that the timing covers the work, not its launch."""

    def run() -> None:
        fn()
        synchronize(device)

    return run


def make_model(size: str, folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / size.replace("/", "-")
    CLIPModel(CLIPConfig(**SIZES[size])).save_pretrained(path)
    return path


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """fp32 arithmetic in fp32: TF32 off for cuDNN (on by default, and used by the patch embedding's
    convolution) and for matrix products (off by default), restored after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def parity(path: Path, device: torch.device, tokenizer: CLIPTokenizer) -> float:
    """Max abs difference device-fp32 vs CPU-fp32 over image embeddings, text embeddings and logits."""
    cpu = CLIPModel.from_pretrained(path).eval()
    dev = CLIPModel.from_pretrained(path).to(device).eval()
    torch.manual_seed(1)
    pixels = torch.randn(4, 3, 224, 224)
    text = tokenizer(realistic_captions(4), padding=True, return_tensors="pt")
    worst = 0.0
    with torch.inference_mode():
        pairs = [
            (cpu.get_image_features(pixels), dev.get_image_features(pixels.to(device))),
            (cpu.get_text_features(**text), dev.get_text_features(**{k: v.to(device) for k, v in text.items()})),
            (
                cpu(pixel_values=pixels, **text).logits_per_image,
                dev(pixel_values=pixels.to(device), **{k: v.to(device) for k, v in text.items()}).logits_per_image,
            ),
        ]
    for expected, got in pairs:
        worst = max(worst, (expected - got.float().cpu()).abs().max().item())
    return worst


def towers(name: str, model: object, pixels: torch.Tensor, text: dict, device: torch.device) -> dict:
    return {
        f"{name} images": timed(lambda: model.get_image_features(pixel_values=pixels), device),
        f"{name} texts": timed(lambda: model.get_text_features(**text), device),
    }


def model_rates(path: Path, device: torch.device, dtypes: list[torch.dtype], batch: int, repeats: int) -> list[str]:
    """Rows of images/s and texts/s for torchclip and (where installed) transformers."""
    try:
        import transformers
    except ImportError:
        transformers = None
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER)
    text = {k: v.to(device) for k, v in tokenizer(realistic_captions(batch), padding=True, return_tensors="pt").items()}
    rows = []
    for dtype in dtypes:
        pixels = torch.randn(batch, 3, 224, 224, device=device).to(dtype)
        ours = CLIPModel.from_pretrained(path, torch_dtype=dtype).to(device).eval()
        fns = towers("torchclip", ours, pixels, text, device)
        if transformers is not None:
            theirs = transformers.CLIPModel.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
            fns.update(towers("transformers", theirs.to(device).eval(), pixels, text, device))
        with torch.inference_mode():
            rates = interleaved(fns, batch, repeats)
        for kind in ("images", "texts"):
            reference = rates.get(f"transformers {kind}")
            ratio = f"{rates[f'torchclip {kind}'] / reference:.2f}x" if reference else "-"
            reference_text = f"{reference:.1f}" if reference else "-"
            rows.append(
                f"| {path.name} {kind} | {str(dtype).removeprefix('torch.')} | {rates[f'torchclip {kind}']:.1f} "
                f"| {reference_text} | {ratio} |"
            )
    return rows


def preprocessing(paths: list[Path], device: torch.device, repeats: int) -> tuple[list[str], bool]:
    """Rows: the exact CPU processor's images/s; the tensor resize + crop on this device from Pillow-decoded
    pixels (must be bit-exact: the second value is False when it is not); and with CUDA and torchvision the
    device path as `embed_image_files` runs it (nvJPEG decode + device resize), whose one difference from
    the exact pixels is the JPEG decoder."""
    exact_processor, processor = CLIPImageProcessor(), CLIPImageProcessor(fast_jpeg_decode=True)
    exact = exact_processor.uint8_pixels(paths)
    rows = []
    rate = interleaved({"exact": lambda: exact_processor(paths, return_tensors="pt")}, len(paths), repeats)["exact"]
    rows.append(f"| exact CPU processor ({os.cpu_count()} cores, decoding on the CPU) | {rate:.1f} img/s | 0 |")
    decoded = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()).permute(2, 0, 1) for p in paths]
    on_device = [image.to(device)[None] for image in decoded]
    resized = torch.cat([processor.resize_and_crop_tensors(image) for image in on_device]).cpu()
    worst = (resized.int() - exact.int()).abs().max().item()
    rate = interleaved(
        {"resize": timed(lambda: [processor.resize_and_crop_tensors(i) for i in on_device], device)},
        len(paths),
        repeats,
    )["resize"]
    rows.append(
        f"| tensor resize + crop on {device.type}, one image at a time (Pillow-decoded input) | {rate:.1f} img/s "
        f"| max {worst} ({'bit-exact: PASS' if worst == 0 else 'NOT bit-exact: FAIL'}) |"
    )
    decoder = _nvjpeg_decoder()
    if device.type == "cuda" and decoder is not None:
        files = JpegBytesOrPixels(paths, processor)
        items = [files[index] for index in range(len(paths))]  # what the workers hand over: the files' bytes
        data = [item[1] for item in items]
        rate = interleaved({"decode": timed(lambda: decoder(data, device), device)}, len(paths), repeats)["decode"]
        rows.append(f"| nvJPEG decode alone | {rate:.1f} img/s | - |")
        batch = _decode_on_device(items, files, device, decoder)
        levels = (batch.pixels.cpu().float() - exact.float()).abs()
        rate = interleaved(
            {"device path": timed(lambda: _decode_on_device(items, files, device, decoder), device)},
            len(paths),
            repeats,
        )["device path"]
        rows.append(
            f"| device path: nvJPEG decode + {device.type} resize + crop (fast_jpeg_decode) | {rate:.1f} img/s "
            f"| mean {levels.mean().item():.3f}, max {levels.max().item():.0f} (the JPEG decoder) |"
        )
    std = torch.tensor(OPENAI_CLIP_STD)
    rows.append(f"(1 level = {1 / 255 / std.max().item():.4f} to {1 / 255 / std.min().item():.4f} normalised)")
    return rows, worst == 0


def end_to_end(path: Path, paths: list[Path], device: torch.device, dtype: torch.dtype, batch: int) -> list[str]:
    model = CLIPModel.from_pretrained(path, torch_dtype=dtype).to(device).eval()
    pixels = torch.randn(batch, 3, 224, 224, device=device).to(dtype)

    def model_only() -> None:
        with torch.inference_mode():
            for _ in range(0, len(paths), batch):
                model.get_image_features(pixels)
        synchronize(device)

    def embed(processor: CLIPImageProcessor) -> Callable[[], None]:
        return lambda: sum(len(b.indices) for b in embed_image_files(model, processor, paths, batch))

    runs = {"model-only": model_only, "end to end, exact pixels": embed(CLIPImageProcessor())}
    if device.type == "cuda":
        runs["end to end, nvJPEG + GPU resize (fast_jpeg_decode)"] = embed(CLIPImageProcessor(fast_jpeg_decode=True))
    rates = interleaved(runs, len(paths), 1)
    ceiling = rates["model-only"]
    name = str(dtype).removeprefix("torch.")
    return [f"| {path.name} {name} {run} | {rate:.1f} | {rate / ceiling:.2f} |" for run, rate in rates.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="tiny sizes and counts (a smoke test, e.g. on the CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = ["tiny"] if args.small else ["ViT-B/32", "ViT-L/14"]
    batch, files, repeats = (8, 16, 1) if args.small else (256, 5000, 3)
    dtypes = [torch.float32, torch.bfloat16] + ([torch.float16] if device.type == "cuda" else [])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"gpu_check {time.strftime('%Y-%m-%d %H:%M')}: {name}, torch {torch.__version__}")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER)
        models = {size: make_model(size, folder) for size in sizes}
        print("\n| parity: device fp32 vs CPU fp32 | max abs diff | within 1e-4 |\n|---|---:|---|")
        for size, path in models.items():
            with strict_fp32():
                worst = parity(path, device, tokenizer)
            failed |= worst > 1e-4
            print(f"| {size} on {device.type} | {worst:.2e} | {'PASS' if worst <= 1e-4 else 'FAIL'} |")
            if device.type == "cuda":  # what a user gets without asking: cuDNN runs fp32 convolutions in TF32
                worst = parity(path, device, tokenizer)
                print(f"| {size} on {device.type}, torch's defaults (TF32 convolution) | {worst:.2e} | (not checked) |")
        print(f"\n| model (batch {batch}) | dtype | torchclip /s | transformers /s | ratio |\n|---|---|---:|---:|---:|")
        for path in models.values():
            print("\n".join(model_rates(path, device, dtypes, batch, repeats)))
        # ~1 MP JPEGs (--small: ~0.15 MP): up to 64 distinct photos, repeated as links to fill the folder quickly
        (folder / "made").mkdir()
        (folder / "photos").mkdir()
        megapixels = (0.1, 0.2) if args.small else (0.8, 1.2)
        made = make_photo_folder(folder / "made", min(files, 64), megapixels=megapixels)
        photos = []
        for index in range(files):
            link = folder / "photos" / f"{index:05d}.jpg"
            os.link(made[index % len(made)], link)
            photos.append(link)
        print(f"\n| preprocessing, {min(len(photos), batch)} JPEGs | rate | vs exact pixels (levels) |\n|---|---:|---|")
        rows, exact = preprocessing(photos[:batch], device, repeats)
        print("\n".join(rows))
        failed |= not exact
        print(f"\n| {len(photos)} JPEGs end to end (batch {batch}) | images/s | vs model-only |\n|---|---:|---:|")
        for dtype in [torch.float32, torch.float16] if device.type == "cuda" else [torch.float32]:
            print("\n".join(end_to_end(models[sizes[0]], photos, device, dtype, batch)))
    print("\nparity and exactness:", "FAIL" if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
