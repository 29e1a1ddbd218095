"""Reading many image files while the model stays busy: finding them, and decoding them in worker
processes into batches of 8-bit pixels on the model's device (`pixel_batches`; `torchclip.embed`
turns those into embeddings).

Decoding a JPEG and resizing it costs a few milliseconds of CPU per photo; run in the same thread as the
model, that time is added to every batch. Here `torch.utils.data.DataLoader` worker processes decode and
preprocess the next batches while the main process runs the model on the current one, so end to end the
model waits for pixels only when the workers cannot keep up.

Workers send 8-bit pixels (`CLIPImageProcessor.uint8_pixels`, a quarter of the bytes of float32); the
process running the model finishes them with the processor's own `rescale_and_normalize` on the model's
device, so on the CPU the pixels are the same as `image_processor(path)` gives.

Batches come back in the order of the input list (the DataLoader's default in-order delivery), and a file
that cannot be decoded is reported with its error and skipped; it never stops the run.

On a CUDA device the batches are pinned and copied asynchronously while the workers prefetch the next ones.
With `fast_jpeg_decode` on a CUDA device (`torchclip embed --device cuda --fast-decode`) the workers only read
the files' bytes: JPEGs are decoded on the GPU (torchvision's nvJPEG `decode_jpeg`), other formats by Pillow,
and resizing and cropping run on the GPU with torch's antialiased bicubic, the approximate path
(`resize_and_crop_tensor`; its distance from the exact pixels is measured by benchmarks/gpu_check.py).
Without a GPU or torchvision, the same call runs the CPU path.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from torchclip.image_processor import _crop_box, _resized_size

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFiles",
    "PixelBatch",
    "default_num_workers",
    "find_images",
    "is_image_file",
    "pixel_batches",
    "resize_and_crop_tensor",
]

# Files with these extensions are always tried (and reported when unreadable); other files count as
# images only when Pillow recognises their content.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif", ".ppm"})


def is_image_file(path: str | os.PathLike) -> bool:
    """True when Pillow recognises the file's header as an image format, or its extension says image.

    Content decides, so a photo saved without an extension (or with a wrong one) is found; an image
    extension is enough on its own so that a corrupt photo is reported rather than silently ignored.
    """
    path = Path(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return False


def find_images(folder: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Every image file under `folder`, recursively, sorted; hidden files and folders (".name") and the
    folders in `exclude` (e.g. an output folder inside the photos) are skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{str(root)!r} is not a folder")
    excluded = {Path(p).resolve() for p in exclude}
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(
            d for d in subdirs if not d.startswith(".") and (Path(directory) / d).resolve() not in excluded
        )
        for name in files:
            path = Path(directory) / name
            if not name.startswith(".") and path.is_file() and is_image_file(path):
                found.append(path)
    return sorted(found)


class ImageFiles(Dataset):
    """Image files -> (index, uint8 pixels [3, H, W] or None, error message or None), decoded with the
    image processor's exact steps but without its rescale/normalise (done later on the model's device)."""

    def __init__(self, paths: Sequence[str | os.PathLike], image_processor: Any):
        self.paths = [Path(p) for p in paths]
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            pixels = self.image_processor.uint8_pixels(self.paths[index], num_workers=1)[0]
        except (ValueError, OSError, TypeError) as exc:  # the processor's message names the file; keep the why
            return index, None, str(exc).removeprefix(f"image #0 ({str(self.paths[index])!r}): ")
        return index, pixels, None


@dataclass
class PixelBatch:
    """One batch of decoded files: `pixels[i]` (8-bit values [3, h, w], not yet rescaled or normalised;
    None when every file failed) is input `indices[i]`; `failures` are (index, error)."""

    indices: list[int]
    pixels: torch.Tensor | None
    failures: list[tuple[int, str]]

    def pin_memory(self) -> PixelBatch:  # called by the DataLoader's pinning thread when pin_memory=True
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


def _collate(items: list[tuple[int, torch.Tensor | None, str | None]]) -> PixelBatch:
    good = [(index, pixels) for index, pixels, _ in items if pixels is not None]
    failures = [(index, error) for index, pixels, error in items if pixels is None]
    pixels = torch.stack([p for _, p in good]) if good else None
    return PixelBatch([index for index, _ in good], pixels, failures)


def default_num_workers() -> int:
    """Decoding processes to run beside the model: one per CPU core, at most 8. Even on 2 cores two
    workers beat one end to end (benchmarks/bench_embed_folder.py; docs/performance.md): with the model's
    threads on the same cores, a second worker wins decoding a fairer share of them."""
    return max(1, min(8, os.cpu_count() or 1))


class FileBytes(Dataset):
    """Image files -> (index, the file's bytes as a uint8 tensor or None, error or None): all the workers do
    when the device decodes."""

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            data = self.paths[index].read_bytes()
        except OSError as exc:
            return index, None, f"could not be read: {exc}"
        if not data:
            return index, None, "the file is empty (0 bytes)"
        return index, torch.frombuffer(bytearray(data), dtype=torch.uint8), None


def _collate_bytes(items: list) -> list:
    return items


def _nvjpeg_decoder() -> Callable | None:
    """torchvision's batched `decode_jpeg` (nvJPEG on CUDA devices), or None without torchvision."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg  # noqa: PLC0415 - optional dependency (torchvision)
    except ImportError:
        return None
    return lambda data, device: decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)


