"""The simulator's shared credentials file (<db>.sim-creds.json) is merged, never overwritten.

`fleet up` and a `fleet sim` beside it each keep their own devices in one file; stopping one must
not drop the other's. Two writer processes hammer the file at once: every entry survives and the
file is valid JSON with mode 0600 throughout.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from device_sim.fleet import Credentials, DeviceCreds, credentials_path

WRITER = """
import sys
from pathlib import Path
from device_sim.fleet import Credentials, DeviceCreds
path, prefix, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):
    creds = Credentials(path)          # a fresh reader each time, like a new process would be
    creds.devices[f"{prefix}-{i:05d}"] = DeviceCreds(f"secret-{prefix}-{i}", 1)
    creds.save()
"""


def test_a_stale_writer_keeps_what_another_process_added(tmp_path: Path) -> None:
    path = credentials_path(tmp_path / "fleet.db")
    up = Credentials(path)  # `fleet up` loads the file (empty) and provisions its devices
    up.devices["sim-00001"] = DeviceCreds("s1", 1)
    up.save()
    other = Credentials(path)  # a `fleet sim --prefix lab` beside it adds its own
    other.devices["lab-00001"] = DeviceCreds("l1", 1)
    other.save()
    up.devices["sim-00001"].boot = 2  # `fleet up` stops: it saves its boot counters from its old view
    up.save()
    data = json.loads(path.read_text())["devices"]
    assert data == {"sim-00001": {"secret": "s1", "boot": 2}, "lab-00001": {"secret": "l1", "boot": 1}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_writer_never_undoes_a_newer_secret_it_did_not_change(tmp_path: Path) -> None:
    path = credentials_path(tmp_path / "fleet.db")
    first = Credentials(path)
    first.devices["sim-00001"] = DeviceCreds("old", 3)
    first.save()
    second = Credentials(path)
    second.devices["sim-00001"] = DeviceCreds("new", 0)  # re-provisioned elsewhere (a new secret)
    second.save()
    first.devices["sim-00002"] = DeviceCreds("two", 1)  # first saves again, untouched sim-00001 in memory
    first.save()
    data = json.loads(path.read_text())["devices"]
    assert data["sim-00001"] == {"secret": "new", "boot": 0} and data["sim-00002"]["secret"] == "two"
    assert first.devices["sim-00001"].secret == "new"  # and its memory caught up


def test_two_writer_processes_at_once_lose_nothing(tmp_path: Path) -> None:
    path = credentials_path(tmp_path / "fleet.db")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), prefix, "40"], env=env)
             for prefix in ("up", "sim")]
    assert [p.wait(120) for p in procs] == [0, 0]
    data = json.loads(path.read_text())["devices"]
    assert set(data) == {f"{p}-{i:05d}" for p in ("up", "sim") for i in range(40)}
    assert all(v["secret"] == f"secret-{k.split('-')[0]}-{int(k.split('-')[1])}" for k, v in data.items())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("*.tmp"))
