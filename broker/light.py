"""Lighter stand-ins for asyncio.Queue and asyncio.Event: no deque allocated before it is used.

Each connection of amqtt 0.12.1 carries four ``asyncio.Queue`` (the session's delivery and offline
queues, the handler's pending SUBSCRIBEs and UNSUBSCRIBEs). An asyncio.Queue allocates three
deques and an Event (with a fourth deque) at once, and an empty deque costs about 0.7 KB: some
11 KB per idle connection, a third of the broker's traced memory per device at 2,000 devices
(tracemalloc, bench/README.md). :class:`LightQueue` behaves as asyncio.Queue (it is one) but makes
its item deque on first use, keeps its waiting getters and putters in a plain list (rarely more
than one waits), and makes its ``join()`` Event only when someone joins (the broker never does).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, TypeVar

T = TypeVar("T")



class _Waiters(list):  # type: ignore[type-arg]
    """The futures waiting on a queue: rarely more than one, so a list (88 bytes) instead of a deque (0.7 KB)."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


class LightQueue(asyncio.Queue[T]):
    """An unbounded-or-bounded asyncio.Queue whose internals are made on first use.

    ``wake``: a future resolved by the next put (the broker's per-connection loop waits on one
    future for three queues instead of a task per queue, :mod:`broker.routing`).
    """

    wake: asyncio.Future[None] | None = None

    def __init__(self, maxsize: int = 0) -> None:  # noqa: D107  (no super().__init__: it allocates eagerly)
        self._maxsize = maxsize
        self._unfinished_tasks = 0

    def __getattr__(self, name: str) -> Any:
        # only called for attributes not yet set: make the lazy parts on first use
        if name == "_queue":
            value: Any = collections.deque()  # may grow long (a backlog): a real deque
        elif name in ("_getters", "_putters"):
            value = _Waiters()
        elif name == "_finished":
            value = asyncio.Event()
            if not self._unfinished_tasks:
                value.set()
        else:
            raise AttributeError(name)
        setattr(self, name, value)
        return value

    def put_nowait(self, item: T) -> None:
        """As asyncio.Queue's, without touching the ``join()`` Event unless someone made it."""
        if self.full():
            raise asyncio.QueueFull
        self._put(item)  # type: ignore[attr-defined]
        self._unfinished_tasks += 1
        if "_finished" in self.__dict__:
            self._finished.clear()  # type: ignore[attr-defined]
        if "_getters" in self.__dict__:
            self._wakeup_next(self._getters)  # type: ignore[attr-defined]
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    # asyncio.Queue's empty() / full() / qsize() read ``self._queue``, which made the deque for
    # every queue anyone waited on (an idle connection's three get() calls: 2.3 KB, tracemalloc)
    def qsize(self) -> int:
        q = self.__dict__.get("_queue")
        return len(q) if q else 0

    def empty(self) -> bool:
        return not self.__dict__.get("_queue")

    def full(self) -> bool:
        return 0 < self._maxsize <= self.qsize()

    def _get(self) -> T:
        q: collections.deque[T] = self._queue  # type: ignore[attr-defined]
        item = q.popleft()
        if not q:  # drained: give the deque back (0.7 KB per idle connection that ever got a message)
            del self.__dict__["_queue"]
        return item

    def task_done(self) -> None:
        """As asyncio.Queue's (the Event is made here only if it is missing)."""
        if self._unfinished_tasks <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished_tasks -= 1
        if self._unfinished_tasks == 0 and "_finished" in self.__dict__:
            self._finished.set()  # type: ignore[attr-defined]


class LightEvent(asyncio.Event):
    """asyncio.Event whose waiter list is made on first ``wait()``, and a list rather than a deque.

    amqtt makes two Events per connection (reader ready, reader stopped) and the broker one more
    (message loop done); each asyncio.Event allocates an empty deque (0.7 KB) up front.
    """

    def __init__(self) -> None:  # noqa: D107  (no super().__init__: it allocates eagerly)
        self._value = False

    def __getattr__(self, name: str) -> Any:
        if name != "_waiters":
            raise AttributeError(name)
        value = _Waiters()
        self._waiters = value
        return value

    def set(self) -> None:
        if not self._value:
            self._value = True
            for fut in self.__dict__.get("_waiters", ()):
                if not fut.done():
                    fut.set_result(True)
