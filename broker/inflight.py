"""Redelivery of unacknowledged QoS 1 and QoS 2 messages to persistent sessions (AMQTT_NOTES.md #4).

amqtt 0.12.1 ``mqtt/protocol/handler.py`` ``ProtocolHandler._handle_qos1_message_flow`` removes an
outgoing message from ``session.inflight_out`` in a ``finally`` block: on PUBACK, but also when
the wait is cancelled because the connection closed (``_stop_waiters``) or after a fixed 5 s
timeout. A persistent session therefore forgets every unacknowledged message the moment its
subscriber drops, and ``_retry_deliveries`` at the next CONNECT has nothing to resend (upstream
issue #401). It also registers the PUBACK waiter only after the PUBLISH is written, so a very fast
PUBACK can be reported as "unknown" and the message then times out.

:class:`FleetProtocolHandler` keeps an outgoing QoS 1 message in ``inflight_out`` until its PUBACK
arrives; when the subscriber reconnects with the same client id and ``clean_session=0``, the
retry resends it with DUP=1 (MQTT 3.1.1 section 4.4). A PUBACK that arrives after the broker
stopped waiting still clears the message. The retry runs in the background: amqtt awaits it
inside ``handler.start()``, which would stall the whole session for up to 10 s when the client is
slow to acknowledge.

QoS 2 had the same defect (``_handle_qos2_message_flow`` pops the message from ``inflight_out`` in
``finally`` after a 5 s wait or a closed connection): here an outgoing QoS 2 message stays in
flight until its PUBCOMP; a reconnect resends the PUBLISH (DUP=1) when no PUBREC came, or the
PUBREL when it did (MQTT 3.1.1 section 4.4). Incoming QoS 2 (PUBREC, PUBREL, PUBCOMP) is handled
by :mod:`broker.reader`.
"""

from __future__ import annotations

import asyncio
import logging

from amqtt.errors import AMQTTError, ProtocolHandlerError
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.session import OUTGOING, IncomingApplicationMessage, OutgoingApplicationMessage

from broker.log_summary import clip
from broker.reader import StrictReaderHandler

log = logging.getLogger("fleet.broker.inflight")

PUBACK_TIMEOUT_S = 30.0
"""How long one delivery attempt waits for its PUBACK; the message stays queued for redelivery after."""


