"""Embedding a folder of JPEG photos end to end (decode included), side by side in one run:

- reference: the straightforward transformers loop, batch 32: PIL open -> transformers.CLIPProcessor ->
  CLIPModel.get_image_features;
- torchclip: `torchclip.embed.embed_image_files` (what `torchclip embed` runs), DataLoader workers
  decoding and preprocessing while the model runs, with exact decoding and with `fast_jpeg_decode`;
- torchclip without workers (decode and model in turn), to show what the overlap buys;
- torchclip model-only: the same model on already-preprocessed batches, the ceiling for end to end.

Both models hold the same random ViT-B/32-size weights at the same precision. The photos (1-3 megapixel
JPEGs, crops of the bundled test photos) are made in a temporary folder.

    .venv/bin/python benchmarks/bench_embed_folder.py                        # 1,000 photos, float32
    .venv/bin/python benchmarks/bench_embed_folder.py --num-images 128 --dtype bfloat16

Targets: torchclip end to end >= 1.5x the transformers loop; with exact pixels >= 0.90 of model-only in
fp32 and >= 0.80 in bf16. On 2 cores that the model also uses, decoding and Pillow's resize take
their CPU from the model (see docs/performance.md, "Pixels").

The model's own rate drifts by a few percent over minutes on a shared VM (on 2026-12-08 the median
model-only batch of runs minutes apart in one process measured 1.43 and 1.53 s), as much as the pixels
cost. So the torchclip runs come in `--rounds` rounds, each between two model-only runs, and each run is
compared with the mean of the two around it; the summary gives every round's ratio and their mean.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from bench_image_processor import make_photo_folder  # noqa: E402

from torchclip.config import CLIPConfig  # noqa: E402
from torchclip.embed import embed_image_files  # noqa: E402
from torchclip.image_files import default_num_workers  # noqa: E402
from torchclip.image_processor import CLIPImageProcessor  # noqa: E402
from torchclip.modeling import CLIPModel  # noqa: E402
from torchclip.processor import CLIPProcessor  # noqa: E402


def rate(fn: Callable[[], int]) -> float:
    start = time.perf_counter()
    count = fn()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--workers", type=int, default=None, help=f"decoding processes (default {default_num_workers()})"
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the transformers loop")
    parser.add_argument("--rounds", type=int, default=2, help="torchclip runs, each between model-only runs")
    args = parser.parse_args()
    dtype, batch = getattr(torch, args.dtype), args.batch_size
    workers = default_num_workers() if args.workers is None else args.workers

    folder = Path(tempfile.mkdtemp(prefix="torchclip-embed-bench-"))
    print(f"making {args.num_images} JPEG photos in {folder} ...", flush=True)
    (folder / "photos").mkdir()
    paths = make_photo_folder(folder / "photos", args.num_images)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig()).save_pretrained(folder / "model")
    CLIPProcessor().save_pretrained(folder / "model")
    ours = CLIPModel.from_pretrained(folder / "model", torch_dtype=dtype).eval()
    image_processor = CLIPImageProcessor()
    fast_processor = CLIPImageProcessor(fast_jpeg_decode=True)

    pixels = image_processor(paths[:batch], return_tensors="pt")["pixel_values"].to(dtype)

    def model_only() -> int:
        with torch.inference_mode():
            for start in range(0, len(paths), batch):
                ours.get_image_features(pixels[: min(batch, len(paths) - start)])
        return len(paths)

    def pipeline(processor: CLIPImageProcessor, n_workers: int) -> Callable[[], int]:
        return lambda: sum(len(b.indices) for b in embed_image_files(ours, processor, paths, batch, n_workers))

    model_only()  # warm-up
    reference_rate = None
    if not args.no_reference:
        import transformers

        theirs = transformers.CLIPModel.from_pretrained(folder / "model", dtype=dtype, attn_implementation="sdpa")
        theirs = theirs.eval()
        reference_processor = transformers.CLIPProcessor.from_pretrained(folder / "model")

        def reference() -> int:
            with torch.inference_mode():
                for start in range(0, len(paths), batch):
                    images = [Image.open(p) for p in paths[start : start + batch]]
                    inputs = reference_processor(images=images, return_tensors="pt")
                    out = theirs.get_image_features(pixel_values=inputs["pixel_values"].to(dtype))
                    getattr(out, "pooler_output", out)
            return len(paths)

        reference_rate = rate(reference)

    pipelines = {
        f"torchclip end to end ({workers} workers)": pipeline(image_processor, workers),
        f"torchclip end to end, fast_jpeg_decode ({workers} workers)": pipeline(fast_processor, workers),
        "torchclip end to end, no workers": pipeline(image_processor, 0),
    }
    model_rates = [rate(model_only)]
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    ratios: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(args.rounds):
        for name, run in pipelines.items():
            rates[name].append(rate(run))
        model_rates.append(rate(model_only))
        around = (model_rates[-2] + model_rates[-1]) / 2
        for name in pipelines:
            ratios[name].append(rates[name][-1] / around)

    print(f"\n{len(paths)} photos, batch {batch}, {args.dtype}, {torch.get_num_threads()} threads, ", end="")
    print(f"{args.rounds} rounds\n")
    print("| run | images/s (each round) | vs transformers loop | vs model-only around it (each round) | mean |")
    print("|---|---:|---:|---:|---:|")
    mean_model = sum(model_rates) / len(model_rates)
    rows = [("torchclip model-only", model_rates, None)]
    if reference_rate is not None:
        rows.insert(0, ("transformers loop", [reference_rate], [reference_rate / mean_model]))
    rows += [(name, rates[name], ratios[name]) for name in pipelines]
    for name, values, against_model in rows:
        vs_reference = f"{sum(values) / len(values) / reference_rate:.2f}x" if reference_rate else "-"
        against = ", ".join(f"{r:.3f}" for r in against_model) if against_model else "-"
        mean = f"{sum(against_model) / len(against_model):.3f}" if against_model else "-"
        print(f"| {name} | {', '.join(f'{v:.2f}' for v in values)} | {vs_reference} | {against} | {mean} |")


if __name__ == "__main__":
    main()
