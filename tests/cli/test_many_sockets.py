"""``fleet up`` with more than a thousand sockets open in its process.

``fleet up`` runs broker, hub and simulated devices in one process: each simulated device holds two
sockets there (its own and the broker's end), so 600 devices put every later socket above number 1023.
paho's ``select()`` cannot wait on such a socket, and the hub's sessions and the dashboard's command
sender never heard CONNACK. Each test runs in a child process (the descriptors and the raised limit stay
there) that first holds 1,100 descriptors open, in place of the devices' sockets, then starts the same
``Stack`` ``fleet up`` starts and reports what worked as one JSON line.
"""

from __future__ import annotations

import ast
import json
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support import end_process

HELD = 1100
ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import json, os, resource, sqlite3, sys, time
    from pathlib import Path

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(int(sys.argv[2]))]

    from broker.server import free_port
    from cli.dashboard.sender import local_sender
    from cli.stack import Stack
    from device_sim.fleet import device_id

    db = Path(sys.argv[1])
    stack = Stack(db, port=free_port(), devices=2, rate=5.0)
    stack.provision()
    stack.start()
    out = {"ingest_fd": stack.hub.ingest.client.socket().fileno()}
    try:
        deadline = time.monotonic() + 60
        stored = 0
        while time.monotonic() < deadline:
            conn = sqlite3.connect(db)
            try:
                stored = conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            finally:
                conn.close()
            if stored >= 5:
                break
            time.sleep(0.1)
        out["readings_stored"] = stored
        outcome = local_sender(db, stack.broker_url).send(device_id("sim", 1), "ping", {})
        out["command_id"] = outcome.command_id
        out["error"] = outcome.error
    finally:
        stack.stop()
    print(json.dumps(out))
""")


def test_hub_and_dashboard_sender_work_with_sockets_above_1023(tmp_path: Path) -> None:
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < HELD + 200:
        pytest.skip("the hard limit on open files is too low to hold 1,100 descriptors")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "fleet.db"), str(HELD)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        end_process(proc)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["ingest_fd"] > 1023  # the case this is about: the hub's socket above select()'s range
    assert report["readings_stored"] >= 5  # the ingest session connected, subscribed and stored
    assert report["command_id"], report["error"]  # the dashboard's sender reached the hub and got an answer


def test_every_paho_session_of_ours_waits_with_poll() -> None:
    """A paho ``Client`` made anywhere in our code but hub/transport.py would bring ``select()`` back."""
    made = []
    for top in ("broker", "hub", "cli", "device_sim", "protocol"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == ROOT / "hub" / "transport.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Client"
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "mqtt"):
                    made.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not made, f"use hub.transport.PollingClient instead of mqtt.Client: {made}"
