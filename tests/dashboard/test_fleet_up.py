"""`fleet up` as a user runs it: a real process in an empty folder, the dashboard under tmux, Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from broker.server import free_port
from support import wait_for

FLEET = str(Path(sys.executable).with_name("fleet"))


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def start_up(folder: Path, port: int, devices: int = 8) -> subprocess.Popen[bytes]:
    return subprocess.Popen([FLEET, "up", "--port", str(port), "-n", str(devices), "--rate", "2", "--no-dashboard"],
                            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "FLEET_LOG_LEVEL": "WARNING"})


def run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLEET, *args], cwd=folder, capture_output=True, text=True, timeout=60)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def readings(folder: Path) -> int:
    out = run(folder, "status", "--json")
    if out.returncode not in (0, 1) or not out.stdout:
        return 0
    import sqlite3

    conn = sqlite3.connect(folder / "fleet.db")
    try:
        return conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def test_up_from_empty_folder_then_again_with_the_same_data(tmp_path):
    port = free_port()
    proc = start_up(tmp_path, port)
    try:
        assert wait_for(lambda: readings(tmp_path) > 20, timeout=40), proc.stderr.read1().decode() if proc.poll() else ""
        status = run(tmp_path, "status", "--json", "--broker", f"mqtt://127.0.0.1:{port}")
        health = json.loads(status.stdout)
        assert status.returncode == 0 and health["hub_alive"] and health["devices_online"] == 8
        sent = run(tmp_path, "send", "sim-00002", "ping", "--json", "--broker", f"mqtt://127.0.0.1:{port}")
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)[0]["state"] == "succeeded"
    finally:
        assert stop(proc) == 0
    assert not port_open(port), "the broker port must be closed after Ctrl-C"
    after_first = readings(tmp_path)
    creds = json.loads((tmp_path / "fleet.db.sim-creds.json").read_text())
    down = run(tmp_path, "status", "--broker", f"mqtt://127.0.0.1:{port}")
    assert down.returncode == 1

    proc = start_up(tmp_path, port)
    try:
        assert wait_for(lambda: readings(tmp_path) > after_first + 10, timeout=40)
    finally:
        assert stop(proc) == 0
    again = json.loads((tmp_path / "fleet.db.sim-creds.json").read_text())
    assert {k: v["secret"] for k, v in again["devices"].items()} == {k: v["secret"] for k, v in creds["devices"].items()}
    listed = json.loads(run(tmp_path, "commands", "--json").stdout)
    assert [c["state"] for c in listed] == ["succeeded"]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")
def test_dashboard_under_tmux_shows_fleet_commands_and_hub_down(tmp_path):
    port = free_port()
    session = f"fleet-test-{port}"
    proc = start_up(tmp_path, port, devices=6)
    try:
        assert wait_for(lambda: readings(tmp_path) > 10, timeout=40)
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24",
                        f"cd {tmp_path} && {FLEET} dashboard"], check=True)

        def screen() -> str:
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

        assert wait_for(lambda: "6 online" in screen() and "hub up" in screen(), timeout=15), screen()
        assert "sim-00001" in screen()
        sent = run(tmp_path, "send", "sim-00004", "reboot", "--broker", f"mqtt://127.0.0.1:{port}")
        assert sent.returncode == 0, sent.stderr
        assert wait_for(lambda: "sim-00004 reboot" in screen() and "succeeded" in screen(), timeout=15), screen()
        subprocess.run(["tmux", "send-keys", "-t", session, "/", "0", "0", "0", "0", "5", "Enter"], check=True)
        assert wait_for(lambda: "matching '00005'" in screen(), timeout=5), screen()
        assert stop(proc) == 0
        assert wait_for(lambda: "hub DOWN" in screen(), timeout=15), screen()
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        assert wait_for(lambda: subprocess.run(["tmux", "has-session", "-t", session],
                                               capture_output=True).returncode != 0, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
