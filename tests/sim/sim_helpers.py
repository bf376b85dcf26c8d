"""Helpers of the simulator tests: a hub-role subscriber, settings, provisioning, commands."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from support import add_device, connect

from broker.registry import Registry, Role
from device_sim.fleet import Credentials, device_id, provision
from device_sim.settings import SimSettings
from protocol import Command, MessageClass, encode, parse_topic


@dataclass
class Seen:
    topic: str
    device: str
    cls: MessageClass
    payload: bytes
    at: float


class HubSubscriber:
    """A real paho client logged in with the hub role, recording everything under ``d/#``."""

    def __init__(self, port: int, registry: Registry) -> None:
        creds = add_device(registry, "hub", Role.HUB)
        self.client = connect(port, creds, client_id="hub-test")
        self.seen: list[Seen] = []
        self.client.on_message = self._on_message
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe([("d/+/t", 1), ("d/+/s", 1), ("d/+/r", 1)])
        assert done.wait(10), "no SUBACK for the hub subscriber"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        topic = parse_topic(msg.topic)
        self.seen.append(Seen(msg.topic, topic.device_id, topic.cls, msg.payload, time.monotonic()))

    def of(self, cls: MessageClass, device: str | None = None) -> list[Seen]:
        return [s for s in list(self.seen) if s.cls is cls and (device is None or s.device == device)]

    def devices(self, cls: MessageClass) -> set[str]:
        return {s.device for s in self.of(cls)}

    def command(self, device: str, cmd: Command, encoding: str = "json") -> None:
        info = self.client.publish(f"d/{device}/c", encode(cmd, encoding), qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def settings_for(port: int, n: int, **kw: Any) -> SimSettings:
    """Test settings: fast rate, short fault start, brisk reconnects."""
    base: dict[str, Any] = dict(devices=n, port=port, rate=5.0, fault_start_s=0.5, fault_every=3,
                                reconnect_delay=0.2, storm_period_s=1.0, bad_login_retry_s=1.0)
    base.update(kw)
    return SimSettings(**base)


def provision_fleet(db_path: Path, n: int, prefix: str = "sim") -> Credentials:
    return provision(db_path, [device_id(prefix, i) for i in range(1, n + 1)])


def command(cmd_id: str, name: str, ttl_s: float = 60, **args: Any) -> Command:
    return Command(id=cmd_id, name=name, args=args, expires=int((time.time() + ttl_s) * 1000))
