"""Handled conditions leave no tracebacks and no warnings in the logs of a running fleet.

A real `fleet up` (broker, hub, 5 simulated devices) in an empty folder: `fleet send --group sim
reboot` (devices reply, then drop their connection) and a few `fleet status` health checks leave
no traceback, no "Task exception was never retrieved" and no broker warning; after a clean stop
`fleet status` says when the hub stopped instead of "no hub has run".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from broker.server import free_port
from support import wait_for

FLEET = str(Path(sys.executable).with_name("fleet"))


def run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLEET, *args], cwd=folder, capture_output=True, text=True, timeout=120)


def test_reboot_fan_out_and_health_checks_leave_no_traceback_or_warning(tmp_path: Path) -> None:
    port = free_port()
    broker = f"mqtt://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen([FLEET, "up", "--port", str(port), "-n", "5", "--no-dashboard"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=out, env={**os.environ, "FLEET_LOG_LEVEL": "INFO"})
    try:
        def online() -> bool:
            res = run(tmp_path, "status", "--json", "--broker", broker)
            return bool(res.stdout) and json.loads(res.stdout)["devices_online"] == 5

        assert wait_for(online, timeout=90, interval=0.5), log.read_text()[-3000:]
        sent = run(tmp_path, "send", "--group", "sim", "reboot", "--broker", broker)
        rows = json.loads(sent.stdout)  # piped: JSON, not a box table
        assert sent.returncode == 0, sent.stderr
        assert sorted(r["device_id"] for r in rows) == [f"sim-{i:05d}" for i in range(1, 6)]
        assert all(r["state"] == "succeeded" for r in rows)
        for _ in range(3):
            status = run(tmp_path, "status", "--broker", broker)
            assert status.returncode == 0 and "up at 127.0.0.1" in status.stdout, status.stdout
        # marker: the rebooted devices are back online, so everything their drop caused has been logged
        assert wait_for(online, timeout=60, interval=0.5)
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
    text = log.read_text()
    assert "Traceback" not in text and "Task exception was never retrieved" not in text, text[-3000:]
    warnings = [line for line in text.splitlines() if '"level": "WARNING"' in line or '"level": "ERROR"' in line]
    assert warnings == [], "\n".join(warnings[:10])
    after = run(tmp_path, "status", "--broker", broker)
    assert after.returncode == 1 and "hub stopped cleanly at" in after.stdout, after.stdout
