"""Micro-batching: concurrent text and image queries share one forward pass.

Requests from the event loop go into a bounded queue; one worker thread takes the first waiting request,
gathers whatever else arrives within a short window (`max_wait_s`, up to `max_batch`), and embeds all
texts of the batch in one pass and all images in another. The model runs off the event loop, loads once,
and is only ever used by the worker thread. A full queue refuses at once (`QueueFull`, a 503 to the
client) instead of growing without bound.

Image decoding and preprocessing happen in the caller's thread (`pixels_of`), so they run in parallel
while the worker keeps the model busy.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from torchclip.evaluate import encode_texts

__all__ = ["BatchingEncoder", "QueueFull"]


class QueueFull(RuntimeError):
    """The query queue holds `max_queue` requests already: the service is overloaded, try again later."""


@dataclass
class _Request:
    kind: str  # "text" or "image"
    payload: Any  # the text, or the image's preprocessed pixels [3, H, W]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future = field(repr=False)


class BatchingEncoder:
    """Embeds texts and images for many concurrent callers, batching what arrives together.

    `on_batch(kind, size, seconds)` is called after each forward pass (for metrics).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        max_batch: int = 32,
        max_wait_s: float = 0.004,
        max_queue: int = 256,
        on_batch: Callable[[str, int, float], None] | None = None,
    ):
        self.model = model
        self.processor = processor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self._queue: queue.Queue[_Request | None] = queue.Queue(maxsize=max_queue)
        self._worker = threading.Thread(target=self._run, name="torchclip-encoder", daemon=True)
        self._worker.start()

    @property
    def depth(self) -> int:
        """Requests waiting for the model now."""
        return self._queue.qsize()

    async def encode_text(self, text: str) -> np.ndarray:
        """The L2-normalised embedding [D] of one text."""
        return await self._submit("text", text)

    async def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """The L2-normalised embedding [D] of one preprocessed image (see `pixels_of`)."""
        return await self._submit("image", pixels)

    def pixels_of(self, image: Image.Image) -> torch.Tensor:
        """The model's input [3, H, W] for a decoded image (thread-safe: no model state involved)."""
        return self.processor.image_processor(image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    def close(self) -> None:
        """Stop the worker after the requests already queued."""
        self._queue.put(None)
        self._worker.join(timeout=10)

    async def _submit(self, kind: str, payload: Any) -> np.ndarray:
        loop = asyncio.get_running_loop()
        request = _Request(kind, payload, loop, loop.create_future())
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            raise QueueFull(f"the query queue is full ({self._queue.maxsize} waiting); try again shortly") from None
        return await request.future

    def _gather(self, first: _Request) -> list[_Request]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                request = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:  # close(): finish this batch, then stop
                self._queue.put(None)
                break
            batch.append(request)
        return batch

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._gather(first)
            for kind in ("text", "image"):
                requests = [request for request in batch if request.kind == kind]
                if requests:
                    self._embed(kind, requests)

    def _embed(self, kind: str, requests: list[_Request]) -> None:
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                if kind == "text":
                    vectors = encode_texts(self.model, self.processor.tokenizer, [r.payload for r in requests])
                else:
                    pixels = torch.stack([r.payload for r in requests]).to(self.model.device, self.model.dtype)
                    features = self.model.get_image_features(pixels)
                    vectors = torch.nn.functional.normalize(features.float(), dim=-1)
            rows = vectors.cpu().numpy()
        except Exception as exc:  # one failure answers each of its callers; the worker lives on
            for request in requests:
                request.loop.call_soon_threadsafe(_set_exception, request.future, exc)
            return
        if self.on_batch is not None:
            self.on_batch(kind, len(requests), time.perf_counter() - start)
        for request, row in zip(requests, rows):
            request.loop.call_soon_threadsafe(_set_result, request.future, row)


def _set_result(future: asyncio.Future, value: Any) -> None:
    if not future.done():  # the caller may have gone (client disconnected, cancelled)
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
