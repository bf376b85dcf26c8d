"""Shared pieces of the benchmark scripts: brokers and project processes on free loopback ports.

Benchmarks print figures; they are not tests. Everything binds 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from broker.server import free_port  # noqa: E402
from cli.runtime import raise_nofile  # noqa: E402,F401  (the benches' subprocesses lift their limit as `fleet` does)

FLEET = [sys.executable, "-c", "from cli.main import main; main()"]

# The embedded broker alone in its own process, set up as `fleet broker` runs it (collector tuned,
# open-files limit lifted); a bench reads its RSS and CPU from /proc without a CLI around it.
_EMBEDDED = """
import asyncio, sys
from broker.server import EmbeddedBroker
from broker.config import BrokerSettings
from cli.runtime import raise_nofile, tune_gc
raise_nofile()
async def main():
    b = EmbeddedBroker(BrokerSettings(port=int(sys.argv[1]), db=sys.argv[2], allow_anonymous=sys.argv[3] == "anon"))
    await b.start()
    print("ready", flush=True)
    await asyncio.Event().wait()
tune_gc()
asyncio.run(main())
"""


def start_embedded_process(db: Path, anonymous: bool = False) -> tuple[int, subprocess.Popen[bytes]]:
    """The embedded broker on ``db``'s registry in its own process, on a free port; returns once it listens."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _EMBEDDED, str(port), str(db), "anon" if anonymous else "auth"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    proc.stdout.readline()
    return port, proc


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened") from None
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout:.0f} s")


def start_mosquitto(workdir: Path, extra: str = "allow_anonymous true\n") -> tuple[int, subprocess.Popen[bytes]]:
    """Mosquitto 2 on a free port with unlimited queues (it drops QoS1 beyond 1000 queued by default)."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = workdir / f"mosquitto-{port}.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nmax_connections -1\npersistence false\nmax_queued_messages 0\n"
                    f"max_inflight_messages 0\nset_tcp_nodelay true\n{extra}")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=raise_nofile)
    wait_port(port, proc)
    return port, proc


def start_fleet(args: Sequence[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``fleet ARGS`` as a subprocess of this interpreter, output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen([*FLEET, *args], stdout=out, stderr=out, cwd=ROOT, preexec_fn=raise_nofile,
                                env={**os.environ, "FLEET_LOG_LEVEL": "WARNING", **(env or {})})


def start_embedded(db: Path, log: Path) -> tuple[int, subprocess.Popen[bytes]]:
    """``fleet broker`` (the embedded amqtt broker, registry-guarded) on a free port."""
    port = free_port()
    proc = start_fleet(["--db", str(db), "broker", "--port", str(port)], log)
    wait_port(port, proc)
    return port, proc


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[min(998, max(0, int(p * 10) - 1))]


def table(rows: Sequence[dict[str, object]], columns: Sequence[str]) -> str:
    """A GitHub-markdown table of ``rows``."""
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def mqtt_client(port: int, client_id: str, creds: tuple[str, str] | None = None,
                clean: bool = True) -> Any:
    """A connected paho client (loop running) with a large in-flight window, for load generators."""
    import threading

    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, protocol=mqtt.MQTTv311)
    if creds:
        c.username_pw_set(*creds)
    c.max_inflight_messages_set(1000)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect("127.0.0.1", port, keepalive=60)
    c.loop_start()
    if not connected.wait(10):
        raise RuntimeError(f"{client_id} could not connect to port {port}")
    return c


def persisted_readings(db: Path) -> int:
    """Readings persisted in ``db`` so far (the store's running total; 0 before the hub created the file)."""
    import sqlite3

    from hub.storage import StorageError, open_database
    from hub.storage.queries import readings_stored

    try:
        conn = open_database(db, readonly=True)
    except StorageError:
        return 0
    try:
        return readings_stored(conn)
    except sqlite3.Error:
        return 0
    finally:
        conn.close()
