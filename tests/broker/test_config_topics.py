"""The configuration topics of firmware_protocol.md 13 on a real broker: each device only its own n, x and k;
its description (x) is retained, its reports (n) are not."""

from __future__ import annotations

from paho_helpers import Inbox, close, connect_with_inbox, subscribe
from support import add_device, connect, wait_for

from broker.registry import Role


def test_device_publishes_only_its_own_reports_and_description(embedded_broker, registry):
    hub = connect(embedded_broker.port, add_device(registry, "hub", Role.HUB))
    inbox = Inbox().attach(hub)
    assert subscribe(hub, "d/#") == 1
    add_device(registry, "dev-o")
    dev = connect(embedded_broker.port, add_device(registry, "dev-c"))
    for topic in ("d/dev-o/n", "d/dev-o/x", "d/dev-c/k", "d/dev-o/k", "d/dev-c/n", "d/dev-c/x"):
        dev.publish(topic, topic.encode(), qos=1).wait_for_publish(5)
    dev.publish("d/dev-c/t", b"marker", qos=1).wait_for_publish(5)
    assert wait_for(lambda: b"marker" in inbox.payloads(), timeout=5)
    assert inbox.payloads() == [b"d/dev-c/n", b"d/dev-c/x", b"marker"]
    close(dev, hub)


def test_device_subscribes_only_to_its_own_config_topic(embedded_broker, registry):
    dev = connect(embedded_broker.port, add_device(registry, "dev-s"))
    assert subscribe(dev, "d/dev-s/k") == 1
    for foreign in ("d/dev-z/k", "d/+/k", "d/dev-s/x", "d/+/x", "d/dev-s/n"):
        assert subscribe(dev, foreign) == 0x80, foreign
    close(dev)


def test_description_is_retained_for_the_hub_reports_are_not(embedded_broker, registry):
    dev = connect(embedded_broker.port, add_device(registry, "dev-r"))
    dev.publish("d/dev-r/x", b"description", qos=1, retain=True).wait_for_publish(5)
    dev.publish("d/dev-r/n", b"report", qos=1, retain=True).wait_for_publish(5)
    creds = add_device(registry, "hub", Role.HUB)
    late, inbox = connect_with_inbox(embedded_broker.port, creds.username, creds.password)
    assert subscribe(late, "d/dev-r/x") == 1
    assert subscribe(late, "d/dev-r/n") == 1
    assert wait_for(lambda: inbox.payloads("d/dev-r/x") == [b"description"], timeout=5)
    dev.publish("d/dev-r/n", b"live", qos=1).wait_for_publish(5)
    assert wait_for(lambda: b"live" in inbox.payloads(), timeout=5)
    assert inbox.payloads("d/dev-r/n") == [b"live"]  # the retained report was delivered live, never stored
    close(dev, late)
