"""The micro-batcher of `torchclip serve`, in process: what arrives together shares one call, grouped by key; a
full queue refuses at once; a failing call answers only its own group."""

from __future__ import annotations

import asyncio
import threading

import pytest

from torchclip.serve.batching import MicroBatcher, QueueFull


def test_requests_arriving_together_share_a_call_per_key():
    calls = []

    def work(key, payloads):
        calls.append((key, list(payloads)))
        return [f"{key}:{payload}" for payload in payloads]

    batcher = MicroBatcher("test", work, max_batch=64, max_wait_s=0.05)

    async def main():
        return await asyncio.gather(*(batcher.submit("ab"[n % 2], n) for n in range(10)))

    try:
        results = asyncio.run(main())
    finally:
        batcher.close()
    assert results == [f"{'ab'[n % 2]}:{n}" for n in range(10)]  # each caller gets its own answer
    assert sorted(calls) == [("a", [0, 2, 4, 6, 8]), ("b", [1, 3, 5, 7, 9])]


def test_a_full_queue_refuses_and_a_failure_answers_only_its_group():
    release = threading.Event()

    def work(key, payloads):
        release.wait(10)  # hold the worker so that the queue fills up
        if key == "bad":
            raise ValueError("bad filter")
        return payloads

    batcher = MicroBatcher("test", work, max_batch=1, max_wait_s=0, max_queue=2)

    async def main():
        first = asyncio.ensure_future(batcher.submit("good", 0))  # taken by the worker, which then waits
        await asyncio.sleep(0.2)
        queued = [asyncio.ensure_future(batcher.submit(key, n)) for n, key in enumerate(["bad", "good"], 1)]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull, match="queue is full"):
            await batcher.submit("good", 3)
        release.set()
        return await asyncio.gather(first, *queued, return_exceptions=True)

    try:
        first, bad, good = asyncio.run(main())
    finally:
        batcher.close()
    assert first == 0 and good == 2
    assert isinstance(bad, ValueError) and str(bad) == "bad filter"
