"""The transfer's edges, device side seen from a raw paho client: topics allowed, bad input, refusals."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import add_device, connect, wait_for

from broker.acl import Action, is_allowed
from broker.background import BackgroundBroker
from broker.mosquitto_export import acl_text
from broker.registry import Registry, Role
from hub.config import HubSettings
from hub.rollout import RolloutSettings, TokenBucket
from hub.service import Hub
from protocol import MessageClass, decode, encode
from protocol.firmware import FirmwareChunk, FirmwareRequest


def test_a_device_may_use_its_own_firmware_topics_only() -> None:
    assert is_allowed(Role.DEVICE, "dev-1", Action.PUBLISH, "d/dev-1/g")
    assert is_allowed(Role.DEVICE, "dev-1", Action.PUBLISH, "d/dev-1/u")
    assert is_allowed(Role.DEVICE, "dev-1", Action.SUBSCRIBE, "d/dev-1/o")
    assert is_allowed(Role.DEVICE, "dev-1", Action.SUBSCRIBE, "d/dev-1/f")
    assert not is_allowed(Role.DEVICE, "dev-1", Action.PUBLISH, "d/dev-2/g")
    assert not is_allowed(Role.DEVICE, "dev-1", Action.SUBSCRIBE, "d/dev-2/f")
    assert not is_allowed(Role.DEVICE, "dev-1", Action.PUBLISH, "d/dev-1/o")  # nobody but the hub offers images
    assert not is_allowed(Role.DEVICE, "dev-1", Action.PUBLISH, "d/dev-1/f")
    acl = acl_text([])
    for line in ("pattern write d/%u/g", "pattern write d/%u/u", "pattern read d/%u/o", "pattern read d/%u/f"):
        assert line in acl


def test_token_bucket_paces_bytes() -> None:
    bucket = TokenBucket(rate=1000.0, burst=1000.0)
    assert bucket.wait_for(1000, now=0.0) == 0.0
    assert bucket.wait_for(500, now=0.0) == pytest.approx(0.5)
    assert bucket.wait_for(500, now=0.5) == 0.0
    assert bucket.wait_for(4000, now=0.5) > 0  # larger than the burst: waits for a full bucket
    assert bucket.wait_for(4000, now=1.5) == 0.0


@pytest.fixture
def hub(db_path: Path, embedded_broker: BackgroundBroker) -> Iterator[Hub]:
    settings = HubSettings(db=db_path, broker=f"mqtt://127.0.0.1:{embedded_broker.port}", staleness_min_s=60.0)
    h = Hub(settings, rollout_settings=RolloutSettings(tick_s=0.1)).start(timeout=15)
    yield h
    h.stop()


def test_garbage_and_unknown_jobs_are_refused_and_the_engine_keeps_serving(
        embedded_broker: BackgroundBroker, registry: Registry, hub: Hub) -> None:
    creds = add_device(registry, "dev-1")
    client = connect(embedded_broker.port, creds)
    chunks: list[FirmwareChunk] = []
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = lambda c, u, m: chunks.append(decode(MessageClass.FIRMWARE_CHUNK, m.payload))  # type: ignore[arg-type]
    client.subscribe("d/dev-1/f", qos=1)
    assert subscribed.wait(10)
    try:
        for garbage in (b"\xff\x00garbage", b'{"job":"r1"}', b"x" * 5000, b""):
            client.publish("d/dev-1/g", garbage, qos=1).wait_for_publish(10)
        client.publish("d/dev-1/u", b"\x00", qos=1).wait_for_publish(10)
        # the marker: a well-formed request for a job nobody offered gets an answer with the reason
        client.publish("d/dev-1/g", encode(FirmwareRequest(job="r42", offset=0, length=100), "cbor"), qos=1)
        assert wait_for(lambda: len(chunks) == 1, 10)
        assert chunks[0].error == "unknown job" and chunks[0].data == b""
        # the 5000-byte one never reaches the hub: the broker drops payloads over 4096 bytes
        assert hub.firmware is not None and hub.firmware.bad_messages == 4
    finally:
        client.loop_stop()
        client.disconnect()
