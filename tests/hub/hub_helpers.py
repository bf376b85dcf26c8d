"""Helpers for the hub tests: wire messages, publishing, and counting what the hub stored."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import paho.mqtt.client as mqtt

from hub.config import HubSettings
from hub.storage import open_database as connect_db
from protocol.codec import encode
from protocol.models import Reading, Status, Telemetry
from protocol.topics import MessageClass, topic_for

NOW_MS = lambda: int(time.time() * 1000)  # noqa: E731


def telemetry(seq: int, boot: int = 1, n: int = 1, metric: str = "temperature", value: float = 21.5,
              ts: int | None = None) -> Telemetry:
    """A telemetry message with ``n`` readings of ``metric``."""
    return Telemetry(boot=boot, seq=seq, ts=ts or NOW_MS(),
                     readings=[Reading(dt=i, metric=metric, value=value + i) for i in range(n)])


def birth(boot: int = 1, interval_s: int = 60, fw: str = "1.0.0") -> Status:
    return Status(state="online", boot=boot, fw=fw, interval_s=interval_s)


def publish(client: mqtt.Client, device_id: str, cls: MessageClass, payload: bytes, *, qos: int = 1,
            retain: bool = False, topic: str | None = None) -> mqtt.MQTTMessageInfo:
    return client.publish(topic or topic_for(device_id, cls), payload, qos=qos, retain=retain)


def publish_seqs(client: mqtt.Client, device_id: str, seqs: Iterable[int], boot: int = 1, n: int = 1,
                 encoding: str = "json") -> None:
    """Publish telemetry with these seqs at QoS1 and wait until the broker has them all."""
    infos = [publish(client, device_id, MessageClass.TELEMETRY, encode(telemetry(s, boot, n), encoding))
             for s in seqs]
    for info in infos:
        info.wait_for_publish(10)


def hub_settings(db: Path, port: int, **kw: object) -> HubSettings:
    base: dict[str, object] = {"db": db, "broker": f"mqtt://127.0.0.1:{port}", "presence_check_s": 0.2}
    base.update(kw)
    return HubSettings(**base)  # type: ignore[arg-type]


def scalar(db: Path, sql: str, params: tuple = ()) -> int:  # type: ignore[type-arg]
    conn = connect_db(db)
    try:
        return conn.execute(sql, params).fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # table not created yet
    finally:
        conn.close()


def stored_messages(db: Path) -> int:
    return scalar(db, "SELECT COUNT(*) FROM messages")


def stored_readings(db: Path) -> int:
    return scalar(db, "SELECT COUNT(*) FROM readings")


def stop_client(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()
