"""Reading many image files while the model stays busy: finding them, and decoding them in worker
processes into batches of 8-bit pixels on the model's device (`pixel_batches`; `torchclip.embed`
turns those into embeddings).

Decoding a JPEG and resizing it costs a few milliseconds of CPU per photo; run in the same thread as the
model, that time is added to every batch. Here `torch.utils.data.DataLoader` worker processes decode and
preprocess the next batches while the main process runs the model on the current one, so end to end the
model waits for pixels only when the workers cannot keep up. Where the model's threads take every core,
the workers pause while the model works on a batch and decode while it waits (`DecodingTurns`).

Workers send 8-bit pixels (`CLIPImageProcessor.uint8_pixels`, a quarter of the bytes of float32); the
process running the model finishes them with the processor's own `rescale_and_normalize` on the model's
device, so on the CPU the pixels are the same as `image_processor(path)` gives.

Batches come back in the order of the input list (the DataLoader's default in-order delivery), and a file
that cannot be decoded is reported with its error and skipped; it never stops the run.

On a CUDA device the batches are pinned and copied asynchronously while the workers prefetch the next ones.
With `fast_jpeg_decode` on a CUDA device (`torchclip embed --device cuda --fast-decode`) the workers only read
the headers and bytes of RGB and greyscale JPEGs: those are decoded on the GPU in one batch (torchvision's
nvJPEG `decode_jpeg`), and resized and cropped there with Pillow's own integer arithmetic
(`CLIPImageProcessor.resize_and_crop_tensors`, bit for bit the CPU path's resize). So the one difference
from the exact pixels is the JPEG decoder (nvJPEG's IDCT and chroma upsampling against libjpeg-turbo's;
benchmarks/gpu_check.py measures it). Other files are decoded exactly by the workers, as on the CPU path.
Without a GPU or torchvision, the same call runs the CPU path.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from torchclip.image_processor import DECODING_ERRORS, warm_up
from torchclip.resample import FILTER_SUPPORT

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFiles",
    "PixelBatch",
    "default_num_workers",
    "find_images",
    "is_image_file",
    "pixel_batches",
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

    def __init__(self, paths: Sequence[str | os.PathLike], image_processor: Any, turns: DecodingTurns | None = None):
        self.paths = [Path(p) for p in paths]
        self.image_processor = image_processor
        self.turns = turns

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        if self.turns is not None:
            self.turns.wait_for_ours()
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
    workers beat one end to end (benchmarks/bench_embed_folder.py; docs/performance.md): whenever the model
    waits for pixels, both cores decode."""
    return max(1, min(8, os.cpu_count() or 1))


class DecodingTurns:
    """Decoding and the model taking turns at the CPU, for when the model's threads take every core.

    Running at the same time, a worker preempts one of the model's threads in the middle of an operation,
    and the model's other threads then wait for that one at the operation's end: each millisecond of
    decoding costs the model a millisecond of its time rather than half of it. So here the workers pause,
    between photos, while the model works on a batch, and decode, on every core, while it waits for the
    next one. On 2 cores, 1,000 photos end to end measured 0.81-0.90 of model-only side by side and
    0.86-0.94 taking turns, with end to end at its fastest while taking turns and model-only moving by up
    to 10% between runs (docs/performance.md). Whatever the caller does with a batch counts as the
    model's work.

    A process-shared lock is the gate: the model holds it while it works, and a worker passes through it
    before each photo. A multiprocessing Event would not do: its set() waits for every sleeper to wake,
    forever for a worker killed while it slept (the DataLoader kills workers it shuts down)."""

    def __init__(self) -> None:
        self._gate = multiprocessing.get_context().Lock()
        self._held = False

    def wait_for_ours(self) -> None:
        """In a worker, before each photo: returns once the model is waiting for pixels."""
        with self._gate:
            pass

    def model_works(self) -> None:
        # A worker passes through in microseconds; one that died in there leaves the gate open instead of stuck.
        self._held = self._gate.acquire(timeout=1.0)

    def model_waits(self) -> None:
        if self._held:
            self._gate.release()
            self._held = False


