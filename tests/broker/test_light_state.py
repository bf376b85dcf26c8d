"""The broker's lighter per-connection state behaves as asyncio's own, and stays light.

Regression for the memory per connection (bench/conn_memory.py): LightQueue makes no deque for
a queue that is only waited on and gives it back when drained; LightEvent makes no deque at all;
a put resolves the queue's wake-up future (the per-connection loop of broker/routing.py).
"""

from __future__ import annotations

import asyncio

import pytest

from broker.light import LightEvent, LightQueue


def test_light_queue_is_an_asyncio_queue_without_idle_deques() -> None:
    async def scenario() -> None:
        q: LightQueue[int] = LightQueue()
        getter = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        assert q.empty() and q.qsize() == 0
        assert "_queue" not in q.__dict__, "waiting on an empty queue made its deque"
        q.put_nowait(1)
        q.put_nowait(2)
        assert await getter == 1 and q.qsize() == 1 and not q.empty()
        assert q.get_nowait() == 2
        assert "_queue" not in q.__dict__, "a drained queue kept its deque"
        with pytest.raises(asyncio.QueueEmpty):
            q.get_nowait()
        bounded: LightQueue[int] = LightQueue(2)
        bounded.put_nowait(1)
        bounded.put_nowait(2)
        assert bounded.full()
        with pytest.raises(asyncio.QueueFull):
            bounded.put_nowait(3)

    asyncio.run(scenario())


def test_a_put_resolves_the_wake_future() -> None:
    async def scenario() -> None:
        q: LightQueue[str] = LightQueue()
        q.wake = wake = asyncio.get_running_loop().create_future()
        await q.put("x")
        assert wake.done()
        q.put_nowait("y")  # a resolved wake-up is left alone
        assert [q.get_nowait(), q.get_nowait()] == ["x", "y"]

    asyncio.run(scenario())


def test_light_event_waits_and_sets_like_asyncio_event() -> None:
    async def scenario() -> None:
        e = LightEvent()
        assert not e.is_set() and "_waiters" not in e.__dict__
        waiters = [asyncio.create_task(e.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        e.set()
        assert await asyncio.gather(*waiters) == [True, True, True]
        e.clear()
        late = asyncio.create_task(e.wait())
        await asyncio.sleep(0)
        assert not late.done()
        e.set()
        assert await late

    asyncio.run(scenario())
