"""A subscription index for the embedded broker: no per-message scan over every filter.

amqtt 0.12.1 keeps subscriptions as one dict ``topic filter -> [(session, qos), ...]`` and
walks all of it twice where it hurts at fleet scale:

- ``Broker._run_broadcast`` calls ``_matches`` on *every* filter for *every* message. Each device
  subscribes to its own command topics, so one command to one of 1,000 devices cost about 2,000
  matches, and a ``ping`` to all 1,000 two million (the 26 s fan-out of issue 14).
- ``Broker._del_all_subscriptions`` (every disconnect of a clean session, through
  ``_session_monitor`` and ``_cleanup_session``) walks every filter to find one session's:
  27 % of the broker's CPU while 10,000 devices came and went (py-spy, bench/README.md).

:class:`SubscriptionIndexMixin` keeps amqtt's dict as the one record and adds two indexes beside
it: the set of filters holding a wildcard (a message matches a plain filter only when the filter
*is* its topic, so plain filters are found with one dict look-up), and per session the filters it
subscribed to. Both are pruned lazily: a filter that amqtt deleted from its dict is dropped from
the wildcard set the next time the set is walked, and a session's set may name a filter it has
since unsubscribed from (deleting it again is a no-op), so every amqtt path that removes
subscriptions stays correct without being overridden.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from amqtt.session import Session

if TYPE_CHECKING:
    from amqtt.broker import Broker as _Base
else:
    _Base = object

_SUBSCRIBED_MAX_QOS = 2


class SubscriptionIndexMixin(_Base):
    """Indexes for :class:`~broker.server.FleetBroker`'s subscriptions (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._wildcard_filters: dict[str, None] = {}  # an ordered set
        super().__init__(*args, **kwargs)

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        code: int = await super().add_subscription(subscription, session)
        topic_filter = subscription[0]
        if code <= _SUBSCRIBED_MAX_QOS and topic_filter in self._subscriptions:
            filters: set[str] | None = getattr(session, "fleet_filters", None)
            if filters is None:
                filters = session.fleet_filters = set()  # type: ignore[attr-defined]
            filters.add(topic_filter)
            if "+" in topic_filter or "#" in topic_filter:
                self._wildcard_filters[topic_filter] = None
        return code

    async def _del_all_subscriptions(self, session: Session) -> None:
        """amqtt's, over the session's own filters instead of every filter of the broker."""
        filters: set[str] = getattr(session, "fleet_filters", None) or set()
        for topic_filter in filters:
            if self._del_subscription(topic_filter, session) and not self._subscriptions.get(topic_filter, True):
                del self._subscriptions[topic_filter]
        filters.clear()

    def matching_subscriptions(self, topic: str) -> Iterator[list[tuple[Session, int]]]:
        """The subscriber lists of every filter that matches ``topic`` (one look-up plus the wildcards)."""
        exact = self._subscriptions.get(topic)
        if exact:
            yield exact
        stale = []
        for topic_filter in list(self._wildcard_filters):  # few (the hub's); a copy, as the caller awaits
            subscribers = self._subscriptions.get(topic_filter)
            if not subscribers:
                if subscribers is None:
                    stale.append(topic_filter)
                continue
            if self._matches(topic, topic_filter):
                yield subscribers
        for topic_filter in stale:
            self._wildcard_filters.pop(topic_filter, None)
