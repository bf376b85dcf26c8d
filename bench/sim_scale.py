"""Simulator scale: connected devices held by ONE simulator process, and its RSS.

For each broker (Mosquitto 2 started on a free port with ``max_connections -1``; the
embedded amqtt broker in its own process) and each fleet size, a fresh simulator child
process connects N devices, holds them for a few seconds at a low rate, and reports how many
connected, how long that took, and its RSS. The embedded broker's RSS is sampled too.

Devices log in anonymously here: with the registry, each first login costs one scrypt
check (~50 ms on 2 hash threads), i.e. ~250 s for 10,000 devices, which would measure the
password hash and not the simulator. Every step is bounded in time.

Also prints the bytes on the wire per reading (MQTT PUBLISH header + topic + packet id +
payload) for JSON, CBOR, and CBOR batched by 10, from the env profile's signals.

    .venv/bin/python bench/sim_scale.py                     # --sizes 1000,5000,10000 --brokers mosquitto,embedded
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from common import ROOT, start_mosquitto  # also puts the project on sys.path

from broker.server import free_port  # noqa: E402
from device_sim.fleet import Credentials, DeviceCreds, Fleet, device_id  # noqa: E402
from device_sim.mqtt import publish_packet  # noqa: E402
from device_sim.settings import SimSettings  # noqa: E402
from device_sim.signals import Profile, make_signal  # noqa: E402
from protocol import Reading, Telemetry, encode  # noqa: E402


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ---------------------------------------------------------------------------- child: one simulator


async def child(port: int, n: int, connect_bound: float, hold: float) -> dict[str, object]:
    creds = Credentials(Path(tempfile.gettempdir()) / f"sim-bench-{os.getpid()}.json")
    creds.devices = {device_id("sim", i): DeviceCreds("x") for i in range(1, n + 1)}
    creds.save = lambda: None  # type: ignore[method-assign]  # nothing to keep for anonymous devices
    settings = SimSettings(devices=n, port=port, rate=0.2, anonymous=True, keepalive=120,
                           connect_concurrency=128, connect_timeout=60, heartbeat_s=60, profile="mixed")
    fleet = Fleet(settings, creds)
    proc = psutil.Process()
    t0 = time.monotonic()
    await fleet.start()
    connected_at = None
    while time.monotonic() - t0 < connect_bound:
        await asyncio.sleep(0.25)
        if fleet.stats.connected >= n:
            connected_at = time.monotonic() - t0
            break
    reached = fleet.stats.connected
    await asyncio.sleep(hold)
    rss = proc.memory_info().rss
    held = fleet.stats.connected
    cpu = proc.cpu_times()
    summary = await fleet.stop()
    return {"devices": n, "connected": reached, "held_after_hold": held,
            "connect_s": round(connected_at, 1) if connected_at else None,
            "sim_rss_mb": round(rss / 2**20, 1), "sim_cpu_s": round(cpu.user + cpu.system, 1),
            "messages": summary.messages, "errors": summary.errors}


# ---------------------------------------------------------------------------- parent


EMBEDDED = """
import asyncio, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
from broker.server import EmbeddedBroker
from broker.config import BrokerSettings
async def main():
    b = EmbeddedBroker(BrokerSettings(port=int(sys.argv[1]), db=sys.argv[2], allow_anonymous=True))
    await b.start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def start_embedded(tmp: Path) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", EMBEDDED, str(port), str(tmp / "fleet.db")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    proc.stdout.readline()
    return port, proc


def run_step(port: int, n: int, broker: subprocess.Popen[bytes], connect_bound: float, hold: float) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--child", str(port), str(n), str(connect_bound), str(hold)]
    sim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
    peak = 0
    deadline = time.monotonic() + connect_bound + hold + 60
    while sim.poll() is None and time.monotonic() < deadline:
        try:
            peak = max(peak, psutil.Process(broker.pid).memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.5)
    if sim.poll() is None:
        sim.kill()
        return {"devices": n, "error": "simulator did not finish in time"}
    out = sim.stdout.read() if sim.stdout else b""
    result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    result["broker_rss_mb"] = round(peak / 2**20, 1)
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
    args = ap.parse_args()
    raise_nofile()
    print(json.dumps({"bytes_per_reading": wire_bytes()}), flush=True)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for broker in args.brokers.split(","):
            for n in (int(s) for s in args.sizes.split(",")):
                port, proc = start_mosquitto(tmp) if broker == "mosquitto" else start_embedded(tmp)
                try:
                    result = run_step(port, n, proc, args.connect_bound, args.hold)
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
        _, _, port, n, bound, hold = sys.argv
        print(json.dumps(asyncio.run(child(int(port), int(n), float(bound), float(hold)))), flush=True)
    else:
        main()
