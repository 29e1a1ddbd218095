"""Images per second: torchclip's CLIPImageProcessor side by side with transformers' two backends and OpenCLIP.

    .venv/bin/python benchmarks/bench_image_processor.py                    # vs transformers' PIL backend
    PYTHONPATH=src /work/refenv/bin/python benchmarks/bench_image_processor.py   # + torchvision backend, OpenCLIP
    ... --baseline old_image_processor.py    # also time an earlier image_processor.py (before/after)

transformers 5 picks its torchvision backend (`CLIPImageProcessor`) whenever torchvision is installed and its
Pillow backend (`CLIPImageProcessorPil`) otherwise; each reference is measured where it is importable. Inputs:
1. the bundled real photos (0.1-0.3 MP, mixed sizes and modes) as PIL images, batch 32 and batch 1;
2. 1-3 MP photos (crops of the bundled ones, upscaled, some portrait), decoded to PIL up front, batch 32 and 1;
3. the same photos as JPEG files, decode included, batch 32 (`fast_jpeg_decode=True` also reported, with
   its pixel difference from the exact path).
Then a per-step profile of the exact path on the JPEGs (one thread, CPU ms per photo), and (5.) resize + crop
alone, Pillow against torchclip.resample, on one photo of each shape.
All candidates run interleaved round by round (best of `--repeats`), so a busy moment on a shared machine
slows all of them; ratios are against the first reference listed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # also runs in an environment where torchclip is not installed

from torchclip import image_processor as ip  # noqa: E402
from torchclip.image_processor import CLIPImageProcessor  # noqa: E402

PHOTOS = sorted((ROOT / "tests" / "data" / "images").glob("*.png"))


def _opened(items: list) -> list:
    return [Image.open(i) if isinstance(i, (str, Path)) else i for i in items]


def references() -> dict[str, Callable[[list], torch.Tensor]]:
    """What can be compared in this environment: name -> function(list of PIL images or paths) -> tensor."""
    found = {}
    try:
        import transformers

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            default = transformers.CLIPImageProcessor()
            pil_backend = getattr(transformers, "CLIPImageProcessorPil", None)
        backends = [default] + ([pil_backend()] if pil_backend and not isinstance(default, pil_backend) else [])
        for processor in backends:
            name = f"transformers {transformers.__version__} {type(processor).__name__}"
            if "Torchvision" in str(type(processor).__mro__):
                name += " (torchvision)"
            found[name] = lambda images, p=processor: p(_opened(images), return_tensors="pt").pixel_values
    except ImportError:
        pass
    try:
        import open_clip

        transform = open_clip.image_transform(224, is_train=False)
        found[f"OpenCLIP {open_clip.__version__} image_transform"] = lambda images: torch.stack(
            [transform(image) for image in _opened(images)]
        )
    except ImportError:
        pass
    return found


def images_per_second(fns: dict[str, Callable[[list], torch.Tensor]], items: list, rounds: int) -> dict:
    """{name: (images/s, output)}, best of `rounds`, candidates interleaved round by round."""
    best = dict.fromkeys(fns, float("inf"))
    outputs = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            outputs[name] = fn(items)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: (len(items) / best[name], outputs[name]) for name in fns}


def make_photo_folder(
    folder: Path, count: int, seed: int = 0, megapixels: tuple[float, float] = (1.0, 3.0)
) -> list[Path]:
    """JPEGs of 1-3 megapixels (by default): random crops of the bundled photos, upscaled, some flipped or
    portrait."""
    rng = np.random.default_rng(seed)
    sources = [Image.open(p).convert("RGB") for p in PHOTOS]
    paths = []
    for index in range(count):
        source = sources[index % len(sources)]
        w, h = source.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        pixels = rng.uniform(*megapixels) * 1e6
        scale = (pixels / (cw * ch)) ** 0.5
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


def compare(outputs: torch.Tensor, reference: torch.Tensor | None) -> str:
    if reference is None or outputs.shape != reference.shape:
        return "-"
    d = (outputs - reference).abs()
    return f"max {d.max().item():.1e}, mean {d.mean().item():.1e}"


def report(title: str, results: dict) -> None:
    print(f"\n{title}")
    print(f"  {'':<66} {'images/s':>9} {'ratio':>7}   difference from the first reference")
    base_rate, base_out = next(iter(results.values()))
    for name, (rate, out) in results.items():
        print(f"  {name:<66} {rate:9.1f} {rate / base_rate:6.2f}x   {compare(out, base_out)}")


def one_by_one(fn: Callable[[list], torch.Tensor]) -> Callable[[list], torch.Tensor]:
    """Batch 1: each image in its own call."""
    return lambda items: torch.cat([fn([item]) for item in items])


def load_baseline(path: str) -> Any:
    """An earlier image_processor.py as its own module (it imports torchclip.batch/hub from src/)."""
    spec = importlib.util.spec_from_file_location("baseline_image_processor", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def torchclip_candidates(baseline: Any, threads: int) -> dict[str, Callable[[list], torch.Tensor]]:
    exact = CLIPImageProcessor()
    found = {
        "torchclip, 1 thread": lambda images: exact(images, return_tensors="pt", num_workers=1).pixel_values,
        f"torchclip, {threads} threads (default)": lambda images: exact(images, return_tensors="pt").pixel_values,
    }
    if baseline is not None:
        before = baseline.CLIPImageProcessor()
        found[f"torchclip before ({baseline.__file__}), {threads} threads"] = lambda images: (
            before(images, return_tensors="pt").pixel_values
        )
    return found


def profile(paths: list[Path], repeats: int) -> None:
    """CPU ms per photo for each step of the exact path, one thread, on the JPEG files. CPU time (not wall
    time), so that other jobs on a shared machine inflate it less: it is what the folder pipeline's budget
    is made of."""
    settings = CLIPImageProcessor()._settings()
    scale, shift = CLIPImageProcessor()._scale_and_shift()

    def timed(fn: Callable[[], object]) -> float:
        return cpu_ms(fn, repeats) / len(paths)

    def pillow_decode(path: Path) -> Image.Image:
        image = Image.open(path)
        image.getexif()  # the orientation check, as _open makes it
        image.load()  # (closes the file of a single-frame image)
        return image

    decoded = [pillow_decode(p) for p in paths]
    sizes = [ip._resized_size(*image.size, settings.size) for image in decoded]
    boxes = [ip._crop_box(*size, settings.crop_size, "openai") for size in sizes]
    cropped = [image.resize(s, 3).crop(b) for image, s, b in zip(decoded, sizes, boxes, strict=True)]
    arrays = [np.asarray(image) for image in cropped]
    steps = {
        "decode, Pillow (libjpeg-turbo) + EXIF check": lambda: [pillow_decode(p) for p in paths],
        "decode, simplejpeg (libjpeg-turbo) into an array (what a call runs)": lambda: [
            ip._open(p, settings) for p in paths
        ],
        "resize + crop, Pillow resize() then crop()": lambda: [
            image.resize(s, 3).crop(b) for image, s, b in zip(decoded, sizes, boxes, strict=True)
        ],
        "resize + crop, torchclip.resample (only the crop's lines)": lambda: [
            ip._resize_and_crop(image, s, b, 3) for image, s, b in zip(decoded, sizes, boxes, strict=True)
        ],
        "to uint8 array": lambda: [np.asarray(image) for image in cropped],
        "stack + normalise, torch multiply-add (channels-last batch)": lambda: ip._multiply_add(
            torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), scale, shift
        ),
        "stack + normalise, table lookup (what a call runs)": lambda: ip._normalise(
            np.stack(arrays), ip._level_table(scale, shift)
        ),
        "whole exact path, 1 thread": lambda: CLIPImageProcessor()(paths, return_tensors="pt", num_workers=1),
    }
    print(f"\n4. exact path per step, 1 thread, CPU ms per photo ({len(paths)} JPEGs)")
    for name, fn in steps.items():
        print(f"  {name:<58} {timed(fn):7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", help="an earlier image_processor.py to time beside the current one")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: cores)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    torch.set_num_threads(args.threads)
    threads = min(8, cores)
    refs = references()
    baseline = load_baseline(args.baseline) if args.baseline else None
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, {cores} CPU cores, torch {torch.__version__}, Pillow {Image.__version__}"
    )
    candidates = {**refs, **torchclip_candidates(baseline, threads)}

    small = [Image.open(PHOTOS[i % len(PHOTOS)]).copy() for i in range(args.batch)]  # decoded up front
    report(
        f"1a. {args.batch} bundled photos (0.1-0.3 MP), PIL in -> tensor out",
        images_per_second(candidates, small, args.repeats),
    )
    report(
        "1b. the same, batch 1 (one photo per call)",
        images_per_second(
            {name: one_by_one(fn) for name, fn in candidates.items()}, small[: len(PHOTOS)], args.repeats
        ),
    )

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_photo_folder(Path(tmp), args.files)
        megapixels = [w * h / 1e6 for w, h in (Image.open(p).size for p in paths)]
        decoded = [Image.open(p).copy() for p in paths[: args.batch]]
        report(
            f"2a. {len(decoded)} photos of {min(megapixels):.1f}-{max(megapixels):.1f} MP, PIL in -> tensor out",
            images_per_second(candidates, decoded, args.repeats),
        )
        report(
            "2b. the same, batch 1",
            images_per_second({name: one_by_one(fn) for name, fn in candidates.items()}, decoded[:8], args.repeats),
        )

        chunks = [paths[i : i + args.batch] for i in range(0, len(paths), args.batch)]

        def over_chunks(fn: Callable[[list], torch.Tensor]) -> Callable[[list], torch.Tensor]:
            return lambda _: torch.cat([fn(chunk) for chunk in chunks])

        fast = CLIPImageProcessor(fast_jpeg_decode=True)
        files = {name: over_chunks(fn) for name, fn in candidates.items()}
        files["torchclip fast_jpeg_decode=True (approximate)"] = over_chunks(
            lambda c: fast(c, return_tensors="pt").pixel_values
        )
        results = images_per_second(files, paths, max(1, args.repeats // 2))
        report(f"3. {len(paths)} JPEG files, decode included, batch {args.batch}", results)
        exact_rate, exact_out = results[f"torchclip, {threads} threads (default)"]
        fast_rate, fast_out = results["torchclip fast_jpeg_decode=True (approximate)"]
        levels = (fast_out - exact_out).abs() * torch.tensor(ip.OPENAI_CLIP_STD)[:, None, None] * 255
        p99 = levels.flatten().kthvalue(int(levels.numel() * 0.99)).values.item()
        print(
            f"\n  fast_jpeg_decode vs exact, in 8-bit levels: mean {levels.mean().item():.2f}, 99th percentile "
            f"{p99:.1f}, max {levels.max().item():.0f}; {fast_rate / exact_rate:.2f}x the exact path's speed"
        )
        profile(paths[: args.batch], args.repeats)
    resize_per_shape(args.repeats)


# ---------------------------------------------------------------------- 5. resize + crop alone, per photo shape


def resize_per_shape(repeats: int) -> None:
    """Pillow's resize + crop against torchclip's (`_resize_and_crop`: torchclip.resample, only the crop's
    lines) on one photo of each shape, resized to 224 on the short side and centre-cropped, CPU ms on one
    thread, with whether the pixels are identical."""
    source = Image.open(PHOTOS[0]).convert("RGB")
    print("\n5. resize + crop to 224x224, one photo, one thread, CPU ms")
    print(f"  {'photo':<12} {'Pillow':>8} {'torchclip':>10} {'ratio':>7}  bit-identical")
    for size in ((1500, 1000), (1000, 1500), (1200, 1200), (4000, 3000)):
        image = source.resize(size, Image.Resampling.BICUBIC)
        new_size = ip._resized_size(*size, {"shortest_edge": 224})
        box = ip._crop_box(*new_size, {"height": 224, "width": 224}, "openai")
        pillow = cpu_ms(lambda: image.resize(new_size, 3).crop(box), repeats)  # noqa: B023 - called at once
        ours = cpu_ms(lambda: ip._resize_and_crop(image, new_size, box, 3), repeats)  # noqa: B023
        same = ip._resize_and_crop(image, new_size, box, 3).tobytes() == image.resize(new_size, 3).crop(box).tobytes()
        print(f"  {size[0]}x{size[1]:<7} {pillow:8.2f} {ours:10.2f} {pillow / ours:6.2f}x  {same}")


def cpu_ms(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best * 1e3


if __name__ == "__main__":
    main()
