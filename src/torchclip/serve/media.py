"""Reading images safely: uploaded query images, stored originals and their cached thumbnails.

Uploads are decoded from memory with a pixel limit checked before any pixel is decoded (Pillow's own
decompression-bomb guard stays on as well), and large JPEGs are decoded at reduced scale, so one request
needs bounded memory. Stored files are only ever reached through a row of the store (never a path from a
request); each is opened without following a symlink and served only while its size and modification
time are still those recorded when it was embedded (`Gone` otherwise).

Thumbnails (JPEG, longest side `size` px) are written once into `cache_dir` under a name made of the row
id and the file's recorded size/mtime, so an edited file gets a new thumbnail and a stale one is never
served. When the cache folder cannot be written, thumbnails are made in memory each time.
"""

from __future__ import annotations

import hashlib
import io
import logging
import mimetypes
import os
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from torchclip.image_processor import DECODING_ERRORS
from torchclip.io import write_bytes_atomic

__all__ = ["BadImage", "Gone", "ImageFile", "Thumbnails", "decode_upload", "open_stored"]

log = logging.getLogger("torchclip.serve")

MAX_UPLOAD_PIXELS = 40_000_000  # ~ a 7,700 x 5,200 photo: 120 MB decoded at most
DECODE_AT_LEAST = 1024  # JPEGs larger than twice this on the short side decode at reduced scale (draft mode)


class BadImage(ValueError):
    """An uploaded query image that cannot be used (not an image, truncated, too many pixels)."""


class Gone(FileNotFoundError):
    """A stored item's file vanished, or changed since it was embedded."""


def _decode(source: Any, max_pixels: int, what: str) -> Image.Image:
    """Open and fully decode an image, refusing more than `max_pixels` before decoding them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
            width, height = image.size
            if width * height > max_pixels:
                raise BadImage(f"{what} has {width}x{height} pixels; the limit is {max_pixels:,}")
            if image.format == "JPEG" and min(width, height) > 2 * DECODE_AT_LEAST:
                image.draft("RGB", (DECODE_AT_LEAST, DECODE_AT_LEAST))
            image.load()
            return image
    except BadImage:
        raise
    except Image.DecompressionBombWarning as exc:
        raise BadImage(f"{what} is too large to decode ({exc})") from None
    except UnidentifiedImageError:
        raise BadImage(f"{what} is not a readable image (not a format Pillow knows)") from None
    except DECODING_ERRORS as exc:
        raise BadImage(f"{what} is not a readable image ({type(exc).__name__}: {exc})") from None


def decode_upload(data: bytes, max_pixels: int = MAX_UPLOAD_PIXELS) -> Image.Image:
    """A query image from its file's bytes, as RGB."""
    if not data:
        raise BadImage("the image is empty (0 bytes)")
    return ImageOps.exif_transpose(_decode(io.BytesIO(data), max_pixels, "the image")).convert("RGB")


@dataclass(frozen=True)
class ImageFile:
    """An opened stored file that is still the one embedded: read it from `handle`, then close it."""

    handle: io.BufferedReader
    size: int
    media_type: str
    etag: str

    def chunks(self, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        """The file's bytes in chunks, closing it at the end (for a streaming response)."""
        with self.handle:
            while chunk := self.handle.read(chunk_size):
                yield chunk


def open_stored(row: dict[str, Any]) -> ImageFile:
    """Open the file of a stored image row, refusing symlinks, non-files and files changed since embedding."""
    key = str(row["key"])
    try:
        fd = os.open(key, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise Gone(f"item {row['id']}: its file can no longer be read ({exc.strerror})") from None
    handle = os.fdopen(fd, "rb")
    try:
        info = os.fstat(fd)
        recorded_size, recorded_mtime = row.get("size"), row.get("mtime")  # mtime: seconds, st_mtime_ns / 1e9
        if not stat.S_ISREG(info.st_mode):
            raise Gone(f"item {row['id']}: its path is no longer a regular file")
        if recorded_size is not None and int(recorded_size) != info.st_size:
            raise Gone(f"item {row['id']}: its file changed since it was embedded (size)")
        if recorded_mtime is not None and abs(float(recorded_mtime) - info.st_mtime_ns / 1e9) > 1e-6:
            raise Gone(f"item {row['id']}: its file changed since it was embedded (modification time)")
    except BaseException:
        handle.close()
        raise
    media_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
    if not media_type.startswith("image/"):
        media_type = "application/octet-stream"
    identity = f"{row['id']}:{key}:{info.st_size}:{info.st_mtime_ns}"
    etag = '"' + hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:20] + '"'
    return ImageFile(handle, info.st_size, media_type, etag)


class Thumbnails:
    """JPEG thumbnails of stored images, cached on disk in `cache_dir` (or made in memory without one)."""

    def __init__(self, cache_dir: str | os.PathLike | None, size: int = 256, max_pixels: int = 200_000_000):
        self.size = size
        self.max_pixels = max_pixels
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("thumbnails are not cached: cannot create %s (%s)", self.cache_dir, exc.strerror)
                self.cache_dir = None

    def get(self, row: dict[str, Any]) -> tuple[bytes, str]:
        """(JPEG bytes, ETag) of a stored image row's thumbnail; raises `Gone` or `BadImage`."""
        original = open_stored(row)
        etag = f'"t{self.size}-{original.etag.strip(chr(34))}"'
        cached = self.cache_dir / f"{row['id']}-{etag.strip(chr(34))}.jpg" if self.cache_dir else None
        with original.handle:
            if cached is not None and cached.is_file():
                return cached.read_bytes(), etag
            image = ImageOps.exif_transpose(_decode(original.handle, self.max_pixels, f"item {row['id']}"))
        image.thumbnail((self.size, self.size))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=85)
        data = buffer.getvalue()
        if cached is not None:
            self._write(cached, data)
        return data, etag

    def _write(self, path: Path, data: bytes) -> None:
        try:
            write_bytes_atomic(path, data)  # a reader sees no thumbnail or a whole one
        except OSError as exc:
            log.warning("thumbnail not cached in %s: %s", self.cache_dir, exc.strerror)
