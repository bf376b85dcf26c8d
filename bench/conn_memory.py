"""Broker memory per connected device: Python heap (tracemalloc) and RSS, in-process.

Starts the embedded broker in this process with N provisioned devices (generated secrets),
connects N raw-socket devices that each do what a firmware device does on connect (CONNECT
with a will, SUBSCRIBE to its ``c`` and ``w`` topics, a retained birth on ``s``), and prints the
traced heap growth per connection (or, with ``--no-trace``, the RSS growth: the test's own
client sockets live in the same process and are counted too, about 0.3 KB each). Memory does not depend on the machine's load, so
this figure is steadier than the one bench/sim_scale.py takes while a simulator connects.

Not a test. Run:  .venv/bin/python bench/conn_memory.py [--devices 2000]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import socket
import struct
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from common import ROOT, free_port, raise_nofile

sys.path.insert(0, str(ROOT))
from broker.background import BackgroundBroker  # noqa: E402
from broker.config import BrokerSettings  # noqa: E402
from device_sim.fleet import device_id, provision  # noqa: E402


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    out, n = bytearray([first]), len(body)
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out) + body


def _read_packet(sock: socket.socket) -> int:
    first = sock.recv(1)
    if not first:
        raise ConnectionError("closed")
    length, mult = 0, 1
    while True:
        b = sock.recv(1)[0]
        length += (b & 0x7F) * mult
        if not b & 0x80:
            break
        mult *= 128
    while length:
        length -= len(sock.recv(length))
    return first[0] >> 4


def connect_device(port: int, dev: str, secret: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    will = b'{"state":"offline"}'
    flags = 0x80 | 0x40 | 0x20 | 0x08 | 0x04  # user, password, will retain, will QoS 1, will; clean_session 0
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + _str(dev) + _str(f"d/{dev}/s") + \
        struct.pack("!H", len(will)) + will + _str(dev) + _str(secret)
    sock.sendall(_packet(0x10, body))
    if _read_packet(sock) != 2:
        raise ConnectionError(f"{dev}: no CONNACK")
    sub = struct.pack("!H", 1) + _str(f"d/{dev}/c") + b"\x01" + _str(f"d/{dev}/w") + b"\x01"
    sock.sendall(_packet(0x82, sub))
    while _read_packet(sock) != 9:  # SUBACK (a retained watermark may come first)
        pass
    birth = b'{"state":"online","boot":1}'
    sock.sendall(_packet(0x31, _str(f"d/{dev}/s") + birth))  # QoS 0, retained
    return sock


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--no-trace", action="store_true",
                    help="RSS only: tracemalloc's own bookkeeping inflates RSS, so take RSS in a run without it")
    args = ap.parse_args()
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-mem-") as tmp:
        db = Path(tmp) / "fleet.db"
        ids = [device_id("mem", i + 1) for i in range(args.devices)]
        print(f"provisioning {args.devices} devices", flush=True)
        creds = provision(db, ids)
        with BackgroundBroker(BrokerSettings(port=free_port(), db=db)) as broker:
            socks = [connect_device(broker.port, ids[0], creds.devices[ids[0]].secret)]  # warm-up: imports, caches
            time.sleep(0.5)
            gc.collect()
            if not args.no_trace:
                tracemalloc.start()
            heap0, rss0 = tracemalloc.get_traced_memory()[0], rss_kb()
            t0 = time.monotonic()
            for i, dev in enumerate(ids[1:], 2):
                socks.append(connect_device(broker.port, dev, creds.devices[dev].secret))
                if i % 500 == 0:
                    print(f"  {i}/{args.devices} connected", flush=True)
            time.sleep(1.0)  # the last births routed and retained
            gc.collect()
            heap1, rss1 = tracemalloc.get_traced_memory()[0], rss_kb()
            n = len(ids) - 1
            result: dict[str, object] = {"devices": len(ids), "connect_s": round(time.monotonic() - t0, 1)}
            if args.no_trace:
                result["rss_kb_per_conn"] = round((rss1 - rss0) / n, 1)
            else:
                top = tracemalloc.take_snapshot().statistics("lineno")[:15]
                tracemalloc.stop()
                print("\ntop allocations (growth over the run, traced):")
                for stat in top:
                    print(f"  {stat.size / n:7.0f} B/conn  {stat.traceback[0].filename.split('site-packages/')[-1]}:"
                          f"{stat.traceback[0].lineno}")
                result["heap_kb_per_conn"] = round((heap1 - heap0) / 1024 / n, 1)
            print(json.dumps(result), flush=True)
            for s in socks:
                s.close()


if __name__ == "__main__":
    main()
