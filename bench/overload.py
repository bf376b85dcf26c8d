"""Hub memory under sustained overload: publishers outrun the hub for a while; does RSS stay flat?

For each broker (embedded ``fleet broker`` and Mosquitto 2, each a separate process), four
paho publishers send QoS1 CBOR telemetry of 20 readings as fast as the broker takes it for
--seconds, while ``fleet hub`` (separate process) persists. The hub's ingest queue is bounded,
so when SQLite falls behind the hub stops reading and acknowledging and the broker holds the
backlog. Prints the hub's RSS every second and a summary.

Not a test. Run:  .venv/bin/python bench/overload.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from common import (
    persisted_readings,
    start_embedded,
    start_fleet,
    start_mosquitto,
    stop,
)

from broker.registry import Registry, Role, role_subject
from protocol import Reading, Telemetry, encode
from protocol.topics import MessageClass, topic_for

PUBLISHERS = 4
PER_MSG = 20


def publisher(port: int, dev: str, secret: str | None, until: float, sent: list[int], idx: int) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=dev, protocol=mqtt.MQTTv311)
    if secret:
        c.username_pw_set(dev, secret)
    c.max_inflight_messages_set(200)
    c.connect("127.0.0.1", port, 60)
    c.loop_start()
    topic = topic_for(dev, MessageClass.TELEMETRY)
    seq = 0
    readings = [Reading(dt=i, metric="temperature", value=20.0 + i) for i in range(PER_MSG)]
    while time.monotonic() < until:
        seq += 1
        info = c.publish(topic, encode(Telemetry(boot=1, seq=seq, ts=int(time.time() * 1000), readings=readings),
                                       "cbor"), qos=1)
        if seq % 200 == 0:
            info.wait_for_publish(30)  # keep paho's own outgoing queue bounded
        sent[idx] = seq
    c.disconnect()
    c.loop_stop()


def run(kind: str, workdir: Path, seconds: float) -> dict[str, object]:
    db = workdir / f"overload-{kind}.db"
    log = workdir / f"overload-{kind}.log"
    registry = Registry(db)
    devs = [f"ov-{i}" for i in range(PUBLISHERS)]
    secrets = {d: registry.add(d, Role.DEVICE, replace=True) for d in devs}
    # load generators, not devices: the embedded broker's per-device quota would measure itself
    registry.set_quota(role_subject(Role.DEVICE), msgs_per_s=0, bytes_per_s=0)
    port, broker = start_mosquitto(workdir) if kind == "mosquitto" else start_embedded(db, log)
    hub = start_fleet(["--db", str(db), "hub", "--broker", f"mqtt://127.0.0.1:{port}", "--queue-size", "5000"], log)
    try:
        proc = psutil.Process(hub.pid)
        time.sleep(2.0)  # the hub subscribes (its persistent session then queues what it cannot take yet)
        sent = [0] * PUBLISHERS
        until = time.monotonic() + seconds
        threads = [threading.Thread(target=publisher, args=(port, d, secrets[d] if kind == "embedded" else None,
                                                            until, sent, i), daemon=True) for i, d in enumerate(devs)]
        for t in threads:
            t.start()
        samples: list[float] = []
        start = time.monotonic()
        while any(t.is_alive() for t in threads):
            time.sleep(1.0)
            rss = proc.memory_info().rss / 2**20
            samples.append(rss)
            print(f"  [{kind}] {time.monotonic() - start:5.1f}s  published {sum(sent) * PER_MSG:>9} readings  "
                  f"persisted {persisted_readings(db):>9}  hub RSS {rss:6.1f} MB", flush=True)
        published = sum(sent) * PER_MSG
        done = persisted_readings(db)
        elapsed = time.monotonic() - start
        third = max(1, len(samples) // 3)
        return {
            "broker": kind, "seconds": round(elapsed, 1), "published_readings": published,
            "persisted_readings": done, "backlog_readings": published - done,
            "persisted_per_s": round(done / elapsed, 0),
            "hub_rss_first_third_mb": round(statistics.median(samples[:third]), 1),
            "hub_rss_last_third_mb": round(statistics.median(samples[-third:]), 1),
            "hub_rss_peak_mb": round(max(samples), 1),
        }
    finally:
        stop(hub)
        stop(broker)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--brokers", default="embedded,mosquitto")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-overload-") as tmp:
        for kind in args.brokers.split(","):
            rows.append(run(kind, Path(tmp), args.seconds))
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
