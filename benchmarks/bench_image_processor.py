"""Images per second: torchclip's CLIPImageProcessor side by side with transformers and OpenCLIP.

    .venv/bin/python benchmarks/bench_image_processor.py            # torchclip vs transformers
    /work/refenv/bin/python benchmarks/bench_image_processor.py     # torchclip vs OpenCLIP's transform

Each reference is measured only where it is importable. Two workloads:
1. a batch of 32 real photos, PIL images in -> float tensor out (decode excluded);
2. a folder of JPEG photos of 1-3 megapixels on disk (decode included), made in a temporary folder from
   the bundled photos (resized, cropped and flipped variants), the case that dominates embedding a photo
   collection; here torchclip's `fast_jpeg_decode=True` (reduced-size decode) is also reported, with its
   pixel difference from the exact path.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # also runs in an environment where torchclip is not installed

from torchclip.image_processor import CLIPImageProcessor  # noqa: E402

PHOTOS = sorted((ROOT / "tests" / "data" / "images").glob("*.png"))


def references() -> dict[str, Callable[[list], torch.Tensor]]:
    """What can be compared in this environment: name -> function(list of PIL images or paths) -> tensor."""
    found = {}
    try:
        import transformers

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf = transformers.CLIPImageProcessor()
        found[f"transformers {transformers.__version__} ({type(hf).__name__})"] = lambda images: (
            hf([Image.open(i) if isinstance(i, (str, Path)) else i for i in images], return_tensors="pt").pixel_values
        )
    except ImportError:
        pass
    try:
        import open_clip

        transform = open_clip.image_transform(224, is_train=False)
        found[f"OpenCLIP {open_clip.__version__} image_transform"] = lambda images: torch.stack(
            [transform(Image.open(i) if isinstance(i, (str, Path)) else i) for i in images]
        )
    except ImportError:
        pass
    return found


def images_per_second(fns: dict[str, Callable[[list], torch.Tensor]], items: list, rounds: int) -> dict:
    """{name: (images/s, output)}, best of `rounds`. The candidates run interleaved, round by round, so a
    busy period on this shared machine slows all of them rather than one."""
    best = dict.fromkeys(fns, float("inf"))
    outputs = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            outputs[name] = fn(items)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: (len(items) / best[name], outputs[name]) for name in fns}


def make_photo_folder(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """JPEGs of 1-3 megapixels: random crops of the bundled photos, upscaled, some flipped or portrait."""
    rng = np.random.default_rng(seed)
    sources = [Image.open(p).convert("RGB") for p in PHOTOS]
    paths = []
    for index in range(count):
        source = sources[index % len(sources)]
        w, h = source.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        megapixels = rng.uniform(1.0, 3.0) * 1e6
        scale = (megapixels / (cw * ch)) ** 0.5
        image = source.crop((x, y, x + cw, y + ch)).resize(
            (int(cw * scale), int(ch * scale)), Image.Resampling.BILINEAR
        )
        if index % 3 == 1:
            image = image.transpose(Image.Transpose.ROTATE_90)
        if index % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"photo_{index:04d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def row(name: str, rate: float, base: float | None, diff: str) -> str:
    ratio = f"{rate / base:6.2f}x" if base else "     -"
    return f"  {name:<58} {rate:9.1f} {ratio}   {diff}"


def compare(outputs: torch.Tensor, reference: torch.Tensor | None) -> str:
    if reference is None:
        return "-"
    d = (outputs - reference).abs()
    return f"max {d.max().item():.1e}, mean {d.mean().item():.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    refs = references()
    cores = os.cpu_count()
    print(f"{cores} CPU cores, torch {torch.__version__}, Pillow {Image.__version__}")
    header = f"  {'':<58} {'images/s':>9} {'ratio':>7}   difference from the first reference"

    # 1. batch of PIL photos
    batch = [Image.open(PHOTOS[i % len(PHOTOS)]).copy() for i in range(args.batch)]  # decoded up front
    exact = CLIPImageProcessor()
    threads = min(8, cores or 1)
    candidates = {
        **refs,
        "torchclip, 1 thread": lambda images: exact(images, return_tensors="pt", num_workers=1).pixel_values,
        f"torchclip, {threads} threads (default)": lambda images: exact(images, return_tensors="pt").pixel_values,
    }
    print(f"\n1. {args.batch} photos, PIL in -> tensor out (ratio: vs the first reference)")
    report(images_per_second(candidates, batch, args.repeats), header)

    # 2. JPEG files on disk, decode included
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        paths = make_photo_folder(Path(tmp), args.files)
        megapixels = [w * h / 1e6 for w, h in (Image.open(p).size for p in paths)]
        made = time.perf_counter() - start
        print(
            f"\n2. {len(paths)} JPEGs of {min(megapixels):.1f}-{max(megapixels):.1f} MP (made in {made:.0f} s), "
            "decode included"
        )
        chunks = [paths[i : i + args.batch] for i in range(0, len(paths), args.batch)]

        def over_chunks(fn: Callable[[list], torch.Tensor]) -> Callable[[list], torch.Tensor]:
            return lambda _: torch.cat([fn(chunk) for chunk in chunks])

        fast = CLIPImageProcessor(fast_jpeg_decode=True)
        candidates = {name: over_chunks(fn) for name, fn in refs.items()}
        candidates["torchclip (exact)"] = over_chunks(lambda c: exact(c, return_tensors="pt").pixel_values)
        candidates["torchclip fast_jpeg_decode=True"] = over_chunks(lambda c: fast(c, return_tensors="pt").pixel_values)
        results = images_per_second(candidates, paths, 1)
        report(results, header)
        (exact_rate, exact_out), (fast_rate, fast_out) = (
            results["torchclip (exact)"],
            results["torchclip fast_jpeg_decode=True"],
        )
        levels = (fast_out - exact_out).abs() * torch.tensor(exact.image_std)[:, None, None] * 255
        p99 = levels.flatten().kthvalue(int(levels.numel() * 0.99)).values.item()
        print(
            f"\n  fast_jpeg_decode vs exact, in 8-bit levels: mean {levels.mean().item():.2f}, 99th percentile "
            f"{p99:.1f}, max {levels.max().item():.0f}; {fast_rate / exact_rate:.2f}x the exact path's speed"
        )


def report(results: dict, header: str) -> None:
    print(header)
    base_rate, base_out = next(iter(results.values()))
    for name, (rate, out) in results.items():
        print(row(name, rate, base_rate, compare(out, base_out)))


if __name__ == "__main__":
    main()