class FleetProtocolHandler(StrictReaderHandler):
    """amqtt's broker-side protocol handler, keeping QoS 1 and 2 messages in flight until acknowledged."""

    # the broker's per-connection fields as slots, so amqtt's ~30 attributes keep a smaller __dict__
    # (see broker/session_state.py); read with getattr(..., default) where they may be unset
    __slots__ = ("_retries", "fleet_pending", "fleet_window", "fleet_loop_done", "fleet_superseded", "fleet_expired")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._retries: set[asyncio.Task[None]] = set()

    async def _handle_qos1_message_flow(self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage) -> None:
        if app_message.direction != OUTGOING or not isinstance(app_message, OutgoingApplicationMessage):
            try:
                await super()._handle_qos1_message_flow(app_message)
            except ProtocolHandlerError:
                # The client closed while its PUBACK was being written (a device that replies, then
                # reboots). amqtt queued the message for routing before that, so nothing is lost, but it
                # raises into a task nobody awaits: "Task exception was never retrieved" with a traceback.
                log.debug("client gone before its PUBACK client_id=%s packet_id=%s",
                          self.session.client_id if self.session else None, app_message.packet_id)
            return
        session = self.session
        packet_id = app_message.packet_id
        if session is None or packet_id is None:
            raise AMQTTError("outgoing QoS 1 message without a session or packet id")
        if app_message.puback_packet is not None:
            return  # acknowledged while a retry was being scheduled
        session.inflight_out[packet_id] = app_message
        packet = app_message.build_publish_packet(dup=app_message.publish_packet is not None)
        app_message.publish_packet = packet
        waiter: asyncio.Future[PubackPacket] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter  # before writing: the PUBACK may come back at once
        try:
            await self._send_packet(packet)
            async with asyncio.timeout(PUBACK_TIMEOUT_S):  # not wait_for, which can drop a cancel on 3.11
                app_message.puback_packet = await waiter
        except asyncio.TimeoutError:
            if app_message.puback_packet is not None:
                return  # settled by a retry on a newer connection of the same session
            self._ack_timed_out("PUBACK", packet_id, app_message.topic)
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # the connection closed (amqtt cancels the waiters): keep the message for the next connect
            return
        finally:
            if self._puback_waiters.get(packet_id) is waiter:
                del self._puback_waiters[packet_id]
        if session.inflight_out.get(packet_id) is app_message:
            del session.inflight_out[packet_id]

    async def handle_puback(self, puback: PubackPacket) -> None:
        packet_id = puback.variable_header.packet_id if puback.variable_header else None
        waiter = self._puback_waiters.get(packet_id) if packet_id is not None else None
        if waiter is not None and not waiter.done():
            waiter.set_result(puback)
            return
        session = self.session
        if session is not None and packet_id is not None:
            message = session.inflight_out.pop(packet_id, None)
            if message is not None:
                message.puback_packet = puback  # a late PUBACK still settles the message
                return
        log.debug("PUBACK for unknown packet_id=%s", packet_id)

    async def _handle_qos2_message_flow(self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage) -> None:
        if app_message.direction != OUTGOING or not isinstance(app_message, OutgoingApplicationMessage):
            await super()._handle_qos2_message_flow(app_message)
            return
        session = self.session
        packet_id = app_message.packet_id
        if session is None or packet_id is None:
            raise AMQTTError("outgoing QoS 2 message without a session or packet id")
        session.inflight_out[packet_id] = app_message
        if app_message.pubrec_packet is None:
            packet = app_message.build_publish_packet(dup=app_message.publish_packet is not None)
            app_message.publish_packet = packet
            pubrec = await self._await_ack(self._pubrec_waiters, packet_id, packet, "PUBREC")
            if pubrec is None:
                return  # kept for redelivery of the PUBLISH
            app_message.pubrec_packet = pubrec
        if app_message.pubcomp_packet is None:
            app_message.pubrel_packet = PubrelPacket.build(packet_id)
            pubcomp = await self._await_ack(self._pubcomp_waiters, packet_id, app_message.pubrel_packet, "PUBCOMP")
            if pubcomp is None:
                return  # kept for redelivery of the PUBREL
            app_message.pubcomp_packet = pubcomp
        if session.inflight_out.get(packet_id) is app_message:
            del session.inflight_out[packet_id]

    def _ack_timed_out(self, what: str, packet_id: int, topic: str | None) -> None:
        """Log a missing acknowledgement; the message stays queued for redelivery. A client that stops
        acknowledging times out on every message it was sent: logged once per client per interval."""
        client_id = self.session.client_id if self.session else None
        args = (what, clip(client_id), packet_id, clip(topic))
        msg = "no %s client_id=%s packet_id=%s topic=%s; kept for redelivery"
        policy = self.fleet_policy
        if policy is None:
            log.warning(msg, *args)
        else:
            policy.notes.event("ack_timeout", str(client_id), msg, *args)

    async def _await_ack(self, waiters: dict, packet_id: int, packet: object, what: str):  # type: ignore[no-untyped-def,type-arg]
        """Send ``packet`` and wait for its acknowledgement; None when the wait ended without one."""
        waiter: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        waiters[packet_id] = waiter  # before writing: the answer may come back at once
        try:
            await self._send_packet(packet)  # type: ignore[arg-type]
            async with asyncio.timeout(PUBACK_TIMEOUT_S):
                return await waiter
        except asyncio.TimeoutError:
            self._ack_timed_out(what, packet_id, None)
            return None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return None  # the connection closed: kept for the next connect
        finally:
            if waiters.get(packet_id) is waiter:
                del waiters[packet_id]

    async def handle_pubrec(self, pubrec: PubrecPacket) -> None:
        waiter = self._pubrec_waiters.get(pubrec.packet_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(pubrec)
            return
        log.debug("PUBREC for unknown packet_id=%s", pubrec.packet_id)

    async def handle_pubcomp(self, pubcomp: PubcompPacket) -> None:
        packet_id = pubcomp.packet_id
        waiter = self._pubcomp_waiters.get(packet_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(pubcomp)
            return
        session = self.session
        message = session.inflight_out.get(packet_id) if session is not None else None
        if session is not None and message is not None and message.pubrec_packet is not None:
            message.pubcomp_packet = pubcomp  # a late PUBCOMP still settles the message
            del session.inflight_out[packet_id]
            return
        log.debug("PUBCOMP for unknown packet_id=%s", packet_id)

    async def _retry_deliveries(self) -> None:
        """Resend what is still in flight for this session, in the background (see module doc)."""
        session = self.session
        if session is None:
            raise AMQTTError("session is not initialized")
        # incoming QoS 2 messages wait for the client to resend its PUBREL (broker.reader)
        pending = list(session.inflight_out.values())
        if pending:
            log.info("redelivering client_id=%s messages=%d", session.client_id, len(pending))
        for message in pending:
            task = asyncio.create_task(self._retry_one(message))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    async def _retry_one(self, message: IncomingApplicationMessage | OutgoingApplicationMessage) -> None:
        try:
            await self._handle_message_flow(message)
        except (AMQTTError, TimeoutError, ConnectionError) as exc:
            log.warning("redelivery failed client_id=%s packet_id=%s error=%r",
                        self.session.client_id if self.session else None, message.packet_id, exc)
