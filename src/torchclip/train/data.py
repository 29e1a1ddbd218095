"""Image-caption pairs for training: a CSV/TSV table, a folder of images with same-named `.txt` captions,
WebDataset-style tar shards read as streams (never unpacked), or the procedural synthetic world.

Every source is cut into *streams*, one per (rank, DataLoader worker): a table or folder by striding a
per-epoch permutation, tar shards by handing out whole shards (or, with fewer shards than streams, every
k-th sample of each shard). A stream is an endless sequence of raw items, numbered; decoding happens in the
worker, and a sample that cannot be used (unreadable image, empty caption) is skipped, logged with its name
and reported in the batch, so training never stops on a bad file. A stream that meets `MAX_BAD_IN_ROW`
unusable samples in a row stops instead (a table whose paths all point nowhere would otherwise retry
forever; see `torchclip.datasets.bad_samples`): its last batch carries an `error` that says how many were
tried and what the last one was.

Each batch carries its stream's position after it. The trainer keeps the positions of the batches it has
consumed, so a resumed run restarts every stream where it stopped: the same samples, in the same order.
"""

from __future__ import annotations

import csv
import glob
import io
import logging
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from torchclip.captions import CAPTION_COLUMNS, first_column
from torchclip.datasets.bad_samples import MAX_BAD_IN_ROW, BadInRow
from torchclip.datasets.synthetic import SyntheticCaptions
from torchclip.display import printable
from torchclip.distributed import Distributed
from torchclip.image_files import IMAGE_EXTENSIONS
from torchclip.train.config import TrainConfig

log = logging.getLogger("torchclip.train")

PATH_COLUMNS = ("filepath", "image", "path", "file", "image_path", "url")
MODEL_INPUTS = ("pixel_values", "input_ids", "attention_mask")  # of a batch, in the order the towers take them


class BadSample(Exception):
    """A sample that cannot be trained on; the message says which and why."""


@dataclass(frozen=True)
class RawSample:
    """One raw sample before decoding: its name (for logs) and what is needed to decode it."""

    name: str
    payload: Any


class Source:
    """Where pairs come from. `items(epoch, stream, n_streams)` lists one stream's raw items of one epoch;
    `decode(item)` turns one into (PIL image, caption) or raises `BadSample`."""

    def items(self, epoch: int, stream: int, n_streams: int) -> Iterator[RawSample]:
        raise NotImplementedError

    def decode(self, item: RawSample) -> tuple[Image.Image, str]:
        raise NotImplementedError


