"""Rollout benchmark: N simulated devices update a firmware image through a staged rollout.

For each broker (the embedded one, then Mosquitto 2), one run starts the broker and ``fleet hub``
as separate processes and the simulated fleet in this process (its devices count the firmware
bytes they put on and take off the wire), then starts a rollout (stages 1%,10%,50%,100%) and
follows it to the end. It reports

  total_s        from ``fleet rollout start`` until every device has finished
  wire_x         MQTT bytes of the update per device (offer, requests, chunks, reports, PUBACKs)
                 over the image size: mean and max (goal <= 1.1)
  lag            telemetry lag (hub received_at - device ts) of the readings that sampled devices
                 took before the rollout and during it, p50 / p99
  no_working     devices that ended neither on the new version nor back on the old one (goal 0)
  cpu            CPU seconds of the hub and the broker processes during the rollout, and as a
                 share of one core over total_s (from /proc/<pid>/stat: user + system)

Not a test. Run:  .venv/bin/python bench/rollout.py [--devices 1000] [--image-kb 256] [--bandwidth 8MB/s]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, percentile, start_embedded, start_fleet, start_mosquitto, stop, table

sys.path.insert(0, str(ROOT))
from device_sim.background import BackgroundFleet  # noqa: E402
from device_sim.fleet import device_id, provision  # noqa: E402
from device_sim.ota import OtaPlan  # noqa: E402
from device_sim.settings import Behaviour, SimSettings  # noqa: E402
from hub.firmware import add_image, parse_bandwidth, parse_stages, rollout_status, start_rollout  # noqa: E402
from hub.queries import readings  # noqa: E402
from hub.storage import PresenceStore, open_database  # noqa: E402

OLD = "sim-1.0.0"


def presence(db: Path) -> dict[str, tuple[str, str | None]]:
    conn = open_database(db, readonly=True)
    try:
        return {d.device_id: (d.state, d.fw) for d in PresenceStore(conn).load_devices()}
    finally:
        conn.close()


def wait_online(db: Path, ids: list[str], timeout: float) -> float:
    start = time.monotonic()
    while True:
        p = presence(db) if db.exists() else {}
        online = sum(1 for i in ids if p.get(i, ("", None))[0] == "online")
        print(f"  {time.monotonic() - start:5.1f}s  devices online {online}/{len(ids)}", flush=True)
        if online >= len(ids):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"only {online}/{len(ids)} devices online after {timeout:.0f} s")
        time.sleep(2.0)


def cpu_s(proc: subprocess.Popen[bytes] | None) -> float:
    """User + system CPU seconds of a running process so far (0 when it is gone or unknown)."""
    if proc is None:
        return 0.0
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ms(values: list[float], p: float) -> int | None:
    """The p-th percentile in milliseconds; None when there are no values (a window too short)."""
    return round(percentile(values, p) * 1000) if values else None


def start_hub(db: Path, url: str, log: Path, tries: int = 5) -> subprocess.Popen[bytes]:
    """``fleet hub``; started again when it gives up at start (on a loaded machine its 10 s start timeout can pass)."""
    for attempt in range(tries):
        hub = start_fleet(["--db", str(db), "hub", "--broker", url, "--staleness-min", "5m"], log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and hub.poll() is None:
            time.sleep(0.5)
        if hub.poll() is None:
            return hub
        print(f"  hub exited at start (attempt {attempt + 1}, see {log.name}); starting it again", flush=True)
    raise RuntimeError(f"the hub did not start in {tries} attempts")


def lags(db: Path, ids: list[str], t0: float, t1: float) -> list[float]:
    """received_at - ts of the sampled devices' readings taken in [t0, t1] (re-sends of older ones do not count)."""
    out: list[float] = []
    for dev in ids:
        out += [r["received_at"] - r["ts"] for r in readings(db, dev, since=t0) if r["ts"] <= t1]
    return sorted(out)


