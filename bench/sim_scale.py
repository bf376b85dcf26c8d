"""Simulator scale: connected devices held by ONE simulator process, and its RSS.

With ``--sim-processes K`` the N devices are split over K simulator processes instead, so that
the load generator is faster than the broker it measures (issue 14: 10,000 devices on the
embedded broker within 60 s; one Python simulator process is itself the bound near 6,000).

For each broker (Mosquitto 2 started on a free port with ``max_connections -1``; the
embedded amqtt broker in its own process) and each fleet size, a fresh simulator child
process connects N devices, holds them for a few seconds at a low rate, and reports how many
connected, how long that took, and its RSS. The embedded broker's RSS is sampled too.

Devices log in anonymously by default. ``--auth`` makes the embedded broker check every login
against its registry (devices provisioned first, with generated secrets: the fast keyed hash,
``broker/secrets.py``), which is how a fleet really connects; Mosquitto stays anonymous. Every
step is bounded in time; the child reports its figures before it disconnects the fleet, and a
line a second of progress (connected devices) goes to stderr.

Also prints the bytes on the wire per reading (MQTT PUBLISH header + topic + packet id +
payload) for JSON, CBOR, and CBOR batched by 10, from the env profile's signals.

    .venv/bin/python bench/sim_scale.py                     # --sizes 1000,5000,10000 --brokers mosquitto,embedded
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from common import raise_nofile, start_embedded_process, start_mosquitto  # also puts the project on sys.path

from cli.runtime import tune_gc  # noqa: E402
from device_sim.fleet import Credentials, DeviceCreds, Fleet, credentials_path, device_id, provision  # noqa: E402
from device_sim.mqtt import publish_packet  # noqa: E402
from device_sim.settings import SimSettings  # noqa: E402
from device_sim.signals import Profile, make_signal  # noqa: E402
from protocol import Reading, Telemetry, encode  # noqa: E402


# ---------------------------------------------------------------------------- child: one simulator


async def child(port: int, n: int, connect_bound: float, hold: float, db: str, first: int = 1) -> None:
    if db:
        creds = Credentials(credentials_path(db))  # provisioned by the parent
    else:
        creds = Credentials(Path(tempfile.gettempdir()) / f"sim-bench-{os.getpid()}.json")
        creds.devices = {device_id("sim", i): DeviceCreds("x") for i in range(first, first + n)}
    creds.save = lambda: None  # type: ignore[method-assign]  # nothing to keep
    settings = SimSettings(devices=n, port=port, rate=0.2, anonymous=not db, keepalive=120,
                           connect_concurrency=128, connect_timeout=60, heartbeat_s=60, profile="mixed",
                           first_index=first)
    fleet = Fleet(settings, creds)
    proc = psutil.Process()
    t0 = time.monotonic()
    await fleet.start()
    connected_at = None
    last_print = 0.0
    while time.monotonic() - t0 < connect_bound:
        await asyncio.sleep(0.25)
        if time.monotonic() - last_print >= 1.0:
            last_print = time.monotonic()
            print(f"{last_print - t0:6.1f} s connected {fleet.stats.connected}", file=sys.stderr, flush=True)
        if fleet.stats.connected >= n:
            connected_at = time.monotonic() - t0
            break
    reached = fleet.stats.connected
    await asyncio.sleep(hold)
    rss = proc.memory_info().rss
    held = fleet.stats.connected
    cpu = proc.cpu_times()
    print(json.dumps({"devices": n, "connected": reached, "held_after_hold": held,
                      "connect_s": round(connected_at, 1) if connected_at else None,
                      "sim_rss_mb": round(rss / 2**20, 1), "sim_cpu_s": round(cpu.user + cpu.system, 1)}), flush=True)
    await fleet.stop()


# ---------------------------------------------------------------------------- parent


def run_step(port: int, n: int, broker: subprocess.Popen[bytes], connect_bound: float, hold: float,
             db: str = "", processes: int = 1) -> dict[str, object]:
    """Simulator children (N devices split over ``processes``) against a running broker; the broker's
    RSS before, at its peak, per device."""
    shares = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
    firsts = [1 + sum(shares[:i]) for i in range(processes)]
    broker_proc = psutil.Process(broker.pid)
    base = broker_proc.memory_info().rss
    cpu0 = sum(broker_proc.cpu_times()[:2])
    out_paths = [Path(tempfile.mkstemp(prefix="sim-scale-")[1]) for _ in shares]
    sims = []
    for share, first, out_path in zip(shares, firsts, out_paths, strict=True):
        cmd = [sys.executable, __file__, "--child", str(port), str(share), str(connect_bound), str(hold), db, str(first)]
        with out_path.open("wb") as out:
            sims.append(subprocess.Popen(cmd, stdout=out, stderr=None if processes == 1 else subprocess.DEVNULL,
                                         preexec_fn=raise_nofile))
    peak = 0
    cpu_at_report: float | None = None
    deadline = time.monotonic() + connect_bound + hold + 120
    while any(sim.poll() is None for sim in sims) and time.monotonic() < deadline:
        try:
            peak = max(peak, psutil.Process(broker.pid).memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.5)
        if cpu_at_report is None and all(p.stat().st_size for p in out_paths):  # every child reported
            cpu_at_report = sum(broker_proc.cpu_times()[:2])
    for sim in sims:
        if sim.poll() is None:
            sim.kill()
            sim.wait(10)
    reports = []
    for out_path in out_paths:
        lines = out_path.read_text().strip().splitlines()
        out_path.unlink()
        if lines:
            reports.append(json.loads(lines[-1]))
    if len(reports) < len(sims):
        return {"devices": n, "error": f"{len(sims) - len(reports)} simulator(s) reported nothing"}
    times = [r["connect_s"] for r in reports]
    result: dict[str, object] = {
        "devices": n, "sim_processes": processes, "connected": sum(r["connected"] for r in reports),
        "held_after_hold": sum(r["held_after_hold"] for r in reports),
        "connect_s": max(times) if all(t is not None for t in times) else None,  # the last process to finish
        "sim_rss_mb": round(sum(r["sim_rss_mb"] for r in reports), 1),
        "sim_cpu_s": round(sum(r["sim_cpu_s"] for r in reports), 1)}
    result["broker_rss_base_mb"] = round(base / 2**20, 1)
    result["broker_rss_mb"] = round(peak / 2**20, 1)
    connected = int(result.get("held_after_hold") or 0)
    if connected:
        result["broker_kb_per_device"] = round((peak - base) / 1024 / connected, 1)
    if cpu_at_report is not None and result.get("connected"):
        # broker CPU while connecting and holding (logins, subscriptions, births, telemetry at 0.2/s)
        result["broker_cpu_s"] = round(cpu_at_report - cpu0, 1)
        result["broker_cpu_ms_per_device"] = round((cpu_at_report - cpu0) * 1000 / int(result["connected"]), 2)
    result["load"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return result


def wire_bytes() -> dict[str, float]:
    """MQTT bytes per reading for the env profile: JSON, CBOR, CBOR batched by 10."""
    topic = "d/sim-00001/t"
    out = {}
    for label, enc, batch in (("json", "json", 1), ("cbor", "cbor", 1), ("cbor_batch10", "cbor", 10)):
        sig = make_signal(Profile.ENV, 1, 0)
        total, readings, seq = 0, 0, 0
        for _ in range(100):
            samples = [sig.step(10.0) for _ in range(batch)]
            seq += 1
            msg = Telemetry(boot=1, seq=seq, ts=1_760_000_000_000, readings=[
                Reading(dt=i * 10_000, metric=m, value=v) for i, s in enumerate(samples) for m, v in s])
            total += len(publish_packet(topic, encode(msg, enc), 1, False, 1))
            readings += len(msg.readings)
        out[label] = round(total / readings, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,10000")
    ap.add_argument("--brokers", default="mosquitto,embedded")
    ap.add_argument("--connect-bound", type=float, default=120.0, help="seconds allowed to connect each step")
    ap.add_argument("--hold", type=float, default=5.0)
    ap.add_argument("--auth", action="store_true", help="the embedded broker checks every login against its registry")
    ap.add_argument("--sim-processes", type=int, default=1,
                    help="split each fleet over this many simulator processes (a faster load generator)")
    args = ap.parse_args()
    raise_nofile()
    print(json.dumps({"bytes_per_reading": wire_bytes()}), flush=True)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for broker in args.brokers.split(","):
            for n in (int(s) for s in args.sizes.split(",")):
                db = ""
                if broker == "embedded" and args.auth:
                    db = str(tmp / f"fleet-{n}.db")
                    provision(db, [device_id("sim", i) for i in range(1, n + 1)])
                if broker == "mosquitto":
                    port, proc = start_mosquitto(tmp)
                else:
                    port, proc = start_embedded_process(Path(db) if db else tmp / "fleet.db", anonymous=not db)
                try:
                    result = run_step(port, n, proc, args.connect_bound, args.hold, db, args.sim_processes)
                finally:
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                print(json.dumps({"broker": broker, **result}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        raise_nofile()
        _, _, port, n, bound, hold, db, first = sys.argv
        tune_gc()  # as `fleet sim` does
        asyncio.run(child(int(port), int(n), float(bound), float(hold), db, int(first)))
    else:
        main()
