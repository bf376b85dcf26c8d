"""Ingest benchmark: broker delivery rate vs. the hub's persisted readings per second.

For each broker (the embedded amqtt one, and a Mosquitto this script starts on a free port):

  (a) raw    the same publishers send QoS1 single-reading messages to a plain paho
             subscriber that only counts (auto-ack): the broker's delivery rate
  (b1) hub   ``fleet hub`` (a real subprocess) persists the same load: readings/s committed
  (b2) hub   the same with batched messages of 20 readings

Prints a progress line per second and a summary table; the hub's peak RSS is sampled.
Not a test. Run:  .venv/bin/python bench/ingest.py [--messages 20000] [--brokers embedded,mosquitto]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from common import (  # also puts the project on sys.path
    mqtt_client,
    persisted_readings,
    start_fleet,
    start_mosquitto,
    stop,
)

from broker.background import BackgroundBroker  # noqa: E402
from broker.config import BrokerSettings  # noqa: E402
from broker.registry import Registry, Role, role_subject  # noqa: E402
from broker.server import free_port  # noqa: E402
from protocol.codec import encode  # noqa: E402
from protocol.models import Reading, Telemetry  # noqa: E402
from protocol.topics import MessageClass, topic_for  # noqa: E402

PUBLISHERS = 4
PHASE_TIMEOUT_S = 60.0


@dataclass
class Result:
    broker: str
    phase: str
    messages: int
    readings: int
    seconds: float
    hub_rss_mb: float | None = None

    @property
    def msg_rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def reading_rate(self) -> float:
        return self.readings / self.seconds if self.seconds else 0.0


def payloads(device: str, boot: int, count: int, per_msg: int) -> list[bytes]:
    ts = int(time.time() * 1000)
    return [encode(Telemetry(boot=boot, seq=s, ts=ts, readings=[Reading(dt=i, metric="temperature", value=20.0 + i)
                                                               for i in range(per_msg)]), "cbor")
            for s in range(1, count + 1)]


def publish_all(pubs: list[tuple[str, mqtt.Client]], boot: int, total: int, per_msg: int) -> tuple[float, threading.Thread]:
    """Pre-encode, then start publishing from every publisher; returns (start time, joiner thread)."""
    each = total // len(pubs)
    data = {dev: payloads(dev, boot, each, per_msg) for dev, _ in pubs}

    def run(dev: str, c: mqtt.Client) -> None:
        topic = topic_for(dev, MessageClass.TELEMETRY)
        infos = [c.publish(topic, p, qos=1) for p in data[dev]]
        for info in infos:
            info.wait_for_publish(PHASE_TIMEOUT_S)

    threads = [threading.Thread(target=run, args=(dev, c), daemon=True) for dev, c in pubs]
    start = time.perf_counter()
    for t in threads:
        t.start()

    def join() -> None:
        for t in threads:
            t.join()

    joiner = threading.Thread(target=join, daemon=True)
    joiner.start()
    return start, joiner


def progress(label: str, done: int, total: int, start: float) -> None:
    el = time.perf_counter() - start
    print(f"  {label:<28} {done:>8}/{total:<8} {el:6.1f} s  {done / el if el else 0:>9.0f}/s", file=sys.stderr)


def raw_phase(name: str, port: int, pubs: list[tuple[str, mqtt.Client]], sub_creds: tuple[str, str] | None,
              total: int) -> Result:
    count = 0
    last = 0.0
    lock = threading.Lock()

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        nonlocal count, last
        with lock:
            count += 1
            last = time.perf_counter()

    sub = mqtt_client(port, "bench-sub", sub_creds)
    sub.on_message = on_message
    sub.subscribe("d/+/t", qos=1)
    time.sleep(0.3)
    start, _ = publish_all(pubs, boot=1, total=total, per_msg=1)
    next_print = start + 1
    while count < total and time.perf_counter() - start < PHASE_TIMEOUT_S:
        time.sleep(0.02)
        if time.perf_counter() >= next_print:
            next_print += 1
            progress(f"{name} raw", count, total, start)
    sub.disconnect()
    sub.loop_stop()
    return Result(name, "(a) raw delivery, 1 reading/msg", count, count, (last or time.perf_counter()) - start)


def hub_phase(name: str, label: str, db: Path, hub: psutil.Process, pubs: list[tuple[str, mqtt.Client]], boot: int,
              total_msgs: int, per_msg: int) -> Result:
    base = persisted_readings(db)
    target = total_msgs * per_msg
    peak = 0
    start, _ = publish_all(pubs, boot=boot, total=total_msgs, per_msg=per_msg)
    next_print = start + 1
    done = 0
    while done < target and time.perf_counter() - start < PHASE_TIMEOUT_S:
        time.sleep(0.02)
        done = persisted_readings(db) - base
        peak = max(peak, hub.memory_info().rss)
        if time.perf_counter() >= next_print:
            next_print += 1
            progress(f"{name} {label}", done, target, start)
    end = time.perf_counter()
    return Result(name, label, done // per_msg, done, end - start, peak / 2**20)


def start_hub(db: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    return start_fleet(["--db", str(db), "hub", "--broker", f"mqtt://127.0.0.1:{port}"], log,
                       {"FLEET_LOG_FORMAT": "text"})


def wait_hub_ready(db: Path, pubs: list[tuple[str, mqtt.Client]], proc: subprocess.Popen[bytes]) -> None:
    """Send a probe (boot 9) until the hub stores it: then its session and subscriptions exist."""
    deadline = time.monotonic() + 20
    probe = payloads(pubs[0][0], 9, 1, 1)[0]
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the hub exited; see hub.log")
        pubs[0][1].publish(topic_for(pubs[0][0], MessageClass.TELEMETRY), probe, qos=1).wait_for_publish(5)
        t = time.monotonic() + 0.5
        while time.monotonic() < t:
            if persisted_readings(db) > 0:
                return
            time.sleep(0.05)
    raise RuntimeError("the hub did not start storing within 20 s")


def bench_broker(name: str, workdir: Path, messages: int) -> list[Result]:
    db = workdir / f"{name}.db"
    registry = Registry(db)
    device_ids = [f"bench-{i}" for i in range(PUBLISHERS)]
    creds = {d: registry.add(d, Role.DEVICE) for d in device_ids}
    # load generators, not devices: the embedded broker's per-device quota would measure itself
    registry.set_quota(role_subject(Role.DEVICE), msgs_per_s=0, bytes_per_s=0)
    sub_secret = registry.add("bench-sub", Role.HUB)
    background: BackgroundBroker | None = None
    mosq: subprocess.Popen[bytes] | None = None
    if name == "embedded":
        background = BackgroundBroker(BrokerSettings(port=free_port(), db=db)).start()
        port = background.port
        pubs = [(d, mqtt_client(port, d, (d, creds[d]))) for d in device_ids]
        sub_creds: tuple[str, str] | None = ("bench-sub", sub_secret)
    else:
        port, mosq = start_mosquitto(workdir)
        pubs = [(d, mqtt_client(port, d, None)) for d in device_ids]
        sub_creds = None
    results: list[Result] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        print(f"[{name}] broker on port {port}", file=sys.stderr)
        results.append(raw_phase(name, port, pubs, sub_creds, messages))
        proc = start_hub(db, port, workdir / f"hub-{name}.log")
        wait_hub_ready(db, pubs, proc)
        hub = psutil.Process(proc.pid)
        results.append(hub_phase(name, "(b1) hub, 1 reading/msg", db, hub, pubs, 2, messages, 1))
        results.append(hub_phase(name, "(b2) hub, 20 readings/msg", db, hub, pubs, 3, max(messages // 4, 1000), 20))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        for _, c in pubs:
            c.disconnect()
            c.loop_stop()
        if background is not None:
            background.stop()
        stop(mosq)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20_000, help="single-reading messages per phase")
    ap.add_argument("--brokers", default="embedded,mosquitto")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures (for run_all.py)")
    args = ap.parse_args()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        for name in args.brokers.split(","):
            results.extend(bench_broker(name, Path(tmp), args.messages))
    print(f"\n{'broker':<10} {'phase':<34} {'messages':>9} {'readings':>9} {'seconds':>8} {'msg/s':>9} "
          f"{'readings/s':>11} {'hub RSS MB':>11}")
    for r in results:
        rss = f"{r.hub_rss_mb:.0f}" if r.hub_rss_mb is not None else "-"
        print(f"{r.broker:<10} {r.phase:<34} {r.messages:>9} {r.readings:>9} {r.seconds:>8.2f} {r.msg_rate:>9.0f} "
              f"{r.reading_rate:>11.0f} {rss:>11}")
    by = {(r.broker, r.phase[:4]): r for r in results}
    for broker in args.brokers.split(","):
        raw, b1 = by.get((broker, "(a) ")), by.get((broker, "(b1)"))
        if raw and b1 and raw.msg_rate:
            print(f"{broker}: hub / raw (single-reading messages) = {b1.msg_rate / raw.msg_rate:.2f}")
    if args.json:
        print(json.dumps([{"broker": r.broker, "phase": r.phase, "messages": r.messages, "readings": r.readings,
                           "seconds": round(r.seconds, 3), "msg_per_s": round(r.msg_rate, 1),
                           "readings_per_s": round(r.reading_rate, 1), "hub_rss_mb": r.hub_rss_mb} for r in results]))


if __name__ == "__main__":
    main()
