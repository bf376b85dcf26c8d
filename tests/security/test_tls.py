"""The broker's TLS listener with a certificate made for the test (openssl CLI): paho with a CA
file, and the hub through ``fleet hub --broker mqtts://... --cafile``."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from broker.background import BackgroundBroker
from broker.config import BrokerSettings
from broker.registry import Registry
from broker.server import free_port
from protocol.codec import encode
from protocol.models import Reading, Telemetry
from security_helpers import stored_seqs
from support import Creds, add_device, end_process, wait_for

OPENSSL = shutil.which("openssl")


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it."""
    if OPENSSL is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path / "tls"
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([OPENSSL, *args], cwd=d, check=True, capture_output=True, timeout=30)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=fleet test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "1", "-extfile", "ext.cnf")
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key")


@pytest.fixture
def tls_broker(certs: Certs, db_path: Path, registry: Registry) -> Iterator[BackgroundBroker]:
    settings = BrokerSettings(port=free_port(), tls_port=free_port(), certfile=certs.cert, keyfile=certs.key,
                              db=db_path)
    with BackgroundBroker(settings) as broker:
        yield broker


def tls_client(port: int, creds: Creds, cafile: Path | None) -> tuple[mqtt.Client, list[object]]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=creds.username, protocol=mqtt.MQTTv311)
    client.username_pw_set(creds.username, creds.password)
    client.tls_set(ca_certs=str(cafile) if cafile else None, cert_reqs=ssl.CERT_REQUIRED)
    result: list[object] = []
    client.on_connect = lambda c, u, f, rc, p: result.append(rc)
    return client, result


def test_paho_with_the_ca_file_connects_and_publishes_over_tls(tls_broker: BackgroundBroker, certs: Certs,
                                                               registry: Registry) -> None:
    port = tls_broker.settings.tls_port
    assert port is not None
    creds = add_device(registry, "tls-1")
    client, result = tls_client(port, creds, certs.ca)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        assert wait_for(lambda: result, 10) and not getattr(result[0], "is_failure", True), result
        info = client.publish("d/tls-1/t", b"{}", qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()
    # without the CA, the server's certificate is not trusted: the handshake fails
    stranger, _ = tls_client(port, creds, None)
    with pytest.raises(ssl.SSLError):
        stranger.connect("127.0.0.1", port, keepalive=30)


def test_hub_over_mqtts_stores_a_device_that_speaks_tls(tls_broker: BackgroundBroker, certs: Certs,
                                                        registry: Registry, db_path: Path, tmp_path: Path) -> None:
    port = tls_broker.settings.tls_port
    assert port is not None
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        hub = subprocess.Popen(
            [sys.executable, "-c", "from cli.main import main; main()", "--db", str(db_path), "hub",
             "--broker", f"mqtts://127.0.0.1:{port}", "--cafile", str(certs.ca), "--staleness-min", "60s"],
            stdout=out, stderr=out, env={**os.environ, "FLEET_LOG_FORMAT": "text"})
    try:
        assert wait_for(lambda: "hub started" in log.read_text() or hub.poll() is not None, 20), log.read_text()
        assert hub.poll() is None, log.read_text()
        creds = add_device(registry, "tls-2")
        client, result = tls_client(port, creds, certs.ca)
        client.connect("127.0.0.1", port, keepalive=30)
        client.loop_start()
        try:
            assert wait_for(lambda: result, 10)
            for seq in range(1, 11):
                msg = Telemetry(boot=1, seq=seq, ts=int(time.time() * 1000),
                                readings=[Reading(metric="temperature", value=21.0)])
                client.publish("d/tls-2/t", encode(msg, "cbor"), qos=1).wait_for_publish(10)
            assert wait_for(lambda: stored_seqs(db_path, "tls-2") == set(range(1, 11)), 10), log.read_text()
        finally:
            client.disconnect()
            client.loop_stop()
    finally:
        end_process(hub)
