"""Revocations made outside the broker process take effect within seconds.

``fleet devices revoke`` only writes ``revoked_at`` in the registry: it cannot reach a running
broker. :class:`RevocationWatch` is one task per broker that reads the revoked principals every
``revocation_check_s`` (one small query on the registry) and, for each one revoked since the
last look, drops its cached login and closes its live connections, deleting their sessions.
``EmbeddedBroker.revoke()`` does the same at once for callers inside the broker's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable

from broker.access import AccessControl
from broker.registry import Registry

log = logging.getLogger("fleet.broker.revocation")


class RevocationWatch:
    """Polls the registry for revoked principals and throws their connections out."""

    def __init__(self, registry: Registry, access: AccessControl,
                 disconnect: Callable[[str], Awaitable[list[str]]], interval_s: float) -> None:
        self.registry = registry
        self.access = access
        self.disconnect = disconnect
        self.interval_s = interval_s
        self._known: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._known = self._revoked()  # revoked before the broker started: nobody can be connected as them
        self._task = asyncio.create_task(self._run(), name="fleet-revocation-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _revoked(self) -> dict[str, float]:
        return self.registry.revoked()

    async def check(self) -> list[str]:
        """One look at the registry; returns the principals newly revoked (and disconnected)."""
        try:
            revoked = self._revoked()
        except sqlite3.Error as exc:  # a locked or missing registry must not stop the broker; try again later
            log.warning("revocation check failed error=%r", exc)
            return []
        new = [pid for pid, at in revoked.items() if self._known.get(pid) != at]
        self._known = revoked
        for pid in new:
            self.access.forget(pid)
            closed = await self.disconnect(pid)
            log.info("revoked principal disconnected username=%s connections=%s", pid, len(closed))
        return new

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check()
