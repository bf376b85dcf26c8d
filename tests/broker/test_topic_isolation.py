"""Devices see only their own topics: retained messages (AMQTT_NOTES.md #6), wildcard escalation (#7),
denied publishes and subscriptions, and revocation of a connected device."""

from __future__ import annotations

import logging

import pytest
from paho_helpers import Inbox, close, connect_with_inbox, subscribe

from broker.registry import Role
from support import add_device, connect, wait_for


@pytest.mark.parametrize("clean", [True, False], ids=["clean", "persistent"])
def test_device_never_receives_another_devices_retained_messages(embedded_broker, registry, clean):
    hub = connect(embedded_broker.port, add_device(registry, "hub", Role.HUB))
    assert subscribe(hub, "d/#") == 1  # amqtt sent everything matching *anyone's* subscription on connect
    dev_b = connect(embedded_broker.port, add_device(registry, "dev-b"))
    dev_b.publish("d/dev-b/s", b"b-online", qos=1, retain=True).wait_for_publish(5)
    hub.publish("d/dev-b/w", b"b-watermark", qos=1, retain=True).wait_for_publish(5)
    hub.publish("d/dev-a/w", b"a-watermark", qos=1, retain=True).wait_for_publish(5)
    wait_for(lambda: False, timeout=0.2)

    creds_a = add_device(registry, "dev-a")
    for _round in range(2):  # a fresh session, then (when persistent) a resumed one
        dev_a, inbox = connect_with_inbox(embedded_broker.port, creds_a.username, creds_a.password, clean=clean)
        assert subscribe(dev_a, "d/dev-a/c") == 1
        assert subscribe(dev_a, "d/dev-a/w") == 1
        assert wait_for(lambda: b"a-watermark" in inbox.payloads(), timeout=3)  # its own retained: yes
        for foreign in ("d/dev-b/s", "d/dev-b/w", "d/+/s", "d/#", "#"):
            assert subscribe(dev_a, foreign) == 0x80
        wait_for(lambda: False, timeout=0.5)
        assert inbox.topics() == {"d/dev-a/w"}, inbox.items
        close(dev_a)
    close(dev_b, hub)


@pytest.mark.parametrize("topic_filter", ["d/dev-w/#", "d/+/c", "#", "d/+/+", "+/dev-w/c", "d/dev-w/+", "d/#",
                                          "$SYS/#", "$share/g/d/+/c", "d/dev-w/t"])
def test_wildcard_escalation_is_refused(embedded_broker, registry, topic_filter):
    dev = connect(embedded_broker.port, add_device(registry, "dev-w"))
    assert subscribe(dev, topic_filter) == 0x80
    assert subscribe(dev, "d/dev-w/c") == 1  # the grant itself still works
    close(dev)


def test_denied_publish_is_dropped_and_logged(embedded_broker, registry, caplog):
    hub = connect(embedded_broker.port, add_device(registry, "hub", Role.HUB))
    inbox = Inbox().attach(hub)
    assert subscribe(hub, "d/#") == 1
    assert subscribe(hub, "fleet/#") == 1
    dev = connect(embedded_broker.port, add_device(registry, "dev-p"))
    with caplog.at_level(logging.WARNING, logger="fleet.broker.guard"):
        for topic in ("d/other/t", "d/dev-p/c", "fleet/events/x", "d/dev-p/t"):
            dev.publish(topic, topic.encode(), qos=1).wait_for_publish(5)
        assert wait_for(lambda: b"d/dev-p/t" in inbox.payloads(), timeout=5)
    assert inbox.payloads() == [b"d/dev-p/t"]
    # the first denial of the interval is logged, the repeats are counted (summarized later)
    denied = [r.getMessage() for r in caplog.records if "denied action=publish" in r.getMessage()]
    assert denied == ["denied action=publish username=dev-p topic=d/other/t"]
    assert embedded_broker.call(lambda: _async(embedded_broker.broker.counters))["denials"] == 3
    close(dev, hub)


