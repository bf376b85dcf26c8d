"""One ``send()`` per connection per loop pass, instead of one per packet.

amqtt writes every packet with ``StreamWriter.write`` and awaits ``drain()`` after it. asyncio's
transport calls ``send()`` at once whenever its buffer is empty, so a subscriber that is sent 64
messages in one pass of the loop (the hub's session during telemetry fan-in, an operator's
update stream during a fan-out) costs 64 system calls: ``_SelectorSocketTransport.write`` was
the largest single item in the broker's profile (19-25 % self, bench/README.md).

:class:`CoalescingWriter` keeps the packets written during one pass of the loop and hands them
to the transport as one buffer at the end of the pass (``loop.call_soon``). Packets of one
connection keep their order: every write of the connection goes through the same buffer, and
``drain()`` and ``close()`` flush it first. A write after the connection started closing is
dropped, as amqtt's adapter does.
"""

from __future__ import annotations

import asyncio
import ssl

from amqtt.adapters import StreamWriterAdapter, WriterAdapter

DRAIN_BYTES = 64 * 1024
"""A connection with more than this waiting to be sent makes its writers wait for the socket."""


class CoalescingWriter(WriterAdapter):
    """A :class:`WriterAdapter` over amqtt's TCP adapter that sends what one loop pass wrote at once."""

    __slots__ = ("inner", "transport", "_chunks", "_pending", "_handle", "_loop")

    def __init__(self, inner: StreamWriterAdapter) -> None:
        self.inner = inner
        stream: asyncio.StreamWriter = inner._writer
        self.transport = stream.transport
        self._chunks: list[bytes] = []
        self._pending = 0
        self._handle: asyncio.Handle | None = None
        self._loop = asyncio.get_running_loop()

    @classmethod
    def wrap(cls, writer: WriterAdapter) -> WriterAdapter:
        """``writer`` coalesced when it is amqtt's TCP adapter (WebSocket adapters are left as they are)."""
        if isinstance(writer, StreamWriterAdapter) and getattr(writer, "_writer", None) is not None:
            return cls(writer)
        return writer

    @property
    def closing(self) -> bool:
        return self.inner.is_closed or self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        self._chunks.append(data)
        self._pending += len(data)
        if self._handle is None:
            self._handle = self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand everything written so far to the transport (one ``send()`` when the socket takes it)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if not self._chunks:
            return
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._pending = 0
        if not self.closing:
            self.inner.write(data)

    @property
    def backed_up(self) -> bool:
        """More than :data:`DRAIN_BYTES` not yet taken by the socket: the client is not reading."""
        return self._pending + self.transport.get_write_buffer_size() > DRAIN_BYTES

    async def drain(self) -> None:
        self.flush()
        await self.inner.drain()

    def get_peer_info(self) -> tuple[str, int] | None:
        return self.inner.get_peer_info()

    def get_ssl_info(self) -> ssl.SSLObject | None:
        return self.inner.get_ssl_info()

    async def close(self) -> None:
        self.flush()
        await self.inner.close()
