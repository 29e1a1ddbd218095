"""Embedding many image files while keeping the model busy.

Decoding a JPEG and resizing it costs a few milliseconds of CPU per photo; run in the same thread as the
model, that time is added to every batch. Here `torch.utils.data.DataLoader` worker processes decode and
preprocess the next batches while the main process runs the model on the current one, so end to end the
model waits for pixels only when the workers cannot keep up.

Two details keep the hand-over cheap: workers send 8-bit pixels (a quarter of the bytes of float32), and
rescaling + normalisation happen in the main process on the model's device, with the image processor's
own per-channel `pixel * scale + shift`, so the pixels are the same as `image_processor(path)` gives.

Batches come back in the order of the input list (the DataLoader's default in-order delivery), and a file
that cannot be decoded is reported with its error and skipped; it never stops the run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "EmbeddedBatch",
    "FolderEmbeddings",
    "ImageFiles",
    "default_num_workers",
    "embed_folder",
    "embed_image_files",
    "find_images",
    "is_image_file",
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
            pixels = self.image_processor(
                self.paths[index], return_tensors="pt", num_workers=1, do_rescale=False, do_normalize=False
            )["pixel_values"][0]
        except (ValueError, OSError, TypeError) as exc:  # the processor's message names the file; keep the why
            return index, None, str(exc).removeprefix(f"image #0 ({str(self.paths[index])!r}): ")
        return index, pixels.to(torch.uint8), None


@dataclass
class _PixelBatch:
    indices: list[int]
    pixels: torch.Tensor | None
    failures: list[tuple[int, str]]

    def pin_memory(self) -> _PixelBatch:  # called by the DataLoader's pinning thread when pin_memory=True
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


def _collate(items: list[tuple[int, torch.Tensor | None, str | None]]) -> _PixelBatch:
    good = [(index, pixels) for index, pixels, _ in items if pixels is not None]
    failures = [(index, error) for index, pixels, error in items if pixels is None]
    pixels = torch.stack([p for _, p in good]) if good else None
    return _PixelBatch([index for index, _ in good], pixels, failures)


@dataclass
class EmbeddedBatch:
    """One batch of results: `features[i]` belongs to input `indices[i]`; `failures` are (index, error)."""

    indices: list[int]
    features: torch.Tensor
    failures: list[tuple[int, str]] = field(default_factory=list)


def default_num_workers() -> int:
    """Decoding processes to run beside the model: one per CPU core, at most 8. On the 2-core machine
    here two workers beat one by 10-12% end to end (fp32 and bf16; benchmarks/bench_embed_folder.py):
    with the model's threads on the same cores, a second worker wins decoding a fairer share of them."""
    return max(1, min(8, os.cpu_count() or 1))


def _scale_and_shift(image_processor: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The processor's rescale + normalise as one per-channel multiply-add, computed like it does."""
    scale = torch.ones(3, dtype=torch.float64)
    shift = torch.zeros(3, dtype=torch.float64)
    if image_processor.do_rescale:
        scale *= float(image_processor.rescale_factor)
    if image_processor.do_normalize:
        mean = torch.tensor(image_processor.image_mean, dtype=torch.float64)
        std = torch.tensor(image_processor.image_std, dtype=torch.float64)
        scale, shift = scale / std, -mean / std
    return scale.float()[:, None, None], shift.float()[:, None, None]


def embed_image_files(
    model: Any,
    image_processor: Any,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 32,
    num_workers: int | None = None,
    normalize: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[EmbeddedBatch]:
    """Embed image files in order, batch by batch, with decoding in `num_workers` processes (0: in this
    process) overlapped with the model. Yields `EmbeddedBatch`es whose indices point into `paths`;
    embeddings are float32 and L2-normalised unless `normalize=False`. `on_batch(n)` is called with the
    number of files each batch consumed (for progress bars)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    workers = default_num_workers() if num_workers is None else num_workers
    batches = math.ceil(len(paths) / batch_size)
    workers = min(workers, batches) if batches > 1 else 0  # nothing to overlap with a single batch
    device, dtype = model.device, model.dtype
    loader = DataLoader(
        ImageFiles(paths, image_processor),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    scale, shift = (t.to(device) for t in _scale_and_shift(image_processor))
    with torch.inference_mode():
        for batch in loader:
            if batch.pixels is None:
                features = torch.empty(0, model.config.projection_dim)
            else:
                pixels = batch.pixels.to(device, non_blocking=True).float().mul_(scale).add_(shift)
                features = model.get_image_features(pixels.to(dtype)).float()
                if normalize:
                    features = torch.nn.functional.normalize(features, dim=-1)
                features = features.cpu()
            if on_batch is not None:
                on_batch(len(batch.indices) + len(batch.failures))
            yield EmbeddedBatch(batch.indices, features, batch.failures)


@dataclass
class FolderEmbeddings:
    """`features[i]` is the embedding of `paths[i]`; `failures` lists (path, error) of skipped files."""

    paths: list[Path]
    features: torch.Tensor
    failures: list[tuple[Path, str]]


def embed_folder(
    model: Any,
    processor: Any,
    folder: str | os.PathLike,
    batch_size: int = 32,
    num_workers: int | None = None,
    normalize: bool = True,
) -> FolderEmbeddings:
    """Embed every image under `folder` (see `find_images`), in sorted path order; unreadable files are
    listed in `failures`, not fatal. `processor` may be a CLIPProcessor or a CLIPImageProcessor."""
    image_processor = getattr(processor, "image_processor", processor)
    files = find_images(folder)
    paths, chunks, failures = [], [], []
    for batch in embed_image_files(model, image_processor, files, batch_size, num_workers, normalize):
        paths += [files[i] for i in batch.indices]
        chunks.append(batch.features)
        failures += [(files[i], error) for i, error in batch.failures]
    features = torch.cat(chunks) if chunks else torch.empty(0, model.config.projection_dim)
    return FolderEmbeddings(paths, features, failures)