class JpegBytesOrPixels(ImageFiles):
    """Image files -> (index, a JPEG's bytes as a uint8 tensor or None, exact uint8 pixels or None, error or
    None), for the device path: RGB and greyscale JPEGs are only read (their header checked by Pillow,
    decompression-bomb limit included), to be decoded on the device; any other file is decoded here exactly,
    as `ImageFiles` does."""

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, torch.Tensor | None, str | None]:
        try:
            data = self.paths[index].read_bytes()
            with Image.open(io.BytesIO(data)) as header:  # reads the header only: format, mode and size
                modes = ("RGB", "L") if self.image_processor.do_convert_rgb else ("RGB",)
                jpeg = header.format in ("JPEG", "MPO") and header.mode in modes
        except DECODING_ERRORS:
            jpeg = False  # the exact path says what is wrong, in its words
        if jpeg:
            return index, torch.frombuffer(bytearray(data), dtype=torch.uint8), None, None
        return (index, None, *self.exact(index)[1:])

    def exact(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        """The file decoded on the CPU, exactly (`ImageFiles`' item)."""
        return super().__getitem__(index)


def _collate_as_list(items: list) -> list:
    return items


def _nvjpeg_decoder() -> Callable | None:
    """torchvision's batched `decode_jpeg` (nvJPEG on CUDA devices), or None without torchvision."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg  # noqa: PLC0415 - optional dependency (torchvision)
    except ImportError:
        return None
    return lambda data, device: decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)


def _decodes_on_device(device: torch.device, image_processor: Any) -> bool:
    return (
        device.type == "cuda"
        and bool(image_processor.fast_jpeg_decode)
        and int(image_processor.resample) in FILTER_SUPPORT
        and _nvjpeg_decoder() is not None
    )


def _decode_on_device(
    items: list[tuple[int, torch.Tensor | None, torch.Tensor | None, str | None]],
    files: JpegBytesOrPixels,
    device: torch.device,
    decode: Callable[[list[torch.Tensor], torch.device], list[torch.Tensor]],
) -> PixelBatch:
    """A batch of `files`' items -> a PixelBatch on `device`. The JPEGs are decoded by `decode` (nvJPEG) in
    one call, or one by one when that fails (one corrupt file fails the whole call; a JPEG nvJPEG cannot
    decode goes to the exact CPU path), then resized and cropped in groups of one size on the device; the
    workers' exact pixels join them in input order."""
    failures = [(index, error) for index, _, _, error in items if error is not None]
    pixels = {index: exact.to(device) for index, _, exact, _ in items if exact is not None}
    jpegs = [(index, data) for index, data, _, _ in items if data is not None]
    try:
        decoded = dict(zip([index for index, _ in jpegs], decode([data for _, data in jpegs], device), strict=True))
    except RuntimeError:
        decoded = {}
        for index, data in jpegs:
            try:
                decoded[index] = decode([data], device)[0]
            except RuntimeError:
                _, exact, error = files.exact(index)
                if exact is None:
                    failures.append((index, error))
                else:
                    pixels[index] = exact.to(device)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for index, image in decoded.items():
        by_size.setdefault(tuple(image.shape), []).append(index)
    for group in by_size.values():
        resized = files.image_processor.resize_and_crop_tensors(torch.stack([decoded[index] for index in group]))
        pixels.update(zip(group, resized, strict=True))
    indices = sorted(pixels)
    return PixelBatch(indices, torch.stack([pixels[index] for index in indices]) if indices else None, sorted(failures))


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
    cores_taken = device.type == "cpu" and torch.get_num_threads() + workers > (os.cpu_count() or 1)
    turns = DecodingTurns() if workers and cores_taken else None
    files = (JpegBytesOrPixels if on_device else ImageFiles)(paths, image_processor, turns)
    if workers and multiprocessing.get_start_method() == "fork":
        # Forked workers inherit the loaded resize kernels and decoder checks; otherwise each worker of each
        # call spends ~0.3 s on them before its first photo (~2% of a 320-photo folder on 2 cores).
        warm_up()
    loader = DataLoader(
        files,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate_as_list if on_device else _collate,
        pin_memory=device.type == "cuda" and not on_device,
        prefetch_factor=4 if workers else None,
    )
    batches = iter(loader)  # held here, so that `finally` opens the gate before the workers are shut down
    try:
        for batch in batches:
            if turns is not None:
                turns.model_works()
            if on_device:
                batch = _decode_on_device(batch, files, device, _nvjpeg_decoder())
            elif batch.pixels is not None:
                batch.pixels = batch.pixels.to(device, non_blocking=True)
            yield batch
            if turns is not None:
                turns.model_waits()
    finally:
        if turns is not None:  # a caller that stops early: the workers must be free to see the loader's shutdown
            turns.model_waits()
