"""``fleet broker export-acl``: devices from the registry log in to a real Mosquitto and stay in their lane."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
from scaleout_helpers import fleet, secured_mosquitto, stop_mosquitto
from support import Creds, connect, wait_for

from broker.mosquitto_export import mosquitto_hash
from broker.registry import Registry, Role
from hub.config import HubSettings
from protocol.topics import MessageClass, topic_for

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def exported(tmp_path: Path, db_path: Path):  # type: ignore[no-untyped-def]
    """Two devices added with `fleet devices add --json`, a hub login, an unknown device, exported."""
    secrets: list[dict[str, str]] = []
    for dev in ("dev-a", "dev-b"):
        secrets += json.loads(fleet(db_path, "devices", "add", dev, "--json"))
    fleet(db_path, "devices", "add", "dev-lost")  # its secret is printed and not kept
    hub_secret = "hub-secret-for-the-test"
    HubSettings(db=db_path).secret_file.write_text(hub_secret + "\n")  # beside the file, or in the working folder
    Registry(db_path).ensure("hub", Role.HUB, hub_secret)
    kept = tmp_path / "kept.json"
    kept.write_text(json.dumps(secrets))
    out = tmp_path / "mq"
    fleet(db_path, "broker", "export-acl", "--out-dir", str(out), "--secrets", str(kept))
    m = secured_mosquitto(tmp_path, out)
    creds = {s["id"]: Creds(s["id"], s["secret"]) for s in secrets} | {"hub": Creds("hub", hub_secret)}
    yield m, creds, out
    stop_mosquitto(m)


def test_password_hash_is_mosquitto_passwd_format(tmp_path: Path) -> None:
    """Our $7$ line verifies with the salt mosquitto_passwd chose (same PBKDF2-SHA512, same iterations)."""
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "alice", "s3cret"], check=True, capture_output=True)
    line = pw.read_text().strip()
    _, _, iterations, salt, _ = line.split(":", 1)[1].split("$")
    import base64
    assert line == "alice:" + mosquitto_hash("s3cret", iterations=int(iterations), salt=base64.b64decode(salt))


def test_exported_files(exported) -> None:  # type: ignore[no-untyped-def]
    _, _, out = exported
    users = [line.split(":")[0] for line in (out / "mosquitto.passwd").read_text().splitlines()]
    assert users == ["dev-a", "dev-b", "hub"]  # dev-lost: no known secret, left out
    assert (out / "mosquitto.passwd").stat().st_mode & 0o077 == 0
    acl = (out / "mosquitto.acl").read_text()
    assert "pattern write d/%u/t" in acl and "pattern read d/%u/c" in acl
    assert "user hub\ntopic readwrite d/#\ntopic readwrite fleet/#" in acl


def test_devices_authenticate_and_stay_in_their_topics(exported) -> None:  # type: ignore[no-untyped-def]
    m, creds, _ = exported
    got: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def on_message(c, u, msg):  # type: ignore[no-untyped-def]
        with lock:
            got.append((msg.topic, msg.payload))

    hub = connect(m.port, creds["hub"], "hub-test")
    hub.on_message = on_message
    hub.subscribe("$share/workers/d/+/t", qos=1)
    a = connect(m.port, creds["dev-a"])
    b = connect(m.port, creds["dev-b"])
    try:
        # dev-b subscribes to its own commands; dev-a tries to listen in on them
        seen_b: list[bytes] = []
        seen_a: list[bytes] = []
        b.on_message = lambda c, u, msg: seen_b.append(msg.payload)
        a.on_message = lambda c, u, msg: seen_a.append(msg.payload)
        b.subscribe(topic_for("dev-b", MessageClass.COMMAND), qos=1)
        a.subscribe(topic_for("dev-b", MessageClass.COMMAND), qos=1)
        a.subscribe("d/+/c", qos=1)
        a.publish(topic_for("dev-a", MessageClass.TELEMETRY), b"own", qos=1).wait_for_publish(5)
        assert wait_for(lambda: ("d/dev-a/t", b"own") in got, 5)
        hub.publish(topic_for("dev-b", MessageClass.COMMAND), b"cmd-for-b", qos=1).wait_for_publish(5)
        assert wait_for(lambda: seen_b == [b"cmd-for-b"], 5)
        # Mosquitto 2.0.11 answers a denied QoS 1 publish with PUBACK rc 135, which an MQTT 3.1.1
        # client may take as a broken connection (seen: "Bad socket read/write"): use a fresh one after
        a.publish(topic_for("dev-b", MessageClass.TELEMETRY), b"forged", qos=1)
        wait_for(lambda: not a.is_connected(), 1)
        a.disconnect()
        a.loop_stop()
        a = connect(m.port, creds["dev-a"])
        # an independent client (mosquitto_pub) as dev-b, then a marker from dev-a: nothing forged got through
        subprocess.run(["mosquitto_pub", "-p", str(m.port), "-u", "dev-b", "-P", creds["dev-b"].password,
                        "-t", "d/dev-a/t", "-m", "forged-by-b", "-q", "1"], check=True, timeout=10)
        a.publish(topic_for("dev-a", MessageClass.TELEMETRY), b"marker", qos=1).wait_for_publish(5)
        assert wait_for(lambda: ("d/dev-a/t", b"marker") in got, 5)
        assert [p for _, p in got] == [b"own", b"marker"]
        assert seen_a == []
    finally:
        for c in (hub, a, b):
            c.disconnect()
            c.loop_stop()


def test_mosquitto_sub_cannot_read_another_device(exported) -> None:  # type: ignore[no-untyped-def]
    m, creds, _ = exported
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(m.port), "-u", "dev-a", "-P", creds["dev-a"].password,
                            "-t", "d/dev-b/c", "-t", "d/dev-a/c", "-q", "1", "-v", "-W", "4"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        hub = connect(m.port, creds["hub"], "hub-test")
        # wait until the subscriber is in, by the own-topic message arriving; then the other device's
        for _ in range(20):
            hub.publish("d/dev-a/c", b"mine", qos=1).wait_for_publish(5)
            hub.publish("d/dev-b/c", b"not-mine", qos=1).wait_for_publish(5)
        hub.disconnect()
        hub.loop_stop()
        out, _ = sub.communicate(timeout=10)
    finally:
        sub.kill()
    lines = out.decode().splitlines()
    assert "d/dev-a/c mine" in lines
    assert not any("not-mine" in line for line in lines)


def test_wrong_and_unknown_logins_refused(exported) -> None:  # type: ignore[no-untyped-def]
    m, creds, _ = exported
    with pytest.raises(ConnectionRefusedError):
        connect(m.port, Creds("dev-a", "wrong-password"))
    with pytest.raises(ConnectionRefusedError):
        connect(m.port, Creds("dev-lost", creds["dev-a"].password))
    proc = subprocess.run(["mosquitto_pub", "-p", str(m.port), "-u", "dev-a", "-P", "nope", "-t", "d/dev-a/t",
                           "-m", "x", "-q", "1"], capture_output=True, timeout=10, check=False)
    assert proc.returncode != 0 and b"not authori" in proc.stderr.lower()
    ok = connect(m.port, creds["dev-a"])
    ok.disconnect()
    ok.loop_stop()


def test_rotate_issues_secrets_once(tmp_path: Path, db_path: Path) -> None:
    """--rotate re-issues unknown secrets, prints them once, and the new ones work on Mosquitto."""
    fleet(db_path, "devices", "add", "dev-r")
    out = tmp_path / "mq"
    printed = json.loads(fleet(db_path, "broker", "export-acl", "--out-dir", str(out), "--rotate"))
    assert [p["id"] for p in printed] == ["dev-r"]
    m = secured_mosquitto(tmp_path, out)
    try:
        c = connect(m.port, Creds("dev-r", printed[0]["secret"]))
        c.disconnect()
        c.loop_stop()
    finally:
        stop_mosquitto(m)
    assert "dev-r" in (out / "mosquitto.passwd").read_text()
    assert printed[0]["secret"] not in (out / "mosquitto.passwd").read_text()
