"""Authentication and authorization plugins for the embedded amqtt broker.

Both plugins reach the broker's :class:`~broker.access.AccessControl` through the
broker context, so there is one registry, one cache and one policy per broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from amqtt.contexts import Action as AmqttAction
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from broker.acl import Action

if TYPE_CHECKING:
    from broker.access import AccessControl

_ACTIONS = {
    AmqttAction.PUBLISH: Action.PUBLISH,
    AmqttAction.SUBSCRIBE: Action.SUBSCRIBE,
    AmqttAction.RECEIVE: Action.RECEIVE,
}


def _access(plugin: Any) -> AccessControl:
    return plugin.context._broker_instance.access  # type: ignore[no-any-return]


class RegistryAuthPlugin(BaseAuthPlugin):
    """Checks username, password and client id against the device registry."""

    async def authenticate(self, *, session: Session) -> bool | None:
        return await _access(self).authenticate(session)


class RegistryTopicPlugin(BaseTopicPlugin):
    """Applies :mod:`broker.acl` to every publish, subscribe and delivery."""

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: AmqttAction | None = None
    ) -> bool | None:
        if session is None or topic is None or action is None:
            return False
        return _access(self).authorize(session, _ACTIONS[action], topic)
