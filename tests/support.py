"""Helpers shared by the tests: real paho clients, real Mosquitto, polling with deadlines."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from broker.background import BackgroundBroker
from broker.registry import Registry, Role
from broker.server import free_port


@dataclass
class Creds:
    username: str
    password: str


def add_device(registry: Registry, device_id: str, role: Role = Role.DEVICE) -> Creds:
    return Creds(device_id, registry.add(device_id, role))


def connect(port: int, creds: Creds | None, client_id: str | None = None, *, clean: bool = True,
            keepalive: int = 30, will: tuple[str, bytes] | None = None, timeout: float = 10.0) -> mqtt.Client:
    """A connected paho client (VERSION2 callbacks, MQTT 3.1.1) with its network loop running.

    Raises ConnectionRefusedError with the reason code when the broker refuses the login.
    """
    cid = client_id if client_id is not None else (creds.username if creds else f"anon-{time.monotonic_ns()}")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=clean,
                         protocol=mqtt.MQTTv311)
    if creds:
        client.username_pw_set(creds.username, creds.password)
    if will:
        client.will_set(will[0], will[1], qos=1, retain=True)
    result: dict[str, object] = {}

    def on_connect(c, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
        result["rc"] = reason_code

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=keepalive)
    client.loop_start()
    deadline = time.monotonic() + timeout
    while "rc" not in result and time.monotonic() < deadline:
        time.sleep(0.01)
    rc = result.get("rc")
    if rc is None or getattr(rc, "is_failure", True):
        client.loop_stop()
        client.disconnect()
        raise ConnectionRefusedError(f"connect refused or timed out: {rc}")
    return client


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it is true or ``timeout`` x :func:`load_factor` passes; returns its last value.

    The deadline scales with the machine: a wait that passes costs nothing more, and a loaded
    machine (``make test-stress``, other jobs) gets the time it needs. Never use it to check that
    something did NOT happen: send a marker after it and wait for the marker instead.
    """
    deadline = time.monotonic() + timeout * load_factor()
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return bool(value)
        time.sleep(interval)


def load_factor() -> float:
    """How much slower than an idle machine this one runs now: 1-minute load per core, at least 1."""
    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def wait_progress(count, target: int, stall_s: float = 15.0, cap_s: float = 600.0,  # type: ignore[no-untyped-def]
                  interval: float = 0.05) -> int:
    """Wait until ``count()`` reaches ``target``; fail only when it stops growing for a while.

    A deadline that scales with the machine: a loaded machine that is slow but moving keeps
    going (up to ``cap_s``); a stuck one fails after ``stall_s`` x :func:`load_factor` without
    progress. Returns the last count (compare it with ``target``).
    """
    start = last_change = time.monotonic()
    last = count()
    while last < target:
        now = time.monotonic()
        if now - last_change > stall_s * load_factor() or now - start > cap_s:
            return last
        time.sleep(interval)
        current = count()
        if current > last:
            last, last_change = current, time.monotonic()
    return last


MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


@dataclass
class MosquittoProcess:
    port: int
    proc: subprocess.Popen[bytes]
    conf: Path


def start_mosquitto(tmp_path: Path, extra_conf: str = "allow_anonymous true\n") -> MosquittoProcess:
    """A real Mosquitto 2 on a free loopback port with ``extra_conf`` appended to its config."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (.ci/run installs it)")
    port = free_port()
    conf = tmp_path / f"mosquitto-{port}.conf"
    conf.write_text(f"listener {port} 127.0.0.1\npersistence false\nmax_queued_messages 0\n"
                    f"max_inflight_messages 0\nset_tcp_nodelay true\n{extra_conf}")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return MosquittoProcess(port, proc, conf)
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


class HubProcess:
    """``fleet hub`` as a real subprocess (so it can be SIGKILLed), logs appended to ``log``."""

    def __init__(self, db: Path, port: int, log: Path, *extra: str) -> None:
        self.db, self.port, self.log, self.extra = db, port, log, extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.cwd: Path | None = None
        """The process's working folder (None: the test's); a worker "on another machine" has its own."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", "from cli.main import main; main()", "--db", str(self.db), "hub",
                "--broker", f"mqtt://127.0.0.1:{self.port}", "--staleness-min", "60s", *self.extra]

    def start(self) -> HubProcess:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=self.cwd,
                                         env={**os.environ, "FLEET_LOG_FORMAT": "text"})
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc)


def end_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, and SIGKILL when it has not exited within ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def port_open(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def broker_counters(broker: BackgroundBroker) -> dict[str, float]:
    """The embedded broker's guard counters (denials, quotas, throttled logins), read on its own loop."""
    async def read() -> dict[str, float]:
        assert broker.broker is not None
        return broker.broker.counters()
    return broker.call(read)  # type: ignore[no-any-return]


def session_state(broker: BackgroundBroker, client_id: str) -> str | None:
    """The embedded broker's state of ``client_id``'s session ("connected", "disconnected"...; None: no session),
    read on its own loop: an event to wait for instead of a sleep after a client disconnects."""
    async def read() -> str | None:
        assert broker.broker is not None
        entry = broker.broker.amqtt._sessions.get(client_id)
        return None if entry is None else str(entry[0].transitions.state)
    return broker.call(read)  # type: ignore[no-any-return]


_PG_READERS: dict[str, object] = {}
"""One read-only connection per PostgreSQL database, kept across polls: a test that polls every 20 ms must
not make the server start a backend process 50 times a second (that alone loads a busy machine)."""


def db_rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:  # type: ignore[type-arg]
    """Rows of ``sql`` (SQLite dialect) on the fleet database ``db``, SQLite file or PostgreSQL URL; [] when
    the database cannot be read yet (not created, locked, a table missing)."""
    import sqlite3

    from hub.storage import StorageError, open_database
    from hub.storage.location import postgres_url

    url = postgres_url(db)
    try:
        conn = _PG_READERS.get(url) if url else None
        if conn is None:
            conn = open_database(db, readonly=True)
            if url:
                _PG_READERS[url] = conn
    except StorageError:
        return []
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]  # type: ignore[attr-defined]
    except sqlite3.Error:
        if url:
            _PG_READERS.pop(url, None)
            conn.close()  # type: ignore[attr-defined]
        return []
    finally:
        if not url:
            conn.close()  # type: ignore[attr-defined]
