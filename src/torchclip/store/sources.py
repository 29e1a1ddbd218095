"""What a store follows: an image folder, a text file listing image paths, or a caption file; one `Item`
per thing to embed, and the metadata a user filters on (image size, EXIF date)."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from torchclip.captions import CAPTION_COLUMNS, first_column
from torchclip.image_files import find_images

__all__ = ["Item", "image_items", "image_metadata", "text_items"]

EXIF_DATETIME_ORIGINAL = 0x9003  # in the Exif sub-IFD
EXIF_IFD = 0x8769
EXIF_DATETIME = 0x0132  # the main IFD's DateTime, when the camera wrote no DateTimeOriginal


@dataclass(frozen=True)
class Item:
    """One thing to embed: an image file (`text` empty) or a caption. `key` is unique in a store;
    `mtime` is the file's modification time in seconds (`st_mtime_ns / 1e9`, computed the same way each run)."""

    key: str
    size: int
    mtime: float
    text: str = ""

    def changed_from(self, size: int, mtime: float, text: str) -> bool:
        """True when the stored row (size, mtime, text) no longer describes this item."""
        if self.text or text:
            return self.text != text
        return (self.size, self.mtime) != (size, mtime)


def _mtime(stat: os.stat_result) -> float:
    return stat.st_mtime_ns / 1e9


def image_items(source: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> list[Item]:
    """Every image under a folder (recursively, see `find_images`), or every path listed in a text file
    (one per line, relative to the file's folder; blank lines and lines starting with # skipped)."""
    source = Path(source)
    if source.is_dir():
        paths = find_images(source, exclude)
    elif source.is_file():
        lines = source.read_text(encoding="utf-8").splitlines()
        paths = [source.parent / line.strip() for line in lines if line.strip() and not line.startswith("#")]
    else:
        raise FileNotFoundError(f"{str(source)!r}: no such folder or list file")
    items = {}
    for path in paths:
        path = path.resolve()
        try:
            stat = path.stat()
        except OSError:  # listed but missing: keep it, the embedding step reports it as unreadable
            items[str(path)] = Item(str(path), -1, -1.0)
            continue
        items[str(path)] = Item(str(path), stat.st_size, _mtime(stat))
    return sorted(items.values(), key=lambda item: item.key)


def text_items(source: str | os.PathLike, column: str | None = None) -> list[Item]:
    """Captions to embed: a .txt file holds one per line; a .csv/.tsv file one per row, from the column
    named `column` (default: the first of `CAPTION_COLUMNS` in a header row, else the first column).
    Keys are `file#N` (N the 1-based line or row), so an edited line is re-embedded."""
    path = Path(source).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r}: no such text file")
    mtime = _mtime(path.stat())
    if path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
        header = [cell.strip().lower() for cell in rows[0]] if rows else []
        wanted = [column.lower()] if column else CAPTION_COLUMNS
        index = first_column(header, wanted)
        if column and index is None:
            raise ValueError(f"{str(path)!r}: no column named {column!r} in its header {rows[0] if rows else []}")
        start = 1 if index is not None else 0
        index = index or 0
        texts = [(n + 1, row[index] if index < len(row) else "") for n, row in enumerate(rows) if n >= start]
    else:
        texts = list(enumerate(path.read_text(encoding="utf-8").splitlines(), start=1))
    return [Item(f"{path}#{n}", len(text.strip().encode()), mtime, text.strip()) for n, text in texts if text.strip()]


def image_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """{"width", "height", "taken_at"} of an image file, read from its header only (no decoding).
    `taken_at` is EXIF DateTimeOriginal (else DateTime) as ISO 8601 text ("2024-05-01T13:45:00"), so
    `where="taken_at >= '2024-01-01'"` compares dates; None when the file has none or it is malformed."""
    with Image.open(path) as image:
        width, height = image.size
        exif = image.getexif()
        stamp = exif.get_ifd(EXIF_IFD).get(EXIF_DATETIME_ORIGINAL) or exif.get(EXIF_DATETIME)
    return {"width": width, "height": height, "taken_at": _exif_time(stamp)}


def _exif_time(stamp: Any) -> str | None:
    try:
        return datetime.strptime(str(stamp).strip("\x00 "), "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None
