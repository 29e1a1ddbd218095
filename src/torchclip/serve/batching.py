"""Micro-batching: work from concurrent requests shares one call (one forward pass, one search).

Requests from the event loop go into a bounded queue; one worker thread takes the first waiting request,
gathers whatever else arrives within a short window (`max_wait_s`, up to `max_batch`), groups the batch by
its key (texts and images apart; searches by store generation, depth and filter), and makes one call per
group. The work runs off the event loop, in the one thread that owns it (the model is loaded once and
used only there). A full queue refuses at once (`QueueFull`, a 503 to the client) instead of growing.

`query_encoder` and `searcher` build the two batchers the service runs; image decoding and preprocessing
happen in the request's thread beforehand (`pixels_of`), so they run in parallel with the model.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from torchclip.embed import embed_pixels, embed_texts

__all__ = ["MicroBatcher", "QueueFull", "pixels_of", "query_encoder", "searcher"]


class QueueFull(RuntimeError):
    """The queue holds `max_queue` requests already: the service is overloaded, try again later."""


@dataclass
class _Request:
    key: Hashable
    payload: Any
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Runs `work(key, payloads) -> results` (one result per payload, in order) for batches of requests
    that share a key. `on_batch(key, size, seconds)` is called after each call (for metrics)."""

    def __init__(
        self,
        name: str,
        work: Callable[[Hashable, list[Any]], Sequence[Any]],
        max_batch: int = 32,
        max_wait_s: float = 0.004,
        max_queue: int = 256,
        on_batch: Callable[[Hashable, int, float], None] | None = None,
    ):
        self.name = name
        self.work = work
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self._queue: queue.Queue[_Request | None] = queue.Queue(maxsize=max_queue)
        self._worker = threading.Thread(target=self._run, name=f"torchclip-{name}", daemon=True)
        self._worker.start()

    @property
    def depth(self) -> int:
        """Requests waiting now."""
        return self._queue.qsize()

    async def submit(self, key: Hashable, payload: Any) -> Any:
        """The result of `payload`, computed in a batch with others of the same key."""
        loop = asyncio.get_running_loop()
        request = _Request(key, payload, loop, loop.create_future())
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            raise QueueFull(
                f"the {self.name} queue is full ({self._queue.maxsize} waiting); try again shortly"
            ) from None
        return await request.future

    def close(self) -> None:
        """Stop the worker after the requests already queued."""
        self._queue.put(None)
        self._worker.join(timeout=10)

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
            groups: dict[Hashable, list[_Request]] = {}
            for request in self._gather(first):
                groups.setdefault(request.key, []).append(request)
            for key, requests in groups.items():
                self._call(key, requests)

    def _call(self, key: Hashable, requests: list[_Request]) -> None:
        start = time.perf_counter()
        try:
            results = self.work(key, [request.payload for request in requests])
        except Exception as exc:  # one failure answers each caller of its group; the worker lives on
            for request in requests:
                request.loop.call_soon_threadsafe(_settle, request.future, None, exc)
            return
        if self.on_batch is not None:
            self.on_batch(key, len(requests), time.perf_counter() - start)
        for request, result in zip(requests, results):
            request.loop.call_soon_threadsafe(_settle, request.future, result, None)


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller went away (client disconnected, cancelled)
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def pixels_of(processor: Any, image: Image.Image) -> torch.Tensor:
    """The model's input [3, H, W] for a decoded image (thread-safe: no model state involved)."""
    return processor.image_processor(image.convert("RGB"), return_tensors="pt")["pixel_values"][0]


def query_encoder(model: Any, processor: Any, **options: Any) -> MicroBatcher:
    """A batcher of query embeddings: key "text" with a string, or "image" with `pixels_of` pixels; each
    result is an L2-normalised float32 vector [D]."""

    def embed(kind: Hashable, payloads: list[Any]) -> np.ndarray:
        with torch.inference_mode():
            if kind == "text":
                vectors = embed_texts(model, processor.tokenizer, payloads)
            else:
                vectors = embed_pixels(model, torch.stack(payloads))
        return vectors.cpu().numpy()

    return MicroBatcher("query", embed, **options)


def searcher(**options: Any) -> MicroBatcher:
    """A batcher of store searches: key (store handle, k, where), payload one normalised query vector [D];
    each result is that query's list of hits. Queries of one key share one `store.search` call."""

    def search(key: Hashable, vectors: list[np.ndarray]) -> list[Any]:
        store, k, where = key  # type: ignore[misc]
        return store.search(np.stack(vectors), k=k, where=where)

    return MicroBatcher("search", search, **options)
