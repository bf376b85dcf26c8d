"""`fleet up` as a user runs it: a real process in an empty folder, the dashboard under tmux, Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from broker.server import free_port
from support import port_open, wait_for

FLEET = str(Path(sys.executable).with_name("fleet"))


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


@pytest.mark.timeout(300)  # two full starts and stops of the stack: minutes on a busy machine
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


class Tmux:
    """A real terminal of a given size running one command, read with capture-pane and driven with send-keys."""

    def __init__(self, name: str, command: str, width: int = 80, height: int = 24) -> None:
        self.name = name
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", str(width), "-y", str(height), command],
                       check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait(self, *texts: str, timeout: float = 30) -> str:
        """Wait until every text is on the screen; returns the screen (fails the test with it otherwise)."""
        assert wait_for(lambda: all(t in self.screen() for t in texts), timeout=timeout), self.screen()
        return self.screen()

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name], capture_output=True).returncode == 0

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")
@pytest.mark.timeout(300)
def test_dashboard_under_tmux_navigate_filter_drill_down_send_and_hub_down(tmp_path):
    port = free_port()
    proc = start_up(tmp_path, port, devices=6)
    term: Tmux | None = None
    try:
        assert wait_for(lambda: readings(tmp_path) > 10, timeout=40)
        term = Tmux(f"fleet-test-{port}", f"cd {tmp_path} && {FLEET} dashboard --broker mqtt://127.0.0.1:{port}")
        screen = term.wait("6 devices: 6 online, 0 offline", "hub up", "sim-00001", "Filter (/):")
        assert all(len(r) <= 80 for r in screen.split("\n"))

        # a command sent from another terminal appears with its state
        sent = run(tmp_path, "send", "sim-00004", "reboot", "--broker", f"mqtt://127.0.0.1:{port}")
        assert sent.returncode == 0, sent.stderr
        term.wait("sim-00004 reboot", "succeeded", timeout=60)

        # the filter is on screen and narrows the table
        term.keys("/", "0", "0", "0", "0", "5", "Enter")
        term.wait("matching '00005'", "1 of 6 devices")

        # Enter opens the device; c sends it a command; its state shows in the device view
        term.keys("Enter")
        term.wait("sim-00005  online since", "metrics", "recent commands", "presence")
        term.keys("c")
        term.wait("Send a command to sim-00005")
        term.keys("p", "i", "n", "g", "Enter")
        screen = term.wait(" ping ", "succeeded", timeout=60)
        assert "Send a command" not in screen
        term.keys("Escape")
        term.wait("Filter (/):", "matching '00005'")

        assert stop(proc) == 0
        term.wait("hub DOWN", timeout=60)
        term.keys("q")
        assert wait_for(lambda: not term.alive(), timeout=10), term.screen()
    finally:
        if proc.poll() is None:
            proc.kill()
        if term is not None:
            term.kill()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")
@pytest.mark.timeout(300)
def test_fleet_up_draws_on_the_terminal_and_stderr_stays_readable(tmp_path):
    """`fleet up 2>file`: the dashboard is on the screen, the file holds plain lines, not the screen."""
    port = free_port()
    err = tmp_path / "err.txt"
    term = Tmux(f"fleet-up-{port}", f"cd {tmp_path} && {FLEET} up -n 3 --port {port} 2>{err}")
    try:
        term.wait("3 devices: 3 online", "sim-00003", "Filter (/):", timeout=120)
        term.keys("q")
        assert wait_for(lambda: not term.alive(), timeout=60), term.screen()
    finally:
        term.kill()
    text = err.read_text()
    assert "\x1b" not in text, text[:400]
    lines = text.splitlines()
    assert lines[0] == "logs go to fleet.db.log" and lines[-1] == "stopped", text
