"""Command benchmark: round-trip latency and fan-out time with 1,000 simulated devices.

For each broker (the embedded one, then Mosquitto 2), one run starts as separate processes:
the broker, ``fleet hub`` and ``fleet sim --devices N``; this script is the operator (the
same OpsClient ``fleet send`` uses). It measures

  round trip   ``ping`` to one random device at a time, from the request to the
               ``succeeded`` update: p50 / p95 / p99 over --commands commands
  fan-out      one ``ping`` to all N devices in one request, until every result is in

Not a test. Run:  .venv/bin/python bench/commands.py [--devices 1000] [--commands 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from common import (
    ROOT,
    percentile,
    start_embedded,
    start_fleet,
    start_mosquitto,
    stop,
    table,
)

sys.path.insert(0, str(ROOT))
from broker.credentials import ensure_local_principal  # noqa: E402
from broker.registry import Role  # noqa: E402
from device_sim.fleet import device_id, provision  # noqa: E402
from hub.ops_client import HubUnreachable, OpsClient  # noqa: E402


def wait_online(db: Path, n: int, timeout: float, since: float) -> float:
    """Wait until ``n`` devices are online as seen by the hub started at ``since`` (Unix time).

    Presence rows left by an earlier run on the same database still say "online"; counting them
    let the first command go out before this run's hub had even subscribed (issue 12).
    """
    import sqlite3

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            conn = sqlite3.connect(db)
            online = conn.execute("SELECT COUNT(*) FROM devices WHERE state='online' AND last_seen >= ?",
                                  [since]).fetchone()[0]
            conn.close()
        except sqlite3.OperationalError:
            online = 0
        print(f"  {time.monotonic() - start:5.1f}s  devices online {online}/{n}", flush=True)
        if online >= n:
            return time.monotonic() - start
        time.sleep(1.0)
    raise TimeoutError(f"only {online}/{n} devices online after {timeout:.0f} s")


def connect_operator(url: str, password: str, timeout: float = 30.0) -> OpsClient:
    deadline = time.monotonic() + timeout
    while True:
        try:
            ops = OpsClient(url, "operator", password)
            ops.connect()
            return ops
        except HubUnreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def run_broker(kind: str, db: Path, workdir: Path, n: int, commands: int) -> dict[str, object]:
    log = workdir / f"{kind}.log"
    port, broker = start_mosquitto(workdir) if kind == "mosquitto" else start_embedded(db, log)
    url = f"mqtt://127.0.0.1:{port}"
    hub = sim = None
    since = time.time()
    try:
        hub = start_fleet(["--db", str(db), "hub", "--broker", url, "--staleness-min", "5m"], log)
        sim = start_fleet(["--db", str(db), "sim", "--devices", str(n), "--broker", url, "--rate", "0.02",
                           "--heartbeat", "600", "--connect-concurrency", "32"], log)
        connect_s = wait_online(db, n, timeout=300, since=since)
        ops = connect_operator(url, ensure_local_principal(db, "operator", Role.OPERATOR))
        rng = random.Random(7)
        ids = [device_id("sim", i + 1) for i in range(n)]
        latencies: list[float] = []
        failures = 0
        started = time.monotonic()
        for i in range(commands):
            t0 = time.perf_counter()
            try:
                resp = ops.send([rng.choice(ids)], "ping", ttl_s=60, answer_timeout=30)
            except HubUnreachable as exc:  # counted, not fatal: the figure says how many failed
                print(f"  round trip {i + 1}: {exc}", flush=True)
                failures += 1
                continue
            last = ops.updates({c.id for c in resp.commands}, timeout=30)
            final = next(iter(last.values()), None)
            if final is None or final.state != "succeeded":
                failures += 1
            else:
                latencies.append(time.perf_counter() - t0)
            if (i + 1) % 100 == 0:
                print(f"  round trips {i + 1}/{commands}  p50 so far {percentile(sorted(latencies), 50) * 1000:.1f} ms",
                      flush=True)
        rt_wall = time.monotonic() - started
        t0 = time.perf_counter()
        resp = ops.send(ids, "ping", ttl_s=120, answer_timeout=60)
        created = time.perf_counter() - t0
        last = ops.updates({c.id for c in resp.commands}, timeout=120)
        fan_out = time.perf_counter() - t0
        ok = sum(1 for u in last.values() if u.state == "succeeded")
        ops.close()
        latencies.sort()
        return {
            "broker": kind, "devices": n, "connect_s": round(connect_s, 1), "commands": commands,
            "failed": failures, "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p95_ms": round(percentile(latencies, 95) * 1000, 1), "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "round_trips_per_s": round(len(latencies) / rt_wall, 1),
            "fanout_created_s": round(created, 2), "fanout_s": round(fan_out, 2), "fanout_ok": f"{ok}/{n}",
        }
    finally:
        stop(sim)
        stop(hub)
        stop(broker)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--commands", type=int, default=1000)
    ap.add_argument("--brokers", default="embedded,mosquitto")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-cmd-") as tmp:
        workdir = Path(tmp)
        db = workdir / "fleet.db"
        print(f"provisioning {args.devices} devices (generated secrets: fast hashes)", flush=True)
        provision(db, [device_id("sim", i + 1) for i in range(args.devices)])
        for kind in args.brokers.split(","):
            print(f"== {kind}", flush=True)
            rows.append(run_broker(kind, db, workdir, args.devices, args.commands))
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(table(rows, ["broker", "devices", "connect_s", "commands", "failed", "p50_ms", "p95_ms", "p99_ms",
                       "round_trips_per_s", "fanout_s", "fanout_ok"]))
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
