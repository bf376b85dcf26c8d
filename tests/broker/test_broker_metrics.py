"""The broker's counters on Prometheus, and `fleet broker` settings from flags, FLEET_BROKER_* and TOML."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from raw_mqtt import raw_connect

from broker.background import BackgroundBroker
from broker.config import BrokerSettings
from broker.registry import Registry
from broker.server import free_port
from support import add_device, connect, end_process, port_open, wait_for


def scrape(port: int) -> dict[str, float]:
    """The samples of http://127.0.0.1:port/metrics (empty while it does not answer)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except (urllib.error.URLError, ConnectionError):
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_logins_refusals_and_connections_are_exported(db_path: Path, registry: Registry) -> None:
    metrics_port = free_port()
    with BackgroundBroker(BrokerSettings(port=0, db=db_path, metrics_port=metrics_port)) as broker:
        dev = connect(broker.port, add_device(registry, "m-1"))
        sock, rc = raw_connect(broker.port, "m-1x", username="m-1x", password="wrong", timeout=10)
        sock.close()
        assert rc == 5
        assert wait_for(lambda: scrape(metrics_port).get("fleet_broker_logins_total") == 1
                        and scrape(metrics_port).get("fleet_broker_connections") == 1
                        and scrape(metrics_port).get("fleet_broker_logins_refused_total") == 1), scrape(metrics_port)
        dev.disconnect()
        dev.loop_stop()
        assert wait_for(lambda: scrape(metrics_port).get("fleet_broker_connections") == 0), scrape(metrics_port)
        assert "fleet_broker_denials_total" in scrape(metrics_port)
        assert "fleet_broker_quota_waits_total" in scrape(metrics_port)
    assert scrape(metrics_port) == {}  # the endpoint closes with the broker


def test_fleet_broker_takes_flags_over_env_over_toml(tmp_path: Path, registry: Registry, db_path: Path) -> None:
    """TOML sets login-free-failures 50, FLEET_BROKER_LOGIN_FREE_FAILURES=1 wins over it (a second wrong
    login is throttled); FLEET_BROKER_METRICS_PORT names one port, --metrics-port another, and the flag wins."""
    port, flag_metrics, env_metrics = free_port(), free_port(), free_port()
    add_device(registry, "victim")
    toml = tmp_path / "fleet.toml"
    toml.write_text("[broker]\nlogin-free-failures = 50\nlog-summary-s = 1.0\n")
    env = {**os.environ, "FLEET_CONFIG": str(toml), "FLEET_BROKER_LOGIN_FREE_FAILURES": "1",
           "FLEET_BROKER_METRICS_PORT": str(env_metrics)}
    proc = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "--db", str(db_path),
                             "broker", "--port", str(port), "--metrics-port", str(flag_metrics)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: port_open(port) and bool(scrape(flag_metrics)), timeout=30), \
            proc.stderr.read().decode() if proc.poll() is not None and proc.stderr else "broker not up"
        assert not port_open(env_metrics)
        # a refused login is answered after its back-off, so one guesser in sequence never meets one:
        # guesses at the same time do (one id is checked at a time), but only when the free failures are 1
        def guess(_: int) -> int:
            sock, rc = raw_connect(port, "victim", username="victim", password="wrong", timeout=15)
            sock.close()
            return rc
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(guess, range(4))) == [5] * 4
        assert wait_for(lambda: scrape(flag_metrics).get("fleet_broker_logins_throttled_total", 0) >= 1), \
            scrape(flag_metrics)
    finally:
        end_process(proc, 15)


def test_every_broker_setting_has_a_flag() -> None:
    """Each BrokerSettings field (each field of the device quota) is a `fleet broker` option; the database is
    the global --db."""
    from broker.quota import Quota
    from cli.broker_cmd import run_command

    options = {p.name for p in run_command.params}
    wanted = {f for f in BrokerSettings.model_fields if f not in ("db", "device_quota")}
    wanted |= {f"device_{f}" for f in Quota.model_fields}
    assert wanted - options == set()
