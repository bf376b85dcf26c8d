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
from typing import TYPE_CHECKING, Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.events import BrokerEvents
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import gen_client_id

from broker.connection import ActivityReader, PacketTooLargeError, mark_keepalive
from broker.inflight import FleetProtocolHandler

if TYPE_CHECKING:
    from amqtt.broker import Broker as _Base

    from broker.access import AccessControl
    from broker.config import BrokerSettings
else:
    _Base = object

log = logging.getLogger("fleet.broker.login")

TAKEOVER_TIMEOUT_S = 5.0

# what a resumed persistent session takes from the new CONNECT
_RENEWED = ("will_flag", "will_retain", "will_qos", "will_topic", "will_message", "keep_alive", "fleet_keepalive",
            "username", "password", "fleet_role", "is_anonymous", "remote_address", "remote_port", "ssl_object")


class LoginFirstMixin(_Base):
    """Session set-up for :class:`~broker.server.FleetBroker` (see the module docstring)."""

    if TYPE_CHECKING:
        settings: BrokerSettings
        access: AccessControl

    async def _client_connected(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        await super()._client_connected(listener_name, ActivityReader(reader, self.settings.max_packet_bytes), writer)

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        """Read the CONNECT and authenticate it. Never looks at or changes the session table."""
        peer = f"{remote_address}:{remote_port}"
        try:
            handler, session = await asyncio.wait_for(
                FleetProtocolHandler.init_from_connect(reader, writer, self.plugins_manager),
                self.settings.connect_timeout,
            )
        except (asyncio.TimeoutError, AMQTTError, MQTTError, NoDataError, PacketTooLargeError) as exc:
            log.warning("connect refused reason=bad_or_no_connect peer=%s error=%r", peer, exc)
            await _close_quietly(writer)
            raise AMQTTError(f"no valid CONNECT from {peer}") from exc
        mark_keepalive(session)
        if not session.client_id:
            session.client_id = gen_client_id()  # clean_session=1 only; amqtt refused the other case
        session.is_anonymous = session.username is None
        # amqtt ignores the listener argument of _authenticate
        if not await self._authenticate(session, None):  # type: ignore[arg-type]
            log.warning("connect refused reason=not_authorized client_id=%s username=%s peer=%s",
                        session.client_id, session.username, peer)
            try:
                await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            except ConnectionError:
                pass
            await _close_quietly(writer)
            raise AMQTTError(f"login refused for client id {session.client_id!r}")
        return handler, session

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

        done = asyncio.Event()
        handler.fleet_loop_done = done  # type: ignore[attr-defined]
        handler.attach(client_session, reader, writer)
        self._sessions[client_id] = (client_session, handler)
        try:
            await handler.mqtt_connack_authorize(True)
            await self.plugins_manager.fire_event(BrokerEvents.CLIENT_CONNECTED, client_id=client_id,
                                                  client_session=client_session)
            await handler.start()
            await self._publish_session_retained_messages(client_session)
            await self._client_message_loop(client_session, handler)
        finally:
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
                await asyncio.wait_for(done.wait(), TAKEOVER_TIMEOUT_S)
            except asyncio.TimeoutError:
                log.warning("connection did not close in time client_id=%s", session.client_id)
        if session.transitions.is_connected():
            await self._stop_handler(handler)
            session.transitions.disconnect()


async def _close_quietly(writer: WriterAdapter) -> None:
    try:
        await writer.close()
    except (ConnectionError, OSError):
        pass
