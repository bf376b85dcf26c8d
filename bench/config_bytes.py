"""Bytes on the wire to change one configuration key (issue 15 item 1; firmware_protocol.md 13.6).

A raw-socket device (the bytes it reads are the bytes the broker wrote, nothing in between) connects to
the embedded broker, subscribes to ``d/<id>/k``, publishes its description (retained) and its birth;
an in-process hub runs; ``set_config`` (what ``fleet config set`` calls) changes one key. The figure is
the whole MQTT PUBLISH packet the device receives: fixed header (type/flags byte and remaining length),
topic with its 2-byte length, packet id (QoS 1) and payload. Not counted: the device's 4-byte PUBACK,
TCP/IP headers. Done for a CBOR device (keys as description indexes), a CBOR device the hub holds no
description of (keys by name) and a JSON device, then the device's report of the change (same count).

Next to it: the AWS-IoT-device-shadow delta a device gets for the same change (topic
``$aws/things/<id>/shadow/update/delta``, document as AWS documents it, without a clientToken), counted
with the same formula (computed, AWS is not run here), and the reported-state update the device publishes.

    python bench/config_bytes.py            # a table
    python bench/config_bytes.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.background import BackgroundBroker  # noqa: E402
from broker.config import BrokerSettings  # noqa: E402
from broker.registry import Registry  # noqa: E402
from broker.server import free_port  # noqa: E402
from hub.config import HubSettings  # noqa: E402
from hub.device_config import set_config  # noqa: E402
from hub.service import Hub  # noqa: E402
from hub.storage import ConfigStore, open_database  # noqa: E402
from protocol import MessageClass, Status, StatusState, decode, encode, topic_for  # noqa: E402
from protocol.config import ConfigReport, Description, description_hash  # noqa: E402

DESCRIPTION = Description(metrics={"temperature": "°C -40..85"}, commands={"set_interval": {"seconds": "int 1..86400"}},
                          config=["report_s", "int 1..86400", "deadband", "float 0..10", "mode", "text"])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _s(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def publish_packet(topic: str, payload: bytes, pid: int = 1, retain: bool = False) -> bytes:
    """A QoS 1 PUBLISH as it goes on the wire."""
    body = _s(topic) + pid.to_bytes(2, "big") + payload
    return bytes([0x32 | int(retain)]) + _varint(len(body)) + body


class RawDevice:
    """Just enough MQTT 3.1.1 on a plain socket to see every byte the broker sends."""

    def __init__(self, port: int, device_id: str, secret: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.device_id = device_id
        body = _s("MQTT") + bytes([4, 0xC0]) + (60).to_bytes(2, "big") + _s(device_id) + _s(device_id) + _s(secret)
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        kind, data, _ = self.packet()
        assert kind == 0x20 and data[1] == 0, f"CONNACK {data!r}"

    def packet(self, timeout: float = 10.0) -> tuple[int, bytes, bytes]:
        """(type byte, body, the whole packet's bytes) of the next packet."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                length, shift, i = 0, 0, 1
                while i < len(self.buf):
                    b = self.buf[i]
                    length |= (b & 0x7F) << shift
                    shift += 7
                    i += 1
                    if not b & 0x80:
                        break
                if len(self.buf) >= i + length:
                    raw, self.buf = self.buf[:i + length], self.buf[i + length:]
                    return raw[0] & 0xF0, raw[i:], raw
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("broker closed the connection")
            self.buf += chunk

    def subscribe(self, topic: str) -> None:
        body = (1).to_bytes(2, "big") + _s(topic) + b"\x01"
        self.sock.sendall(b"\x82" + _varint(len(body)) + body)
        kind, data, _ = self.packet()
        assert kind == 0x90 and data[-1] == 1, f"SUBACK {data!r}"

    def publish(self, cls: MessageClass, payload: bytes, pid: int, retain: bool = False) -> None:
        self.sock.sendall(publish_packet(topic_for(self.device_id, cls), payload, pid, retain))

    def next_publish(self) -> tuple[str, bytes, bytes]:
        """(topic, payload, whole packet) of the next PUBLISH; PUBACKs it."""
        while True:
            kind, data, raw = self.packet()
            if kind != 0x30:
                continue
            tlen = int.from_bytes(data[:2], "big")
            topic = data[2:2 + tlen].decode()
            pid = data[2 + tlen:4 + tlen]
            self.sock.sendall(b"\x40\x02" + pid)
            return topic, data[4 + tlen:], raw

    def close(self) -> None:
        self.sock.close()


def measure(hub: Hub, port: int, db: Path, device_id: str, secret: str, encoding: str,
            described: bool) -> dict[str, Any]:
    """Bytes of the ConfigSet PUBLISH one device gets for a one-key change, and of its report."""
    dev = RawDevice(port, device_id, secret)
    try:
        dev.subscribe(topic_for(device_id, MessageClass.CONFIG_SET))
        desc_payload = encode(DESCRIPTION, encoding)
        h = description_hash(desc_payload) if described else ""
        if described:
            dev.publish(MessageClass.DESCRIPTION, desc_payload, 1, retain=True)
        dev.publish(MessageClass.STATUS, encode(Status(state=StatusState.ONLINE, boot=7, enc=encoding, desc=h),
                                                encoding), 2, retain=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert hub.config is not None
            link = hub.config.links.get(device_id)
            conn = open_database(db)
            try:
                body = ConfigStore(conn).description_body(h) if described else ""
            finally:
                conn.close()
            if link is not None and link.online and (body or not described):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"the hub never saw {device_id}'s birth")
        set_config(db, [device_id], {"report_s": 30})
        topic, payload, raw = dev.next_publish()
        message = decode(MessageClass.CONFIG_SET, payload)
        report = ConfigReport(version=message.version, applied=list(message.set))  # type: ignore[union-attr]
        report_packet = publish_packet(topic_for(device_id, MessageClass.CONFIG_REPORT), encode(report, encoding), 3)
        how = "key by index" if described and encoding == "cbor" else "key by name"
        return {"case": f"{encoding} device, {'described' if described else 'not described'} ({how})",
                "topic": topic, "payload_bytes": len(payload), "publish_bytes": len(raw),
                "payload": payload.hex() if encoding == "cbor" else payload.decode(),
                "report_publish_bytes": len(report_packet)}
    finally:
        dev.close()


def aws_shadow(device_id: str) -> dict[str, Any]:
    """The AWS IoT shadow messages for the same change (JSON, computed with the same packet formula)."""
    ts = int(time.time())
    delta = json.dumps({"version": 4, "timestamp": ts, "state": {"report_s": 30},
                        "metadata": {"report_s": {"timestamp": ts}}}, separators=(",", ":")).encode()
    reported = json.dumps({"state": {"reported": {"report_s": 30}}}, separators=(",", ":")).encode()
    delta_topic = f"$aws/things/{device_id}/shadow/update/delta"
    update_topic = f"$aws/things/{device_id}/shadow/update"
    return {"case": "AWS-shadow-style delta (computed)", "topic": delta_topic, "payload_bytes": len(delta),
            "publish_bytes": len(publish_packet(delta_topic, delta)), "payload": delta.decode(),
            "report_publish_bytes": len(publish_packet(update_topic, reported))}


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="fleet-config-bytes-") as tmp:
        db = Path(tmp) / "fleet.db"
        registry = Registry(db)
        cases = [("sensor-1", "cbor", True), ("sensor-2", "cbor", False), ("sensor-3", "json", True)]
        secrets = {dev: registry.add(dev) for dev, _, _ in cases}
        port = free_port()
        with BackgroundBroker(BrokerSettings(port=port, db=db)):
            with Hub(HubSettings(db=db, broker=f"mqtt://127.0.0.1:{port}")) as hub:
                rows = [measure(hub, port, db, dev, secrets[dev], enc, described) for dev, enc, described in cases]
    return [*rows, aws_shadow("sensor-1")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run()
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"rows": rows, "loadavg": load}, indent=2))
        return
    print(f"{'case':48} {'PUBLISH':>8} {'payload':>8} {'report':>7}  topic")
    for r in rows:
        print(f"{r['case']:48} {r['publish_bytes']:>8} {r['payload_bytes']:>8} {r['report_publish_bytes']:>7}  {r['topic']}")
    print(f"one-key change, CBOR, described: {rows[0]['publish_bytes']} bytes (goal <= 30); AWS-style delta "
          f"{rows[-1]['publish_bytes']} bytes ({rows[-1]['publish_bytes'] / rows[0]['publish_bytes']:.1f}x)")
    print("payloads: " + "; ".join(f"{r['case']}: {r['payload']}" for r in rows))
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
