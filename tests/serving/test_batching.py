"""The micro-batcher on its own: concurrent jobs share model calls; failures reach every caller."""

import asyncio
import time

import pytest
import torch

from sidrec.serving.batching import MicroBatcher, QueueFull


def fixed_cost_model(calls):
    """A stand-in model whose call costs 20 ms whatever the batch size (like a GPU or a small CPU batch)."""
    def predict(histories, k, exclude):
        calls.append(histories.shape[0])
        time.sleep(0.02)
        top = histories[:, :1].clamp(min=0).repeat(1, k)
        return top, torch.zeros_like(top, dtype=torch.float)
    return predict


async def run_concurrently(batcher, n):
    batcher.start()
    try:
        start = time.perf_counter()
        results = await asyncio.gather(*(batcher.submit([torch.tensor([i, 99])], 2, [False]) for i in range(n)))
        return results, time.perf_counter() - start
    finally:
        await batcher.stop()


def test_throughput_grows_with_concurrency_and_rows_stay_matched():
    calls = []
    results, seconds = asyncio.run(run_concurrently(MicroBatcher(fixed_cost_model(calls), max_batch=16), 48))
    assert [r[0].tolist() for r in results] == [[[i, i]] for i in range(48)]  # each caller gets its own row
    assert max(calls) <= 16 and len(calls) <= 6  # 48 requests in a handful of model calls, not 48
    assert seconds < 48 * 0.02 / 2


def test_failures_and_full_queue_are_reported():
    def broken(histories, k, exclude):
        raise RuntimeError("model exploded")

    async def scenario():
        batcher = MicroBatcher(broken, max_queue=1)
        batcher.start()
        try:
            with pytest.raises(RuntimeError, match="model exploded"):
                await batcher.submit([torch.tensor([1])], 1, [False])
            first = asyncio.ensure_future(batcher.submit([torch.tensor([1])], 1, [False]))
            second = asyncio.ensure_future(batcher.submit([torch.tensor([1])], 1, [False]))
            third = asyncio.ensure_future(batcher.submit([torch.tensor([1])], 1, [False]))
            outcomes = await asyncio.gather(first, second, third, return_exceptions=True)
            assert any(isinstance(o, QueueFull) for o in outcomes)
            with pytest.raises(ValueError, match="exceeds max_batch"):
                await batcher.submit([torch.tensor([1])] * 65, 1, [False] * 65)
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="max_queue"):
        MicroBatcher(broken, max_queue=0)