def run_broker(kind: str, db: Path, workdir: Path, ids: list[str], version: str, image: Path, args: argparse.Namespace,
               creds: object) -> dict[str, object]:
    log = workdir / f"{kind}.log"
    port, broker = start_mosquitto(workdir) if kind == "mosquitto" else start_embedded(db, log)
    url = f"mqtt://127.0.0.1:{port}"
    hub = None
    fleet: BackgroundFleet | None = None
    try:
        hub = start_hub(db, url, log)
        cbor = {p: Behaviour(encoding="cbor") for p in ("env", "power", "gps")}
        settings = SimSettings(devices=len(ids), port=port, rate=args.rate, heartbeat_s=600, connect_concurrency=32,
                               reconnect_delay=1.0, fw=OLD, behaviour=cbor)
        fleet = BackgroundFleet(settings, creds, ota=OtaPlan(chunk_size=4000), call_timeout=120).start()  # type: ignore[arg-type]
        connect_s = wait_online(db, ids, timeout=600)
        row = add_image(db, image, version)
        sample = ids[:: max(1, len(ids) // 40)]
        base_t0 = time.time()
        time.sleep(args.baseline_s)
        base = lags(db, sample, base_t0, time.time() - 5.0)
        t0 = time.time()
        cpu0 = (cpu_s(hub), cpu_s(broker), time.process_time())
        load0 = os.getloadavg()[0]
        rid = start_rollout(db, version, "sim", parse_stages(args.stages), 0.05, args.max_concurrent,
                            parse_bandwidth(args.bandwidth))
        while True:
            s = rollout_status(db, rid)[0]
            done = sum(s.stage_done)
            print(f"  {time.time() - t0:6.1f}s  {s.state:9} stage {s.stage + 1}/{len(s.stages)}  finished {done}/{s.devices}"
                  f"  {s.counts}  served {s.bytes_served / 1e6:.1f} MB  load {os.getloadavg()[0]:.1f}", flush=True)
            if s.state not in ("running",) or time.time() - t0 > args.timeout:
                break
            time.sleep(2.0)
        t1 = time.time()
        cpu = (cpu_s(hub) - cpu0[0], cpu_s(broker) - cpu0[1], time.process_time() - cpu0[2])
        load1 = os.getloadavg()[0]
        time.sleep(5.0)  # readings taken just before t1 arrive
        during = lags(db, sample, t0, t1)
        counters = [fleet.call(lambda d=d: fleet.fleet.device(d).ota.counters) for d in ids]  # type: ignore[union-attr]
        wire = sorted(c.wire_bytes / row.size for c in counters)
        p = presence(db)
        no_working = sum(1 for d in ids if p.get(d, ("", None))[1] not in (version, OLD))
        updated = sum(1 for d in ids if p.get(d, ("", None))[1] == version)
        return {
            "broker": kind, "devices": len(ids), "image_kb": row.size // 1024, "bandwidth": args.bandwidth,
            "connect_s": round(connect_s, 1), "state": s.state, "total_s": round(t1 - t0, 1),
            "updated": f"{updated}/{len(ids)}", "no_working": no_working,
            "wire_x_mean": round(sum(wire) / len(wire), 3), "wire_x_max": round(wire[-1], 3),
            "lag_before_p50_ms": ms(base, 50), "lag_before_p99_ms": ms(base, 99),
            "lag_during_p50_ms": ms(during, 50), "lag_during_p99_ms": ms(during, 99),
            "hub_cpu_s": round(cpu[0], 1), "broker_cpu_s": round(cpu[1], 1), "sim_cpu_s": round(cpu[2], 1),
            "hub_cpu_pct": round(100 * cpu[0] / max(t1 - t0, 1e-9)),
            "broker_cpu_pct": round(100 * cpu[1] / max(t1 - t0, 1e-9)),
            "bytes_per_device_mean": round(sum(c.wire_bytes for c in counters) / len(counters)),
            "load_1m": f"{load0:.1f}-{load1:.1f}",
        }
    finally:
        if fleet is not None:
            fleet.stop()
        stop(hub)
        stop(broker)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--image-kb", type=int, default=256)
    ap.add_argument("--stages", default="1%,10%,50%,100%")
    ap.add_argument("--bandwidth", default="8MB/s", help="the rollout's fleet-wide cap on chunk bytes")
    ap.add_argument("--max-concurrent", type=int, default=200)
    ap.add_argument("--rate", type=float, default=0.2, help="telemetry messages per second per device")
    ap.add_argument("--baseline-s", type=float, default=15.0, help="telemetry lag is sampled this long before the rollout")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--brokers", default="embedded,mosquitto")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (database, logs)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-rollout-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        db = workdir / "fleet.db"
        ids = [device_id("sim", i + 1) for i in range(args.devices)]
        print(f"provisioning {args.devices} devices (generated secrets: fast logins)", flush=True)
        creds = provision(db, ids)
        image = workdir / "image.bin"
        image.write_bytes(os.urandom(args.image_kb * 1024))
        for k, kind in enumerate(args.brokers.split(",")):
            print(f"== {kind}", flush=True)
            rows.append(run_broker(kind, db, workdir, ids, f"sim-2.{int(time.time())}.{k}", image, args, creds))
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(table(rows, ["broker", "devices", "image_kb", "bandwidth", "state", "total_s", "updated", "no_working",
                       "wire_x_mean", "wire_x_max", "lag_before_p50_ms", "lag_before_p99_ms", "lag_during_p50_ms",
                       "lag_during_p99_ms", "hub_cpu_s", "hub_cpu_pct", "broker_cpu_s", "broker_cpu_pct",
                       "bytes_per_device_mean", "load_1m"]))
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
