"""A strict packet reader for each broker connection: framing first, then rules, then quotas.

amqtt 0.12.1 ``mqtt/protocol/handler.py`` ``ProtocolHandler._reader_loop`` parses a packet field by
field straight from the socket and starts one task per packet. Its defects, each fixed here:

- A PUBLISH whose topic holds a wildcard is turned into a task; the connection stays open and the
  bytes after it are parsed as further packets (a smuggled PINGREQ, SUBSCRIBE or PUBLISH ran).
  MQTT 3.1.1 section 3.3.2.1 [MQTT-3.3.2-2] and 4.8 require closing the connection.
- Malformed packets (QoS 3, invalid UTF-8 topic, wrong fixed-header flags, a CONNECT after the
  first, a body shorter or longer than its fields) are logged and skipped (``except MQTTError:
  "Message discarded"``), so the stream is read out of step and the connection lives on until
  keep-alive. Invalid UTF-8 is even decoded to ``str(bytes)`` (``codecs_amqtt.decode_string``).
- It reads as fast as the socket delivers, so one device can fill the broker's queues.

:class:`StrictReaderHandler` reads the fixed header, then exactly the announced body into memory
(bounded by ``max_packet_bytes`` through :class:`~broker.connection.ActivityReader`), decodes it
strictly, and closes the connection on the first violation: nothing after a bad packet is
parsed. Before the body of a PUBLISH, SUBSCRIBE, UNSUBSCRIBE or PINGREQ is read, the packet is
charged to the sender's :class:`~broker.quota.ClientQuota`; when it is over quota the reader
sleeps, which is the backpressure (the socket is not read, PUBACKs come later). QoS 0 and 1
PUBLISHes, acknowledgements, SUBSCRIBE and PINGREQ are handled inline, in order, without a task
per packet. A QoS 2 PUBLISH is stored and answered with PUBREC inline, and routed when its PUBREL
arrives; at most ``max_inflight_in`` may await their PUBREL per client (one more closes the
connection). amqtt's ``PACKET_RECEIVED`` plugin event is not fired (no plugin of ours listens; it cost
a task per packet).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from amqtt.adapters import ReaderAdapter
from amqtt.codecs_amqtt import read_or_raise
from amqtt.errors import AMQTTError, MQTTError, NoDataError, ProtocolHandlerError
from amqtt.events import MQTTEvents
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.packet import (
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBSCRIBE,
    UNSUBSCRIBE,
    MQTTFixedHeader,
    PacketIdVariableHeader,
)
from amqtt.mqtt.pingreq import PingReqPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket, PublishPayload, PublishVariableHeader
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.mqtt.subscribe import SubscribePacket, SubscribePayload
from amqtt.session import IncomingApplicationMessage
from amqtt.mqtt.constants import QOS_2
from amqtt.mqtt.unsubscribe import UnsubscribePacket
from amqtt.mqtt.unsubscribe import UnubscribePayload as UnsubscribePayload  # sic, amqtt 0.12.1

from broker.connection import ActivityReader, PacketTooLargeError
from broker.light import LightEvent, LightQueue
from broker.log_summary import LogSummary, clip
from broker.quota import ClientQuota
from broker.stats import BrokerCounters
from broker.writer import CoalescingWriter

log = logging.getLogger("fleet.broker.reader")

# fixed-header flags a client must send (MQTT 3.1.1 section 2.2.2); PUBLISH is checked apart
_FLAGS = {CONNECT: 0, PUBACK: 0, PUBREC: 0, PUBREL: 2, PUBCOMP: 0, SUBSCRIBE: 2, UNSUBSCRIBE: 2,
          PINGREQ: 0, DISCONNECT: 0}
_CHARGED = frozenset({PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PINGREQ})
_ACKS = {PUBACK: PubackPacket, PUBREC: PubrecPacket, PUBREL: PubrelPacket, PUBCOMP: PubcompPacket}


class ProtocolViolation(Exception):
    """A packet that breaks MQTT 3.1.1; the connection is closed without reading further."""


class InflightExceeded(ProtocolViolation):
    """More QoS 2 messages awaiting PUBREL than ``max_inflight_in`` allows."""


class QuotaExceeded(Exception):
    """A client held back by its quota for longer than the hard limit."""


@dataclass(slots=True)
class ConnectionPolicy:
    """What the reader of one connection enforces, and where it reports (set at login)."""

    quota: ClientQuota | None
    max_inflight_in: int
    notes: LogSummary
    counters: BrokerCounters


class BytesReader(ReaderAdapter):
    """A :class:`ReaderAdapter` over bytes already read (for amqtt's parsers)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    async def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk = self._data[self._pos:end]
        self._pos += len(chunk)
        return chunk

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def feed_eof(self) -> None:
        pass


async def read_fixed_header(reader: ReaderAdapter) -> tuple[int, int, int, bytes] | None:
    """(packet type, flags, remaining length, raw header bytes), or None at a clean end of stream."""
    try:
        first = await read_or_raise(reader, 1)
    except NoDataError:
        return None
    raw = bytearray(first)
    length, multiplier = 0, 1
    for _ in range(4):
        byte = (await read_or_raise(reader, 1))[0]
        raw.append(byte)
        length += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return first[0] >> 4, first[0] & 0x0F, length, bytes(raw)
        multiplier *= 128
    raise ProtocolViolation("remaining length longer than 4 bytes")


def _utf8(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation(f"{what} is not valid UTF-8") from None
    if "\x00" in text:
        raise ProtocolViolation(f"{what} contains U+0000")  # [MQTT-1.5.3-2]
    return text


def _string(body: bytes, pos: int, what: str) -> tuple[str, int]:
    if pos + 2 > len(body):
        raise ProtocolViolation(f"{what} length missing")
    end = pos + 2 + int.from_bytes(body[pos:pos + 2], "big")
    if end > len(body):
        raise ProtocolViolation(f"{what} longer than the packet")
    return _utf8(body[pos + 2:end], what), end


def _packet_id(body: bytes, pos: int) -> int:
    if pos + 2 > len(body):
        raise ProtocolViolation("packet id missing")
    packet_id = int.from_bytes(body[pos:pos + 2], "big")
    if packet_id == 0:
        raise ProtocolViolation("packet id 0")  # [MQTT-2.3.1-1]
    return packet_id


def decode_publish(flags: int, length: int, body: bytes) -> PublishPacket:
    """A PUBLISH body, checked: QoS 0-2, a UTF-8 topic name without wildcards, a packet id if QoS > 0."""
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise ProtocolViolation("PUBLISH with QoS 3")  # [MQTT-3.3.1-4]
    topic, pos = _string(body, 0, "topic")
    if not topic:
        raise ProtocolViolation("PUBLISH with an empty topic")  # [MQTT-4.7.3-1]
    if "+" in topic or "#" in topic:
        raise ProtocolViolation(f"PUBLISH topic with a wildcard: {clip(topic)}")  # [MQTT-3.3.2-2]
    packet_id = None
    if qos:
        packet_id = _packet_id(body, pos)
        pos += 2
    elif flags & 0x08:
        raise ProtocolViolation("DUP set on a QoS 0 PUBLISH")  # [MQTT-3.3.1-2]
    return PublishPacket(MQTTFixedHeader(PUBLISH, flags, length), PublishVariableHeader(topic, packet_id),
                         PublishPayload(bytes(body[pos:])))


def _decode_filters(body: bytes, *, with_qos: bool) -> tuple[int, list[tuple[str, int]]]:
    packet_id = _packet_id(body, 0)
    pos, filters = 2, []
    while pos < len(body):
        topic, pos = _string(body, pos, "topic filter")
        qos = 0
        if with_qos:
            if pos >= len(body):
                raise ProtocolViolation("requested QoS missing")
            qos = body[pos]
            pos += 1
            if qos > 2:
                raise ProtocolViolation("requested QoS above 2")  # [MQTT-3.8.3-4]
        filters.append((topic, qos))
    if not filters:
        raise ProtocolViolation("no topic filter")  # [MQTT-3.8.3-3], [MQTT-3.10.3-2]
    return packet_id, filters


class StrictReaderHandler(BrokerProtocolHandler):
    """amqtt's broker-side handler with the strict reader of the module docstring.

    ``fleet_policy`` must be set before :meth:`start` (``broker.login`` does it after login).
    """

    fleet_policy: ConnectionPolicy | None = None

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        # most connections never SUBSCRIBE twice or UNSUBSCRIBE: queues without eager deques (broker/light.py)
        self._pending_subscriptions = LightQueue()
        self._pending_unsubscriptions = LightQueue()
        self._reader_stopped = LightEvent()

    async def start(self) -> None:
        """amqtt's ``ProtocolHandler.start`` then ``BrokerProtocolHandler.start``, with the reader's two
        Events as :class:`~broker.light.LightEvent` (an asyncio.Event holds a 0.7 KB deque from birth)."""
        if not self._is_attached():
            raise ProtocolHandlerError("Handler is not attached to a stream")
        self._reader_ready = LightEvent()
        self._reader_stopped = LightEvent()
        self._reader_task = asyncio.create_task(self._reader_loop())
        await self._reader_ready.wait()
        if self._loop is not None and self.keepalive_timeout is not None:
            self._keepalive_task = self._loop.call_later(self.keepalive_timeout, self.handle_write_timeout)
        await self._retry_deliveries()
        if self._disconnect_waiter is None or self._disconnect_waiter.done():
            self._disconnect_waiter = asyncio.Future()

    async def _reader_loop(self) -> None:
        if self.session is None or self._reader_ready is None or self.reader is None:
            raise AMQTTError("handler is not attached")
        reader = self.reader
        client_id = self.session.client_id
        self._reader_ready.set()
        try:
            while True:
                header = await read_fixed_header(reader)
                if header is None:
                    break
                ptype, flags, length, raw = header
                if ptype != PUBLISH and _FLAGS.get(ptype) != flags:
                    raise ProtocolViolation(f"packet type {ptype} with flags {flags:#x} is not allowed from a client")
                if ptype in _CHARGED:
                    await self._hold_back(len(raw) + length)
                body = await read_or_raise(reader, length) if length else b""
                await self._dispatch(ptype, flags, length, body)
                if ptype == DISCONNECT:
                    break
        except InflightExceeded as exc:
            self._report("inflight_disconnects", "connection closed reason=inflight client_id=%s error=%s", client_id, exc)
        except (ProtocolViolation, MQTTError, AMQTTError) as exc:
            self._report("protocol_violations", "connection closed reason=protocol_violation client_id=%s error=%s",
                         client_id, exc)
        except QuotaExceeded as exc:
            self._report("quota_disconnects", "connection closed reason=quota client_id=%s %s", client_id, exc)
        except PacketTooLargeError as exc:
            log.warning("connection closed reason=packet_too_large client_id=%s error=%s", clip(client_id), exc)
        except (NoDataError, ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except asyncio.CancelledError:
            pass  # stop() cancels the reader; it cleans up below, as amqtt's loop does
        await self.handle_connection_closed()
        self._reader_stopped.set()
        await self.stop()

    def _report(self, counter: str, msg: str, client_id: str | None, detail: object) -> None:
        """Count why the connection is closed and log it (once per client per interval)."""
        policy = self.fleet_policy
        if policy is None:
            log.warning(msg, clip(client_id), detail)
            return
        setattr(policy.counters, counter, getattr(policy.counters, counter) + 1)
        policy.notes.event(counter, str(client_id), msg, clip(client_id), detail)

    async def _hold_back(self, nbytes: int) -> None:
        """Wait as long as the sender's quota says before reading its next packet (the backpressure)."""
        policy = self.fleet_policy
        quota = policy.quota if policy is not None else None
        if quota is None or policy is None:
            return
        wait = quota.charge(nbytes)
        if wait <= 0:
            return
        if quota.over_hard_limit():
            raise QuotaExceeded(f"held_back_s={quota.quota.hard_limit_s:g}")
        policy.counters.quota_waits += 1
        policy.counters.quota_held_s += wait
        client_id = self.session.client_id if self.session else None
        policy.notes.event("quota", str(client_id),
                           "quota exceeded, reading held back client_id=%s msgs_per_s=%g bytes_per_s=%g",
                           clip(client_id), quota.quota.msgs_per_s, quota.quota.bytes_per_s, level=logging.INFO)
        await asyncio.sleep(wait)
        if isinstance(self.reader, ActivityReader):
            self.reader.last_read = time.monotonic()  # held back by us, not silent

    async def _dispatch(self, ptype: int, flags: int, length: int, body: bytes) -> None:
        if ptype == PUBLISH:
            packet = decode_publish(flags, length, body)
            if packet.qos == 2:
                await self._receive_qos2(packet)
            else:
                await self._receive(packet)
        elif ptype in _ACKS:
            if length != 2:
                raise ProtocolViolation(f"acknowledgement of {length} bytes")
            ack = _ACKS[ptype](MQTTFixedHeader(ptype, flags, length), PacketIdVariableHeader(_packet_id(body, 0)))
            handle = {PUBACK: self.handle_puback, PUBREC: self.handle_pubrec, PUBREL: self.handle_pubrel,
                      PUBCOMP: self.handle_pubcomp}[ptype]
            await handle(ack)  # type: ignore[operator]
        elif ptype == SUBSCRIBE:
            packet_id, filters = _decode_filters(body, with_qos=True)
            await self.handle_subscribe(SubscribePacket(MQTTFixedHeader(ptype, flags, length),
                                                        PacketIdVariableHeader(packet_id), SubscribePayload(filters)))
        elif ptype == UNSUBSCRIBE:
            packet_id, filters = _decode_filters(body, with_qos=False)
            await self.handle_unsubscribe(UnsubscribePacket(MQTTFixedHeader(ptype, flags, length),
                                                            PacketIdVariableHeader(packet_id),
                                                            UnsubscribePayload([t for t, _ in filters])))
        elif ptype in (PINGREQ, DISCONNECT):
            if length:
                raise ProtocolViolation(f"packet type {ptype} with a body")
            if ptype == PINGREQ:
                await self.handle_pingreq(PingReqPacket())
            else:
                await self.handle_disconnect(DisconnectPacket())
        else:
            raise ProtocolViolation(f"packet type {ptype} is not allowed from a client")  # incl. a 2nd CONNECT

    async def _receive(self, packet: PublishPacket) -> None:
        """Queue a QoS 0 or 1 PUBLISH for routing; a QoS 1 one is acknowledged with a PUBACK written inline.

        amqtt's ``handle_publish`` -> ``_handle_qos1_message_flow`` built a PubackPacket object,
        took the write lock, fired a PACKET_SENT plugin event and awaited ``drain()`` for each
        4-byte PUBACK: 29 % of the broker's CPU while 10,000 simulated devices connected and sent
        telemetry (py-spy, bench/README.md). The same 4 bytes are written here in one synchronous
        ``write`` (so they cannot interleave with another packet) and drained only when the
        socket's send buffer backs up. As before, the message is queued before it is acknowledged.
        """
        session = self.session
        if session is None:
            raise AMQTTError("PUBLISH before the session was attached")
        message = IncomingApplicationMessage(packet.packet_id, packet.topic_name, packet.qos, packet.data,
                                             packet.retain_flag)
        message.publish_packet = packet
        await session.delivered_message_queue.put(message)
        if packet.qos and packet.packet_id is not None:
            await self._write_ack(b"\x40\x02" + packet.packet_id.to_bytes(2, "big"))

    async def _write_ack(self, data: bytes) -> None:
        """Write a small acknowledgement; drain only when the client is not reading its socket."""
        writer = self.writer
        if isinstance(writer, CoalescingWriter):
            await self._write_coalesced(writer, data)
            return
        if writer is not None:  # another adapter (WebSocket): write and drain each time, as amqtt did
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                await self.handle_connection_closed()

    async def _send_packet(self, packet) -> None:  # type: ignore[no-untyped-def,override]
        """amqtt's ``_send_packet`` (write lock, write, ``drain()`` per packet) for a coalesced connection:
        one synchronous write into the connection's buffer (packets cannot interleave), a drain only
        when the client falls behind. Other adapters keep amqtt's way."""
        writer = self.writer
        if not isinstance(writer, CoalescingWriter):
            await super()._send_packet(packet)
            return
        await self._write_coalesced(writer, packet.to_bytes())
        if self._keepalive_task:
            self._keepalive_task.cancel()
            if self.keepalive_timeout is not None:
                self._keepalive_task = self._loop.call_later(self.keepalive_timeout, self.handle_write_timeout)
        await self.plugins_manager.fire_event(MQTTEvents.PACKET_SENT, packet=packet, session=self.session)

    async def _write_coalesced(self, writer: CoalescingWriter, data: bytes) -> None:
        if writer.closing:
            return  # the connection is going away; its reader ends with it
        writer.write(data)
        if writer.backed_up:
            try:
                await writer.drain()
            except (ConnectionError, OSError):
                await self.handle_connection_closed()

    async def _receive_qos2(self, packet: PublishPacket) -> None:
        """Store a QoS 2 PUBLISH and answer PUBREC; it is routed when its PUBREL comes (:meth:`handle_pubrel`).

        Inline instead of amqtt's task per message that waits for the PUBREL: a PUBREL read before
        that task ran was taken for "unknown", and the message then waited forever.
        """
        session, policy = self.session, self.fleet_policy
        packet_id = packet.packet_id
        if session is None or packet_id is None:
            raise AMQTTError("QoS 2 PUBLISH without a session or packet id")
        if packet_id not in session.inflight_in:  # a re-sent PUBLISH (DUP) keeps the first copy
            if policy is not None and len(session.inflight_in) >= policy.max_inflight_in:
                raise InflightExceeded(f"more than max_inflight_in={policy.max_inflight_in} QoS 2 messages "
                                       "awaiting PUBREL")
            message = IncomingApplicationMessage(packet_id, packet.topic_name, QOS_2, packet.data, packet.retain_flag)
            message.publish_packet = packet
            session.inflight_in[packet_id] = message
        pubrec = PubrecPacket.build(packet_id)
        await self._send_packet(pubrec)
        session.inflight_in[packet_id].pubrec_packet = pubrec

    async def handle_pubrel(self, pubrel: PubrelPacket) -> None:
        """Route the stored QoS 2 message and answer PUBCOMP; an unknown id gets PUBCOMP too [MQTT-4.3.3]."""
        packet_id = pubrel.packet_id
        session = self.session
        message = session.inflight_in.pop(packet_id, None) if session is not None else None
        if session is not None and message is not None:
            message.pubrel_packet = pubrel
            await session.delivered_message_queue.put(message)
        # amqtt only logged "unknown" for an id it had already released; the sender waits for PUBCOMP
        await self._send_packet(PubcompPacket.build(packet_id))
