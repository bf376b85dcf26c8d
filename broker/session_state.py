"""A light session object: amqtt's ``Session`` without its ``transitions.Machine``.

amqtt 0.12.1 ``session.py`` ``Session._init_states`` builds a ``transitions.Machine`` for every
session (three states, five transitions): about 15 KB and 236 Python objects per session, and
most of the CPU of a CONNECT (``Session()`` took 3 ms on the busy 2-core test machine). The broker
only ever calls ``connect()``, ``disconnect()``, ``is_connected()`` and reads ``state`` on it, so
:class:`SessionState` is a two-field stand-in with the same calls and the same enter hooks
(``last_connect_time`` / ``last_disconnect_time``). :class:`FleetSession` uses it; the broker
creates every session as a FleetSession (:meth:`broker.inflight.FleetProtocolHandler.init_from_connect`).
"""

from __future__ import annotations

from amqtt.errors import AMQTTError
from amqtt.session import Session

from broker.light import LightQueue


class SessionState:
    """The state of one session: ``new``, ``connected`` or ``disconnected`` (as amqtt's Machine had it)."""

    __slots__ = ("_session", "state")

    def __init__(self, session: Session) -> None:
        self._session = session
        self.state = "new"

    def is_connected(self) -> bool:
        return self.state == "connected"

    def connect(self) -> None:
        """new/disconnected -> connected."""
        if self.state == "connected":
            raise AMQTTError(f"session {self._session.client_id!r} is already connected")
        self.state = "connected"
        self._session._on_enter_connected()

    def disconnect(self) -> None:
        """any -> disconnected."""
        self.state = "disconnected"
        self._session._on_enter_disconnected()


class FleetSession(Session):
    """amqtt's Session with :class:`SessionState` instead of a ``transitions.Machine``, and
    :class:`~broker.light.LightQueue` queues (their deques made on first use)."""

    # the project's own per-session fields as slots: added to amqtt's ~30 attributes they made every
    # session's __dict__ grow to the next size (1.5 KB per session, tracemalloc)
    __slots__ = ("fleet_keepalive", "fleet_role", "fleet_filters")

    def __init__(self) -> None:
        super().__init__()
        self.retained_messages = LightQueue()
        self.delivered_message_queue = LightQueue()

    def _init_states(self) -> None:
        self.transitions = SessionState(self)  # type: ignore[assignment]
