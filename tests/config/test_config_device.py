"""A device written from firmware_protocol.md 13 alone (paho, CBOR) against the real broker and hub: its
description, index keys, the versions rules on the hub's side, range flags and declared units."""

from __future__ import annotations

import json
import queue
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from support import add_device, wait_for

from broker.background import BackgroundBroker
from broker.registry import Registry
from cli.main import cli
from hub.device_config import set_config
from hub.overview import OverviewLoader
from hub.service import Hub
from hub.storage import ConfigStore, open_database
from protocol import Command, MessageClass, Status, StatusState, Telemetry, decode, encode, topic_for
from protocol.config import ConfigReport, ConfigSet, Description, description_hash
from protocol.models import Reading

DEV = "raw-cfg"
DESC = Description(metrics={"temperature": "degC -40..85"}, commands={"set_interval": {"seconds": "int 1..86400"}},
                   config=["report_s", "int 1..86400", "mode", "text"])
PAYLOAD = encode(DESC, "cbor")
HASH = description_hash(PAYLOAD)


class Device:
    """A paho device: its inbox holds (topic, payload) of what the hub sends it."""

    def __init__(self, port: int, secret: str) -> None:
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=DEV, clean_session=False,
                                  protocol=mqtt.MQTTv311)
        self.client.username_pw_set(DEV, secret)
        subscribed = queue.Queue[int]()
        self.client.on_message = lambda c, u, m: self.inbox.put((m.topic, m.payload))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(topic_for(DEV, MessageClass.CONFIG_SET), 1), (topic_for(DEV, MessageClass.COMMAND), 1)])
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.put(mid)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        subscribed.get(timeout=10)

    def publish(self, cls: MessageClass, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic_for(DEV, cls), payload, qos=1, retain=retain).wait_for_publish(5)

    def birth(self, cfg: int, desc: str = HASH) -> None:
        status = Status(state=StatusState.ONLINE, boot=1, enc="cbor", desc=desc, cfg=cfg,
                        caps=["describe", "set_interval"])
        self.publish(MessageClass.STATUS, encode(status, "cbor"), retain=True)

    def next(self, cls: MessageClass, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            topic, payload = self.inbox.get(timeout=max(0.01, deadline - time.monotonic()))
            if topic == topic_for(DEV, cls):
                return payload

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def device(embedded_broker: BackgroundBroker, registry: Registry) -> Iterator[Device]:
    dev = Device(embedded_broker.port, add_device(registry, DEV).password)
    yield dev
    dev.close()


class stored:  # noqa: N801 - reads like a function: stored(db).get(DEV)
    """One query on a fresh connection, closed right after (``stored(db).get(DEV)``)."""

    def __init__(self, db: Path) -> None:
        self.db = db

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            conn = open_database(self.db)
            try:
                return getattr(ConfigStore(conn), name)(*args)
            finally:
                conn.close()
        return call


def test_described_device_gets_index_keys_and_nothing_twice(db_path: Path, embedded_broker: BackgroundBroker,
                                                            start_hub: Callable[..., Hub], device: Device) -> None:
    hub = start_hub(embedded_broker.port)
    device.publish(MessageClass.DESCRIPTION, PAYLOAD, retain=True)  # once, before the birth that names it
    device.birth(cfg=0)
    assert wait_for(lambda: stored(db_path).device_description(DEV) == (HASH, DESC.model_dump_json()), timeout=10)

    set_config(db_path, [DEV], {"report_s": 30})
    payload = device.next(MessageClass.CONFIG_SET)
    assert len(payload) == 10 and decode(MessageClass.CONFIG_SET, payload) == ConfigSet(version=1, set=[0, 30])
    device.publish(MessageClass.CONFIG_REPORT, encode(ConfigReport(version=1, applied=[0, 30]), "cbor"))
    assert wait_for(lambda: stored(db_path).get(DEV).keys["report_s"].reported == 30, timeout=10)  # type: ignore[union-attr]

    # a reconnect with the version applied: nothing is sent again (the stale report is the marker)
    device.birth(cfg=1)
    device.publish(MessageClass.CONFIG_REPORT, encode(ConfigReport(version=0), "cbor"))
    assert wait_for(lambda: hub.config.counters["stale_reports"] == 1, timeout=10)  # type: ignore[union-attr]
    assert hub.config.counters["sent"] == 1  # type: ignore[union-attr]
    assert device.inbox.empty()

    # a factory reset (cfg back to 0): the hub sends everything desired again
    device.birth(cfg=0)
    assert decode(MessageClass.CONFIG_SET, device.next(MessageClass.CONFIG_SET)) == ConfigSet(version=1, set=[0, 30])


def test_readings_outside_the_declared_range_are_flagged_and_kept(db_path: Path, embedded_broker: BackgroundBroker,
                                                                  start_hub: Callable[..., Hub], device: Device) -> None:
    hub = start_hub(embedded_broker.port, metrics_port=0)
    device.publish(MessageClass.DESCRIPTION, PAYLOAD, retain=True)
    device.birth(cfg=0)
    assert wait_for(lambda: stored(db_path).device_description(DEV)[1] is not None, timeout=10)
    now = int(time.time() * 1000)
    for seq, value in ((1, 21.5), (2, 90.0), (3, 22.0)):  # 90 is inside the metric table's range, not the device's
        telemetry = Telemetry(boot=1, seq=seq, ts=now + seq, readings=[Reading(metric="temperature", value=value)])
        device.publish(MessageClass.TELEMETRY, encode(telemetry, "cbor"))

    def values() -> list[float]:
        result = CliRunner().invoke(cli, ["--db", str(db_path), "readings", DEV, "--json"], catch_exceptions=False)
        return sorted(r["value"] for r in json.loads(result.stdout))

    # all three stored (on a loaded machine they may come in separate batches): flagged, never dropped
    assert wait_for(lambda: values() == [21.5, 22.0, 90.0], timeout=10), values()
    # the flag is written by the configuration service's thread after the commit, a moment later
    assert wait_for(lambda: stored(db_path).range_flags(DEV), timeout=10)
    [(_, metric, count, last, _)] = stored(db_path).range_flags(DEV)
    assert (metric, count, last) == ("temperature", 1, 90.0)
    result = CliRunner().invoke(cli, ["--db", str(db_path), "config", "show", DEV, "--json"], catch_exceptions=False)
    assert json.loads(result.stdout)[0]["out_of_declared_range"][0]["count"] == 1

    def metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{hub.metrics_port}/metrics", timeout=10) as resp:
            return str(resp.read().decode())

    # the counters follow the commit
    assert wait_for(lambda: "fleet_readings_out_of_declared_range_total 1.0" in metrics(), timeout=10)

    # the dashboard's snapshot shows the unit the device declares
    loader = OverviewLoader(db_path)
    try:
        [view] = [d for d in loader.load().devices if d.id == DEV]
        assert {m.name: m.unit for m in view.metrics} == {"temperature": "degC"}
        assert [m.unit for m in loader.load_device(DEV).metrics] == ["degC"]
    finally:
        loader.close()


def test_hub_asks_for_a_description_it_does_not_hold(db_path: Path, embedded_broker: BackgroundBroker,
                                                    start_hub: Callable[..., Hub], device: Device) -> None:
    hub = start_hub(embedded_broker.port)
    hub.config.describe_after_s = 0.2  # type: ignore[union-attr]
    device.birth(cfg=0)  # names a description the broker never got (as after a broker lost its retained messages)
    command = decode(MessageClass.COMMAND, device.next(MessageClass.COMMAND))
    assert isinstance(command, Command) and command.name == "describe"
    device.publish(MessageClass.DESCRIPTION, PAYLOAD, retain=True)
    assert wait_for(lambda: stored(db_path).device_description(DEV)[1] is not None, timeout=10)


def test_a_change_made_while_the_hub_was_down_reaches_an_online_device_when_it_starts(
        db_path: Path, embedded_broker: BackgroundBroker, start_hub: Callable[..., Hub], device: Device) -> None:
    hub = start_hub(embedded_broker.port)
    device.publish(MessageClass.DESCRIPTION, PAYLOAD, retain=True)
    device.birth(cfg=0)
    assert wait_for(lambda: stored(db_path).device_description(DEV)[1] is not None, timeout=10)
    hub.stop()
    set_config(db_path, [DEV], {"mode": "eco"})  # stored; no hub to send it
    start_hub(embedded_broker.port)  # the device's retained birth tells the new hub it is online
    assert decode(MessageClass.CONFIG_SET, device.next(MessageClass.CONFIG_SET)) == ConfigSet(version=1, set=[1, "eco"])