def _open_image(source: str | os.PathLike | bytes, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        image.load()
        return image.convert("RGB")
    except Exception as exc:  # PIL raises many kinds; all mean the same here
        raise BadSample(f"{name}: unreadable image ({type(exc).__name__}: {exc})") from None


def _check_caption(caption: str, name: str) -> str:
    caption = caption.strip()
    if not caption:
        raise BadSample(f"{name}: empty caption")
    return caption


class IndexedSource(Source):
    """A source whose samples can be listed up front: shuffled each epoch, strided across streams."""

    def __init__(self, seed: int, shuffle: bool = True):
        self.seed, self.shuffle = seed, shuffle

    def __len__(self) -> int:
        raise NotImplementedError

    def item(self, index: int) -> RawSample:
        raise NotImplementedError

    def items(self, epoch: int, stream: int, n_streams: int) -> Iterator[RawSample]:
        if len(self) < n_streams:
            raise ValueError(f"{len(self)} samples cannot feed {n_streams} streams (ranks x workers)")
        if self.shuffle:
            order = torch.randperm(len(self), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            indices = order[stream::n_streams].tolist()
        else:
            indices = range(stream, len(self), n_streams)
        for index in indices:
            yield self.item(index)


class TablePairs(IndexedSource):
    """A CSV or TSV file of (image path, caption) rows; paths relative to the file's folder.

    A header naming the columns (`filepath`/`image`/`path`, `caption`/`text`/`title`) is used when
    present; otherwise the first two columns are the path and the caption.
    """

    def __init__(self, path: str | os.PathLike, seed: int = 0):
        super().__init__(seed)
        self.path = Path(path)
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        try:  # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column's name
            with open(self.path, newline="", encoding="utf-8-sig") as handle:
                rows = list(csv.reader(handle, delimiter=delimiter))
        except UnicodeDecodeError as exc:
            line = self.path.read_bytes()[: exc.start].count(b"\n") + 1
            raise ValueError(f"{self.path}, line {line}: not UTF-8 text ({exc.reason})") from None
        if not rows:
            raise ValueError(f"{self.path}: no rows")
        header = [cell.strip().lower() for cell in rows[0]]
        path_col, caption_col = first_column(header, PATH_COLUMNS), first_column(header, CAPTION_COLUMNS)
        if path_col is not None and caption_col is not None:
            rows = rows[1:]
        else:
            path_col, caption_col = 0, 1
        self.rows: list[tuple[str, str]] = []
        for line, row in enumerate(rows, start=2 if path_col is not None else 1):
            if len(row) <= max(path_col, caption_col):
                raise ValueError(f"{self.path}, line {line}: expected a path and a caption, got {row!r}")
            self.rows.append((row[path_col], row[caption_col]))
        if not self.rows:
            raise ValueError(f"{self.path}: a header but no rows")

    def __len__(self) -> int:
        return len(self.rows)

    def item(self, index: int) -> RawSample:
        path, caption = self.rows[index]
        return RawSample(path, (self.path.parent / path, caption))

    def decode(self, item: RawSample) -> tuple[Image.Image, str]:
        path, caption = item.payload
        return _open_image(path, item.name), _check_caption(caption, item.name)


class FolderPairs(IndexedSource):
    """Images anywhere under a folder, each captioned by the `.txt` file of the same name beside it."""

    def __init__(self, folder: str | os.PathLike, seed: int = 0):
        super().__init__(seed)
        self.folder = Path(folder)
        self.images = sorted(
            p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.with_suffix(".txt").exists()
        )
        if not self.images:
            raise ValueError(f"{self.folder}: no images with a same-named .txt caption")

    def __len__(self) -> int:
        return len(self.images)

    def item(self, index: int) -> RawSample:
        path = self.images[index]
        return RawSample(str(path.relative_to(self.folder)), path)

    def decode(self, item: RawSample) -> tuple[Image.Image, str]:
        path: Path = item.payload
        try:
            caption = path.with_suffix(".txt").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadSample(f"{item.name}: unreadable caption ({exc})") from None
        return _open_image(path, item.name), _check_caption(caption, item.name)


def expand_shards(spec: str) -> list[str]:
    """Shard paths from a WebDataset-style spec: braces `a-{000..099}.tar`, globs, a folder, or `::`-joined."""
    paths: list[str] = []
    for part in spec.split("::"):
        match = re.search(r"\{(\d+)\.\.(\d+)\}", part)
        if match:
            first, last = match.group(1), match.group(2)
            for n in range(int(first), int(last) + 1):
                paths.append(part[: match.start()] + str(n).zfill(len(first)) + part[match.end() :])
        elif os.path.isdir(part):
            paths.extend(sorted(glob.glob(os.path.join(part, "*.tar"))))
        elif any(ch in part for ch in "*?["):
            paths.extend(sorted(glob.glob(part)))
        else:
            paths.append(part)
    if not paths:
        raise ValueError(f"no tar shards match {spec!r}")
    return paths


class TarShards(Source):
    """WebDataset layout: files `KEY.jpg` (or png, webp...) and `KEY.txt` next to each other in tar files.

    Tar files are read front to back as streams (`tarfile` mode "r|*"), so nothing is unpacked to disk and
    a data set larger than the free space trains. Shards are reshuffled each epoch.
    """

    def __init__(self, spec: str, seed: int = 0):
        self.shards = expand_shards(spec)
        self.seed = seed

    def items(self, epoch: int, stream: int, n_streams: int) -> Iterator[RawSample]:
        order = torch.randperm(len(self.shards), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        shards = [self.shards[i] for i in order.tolist()]
        if len(shards) >= n_streams:  # whole shards per stream
            for shard in shards[stream::n_streams]:
                yield from self._samples(shard)
        else:  # too few shards: every stream reads all, keeping its own k-th samples
            for shard in shards:
                for k, item in enumerate(self._samples(shard)):
                    if k % n_streams == stream:
                        yield item

    def _samples(self, shard: str) -> Iterator[RawSample]:
        """Consecutive members with the same key (the name up to the first dot) form one sample."""
        key, files = None, {}
        try:
            with tarfile.open(shard, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    folder, base = os.path.split(member.name)
                    if base.startswith("."):
                        continue
                    stem, _, ext = base.partition(".")
                    member_key = os.path.join(folder, stem)
                    if member_key != key and key is not None:
                        yield RawSample(f"{shard}:{key}", files)
                        files = {}
                    key = member_key
                    handle = tar.extractfile(member)
                    files[ext.lower()] = handle.read() if handle else b""
        except (OSError, tarfile.TarError) as exc:
            log.warning("skipping the rest of shard %s: %s", shard, exc)
        if key is not None:
            yield RawSample(f"{shard}:{key}", files)

    def decode(self, item: RawSample) -> tuple[Image.Image, str]:
        files: dict[str, bytes] = item.payload
        image = next((files[ext] for ext in files if "." + ext.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS), None)
        if image is None:
            raise BadSample(f"{item.name}: no image file (has {sorted(files)})")
        if "txt" not in files:
            raise BadSample(f"{item.name}: no .txt caption (has {sorted(files)})")
        try:
            caption = files["txt"].decode("utf-8")
        except UnicodeDecodeError:
            raise BadSample(f"{item.name}: caption is not UTF-8") from None
        return _open_image(image, item.name), _check_caption(caption, item.name)


class SyntheticSource(IndexedSource):
    """The procedural world of `torchclip.datasets.synthetic` (already random: no shuffling needed). Its pictures
    have the world's own pixel sizes whatever the model's input, so that models of every input size learn from
    (and are evaluated on) the same pictures; the processor resizes them as it does photos."""

    def __init__(self, seed: int = 0, size: int = 10_000_000, style: str = "classic"):
        super().__init__(seed, shuffle=False)
        self.world = SyntheticCaptions(seed=seed, split="train", size=size, style=style)

    def __len__(self) -> int:
        return len(self.world)

    def item(self, index: int) -> RawSample:
        return RawSample(f"synthetic:{index}", index)

    def decode(self, item: RawSample) -> tuple[Image.Image, str]:
        return self.world.example(item.payload)


def open_source(spec: str, seed: int = 0) -> Source:
    """A source from a data spec: "synthetic" (classic pictures), "synthetic-varied" (varied drawing styles),
    a .csv/.tsv file, a folder of image+.txt, or tar shards."""
    if spec == "synthetic":
        return SyntheticSource(seed)
    if spec == "synthetic-varied":
        return SyntheticSource(seed, style="varied")
    if spec.endswith(".tar") or "{" in spec or "::" in spec or any(ch in spec for ch in "*?["):
        return TarShards(spec, seed)
    path = Path(spec)
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv"):
        return TablePairs(path, seed)
    if path.is_dir():
        if any(path.glob("*.tar")):
            return TarShards(spec, seed)
        return FolderPairs(path, seed)
    raise ValueError(
        f"training data {spec!r}: not 'synthetic', 'synthetic-varied', a .csv/.tsv file, a folder, or tar shards"
    )


class PairBatches(IterableDataset):
    """Batches of `batch_size` good pairs, made inside DataLoader workers (use `batch_size=None` there).

    `start` holds, for each of this rank's workers, how many raw items its stream has already consumed;
    `rotation` is how many batches were consumed before, modulo the workers, so that the worker the
    DataLoader asks first continues the stream whose turn it was.
    """

    def __init__(
        self,
        source: Source,
        processor: Any,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        start: list[int] | None = None,
        rotation: int = 0,
        max_bad_in_row: int = MAX_BAD_IN_ROW,
    ):
        self.source, self.processor, self.batch_size = source, processor, batch_size
        self.max_bad_in_row = max_bad_in_row
        self.rank, self.world_size = rank, world_size
        self.num_streams = max(1, num_workers)
        self.start = start or [0] * self.num_streams
        self.rotation = rotation
        if len(self.start) != self.num_streams:
            raise ValueError(f"resume state has {len(self.start)} data streams but {self.num_streams} workers run")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        stream = (worker + self.rotation) % self.num_streams
        images: list[torch.Tensor] = []
        captions: list[str] = []
        bad: list[str] = []
        tried = good = 0
        in_row = BadInRow(self.max_bad_in_row)
        for position, item in self._raw(stream, self.start[stream]):
            tried += 1
            try:
                image, caption = self.source.decode(item)
                pixels = self.processor.image_processor(image, return_tensors="pt", num_workers=1).pixel_values[0]
            except Exception as exc:  # a preprocessing failure on one odd image must not end training
                message = str(exc) if isinstance(exc, BadSample) else f"{item.name}: {type(exc).__name__}: {exc}"
                message = printable(message)  # a file name may hold a newline or bytes that are not UTF-8
                log.warning("skipped bad sample %s", message)
                bad.append(message)
                if in_row.bad():
                    yield {"error": self._give_up_message(stream, tried, good, message), "bad": bad}
                    return
                continue
            good += 1
            in_row.good()
            images.append(pixels)
            captions.append(caption)
            if len(images) == self.batch_size:
                text = self.processor.tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
                yield {
                    "pixel_values": torch.stack(images),
                    "input_ids": text["input_ids"],
                    "attention_mask": text["attention_mask"],
                    "stream": stream,
                    "position": position,
                    "bad": bad,
                }
                images, captions, bad = [], [], []

    def _give_up_message(self, stream: int, tried: int, good: int, last: str) -> str:
        return (
            f"{self.max_bad_in_row} samples in a row could not be used, so data stream {stream} of rank {self.rank} "
            f"gave up after trying {tried} ({good} usable); the last: {last}"
        )

    def _raw(self, stream: int, start: int) -> Iterator[tuple[int, RawSample]]:
        """(position after the item, item) of one stream, from raw position `start` on, across epochs."""
        global_stream = self.rank * self.num_streams + stream
        n_streams = self.world_size * self.num_streams
        position, epoch = 0, 0
        while True:
            produced = False
            for item in self.source.items(epoch, global_stream, n_streams):
                produced = True
                position += 1
                if position > start:
                    yield position, item
            if not produced:
                raise ValueError(f"data stream {global_stream} of {n_streams} gets no samples: too little data")
            epoch += 1


def batch_loader(
    processor: Any, config: TrainConfig, env: Distributed, positions: list[int], consumed: int
) -> torch.utils.data.DataLoader:
    """The run's batches: `config.workers` DataLoader processes (or the main one), each making the
    batches of its own stream, which starts at its entry of `positions`; `consumed` batches came before."""
    batches = PairBatches(
        open_source(config.data, config.seed),
        processor,
        config.batch_size,
        rank=env.rank,
        world_size=env.world_size,
        num_workers=config.workers,
        start=positions,
        rotation=consumed % config.streams,
        max_bad_in_row=config.max_bad_in_row,
    )
    return torch.utils.data.DataLoader(
        batches, batch_size=None, num_workers=config.workers, persistent_workers=config.workers > 0
    )
