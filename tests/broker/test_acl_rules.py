"""The pure topic rules of broker.acl, including the wildcard escalations amqtt allows (AMQTT_NOTES.md #7)."""

from __future__ import annotations

import pytest

from broker.acl import Action, filter_within, is_allowed
from broker.registry import Role


@pytest.mark.parametrize(
    ("request_filter", "grant", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/+", True),
        ("a/#", "a/+", False),
        ("#", "+", False),
        ("a/+", "a/b", False),
        ("a/b/c", "a/#", True),
        ("a", "a/#", True),
        ("a/+/c", "a/#", True),
        ("a/b/c", "a/+", False),
        ("a", "a/+", False),
    ],
)
def test_filter_within(request_filter, grant, expected):
    assert filter_within(request_filter, grant) is expected


@pytest.mark.parametrize(
    ("action", "topic", "expected"),
    [
        (Action.PUBLISH, "d/dev-1/t", True),
        (Action.PUBLISH, "d/dev-1/s", True),
        (Action.PUBLISH, "d/dev-1/c", False),
        (Action.PUBLISH, "d/dev-2/t", False),
        (Action.PUBLISH, "d/+/t", False),
        (Action.SUBSCRIBE, "d/dev-1/c", True),
        (Action.SUBSCRIBE, "d/dev-1/w", True),
        (Action.SUBSCRIBE, "d/dev-1/#", False),
        (Action.SUBSCRIBE, "d/dev-1/+", False),
        (Action.SUBSCRIBE, "#", False),
        (Action.SUBSCRIBE, "d/+/c", False),
        (Action.SUBSCRIBE, "$share/g/d/dev-1/c", True),
        (Action.SUBSCRIBE, "$SYS/#", False),
        (Action.RECEIVE, "d/dev-2/c", False),
        (Action.RECEIVE, "d/dev-1/c", True),
        # configuration and description (firmware_protocol.md 13): only the device's own
        (Action.PUBLISH, "d/dev-1/n", True),
        (Action.PUBLISH, "d/dev-1/x", True),
        (Action.PUBLISH, "d/dev-1/k", False),
        (Action.PUBLISH, "d/dev-2/n", False),
        (Action.PUBLISH, "d/dev-2/x", False),
        (Action.SUBSCRIBE, "d/dev-1/k", True),
        (Action.SUBSCRIBE, "d/dev-2/k", False),
        (Action.SUBSCRIBE, "d/dev-1/x", False),
        (Action.SUBSCRIBE, "d/+/k", False),
        (Action.RECEIVE, "d/dev-2/k", False),
    ],
)
def test_device_rules(action, topic, expected):
    assert is_allowed(Role.DEVICE, "dev-1", action, topic) is expected


def test_hub_reads_all_devices_but_not_sys():
    assert is_allowed(Role.HUB, "hub", Action.SUBSCRIBE, "d/+/t")
    assert is_allowed(Role.HUB, "hub", Action.SUBSCRIBE, "$share/workers/d/+/t")
    assert is_allowed(Role.HUB, "hub", Action.PUBLISH, "d/dev-1/c")
    assert not is_allowed(Role.HUB, "hub", Action.SUBSCRIBE, "#")
    assert not is_allowed(Role.HUB, "hub", Action.SUBSCRIBE, "$SYS/#")


def test_operator_only_its_own_request_topics():
    assert is_allowed(Role.OPERATOR, "ops-1", Action.PUBLISH, "fleet/ops/ops-1/req")
    assert not is_allowed(Role.OPERATOR, "ops-1", Action.PUBLISH, "fleet/ops/ops-2/req")
    assert not is_allowed(Role.OPERATOR, "ops-1", Action.PUBLISH, "d/dev-1/c")
    assert is_allowed(Role.OPERATOR, "ops-1", Action.SUBSCRIBE, "d/+/t")
