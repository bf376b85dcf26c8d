"""Message routing of the embedded broker: no acknowledged message lost, no retained leak, limits.

Each override names the amqtt 0.12.1 ``broker.py`` method it replaces and the defect of
``broker/AMQTT_NOTES.md`` it compensates for:

- #1 ``Broker._client_message_loop`` stops at the client's DISCONNECT (or dropped socket) and
  abandons whatever is still in ``session.delivered_message_queue``, although every one of those
  QoS 1 messages was already PUBACKed (``mqtt/protocol/handler.py`` acks on enqueue). The loop
  here drains that queue through the router before it handles the disconnect, so the messages
  published before a DISCONNECT (or before the will) are all routed, in order.
- #3 ``Broker._publish_session_retained_messages`` sends messages queued for an offline persistent
  session with RETAIN=1; they are ordinary messages and go out with RETAIN=0 here. The offline
  queue is bounded (``max_queued_messages``, oldest dropped and logged; #11).
- #5 ``Broker._run_broadcast`` delivers with the subscription's QoS, so QoS 0 messages were queued
  for offline sessions as QoS 1. Here the delivered QoS is min(publish QoS, subscription QoS), as
  MQTT 3.1.1 section 3.8.4 says and Mosquitto does.
- #6 ``Broker._publish_retained_messages_for_subscription`` sends retained messages without an
  ACL check; here each one passes the RECEIVE rule first (retained on connect: :mod:`broker.login`).
- #11 no payload limit: a PUBLISH larger than ``max_payload_bytes`` is dropped and logged with the
  client id and size (it was already PUBACKed by amqtt; MQTT 3.1.1 has no negative ack).
- The will is published only when the will topic passes the PUBLISH rule and the size limit
  (amqtt sends any will topic unchecked, so a device could forge another device's status), and
  not at all when the same client id took the connection over.
- Retained PUBLISHes on device topics other than ``s`` and ``w`` (``t``, ``a``, ``r``, ``c``) are
  delivered as ordinary messages but not stored (amqtt retains anything): a fake retained reply
  was re-ingested by the hub after every restart. Logged once per client per interval.
- Deliveries pending to one connected client (written or awaiting their PUBACK/PUBCOMP) are
  bounded by ``max_queued_messages``; beyond it a message is dropped for that client, counted
  and logged once per interval (amqtt starts one unbounded task per delivery).
- ACL decisions call :class:`~broker.access.AccessControl` directly and synchronously instead of
  going through amqtt's plugin manager, which costs a task per plugin per check; the RECEIVE
  check runs once per subscriber per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from amqtt.broker import RetainedApplicationMessage
from amqtt.contexts import Action as AmqttAction
from amqtt.events import BrokerEvents
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import ApplicationMessage, OutgoingApplicationMessage, Session

from broker.acl import Action, may_retain
from broker.light import LightQueue
from broker.log_summary import LogSummary, clip
from broker.registry import Role

if TYPE_CHECKING:
    from amqtt.broker import Broker as _Base

    from broker.access import AccessControl
    from broker.config import BrokerSettings
    from broker.stats import BrokerCounters
else:
    _Base = object

log = logging.getLogger("fleet.broker.routing")

_SHUTDOWN_WAIT_S = 2.0
"""How long the broadcast loop waits for its cancelled deliveries at shutdown."""
_INLINE_ROUTES = 64
"""PUBLISHes of one client routed in a row before its loop yields (see ``_client_message_loop``)."""

_ACTIONS = {AmqttAction.PUBLISH: Action.PUBLISH, AmqttAction.SUBSCRIBE: Action.SUBSCRIBE,
            AmqttAction.RECEIVE: Action.RECEIVE}


class RoutingMixin(_Base):
    """Message routing for :class:`~broker.server.FleetBroker` (see the module docstring)."""

    if TYPE_CHECKING:
        settings: BrokerSettings
        access: AccessControl
        counters: BrokerCounters
        notes: LogSummary

        def matching_subscriptions(self, topic: str) -> Iterator[list[tuple[Session, int]]]: ...

    async def _topic_filtering(self, session: Session, topic: str, action: AmqttAction) -> bool:
        return self.access.authorize(session, _ACTIONS[action], topic)

    async def _client_message_loop(self, client_session: Session, handler: BrokerProtocolHandler) -> None:
        """amqtt's loop kept four tasks per connection alive (waiting for a DISCONNECT, a SUBSCRIBE, an
        UNSUBSCRIBE, a PUBLISH) and one ``asyncio.wait`` over them per message: about 4 KB of each idle
        connection's memory (tracemalloc, bench/conn_memory.py). Here the three queues resolve one
        shared wake-up future on their next put (:class:`~broker.light.LightQueue`), and the loop
        waits on that and the handler's disconnect future, both plain futures."""
        loop = asyncio.get_running_loop()
        disconnect: asyncio.Future[Any] | None = getattr(handler, "_disconnect_waiter", None)
        if disconnect is None:  # the handler stopped before the loop began: as a dropped socket
            disconnect = loop.create_future()
            disconnect.set_result(None)
        subs: LightQueue[Any] = handler._pending_subscriptions  # type: ignore[assignment]
        unsubs: LightQueue[Any] = handler._pending_unsubscriptions  # type: ignore[assignment]
        delivered: LightQueue[Any] = client_session.delivered_message_queue  # type: ignore[assignment]
        queues = (subs, unsubs, delivered)
        wake: asyncio.Future[None] | None = None
        try:
            while True:
                if not subs.empty():
                    await self._handle_subscription(client_session, handler, _resolved(loop, subs.get_nowait()))
                if not unsubs.empty():
                    await self._handle_unsubscription(client_session, handler, _resolved(loop, unsubs.get_nowait()))
                if not delivered.empty():
                    # what this client has queued is routed now, a bounded number at a time
                    ok, routed = True, 0
                    while ok and routed < _INLINE_ROUTES and not delivered.empty() and not disconnect.done():
                        ok = await self.route_publish(client_session, delivered.get_nowait())
                        routed += 1
                    if not ok:
                        # a protocol violation: close like a dropped socket (amqtt left the socket open)
                        await handler.handle_connection_closed()
                if disconnect.done():
                    await self._drain_delivered(client_session)
                    await self._handle_disconnect(client_session, handler, disconnect)
                    return
                if subs.empty() and unsubs.empty() and delivered.empty():
                    wake = loop.create_future()
                    for q in queues:
                        q.wake = wake
                    await asyncio.wait((wake, disconnect), return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.sleep(0)  # more is queued: let the other connections have a turn first
        finally:
            for q in queues:
                if q.wake is wake:  # a newer connection of the same session may have set its own
                    q.wake = None
            if wake is not None and not wake.done():
                wake.cancel()

    async def _drain_delivered(self, session: Session) -> None:
        """Route every publish the client sent (and was acknowledged) before it went away (#1)."""
        queue = session.delivered_message_queue
        drained = 0
        while not queue.empty():
            await self.route_publish(session, queue.get_nowait())
            drained += 1
        if drained:
            log.debug("drained client_id=%s messages=%d", session.client_id, drained)

    async def _handle_message_delivery(self, client_session: Session, handler: BrokerProtocolHandler,
                                       wait_deliver: asyncio.Future[Any]) -> bool:
        return await self.route_publish(client_session, wait_deliver.result())

    async def route_publish(self, session: Session, message: ApplicationMessage | None) -> bool:
        """Check one PUBLISH from ``session`` and queue it for its subscribers.

        Returns False only for a protocol violation that must close the connection.
        """
        if message is None:
            return True
        await self.plugins_manager.fire_event(BrokerEvents.MESSAGE_RECEIVED, client_id=session.client_id,
                                              message=message)
        topic = message.topic
        name = str(session.username or session.client_id)
        if not topic or "#" in topic or "+" in topic:  # the strict reader closes before this
            self.notes.event("invalid_topic", name, "publish refused reason=invalid_topic client_id=%s topic=%s",
                             clip(session.client_id), clip(topic))
            return False
        if topic.startswith("$"):
            self.notes.event("dollar_topic", name, "publish dropped reason=dollar_topic client_id=%s topic=%s",
                             clip(session.client_id), clip(topic))
            return True
        size = len(message.data)
        limit = self._payload_limit(session)
        if size > limit:
            self.notes.event("oversized", name, "publish dropped reason=oversized client_id=%s topic=%s size=%d max=%d",
                             clip(session.client_id), clip(topic), size, limit)
            return True
        if not self.access.authorize(session, Action.PUBLISH, topic):
            return True  # AccessControl logged the denial
        await self.plugins_manager.fire_event(BrokerEvents.MESSAGE_BROADCAST, client_id=session.client_id,
                                              message=message)
        await self._broadcast_queue.put({"session": session, "topic": topic, "data": message.data,
                                         "pub_qos": message.qos})
        if message.publish_packet is not None and message.publish_packet.retain_flag:
            if may_retain(topic):
                await self.retain_message(session, topic, message.data, message.qos)
            else:
                self.counters.retain_refused += 1
                self.notes.event("retain_refused", name,
                                 "retain refused client_id=%s topic=%s (delivered, not stored: only s, w, o and x are retained)",
                                 clip(session.client_id), clip(topic))
        return True

    def _payload_limit(self, session: Session) -> int:
        """The protocol's limit for devices (and anonymous demo clients); a larger one for services."""
        role = getattr(session, "fleet_role", None)
        if role in (Role.HUB, Role.OPERATOR):
            return self.settings.max_service_payload_bytes
        return self.settings.max_payload_bytes

    async def _handle_disconnect(self, client_session: Session, handler: BrokerProtocolHandler,
                                 disconnect_waiter: asyncio.Future[Any]) -> None:
        abnormal = not isinstance(disconnect_waiter.result(), DisconnectPacket)
        if abnormal and client_session.will_flag and not getattr(handler, "fleet_superseded", False):
            await self._publish_will(client_session)
        await self._stop_handler(handler)
        client_session.transitions.disconnect()
        await self.plugins_manager.fire_event(BrokerEvents.CLIENT_DISCONNECTED, client_id=client_session.client_id,
                                              client_session=client_session)

    async def _publish_will(self, session: Session) -> None:
        topic, data = session.will_topic, session.will_message or b""
        if not topic or not self.access.authorize(session, Action.PUBLISH, topic):
            log.warning("will dropped reason=denied client_id=%s topic=%s", clip(session.client_id), clip(topic))
            return
        if len(data) > self._payload_limit(session):
            log.warning("will dropped reason=oversized client_id=%s size=%d", session.client_id, len(data))
            return
        log.info("will published client_id=%s topic=%s", clip(session.client_id), clip(topic))
        await self._broadcast_message(session, topic, data, session.will_qos)
        if session.will_retain and may_retain(topic):
            await self.retain_message(session, topic, data, session.will_qos)

    async def _broadcast_loop(self) -> None:
        """amqtt's ``Broker._broadcast_loop`` started a task and an ``asyncio.wait`` for every message;
        here messages already queued are taken straight from the queue, and the loop waits (for the
        next message or the shutdown) only when the queue is empty."""
        running_tasks = self._tasks_queue
        queue = self._broadcast_queue
        shutdown = self._broadcast_shutdown_waiter
        try:
            while not shutdown.done():
                while running_tasks and running_tasks[0].done():
                    _reap(running_tasks.popleft())
                if queue.empty():
                    getter = asyncio.ensure_future(queue.get())
                    await asyncio.wait([getter, shutdown], return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        await asyncio.gather(getter, return_exceptions=True)
                        continue
                    broadcast = getter.result()
                else:
                    broadcast = queue.get_nowait()
                await self._route_broadcast(broadcast, running_tasks)
        finally:
            pending = [task for task in running_tasks if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=_SHUTDOWN_WAIT_S)

    async def _run_broadcast(self, running_tasks: Any) -> None:
        await self._route_broadcast(await self._broadcast_queue.get(), running_tasks)

    async def _route_broadcast(self, broadcast: dict[str, Any], running_tasks: Any) -> None:
        """Queue one message for every matching, permitted subscriber (amqtt's ``_run_broadcast`` body)."""
        topic: str = broadcast["topic"]
        data: bytes = broadcast["data"]
        pub_qos: int | None = broadcast.get("qos", broadcast.get("pub_qos"))
        authorize = self.access.authorize
        for subscriptions in self.matching_subscriptions(topic):  # an index, not a scan (broker/subscriptions.py)
            for target, sub_qos in subscriptions:
                qos = sub_qos if pub_qos is None else min(pub_qos, sub_qos)
                if not authorize(target, Action.RECEIVE, topic):
                    continue
                if target.transitions.state != "connected":
                    if not target.clean_session and qos in (QOS_1, QOS_2) and not target.is_anonymous:
                        await self._retain_broadcast_message(broadcast, qos, target)
                    continue
                handler = self._get_handler(target)
                if handler is not None:
                    self._deliver(handler, target, topic, data, qos, running_tasks)

    def _deliver(self, handler: BrokerProtocolHandler, target: Session, topic: str, data: bytes, qos: int,
                 running_tasks: Any) -> None:
        """Start one delivery to a connected client, unless it already has too many pending."""
        pending: int = getattr(handler, "fleet_pending", 0)
        if pending >= self.settings.max_queued_messages:
            self.counters.deliveries_dropped += 1
            self.notes.event("delivery_dropped", str(target.client_id),
                             "delivery dropped reason=queue_full client_id=%s topic=%s max=%d",
                             clip(target.client_id), clip(topic), self.settings.max_queued_messages)
            return
        handler.fleet_pending = pending + 1  # type: ignore[attr-defined]
        task = asyncio.ensure_future(self._publish(handler, topic, data, qos, False))
        task.add_done_callback(lambda _t: _settled(handler))
        running_tasks.append(task)

    async def _publish(self, handler: BrokerProtocolHandler, topic: str, data: bytes, qos: int | None,
                       retain: bool) -> OutgoingApplicationMessage | None:
        """One delivery; at QoS 1 and 2 within the client's in-flight window (AMQTT_NOTES.md #16).

        amqtt starts every delivery at once. A subscriber slower than its publishers (a hub catching
        up, a device on a slow link) then has every queued message in flight: past 65,535 there is no
        packet id left (the message is lost with an error), and well before that each new id is found
        by a linear scan of the ids in use, which held the broker's event loop, and so every client,
        for minutes. Deliveries past the window wait for an acknowledgement instead; asyncio's
        semaphore wakes them first come, first served, so they keep their order."""
        if not qos:
            return await handler.mqtt_publish(topic, data, qos, retain=retain)
        window: asyncio.Semaphore | None = getattr(handler, "fleet_window", None)
        if window is None:
            window = handler.fleet_window = asyncio.Semaphore(self.settings.max_inflight_out)  # type: ignore[attr-defined]
        async with window:
            return await handler.mqtt_publish(topic, data, qos, retain=retain)

    async def _retain_broadcast_message(self, broadcast: dict[str, Any], qos: int, target_session: Session) -> None:
        queue = target_session.retained_messages
        if queue.qsize() >= self.settings.max_queued_messages:
            dropped = queue.get_nowait()
            self.counters.deliveries_dropped += 1
            self.notes.event("offline_queue_full", str(target_session.client_id),
                             "offline queue full client_id=%s max=%d dropped_topic=%s", clip(target_session.client_id),
                             self.settings.max_queued_messages, clip(dropped.topic))
        queue.put_nowait(RetainedApplicationMessage(broadcast["session"], broadcast["topic"], broadcast["data"], qos))

    async def _publish_session_retained_messages(self, session: Session) -> None:
        handler = self._get_handler(session)
        if handler is None:
            return
        queue = session.retained_messages
        if not queue.empty():
            log.info("delivering offline queue client_id=%s messages=%d", session.client_id, queue.qsize())
        while not queue.empty():
            queued = queue.get_nowait()
            # not awaited (amqtt waited for every PUBACK here, stalling the session); the
            # broadcast loop reaps these tasks
            self._tasks_queue.append(asyncio.ensure_future(
                self._publish(handler, queued.topic, queued.data, queued.qos, False)))

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int], session: Session) -> None:
        topic_filter, sub_qos = subscription
        handler = self._get_handler(session)
        if handler is None:
            return
        if "+" in topic_filter or "#" in topic_filter:
            candidates = list(self._retained_messages.items())
        else:
            # a plain filter names one topic: amqtt scanned every retained message (one status per
            # device) for each SUBSCRIBE, O(devices) per device connecting; 16 % of the broker's
            # CPU while 3,000 devices connected (py-spy, bench/README.md)
            exact = self._retained_messages.get(topic_filter)
            candidates = [(topic_filter, exact)] if exact is not None else []
        for topic, retained in candidates:
            if not self._matches(topic, topic_filter) or not self.access.authorize(session, Action.RECEIVE, topic):
                continue
            qos = sub_qos if retained.qos is None else min(sub_qos, retained.qos)
            task: asyncio.Future[OutgoingApplicationMessage | None] = asyncio.ensure_future(
                self._publish(handler, topic, retained.data, qos, True))
            self._tasks_queue.append(task)


def _resolved(loop: asyncio.AbstractEventLoop, value: Any) -> asyncio.Future[Any]:
    """A future already holding ``value`` (amqtt's handlers take the waiter they were woken by)."""
    fut = loop.create_future()
    fut.set_result(value)
    return fut


def _reap(task: asyncio.Future[Any]) -> None:
    """Collect a finished delivery task (a failed one is logged, never raised into the loop)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.warning("delivery failed error=%s", clip(repr(exc)))


def _settled(handler: BrokerProtocolHandler) -> None:
    handler.fleet_pending -= 1  # type: ignore[attr-defined]
