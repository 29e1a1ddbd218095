"""Embeddings: images and texts in, L2-normalised float32 vectors out, for every tool that needs them
(classify, similarity, eval, search, the store and the service).

- `embed_texts`: texts, tokenized and embedded in batches; `embed_text_batches` yields them batch by
  batch, for a run that commits as it goes (the store);
- `embed_images`: images in memory or files (PIL images, paths, bytes, arrays), preprocessed here;
- `embed_pixels`: `pixel_values` already preprocessed (the service preprocesses in each request's thread);
- `embed_image_files`: many image files, decoded by worker processes while the model runs
  (`torchclip.image_files`), batch by batch, each unreadable file reported and skipped;
  `join_batches` collects such batches into one.

A text longer than the model's context (77 tokens for CLIP) is always cut to fit: the model has no
positions beyond. `check_text_lengths` says so (`truncate="warn"`), refuses (`"error"`) or stays silent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from torchclip.display import printable
from torchclip.image_files import pixel_batches

__all__ = [
    "TRUNCATE_MODES",
    "EmbeddedBatch",
    "check_finite",
    "check_text_lengths",
    "embed_image_files",
    "embed_images",
    "embed_pixels",
    "embed_text_batches",
    "embed_texts",
    "join_batches",
]

log = logging.getLogger("torchclip")

TRUNCATE_MODES = ("warn", "error", "silent")


@dataclass
class EmbeddedBatch:
    """Embeddings of some of the inputs: `features[i]` belongs to input `indices[i]`; `failures` are
    (index, error) of the inputs that could not be read."""

    indices: list[int]
    features: torch.Tensor
    failures: list[tuple[int, str]] = field(default_factory=list)


def embed_pixels(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """L2-normalised float32 embeddings [N, D], on the model's device, of preprocessed `pixel_values`."""
    features = model.get_image_features(pixel_values.to(model.device, model.dtype))
    return torch.nn.functional.normalize(features.float(), dim=-1)


@torch.no_grad()
def embed_images(
    model: Any,
    image_processor: Any,
    images: Sequence[Any],
    batch_size: int = 128,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """L2-normalised float32 embeddings [len(images), D] on the model's device; images as PIL images,
    paths, bytes or arrays, preprocessed in this process. `on_batch(n)` is called after each batch of n
    images (for progress bars)."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = list(images[start : start + batch_size])
        out.append(embed_pixels(model, image_processor(batch, return_tensors="pt")["pixel_values"]))
        if on_batch is not None:
            on_batch(len(batch))
    return torch.cat(out) if out else torch.empty(0, model.config.projection_dim)


def embed_image_files(
    model: Any,
    image_processor: Any,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 32,
    num_workers: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[EmbeddedBatch]:
    """Embed image files in order, batch by batch, decoding in `num_workers` processes (0: in this
    process) while the model runs (see `torchclip.image_files`). Yields `EmbeddedBatch`es of float32 CPU
    embeddings whose indices point into `paths`. `on_batch(n)` is called with the number of files each
    batch consumed (for progress bars)."""
    with torch.inference_mode():
        for batch in pixel_batches(paths, image_processor, model.device, batch_size, num_workers):
            if batch.pixels is None:
                features = torch.empty(0, model.config.projection_dim)
            else:
                features = embed_pixels(model, image_processor.rescale_and_normalize(batch.pixels)).cpu()
            if on_batch is not None:
                on_batch(len(batch.indices) + len(batch.failures))
            yield EmbeddedBatch(batch.indices, features, batch.failures)


def join_batches(batches: Iterable[EmbeddedBatch], dim: int) -> EmbeddedBatch:
    """All the batches as one: indices, [N, dim] features and failures in order."""
    indices, features, failures = [], [], []
    for batch in batches:
        indices += batch.indices
        features.append(batch.features)
        failures += batch.failures
    return EmbeddedBatch(indices, torch.cat(features) if features else torch.empty(0, dim), failures)


def check_text_lengths(tokenizer: Any, texts: Sequence[str], truncate: str = "warn") -> list[int]:
    """Indices of the texts longer than the tokenizer's context (`model_max_length`), which encoding cuts.

    `truncate="warn"` logs one warning for the call naming the first such text and its length (and how
    many more there are); "error" raises ValueError naming it instead; "silent" says nothing.
    """
    if truncate not in TRUNCATE_MODES:
        raise ValueError(f"truncate must be one of {TRUNCATE_MODES}, got {truncate!r}")
    limit = tokenizer.model_max_length
    lengths = [len(ids) for ids in tokenizer(list(texts))["input_ids"]]
    long = [i for i, length in enumerate(lengths) if length > limit]
    if long and truncate != "silent":
        first = long[0]
        named = f"text #{first} {printable(texts[first])!r:.160} has {lengths[first]} tokens"
        if truncate == "error":
            raise ValueError(
                f"{named}, more than the model's context of {limit}; shorten it, or allow cutting it to fit "
                "(--truncate warn, or truncate='warn')"
            )
        more = f" (and {len(long) - 1} more of the {len(texts)} texts)" if len(long) > 1 else ""
        log.warning("%s%s, more than the model's context of %d: only the first %d are used", named, more, limit, limit)
    return long


def _text_features(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int) -> Iterator[torch.Tensor]:
    """L2-normalised float32 embeddings on the model's device, one tensor per batch of `batch_size` texts."""
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True, return_tensors="pt")
        input_ids, attention_mask = tokens["input_ids"].to(model.device), tokens["attention_mask"].to(model.device)
        features = model.get_text_features(input_ids, attention_mask)
        yield torch.nn.functional.normalize(features.float(), dim=-1)


@torch.no_grad()
def embed_texts(
    model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 256, truncate: str = "warn"
) -> torch.Tensor:
    """L2-normalised float32 embeddings [len(texts), D] on the model's device. Texts longer than the
    context are cut to fit it; `truncate` ("warn", "error", "silent") says what else happens."""
    check_text_lengths(tokenizer, texts, truncate)
    out = list(_text_features(model, tokenizer, texts, batch_size))
    return torch.cat(out) if out else torch.empty(0, model.config.projection_dim)


def embed_text_batches(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[EmbeddedBatch]:
    """`embed_texts` batch by batch, as `EmbeddedBatch`es of float32 CPU embeddings; texts longer than
    the context are cut to fit without a word (check them first with `check_text_lengths`)."""
    with torch.inference_mode():
        start = 0
        for features in _text_features(model, tokenizer, texts, batch_size):
            if on_batch is not None:
                on_batch(len(features))
            yield EmbeddedBatch(list(range(start, start + len(features))), features.cpu())
            start += len(features)


def check_finite(model: Any, values: torch.Tensor, what: str) -> torch.Tensor:
    """`values` when all finite; otherwise an error naming the model's first weight that is NaN or
    infinite (the usual cause), instead of "nan%" results."""
    if torch.isfinite(values).all():
        return values
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"the model's weight {name!r} holds NaN or infinite values, so the {what} are NaN")
    raise ValueError(f"the {what} came out NaN or infinite (the model's weights are all finite)")
