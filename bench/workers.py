"""Scale-out benchmark: persisted readings/s with 1, 2 and 4 hub workers on one Mosquitto.

For each worker count a fresh Mosquitto and database; N ``fleet hub --worker-group bench``
processes (real subprocesses, each with its own client id and metrics port) share the
telemetry through ``$share/bench/d/+/t``. The load generator in this process (8 paho
publishers, QoS 1, CBOR messages of 20 readings, pre-encoded before the clock starts) sends
the same load each time; the rate is readings committed per second (``MAX(readings.id)``).

Where the limit is, per step:
  * CPU seconds per second of the hub workers, Mosquitto and the load generator (psutil);
  * the SQLite write lock: the hubs' batch commit time (``fleet_hub_batch_commit_seconds``,
    which includes waiting for the lock held by another worker) summed over workers per
    second of wall time. Near 1.0 or above, the writers queue behind each other.

Prints a progress line per second and a table at the end. Not a test. Run:
    .venv/bin/python bench/workers.py [--workers 1,2,4] [--messages 6000]
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from common import (  # also puts the project on sys.path
    mqtt_client,
    persisted_readings,
    start_fleet,
    start_mosquitto,
    stop,
    table,
)

from broker.registry import Registry, Role
from broker.server import free_port
from protocol.codec import encode
from protocol.models import Reading, Telemetry
from protocol.topics import MessageClass, topic_for

PUBLISHERS = 8
PER_MSG = 20
STEP_TIMEOUT_S = 35.0


def connected_workers(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute("SELECT COUNT(*) FROM hub_status WHERE connected = 1").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def commit_seconds(metrics_port: int) -> tuple[float, float]:
    """(sum of batch commit seconds, batches) from one worker's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    total = re.search(r"^fleet_hub_batch_commit_seconds_sum (\S+)$", text, re.MULTILINE)
    count = re.search(r"^fleet_hub_batch_commit_seconds_count (\S+)$", text, re.MULTILINE)
    return (float(total.group(1)) if total else 0.0, float(count.group(1)) if count else 0.0)


def cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def step(workers: int, messages: int, workdir: Path) -> dict[str, object]:
    db = workdir / f"w{workers}.db"
    Registry(db)  # schema first, so the workers do not race to create it
    devices = [f"bench-{i}" for i in range(PUBLISHERS)]
    registry = Registry(db)
    for d in devices:
        registry.add(d, Role.DEVICE)
    port, mosq = start_mosquitto(workdir)
    procs: list[subprocess.Popen[bytes]] = []
    metrics_ports: list[int] = []
    pubs: dict[str, mqtt.Client] = {}
    try:
        for n in range(1, workers + 1):
            mport = free_port()
            metrics_ports.append(mport)
            procs.append(start_fleet(["--db", str(db), "hub", "--broker", f"mqtt://127.0.0.1:{port}",
                                      "--worker-group", "bench", "--client-id", f"hub-bench-{n}",
                                      "--metrics-port", str(mport), "--queue-size", "20000"],
                                     workdir / f"hub-w{workers}-{n}.log", {"FLEET_LOG_FORMAT": "text"}))
            time.sleep(0.3)  # one at a time: each registers the hub login on start
        deadline = time.monotonic() + 30
        while connected_workers(db) < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"workers did not start; see {workdir}/hub-w{workers}-*.log")
            time.sleep(0.1)
        pubs = {d: mqtt_client(port, d) for d in devices}
        each = messages // PUBLISHERS
        ts = int(time.time() * 1000)
        data = {d: [encode(Telemetry(boot=1, seq=s, ts=ts, readings=[Reading(dt=i, metric="temperature", value=20.0 + i)
                                                                    for i in range(PER_MSG)]), "cbor")
                    for s in range(1, each + 1)] for d in devices}
        target = each * PUBLISHERS * PER_MSG
        hub_ps = [psutil.Process(p.pid) for p in procs]
        mosq_ps = psutil.Process(mosq.pid)
        me = psutil.Process()
        cpu0 = (cpu(hub_ps), cpu([mosq_ps]), cpu([me]))
        commit0 = [commit_seconds(m) for m in metrics_ports]

        def run(d: str) -> None:
            topic = topic_for(d, MessageClass.TELEMETRY)
            infos = [pubs[d].publish(topic, p, qos=1) for p in data[d]]
            for info in infos:
                info.wait_for_publish(STEP_TIMEOUT_S)

        threads = [threading.Thread(target=run, args=(d,), daemon=True) for d in devices]
        start = time.perf_counter()
        for t in threads:
            t.start()
        done, next_print = 0, start + 1
        while done < target and time.perf_counter() - start < STEP_TIMEOUT_S:
            time.sleep(0.05)
            done = persisted_readings(db)
            if time.perf_counter() >= next_print:
                next_print += 1
                el = time.perf_counter() - start
                print(f"  {workers} workers {done:>8}/{target} {el:5.1f} s {done / el:>8.0f} readings/s", file=sys.stderr)
        wall = time.perf_counter() - start
        cpu1 = (cpu(hub_ps), cpu([mosq_ps]), cpu([me]))
        commit1 = [commit_seconds(m) for m in metrics_ports]
        commit_s = sum(a[0] - b[0] for a, b in zip(commit1, commit0))
        batches = sum(a[1] - b[1] for a, b in zip(commit1, commit0))
        per_worker = []
        conn = sqlite3.connect(db, timeout=10)
        try:
            per_worker = [r[0] for r in conn.execute("SELECT stats FROM hub_status ORDER BY worker")]
        except sqlite3.OperationalError:
            pass
        finally:
            conn.close()
        shares = []
        for raw in per_worker:
            m = re.search(r'"readings": (\d+)', raw or "")
            shares.append(int(m.group(1)) if m else 0)
        return {
            "workers": workers, "readings": done, "seconds": f"{wall:.2f}",
            "readings/s": f"{done / wall:,.0f}",
            "hub CPU": f"{(cpu1[0] - cpu0[0]) / wall:.2f}", "mosquitto CPU": f"{(cpu1[1] - cpu0[1]) / wall:.2f}",
            "loadgen CPU": f"{(cpu1[2] - cpu0[2]) / wall:.2f}",
            "commit s/s": f"{commit_s / wall:.2f}", "ms/commit": f"{1000 * commit_s / batches:.1f}" if batches else "-",
            "msgs/commit": f"{done / PER_MSG / batches:.0f}" if batches else "-",
            "share": "/".join(f"{100 * s / max(1, sum(shares)):.0f}%" for s in shares),
        }
    finally:
        for c in pubs.values():
            c.disconnect()
            c.loop_stop()
        for p in procs:
            stop(p)
        stop(mosq)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2,4", help="Worker counts to measure, comma-separated.")
    ap.add_argument("--messages", type=int, default=15000, help=f"Messages per step ({PER_MSG} readings each).")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-workers-") as tmp:
        for n in (int(x) for x in args.workers.split(",")):
            rows.append(step(n, args.messages, Path(tmp)))
            print(rows[-1], file=sys.stderr)
    print(table(rows, ["workers", "readings", "seconds", "readings/s", "hub CPU", "mosquitto CPU", "loadgen CPU",
                       "commit s/s", "ms/commit", "msgs/commit", "share"]))


if __name__ == "__main__":
    main()