def _decodes_on_device(device: torch.device, image_processor: Any) -> bool:
    return device.type == "cuda" and bool(image_processor.fast_jpeg_decode) and _nvjpeg_decoder() is not None


def resize_and_crop_tensor(image: torch.Tensor, image_processor: Any) -> torch.Tensor:
    """The approximate device path: a uint8 [3, H, W] image on any device -> float [3, h, w] holding 8-bit
    values (rounded and clamped, like Pillow's output), resized with torch's antialiased bicubic (what
    torchvision's Resize does on tensors) and centre-cropped with the processor's size rules and offsets.
    Close to, not equal to, Pillow's fixed-point filter: benchmarks/gpu_check.py measures the difference."""
    pixels = image[None].float()
    if image_processor.do_resize:
        width, height = _resized_size(image.shape[2], image.shape[1], image_processor.size)
        if (width, height) != (image.shape[2], image.shape[1]):
            pixels = torch.nn.functional.interpolate(pixels, size=(height, width), mode="bicubic", antialias=True)
            pixels = pixels.round_().clamp_(0, 255)
    if image_processor.do_center_crop:
        height, width = pixels.shape[2:]
        left, top, right, bottom = _crop_box(width, height, image_processor.crop_size, image_processor.pipeline)
        out = pixels.new_zeros(1, 3, bottom - top, right - left)
        x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
        out[:, :, y0 - top : y1 - top, x0 - left : x1 - left] = pixels[:, :, y0:y1, x0:x1]
        pixels = out
    return pixels[0]


def _decode_on_device(
    items: list[tuple[int, torch.Tensor | None, str | None]], device: torch.device, image_processor: Any
) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    """File bytes -> (indices, float 8-bit pixels [N, 3, h, w] on `device`, failures). JPEGs go to nvJPEG as
    one batch; anything else (or a JPEG nvJPEG refuses) is decoded by Pillow and sent to the device."""
    decode = _nvjpeg_decoder()
    failures = [(index, error) for index, data, error in items if data is None]
    readable = [(index, data) for index, data, _ in items if data is not None]
    jpegs = [(index, data) for index, data in readable if data[:2].tolist() == [0xFF, 0xD8]]
    decoded: dict[int, torch.Tensor] = {}
    if jpegs:
        try:
            decoded.update(zip([i for i, _ in jpegs], decode([d for _, d in jpegs], device), strict=True))
        except RuntimeError:  # one bad JPEG fails the batch: decode one by one below
            pass
    for index, data in readable:
        if index in decoded:
            continue
        try:
            with Image.open(io.BytesIO(data.numpy().tobytes())) as opened:
                image = ImageOps.exif_transpose(opened).convert("RGB")
            decoded[index] = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).to(device)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            failures.append((index, f"could not be decoded: {type(exc).__name__}: {exc}"))
    indices = [index for index, _ in readable if index in decoded]
    pixels = [resize_and_crop_tensor(decoded[index], image_processor) for index in indices]
    return indices, torch.stack(pixels) if pixels else None, sorted(failures)


def pixel_batches(
    paths: Sequence[str | os.PathLike],
    image_processor: Any,
    device: torch.device,
    batch_size: int = 32,
    num_workers: int | None = None,
) -> Iterator[PixelBatch]:
    """The files decoded in order, batch by batch, by `num_workers` processes (0: in this process; default:
    `default_num_workers`), with their 8-bit pixels on `device`, while the caller works on the last batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    workers = default_num_workers() if num_workers is None else num_workers
    batches = math.ceil(len(paths) / batch_size)
    workers = min(workers, batches) if batches > 1 else 0  # nothing to overlap with a single batch
    on_device = _decodes_on_device(device, image_processor)
    loader = DataLoader(
        FileBytes(paths) if on_device else ImageFiles(paths, image_processor),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate_bytes if on_device else _collate,
        pin_memory=device.type == "cuda" and not on_device,
        prefetch_factor=4 if workers else None,
    )
    for batch in loader:
        if on_device:
            batch = PixelBatch(*_decode_on_device(batch, device, image_processor))
        elif batch.pixels is not None:
            batch.pixels = batch.pixels.to(device, non_blocking=True)
        yield batch
