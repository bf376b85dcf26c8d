"""Authenticate before touching sessions, and take sessions over cleanly (AMQTT_NOTES.md #8).

amqtt 0.12.1 ``broker.py`` ``Broker._initialize_client_session`` looks the client id up in the
session table *before* anyone checked the password: with ``clean_session=1`` it deletes the
existing session (the victim's subscriptions and queued messages are gone), with
``clean_session=0`` it copies the newcomer's username, password and will into the victim's live
session. ``Broker._handle_client_session`` then authenticates, performs a "take-over" (closing the
victim's connection) even for a refused login, and stores the refused session in the table where
nothing ever removes it (300 failed logins left 301 sessions).

:class:`LoginFirstMixin` replaces both methods. The CONNECT is read (within ``connect_timeout``)
and the credentials are checked on a fresh session object; a refused login gets CONNACK 0x05 and
a closed socket, and the session table is never touched. Only an authenticated client takes over
a live session of the same client id: the old connection is closed first (its queued publishes
are routed, its will is *not* sent, since the same client is back), then the clean-session or
resume logic of amqtt runs on a session that is no longer connected.

Two more changes on the way in: amqtt sends every retained message that matches *anyone's*
subscription to a client on connect (``_handle_client_session``, "Publish retained messages to a
pre-existing session's subscriptions"; AMQTT_NOTES.md #6). MQTT sends retained messages on SUBSCRIBE
only, so nothing is sent on connect. And messages queued for an offline persistent session are
flushed with RETAIN=0 (see :mod:`broker.routing`, AMQTT_NOTES.md #3).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.errors import AMQTTError, BrokerError, MQTTError, NoDataError
from amqtt.events import BrokerEvents
from amqtt.codecs_amqtt import read_or_raise
from amqtt.mqtt.connack import (
    BAD_USERNAME_PASSWORD,
    IDENTIFIER_REJECTED,
    NOT_AUTHORIZED,
    UNACCEPTABLE_PROTOCOL_VERSION,
    ConnackPacket,
)
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.packet import CONNECT
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import gen_client_id

from broker.connection import ActivityReader, PacketTooLargeError, mark_keepalive
from broker.inflight import FleetProtocolHandler
from broker.light import LightEvent
from broker.log_summary import LogSummary, clip
from broker.quota import QuotaBook
from broker.reader import BytesReader, ConnectionPolicy, ProtocolViolation, StrictReaderHandler, read_fixed_header
from broker.session_state import FleetSession
from broker.stats import BrokerCounters
from broker.writer import CoalescingWriter

if TYPE_CHECKING:
    from amqtt.broker import Broker as _Base

    from broker.access import AccessControl
    from broker.config import BrokerSettings
else:
    _Base = object

log = logging.getLogger("fleet.broker.login")

TAKEOVER_TIMEOUT_S = 5.0
REFUSAL_DELAY_MAX_S = 2.0
"""Longest wait before a login refused during a back-off gets its CONNACK."""

# what a resumed persistent session takes from the new CONNECT
_RENEWED = ("will_flag", "will_retain", "will_qos", "will_topic", "will_message", "keep_alive", "fleet_keepalive",
            "username", "password", "fleet_role", "is_anonymous", "remote_address", "remote_port", "ssl_object")


class LoginFirstMixin(_Base):
    """Session set-up for :class:`~broker.server.FleetBroker` (see the module docstring)."""

    if TYPE_CHECKING:
        settings: BrokerSettings
        access: AccessControl
        counters: BrokerCounters
        notes: LogSummary
        quotas: QuotaBook

    async def _client_connected(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        """amqtt's ``Broker._client_connected`` without its two log lines per connection.

        amqtt logs "Connection from ..." and, for every refused login, "Failed to initialize
        client session" (unbounded under a login flood); the refusals are logged, summarized, by
        :meth:`_initialize_client_session` and :class:`~broker.access.AccessControl` instead.
        """
        server = self._servers.get(listener_name)
        if not server:
            raise BrokerError(f"Invalid listener name '{listener_name}'")
        await server.acquire_connection()
        try:
            reader = ActivityReader(reader, self.settings.max_packet_bytes)
            writer = CoalescingWriter.wrap(writer)  # one send() per loop pass (broker/writer.py)
            remote_info = writer.get_peer_info()
            if remote_info is None:
                await _close_quietly(writer)
                return
            remote_address, remote_port = remote_info
            try:
                handler, client_session = await self._initialize_client_session(reader, writer, remote_address,
                                                                                remote_port)
            except AMQTTError:
                return  # refused and logged
            try:
                await self._handle_client_session(reader, writer, client_session, handler, server, listener_name)
            except (AMQTTError, MQTTError, NoDataError) as exc:
                self.notes.event("session_error", str(client_session.client_id),
                                 "session ended with an error client_id=%s error=%s",
                                 clip(client_session.client_id), clip(repr(exc)))
        finally:
            server.release_connection()

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        """Read the CONNECT and authenticate it. Never looks at or changes the session table."""
        peer = f"{remote_address}:{remote_port}"
        try:
            async with asyncio.timeout(self.settings.connect_timeout):  # not wait_for, which can drop a cancel on 3.11
                raw = await _read_connect(reader)
            level = _protocol_level(raw)
            if level is not None:
                # MQTT 5 (5), MQTT 3.1 (3): CONNACK 0x01 at once [MQTT-3.1.2-2]; amqtt mis-parsed an
                # MQTT 5 CONNECT, hung until the timeout and logged a traceback
                self.counters.unsupported_protocol += 1
                self.notes.event("unsupported_protocol", remote_address,
                                 "connect refused reason=unsupported_protocol level=%d peer=%s", level, peer)
                await _refuse(writer, UNACCEPTABLE_PROTOCOL_VERSION)
                raise AMQTTError(f"unsupported protocol level {level} from {peer}")
            handler, session = await self._session_from_connect(raw, writer, remote_address, remote_port)
        except (asyncio.TimeoutError, MQTTError, NoDataError, PacketTooLargeError, ProtocolViolation,
                asyncio.IncompleteReadError, ConnectionError) as exc:
            self.notes.event("bad_connect", remote_address, "connect refused reason=bad_or_no_connect peer=%s error=%s",
                             peer, clip(repr(exc)))
            await _close_quietly(writer)
            raise AMQTTError(f"no valid CONNECT from {peer}") from exc
        mark_keepalive(session)
        if not session.client_id:
            session.client_id = gen_client_id()  # clean_session=1 only; amqtt refused the other case
        session.is_anonymous = session.username is None
        # amqtt ignores the listener argument of _authenticate
        if not await self._authenticate(session, None):  # type: ignore[arg-type]
            # AccessControl logged why; a login refused while its id or address backs off is
            # answered late, so a guesser on one connection gets at most one try per back-off
            delay = min(self.access.retry_in(session.username, remote_address), REFUSAL_DELAY_MAX_S)
            if delay > 0:
                await asyncio.sleep(delay)
            await _refuse(writer, NOT_AUTHORIZED)
            raise AMQTTError(f"login refused for client id {session.client_id!r}")
        return handler, session

    async def _session_from_connect(self, raw: bytes, writer: WriterAdapter, remote_address: str,
                                    remote_port: int) -> tuple[FleetProtocolHandler, FleetSession]:
        """amqtt's ``BrokerProtocolHandler.init_from_connect`` on a CONNECT already read, making a
        :class:`~broker.session_state.FleetSession` (no ``transitions.Machine``; see that module).

        The same checks as amqtt: a refused CONNECT gets its CONNACK code and MQTTError is raised.
        """
        connect = await ConnectPacket.from_stream(BytesReader(raw))
        if connect.variable_header is None or connect.payload is None or connect.payload.client_id is None:
            raise MQTTError("CONNECT without a variable header, payload or client id")
        if connect.variable_header.will_flag and (connect.payload.will_topic is None
                                                  or connect.payload.will_message is None):
            raise MQTTError("will flag set, but no will topic or message")
        if connect.variable_header.reserved_flag:
            raise MQTTError("[MQTT-3.1.2-3] CONNECT reserved flag must be 0")
        if connect.proto_name != "MQTT":
            raise MQTTError(f"[MQTT-3.1.2-1] protocol name {clip(connect.proto_name)}")
        code = None
        if (not connect.username_flag and connect.password_flag) or (connect.username_flag and connect.username is None) \
                or (connect.password_flag and connect.password is None):
            code = BAD_USERNAME_PASSWORD  # [MQTT-3.1.2-22]
        elif not connect.clean_session_flag and connect.payload.client_id_is_random:
            code = IDENTIFIER_REJECTED  # [MQTT-3.1.3-8]
        if code is not None:
            await _refuse(writer, code)
            raise MQTTError(f"CONNECT refused with code {code}")
        session = FleetSession()
        session.client_id = connect.client_id
        session.clean_session = connect.clean_session_flag
        session.will_flag = connect.will_flag
        session.will_retain = connect.will_retain_flag
        session.will_qos = connect.will_qos
        session.will_topic = connect.will_topic
        session.will_message = connect.will_message
        session.username = connect.username
        session.password = connect.password
        session.remote_address = remote_address
        session.remote_port = remote_port
        session.ssl_object = writer.get_ssl_info()
        session.keep_alive = max(connect.keep_alive, 0)
        return FleetProtocolHandler(self.plugins_manager), session

    async def _handle_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        client_session: Session,
        handler: BrokerProtocolHandler,
        server: Any,
        listener_name: str,
    ) -> None:
        """Run an authenticated connection: take over, resume or start its session, then serve it."""
        client_id = client_session.client_id
        if client_id is None:
            raise AMQTTError("client id was not set")
        await self._take_over(client_id)
        existing = self._sessions.get(client_id)
        if client_session.clean_session or (existing is not None and existing[0].username != client_session.username):
            # a persistent session belongs to the principal that made it; another one starts afresh
            await self._delete_session(client_id)
            client_session.parent = 0
        elif existing is not None:
            resumed = existing[0]
            for name in _RENEWED:
                setattr(resumed, name, getattr(client_session, name, None))
            resumed.clean_session = False
            client_session = resumed
            client_session.parent = 1
        else:
            client_session.parent = 0
        client_session.transitions.connect()

        done = LightEvent()
        handler.fleet_loop_done = done  # type: ignore[attr-defined]
        if isinstance(reader, ActivityReader):
            reader.last_read = time.monotonic()  # keep-alive counts from the CONNACK, not from the hash check
        handler.attach(client_session, reader, writer)
        if isinstance(handler, StrictReaderHandler):
            role = getattr(client_session, "fleet_role", None)
            handler.fleet_policy = ConnectionPolicy(
                self.quotas.for_login(client_session.username or client_id, role),
                self.settings.max_inflight_in, self.notes, self.counters)
        self._sessions[client_id] = (client_session, handler)
        self.counters.logins += 1
        self.counters.connections += 1
        try:
            await handler.mqtt_connack_authorize(True)
            await self.plugins_manager.fire_event(BrokerEvents.CLIENT_CONNECTED, client_id=client_id,
                                                  client_session=client_session)
            await handler.start()
            await self._publish_session_retained_messages(client_session)
            await self._client_message_loop(client_session, handler)
        finally:
            self.counters.connections -= 1
            if client_session.transitions.is_connected() and self._get_handler(client_session) is handler:
                # the loop never reached its own disconnect handling: do not leave a live-looking zombie
                await self._stop_handler(handler)
                client_session.transitions.disconnect()
            done.set()

    async def _take_over(self, client_id: str) -> None:
        """Close the live connection of ``client_id``, if any, without publishing its will."""
        entry = self._sessions.get(client_id)
        if entry is None or not entry[0].transitions.is_connected():
            return
        old_session, old_handler = entry
        log.info("session takeover client_id=%s", client_id)
        old_handler.fleet_superseded = True  # type: ignore[attr-defined]
        await self.close_connection(old_session, old_handler)

    async def close_connection(self, session: Session, handler: BrokerProtocolHandler) -> None:
        """Close one live connection as if its socket dropped, and wait until its loop has cleaned up."""
        done: asyncio.Event | None = getattr(handler, "fleet_loop_done", None)
        await handler.handle_connection_closed()
        if done is not None:
            try:
                async with asyncio.timeout(TAKEOVER_TIMEOUT_S):
                    await done.wait()
            except asyncio.TimeoutError:
                log.warning("connection did not close in time client_id=%s", session.client_id)
        if session.transitions.is_connected():
            await self._stop_handler(handler)
            session.transitions.disconnect()


async def _read_connect(reader: ReaderAdapter) -> bytes:
    """The first packet of a connection, whole (header and body); it must be a CONNECT."""
    header = await read_fixed_header(reader)
    if header is None:
        raise NoDataError("connection closed before CONNECT")
    ptype, flags, length, raw = header
    if ptype != CONNECT or flags:
        raise ProtocolViolation(f"first packet is type {ptype} flags {flags:#x}, not CONNECT")  # [MQTT-3.1.0-1]
    return raw + (await read_or_raise(reader, length) if length else b"")


def _protocol_level(raw: bytes) -> int | None:
    """The protocol level of a CONNECT of another MQTT version than 3.1.1 (3.1, 5), else None.

    Anything else that is not "MQTT" level 4 is left to amqtt's parser, which refuses it.
    """
    pos = 1
    while pos < len(raw) and raw[pos] & 0x80:  # skip the remaining-length bytes
        pos += 1
    body = raw[pos + 1:]
    if len(body) < 3:
        return None
    name_len = int.from_bytes(body[:2], "big")
    if len(body) < 3 + name_len:
        return None
    name, level = body[2:2 + name_len], body[2 + name_len]
    if (name, level) == (b"MQTT", 4):
        return None
    if name in (b"MQTT", b"MQIsdp"):
        return level
    return None


async def _refuse(writer: WriterAdapter, return_code: int) -> None:
    """Send CONNACK with ``return_code`` (session present 0) and close."""
    try:
        await ConnackPacket.build(0, return_code).to_stream(writer)
    except ConnectionError:
        pass
    await _close_quietly(writer)


async def _close_quietly(writer: WriterAdapter) -> None:
    try:
        await writer.close()
    except (ConnectionError, OSError):
        pass
