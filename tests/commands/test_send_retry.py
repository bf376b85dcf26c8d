"""`fleet send` is safe to retry: a request id never runs twice, and a request that reaches the hub after
its expiry (fixed when the operator issued it) is not executed. The hub is a real process, stalled
with SIGSTOP and resumed with SIGCONT; the device is a real paho client.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from command_device import CommandDevice
from hub.storage import CommandStore
from protocol.models import CommandState
from protocol.ops import request_command_id
from support import HubProcess, add_device, load_factor, wait_for

NO_ANSWER, OFFLINE = 11, 7


def send(db: Path, port: int, *args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, ["--db", str(db), "send", *args, "--broker", f"mqtt://127.0.0.1:{port}"])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture
def hub_process(embedded_broker, db_path: Path, tmp_path: Path) -> Iterator[HubProcess]:  # type: ignore[no-untyped-def]
    hub = HubProcess(db_path, embedded_broker.port, tmp_path / "hub.log").start()
    try:
        yield hub
    finally:
        assert hub.proc is not None
        hub.proc.send_signal(signal.SIGCONT)
        hub.stop()


def test_retry_after_no_answer_runs_once_and_a_late_request_never_runs(embedded_broker, registry, db_path,  # type: ignore[no-untyped-def]
                                                                      hub_process) -> None:
    port = embedded_broker.port
    device = CommandDevice(port, add_device(registry, "dev-s")).connect()
    store = CommandStore(str(db_path))
    try:
        # the hub is up and sees the device online: a first command goes through
        assert wait_for(lambda: send(db_path, port, "dev-s", "ping", "--json", "--request-id", "r-warm")[0] == 0,
                        timeout=60, interval=0.5), hub_process.log.read_text()[-2000:]
        assert hub_process.proc is not None

        # 1. the hub stalls: the operator gets "no answer", retries with the same id, gets it again
        hub_process.proc.send_signal(signal.SIGSTOP)
        for _ in range(2):
            code, out, err = send(db_path, port, "dev-s", "ping", "--json", "--ttl", "60s",
                                  "--request-id", "r-1")
            assert code == NO_ANSWER and out == "" and len(err.splitlines()) == 1
            assert "retrying with --request-id r-1 never runs it twice" in err
        hub_process.proc.send_signal(signal.SIGCONT)
        code, out, err = send(db_path, port, "dev-s", "ping", "--json", "--ttl", "60s", "--request-id", "r-1")
        [row] = json.loads(out)
        cid = request_command_id("operator", "r-1", "dev-s")
        assert row["id"] == cid
        assert wait_for(lambda: store.get(cid) is not None and store.get(cid).final, timeout=20)
        assert device.received.count(cid) >= 1 and device.executed.count(cid) <= 1
        assert [c.id for c in store.list("dev-s", limit=100)].count(cid) == 1
        assert len(store.list("dev-s", limit=100)) == 2  # r-warm and r-1: every copy of r-1 made one command

        # 2. a request that reaches the hub after its expiry is not executed
        hub_process.proc.send_signal(signal.SIGSTOP)
        code, _, err = send(db_path, port, "dev-s", "ping", "--json", "--ttl", "2s", "--request-id", "r-late")
        assert code == NO_ANSWER
        issued_before = time.time()
        assert wait_for(lambda: time.time() > issued_before + 2.5, timeout=10)  # its expiry passes while stalled
        hub_process.proc.send_signal(signal.SIGCONT)
        # marker: a request sent after it is answered only after the hub has handled every copy of r-late
        code, out, _ = send(db_path, port, "dev-s", "ping", "--json", "--request-id", "r-marker")
        assert code == 0 and json.loads(out)[0]["state"] == "succeeded"
        late = request_command_id("operator", "r-late", "dev-s")
        assert store.get(late) is None and late not in device.received
        assert "operator request expired before it reached the hub" in hub_process.log.read_text()
    finally:
        device.disconnect()


def test_offline_device_is_said_at_once_with_its_own_exit_code(embedded_broker, registry, db_path,  # type: ignore[no-untyped-def]
                                                               hub_process) -> None:
    port = embedded_broker.port
    registry.add("dev-away", group="away")
    registry.add("dev-away-2", group="away")
    assert wait_for(lambda: send(db_path, port, "dev-away", "ping", "--request-id", "r-off")[0] == OFFLINE,
                    timeout=60, interval=0.5)
    started = time.monotonic()
    # same id: same command; --timeout 120s: "at once" means long before the wait would end, even when loaded
    code, out, err = send(db_path, port, "dev-away", "ping", "--request-id", "r-off", "--timeout", "120s")
    assert code == OFFLINE and time.monotonic() - started < min(60.0, 10 * load_factor())
    [row] = json.loads(out)  # piped: JSON on stdout
    assert row["state"] == "queued" and row["repeated"] and row["detail"].startswith("device offline; queued until ")
    code, out, _ = send(db_path, port, "--group", "away", "ping")
    rows = json.loads(out)
    assert code == OFFLINE and {r["device_id"] for r in rows} == {"dev-away", "dev-away-2"}
    assert all(r["state"] == CommandState.QUEUED.value for r in rows)


def test_a_request_sent_before_the_hub_subscribed_is_answered(embedded_broker, registry, db_path,  # type: ignore[no-untyped-def]
                                                              start_hub) -> None:
    """The first command after the hub starts: its request may reach the broker before the hub's session
    exists (bench/commands.py on a fresh Mosquitto lost it and waited 30 s). The client sends it again,
    same id, until answered; the hub makes one command of all the copies."""
    import threading

    from broker.credentials import ensure_local_principal
    from broker.registry import Role as R
    from hub.ops_client import OpsClient
    from support import connect

    port = embedded_broker.port
    device = CommandDevice(port, add_device(registry, "dev-first")).connect()
    seen: list[bytes] = []
    observer = connect(port, add_device(registry, "observer", R.HUB), client_id="observer")
    observer.on_message = lambda c, u, m: seen.append(m.payload)
    granted = threading.Event()
    observer.on_subscribe = lambda *a: granted.set()
    observer.subscribe("fleet/ops/operator/req", qos=1)
    assert granted.wait(10)
    ops = OpsClient(f"mqtt://127.0.0.1:{port}", "operator", ensure_local_principal(db_path, "operator", R.OPERATOR))
    ops.connect()
    answers: list[object] = []
    sender = threading.Thread(target=lambda: answers.append(ops.send(["dev-first"], "ping", answer_timeout=60)))
    try:
        sender.start()
        assert wait_for(lambda: len(seen) >= 1, timeout=10)  # the request went out: nobody but us heard it
        start_hub(port)
        sender.join(60)
        [resp] = answers
        [created] = resp.commands  # type: ignore[attr-defined]
        final = ops.updates({created.id}, timeout=30) if created.state != "succeeded" else {}
        store = CommandStore(str(db_path))
        assert wait_for(lambda: store.get(created.id) is not None and store.get(created.id).final, timeout=20)
        assert store.get(created.id).state is CommandState.SUCCEEDED, final
        assert len(store.list("dev-first", limit=10)) == 1 and device.executed == [created.id]
        assert len(seen) >= 2  # it was sent again, with the same id
    finally:
        ops.close()
        observer.disconnect()
        observer.loop_stop()
        device.disconnect()
