"""The authentication plugin of the embedded amqtt broker.

It reaches the broker's :class:`~broker.access.AccessControl` through the broker context, so
there is one registry, one cache and one policy per broker. Topic rules are not a plugin: amqtt
runs topic plugins through its plugin manager (a task per plugin per check, once per subscriber
per message), so :class:`~broker.server.FleetBroker` calls ``AccessControl.authorize`` directly
(:mod:`broker.routing`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

if TYPE_CHECKING:
    from broker.access import AccessControl


def _access(plugin: Any) -> AccessControl:
    return plugin.context._broker_instance.access  # type: ignore[no-any-return]


class RegistryAuthPlugin(BaseAuthPlugin):
    """Checks username, password and client id against the device registry."""

    async def authenticate(self, *, session: Session) -> bool | None:
        return await _access(self).authenticate(session)
