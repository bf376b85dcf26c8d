"""Helpers of the scale-out tests: Mosquitto configured from the export, hub workers as real processes."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from click.testing import CliRunner
from support import HubProcess, MosquittoProcess, add_device, connect, start_mosquitto

from broker.registry import Registry

from cli.main import cli
from protocol.codec import encode
from protocol.models import Reading, Telemetry
from protocol.topics import MessageClass, topic_for

DEVICES = [f"dev-{i}" for i in range(4)]


def fleet(db: Path, *args: str) -> str:
    """Run ``fleet --db DB ARGS`` in-process; return stdout (asserts exit 0)."""
    result = CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def secured_mosquitto(tmp_path: Path, out_dir: Path) -> MosquittoProcess:
    """Mosquitto loading the exported password and ACL files, anonymous access off."""
    # `user root`: mosquitto started as root drops to user "mosquitto" before reading the
    # 0600 password file; the tests run as whoever runs them (ignored when not root)
    return start_mosquitto(tmp_path, f"allow_anonymous false\nuser root\n"
                                     f"password_file {out_dir / 'mosquitto.passwd'}\n"
                                     f"acl_file {out_dir / 'mosquitto.acl'}\n"
                                     f"log_dest file {tmp_path / 'mosquitto.log'}\nlog_type all\n")


def stop_mosquitto(m: MosquittoProcess) -> None:
    m.proc.terminate()
    try:
        m.proc.wait(5)
    except subprocess.TimeoutExpired:
        m.proc.kill()
        m.proc.wait(5)


def v5_client(port: int, username: str, password: str, client_id: str) -> mqtt.Client:
    """A connected MQTT 5 paho client with its loop running (reason codes on refused publishes)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    return client


class WorkerProcess(HubProcess):
    """``fleet hub --worker-group G --client-id ID`` as a real subprocess, logging to a file."""

    def __init__(self, db: Path, port: int, group: str, client_id: str, log: Path, *extra: str) -> None:
        super().__init__(db, port, log, "--worker-group", group, "--client-id", client_id, *extra)
        self.group, self.client_id = group, client_id


class Producer:
    """Devices publishing QoS 1 telemetry from a thread until told to stop or ``count`` is reached."""

    def __init__(self, port: int, registry: Registry, count: int, rate_hz: float = 0.0) -> None:
        self.clients = {d: connect(port, add_device(registry, d)) for d in DEVICES}
        self.count, self.rate_hz = count, rate_hz
        self.sent: set[tuple[str, int]] = set()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for seq in range(1, self.count + 1):
            infos = []
            for d, c in self.clients.items():
                msg = Telemetry(boot=1, seq=seq, ts=int(time.time() * 1000),
                                readings=[Reading(dt=i, metric="temperature", value=20.0 + i) for i in range(5)])
                infos.append((d, seq, c.publish(topic_for(d, MessageClass.TELEMETRY), encode(msg), qos=1)))
            for d, s, info in infos:
                info.wait_for_publish(10)
                self.sent.add((d, s))
            if self.rate_hz:
                time.sleep(1.0 / self.rate_hz)

    def close(self) -> None:
        for c in self.clients.values():
            c.disconnect()
            c.loop_stop()
