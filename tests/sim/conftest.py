"""Fixtures of the simulator tests: garbage collected between tests, and a hub-role subscriber."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from sim_helpers import HubSubscriber

from broker.registry import Registry


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Run finalizers at a safe point after each test (and after the broker fixture stopped).

    amqtt leaves StreamWriters of cancelled handlers behind; collected at a random later
    moment, their ResourceWarning can land inside an ``ast`` conversion of pytest's and trip
    CPython 3.11's "AST constructor recursion depth mismatch" (gh-106905).
    """
    yield
    gc.collect()


@pytest.fixture
def hub(embedded_broker: Any, registry: Registry) -> Iterator[HubSubscriber]:
    sub = HubSubscriber(embedded_broker.port, registry)
    yield sub
    sub.close()