async def _async(fn):  # type: ignore[no-untyped-def]
    return fn()


def test_revoke_disconnects_a_connected_device_at_once(embedded_broker, registry):
    creds = add_device(registry, "rogue")
    hub = connect(embedded_broker.port, add_device(registry, "hub", Role.HUB))
    inbox = Inbox().attach(hub)
    assert subscribe(hub, "d/+/s") == 1
    dev = connect(embedded_broker.port, creds, clean=False, will=("d/rogue/s", b"offline"))
    gone: list[object] = []
    dev.on_disconnect = lambda *a: gone.append(a)
    dev.reconnect_delay_set(30, 60)  # no automatic comeback during the test
    broker = embedded_broker.broker

    async def revoke() -> list[str]:
        return await broker.revoke("rogue")

    assert embedded_broker.call(revoke) == ["rogue"]
    assert wait_for(lambda: gone, timeout=2)
    assert wait_for(lambda: b"offline" in inbox.payloads("d/rogue/s"), timeout=2)

    async def sessions() -> bool:
        return "rogue" in broker.amqtt._sessions

    assert embedded_broker.call(sessions) is False  # the persistent session went with it
    with pytest.raises(ConnectionRefusedError):
        connect(embedded_broker.port, creds)

    async def again() -> bool:
        return await broker.disconnect_client("rogue")

    assert embedded_broker.call(again) is False
    dev.loop_stop()
    close(hub)


def _subscribed_filters(broker) -> set[str]:  # type: ignore[no-untyped-def]
    async def read() -> set[str]:
        return {f for f, subs in broker.broker.amqtt._subscriptions.items() if subs}
    return broker.call(read)  # type: ignore[no-any-return]


def test_messages_reach_exactly_the_matching_subscriptions_as_they_come_and_go(embedded_broker, registry):
    """Plain filters are looked up, wildcard filters matched (broker/subscriptions.py): each device gets
    its own commands only, the hub's wildcard gets every device's telemetry, and a filter nobody holds
    any more (a device gone, the hub gone and back) neither leaks nor stops working."""
    port = embedded_broker.port
    hub_creds = add_device(registry, "hub", Role.HUB)
    devs = {d: add_device(registry, d) for d in ("dev-a", "dev-b", "dev-c")}
    hub, hub_inbox = connect_with_inbox(port, hub_creds.username, hub_creds.password)
    assert subscribe(hub, "d/+/t") == 1
    clients, inboxes = {}, {}
    for d, creds in devs.items():
        clients[d], inboxes[d] = connect_with_inbox(port, creds.username, creds.password)
        assert subscribe(clients[d], f"d/{d}/c") == 1
    for d in devs:
        hub.publish(f"d/{d}/c", f"cmd-{d}".encode(), qos=1)
    for d in devs:
        assert wait_for(lambda d=d: inboxes[d].payloads() == [f"cmd-{d}".encode()]), inboxes[d].items
    clients["dev-a"].publish("d/dev-a/t", b"t-a", qos=1)
    assert wait_for(lambda: hub_inbox.payloads() == [b"t-a"])

    close(clients.pop("dev-c"))
    assert wait_for(lambda: "d/dev-c/c" not in _subscribed_filters(embedded_broker))
    close(hub)  # the only holder of d/+/t: the filter goes, and must come back when subscribed again
    assert wait_for(lambda: "d/+/t" not in _subscribed_filters(embedded_broker))
    hub, hub_inbox = connect_with_inbox(port, hub_creds.username, hub_creds.password)
    assert subscribe(hub, "d/+/t") == 1
    clients["dev-b"].publish("d/dev-b/t", b"t-b", qos=1)
    assert wait_for(lambda: hub_inbox.payloads() == [b"t-b"]), hub_inbox.items
    hub.publish("d/dev-b/c", b"again", qos=1)
    assert wait_for(lambda: inboxes["dev-b"].payloads()[-1:] == [b"again"])
    assert inboxes["dev-a"].payloads() == [b"cmd-dev-a"]
    close(hub, *clients.values())
