"""Fault 2: the broker restarts mid-stream and forgets everything (amqtt keeps nothing; Mosquitto runs
without persistence). Nothing is lost because devices keep what the watermark does not cover and
send it again after the reconnect, or when no watermark covers it in time."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from reliability_harness import finish, provision_fleet, sim_settings, stored_count
from support import MOSQUITTO, start_mosquitto, wait_progress

from broker.background import BackgroundBroker
from broker.config import BrokerSettings
from broker.server import free_port
from device_sim.background import BackgroundFleet

DEVICES = 20
DOWN_S = 1.5
"""Long enough for paho's reconnect back-off to let devices in before the hub: what they send first goes nowhere."""


@pytest.mark.timeout(900)  # waits scale with the machine's load (wait_progress); this bounds the whole run
def test_embedded_broker_restart_loses_nothing(tmp_path: Path, db_path: Path, start_hub) -> None:  # type: ignore[no-untyped-def]
    settings = BrokerSettings(port=free_port(), db=db_path)
    broker = BackgroundBroker(settings).start()
    ledger = tmp_path / "ledger.db"
    try:
        start_hub(settings.port)
        sim = BackgroundFleet(sim_settings(settings.port, DEVICES, ledger), provision_fleet(db_path, DEVICES)).start()
        try:
            assert wait_progress(lambda: stored_count(db_path), DEVICES * 20) >= DEVICES * 20
            for _ in range(2):
                broker.stop()
                time.sleep(DOWN_S)
                broker = BackgroundBroker(settings).start()  # same port, same registry; no sessions, no retained
                before = stored_count(db_path)
                # the fleet is back and the hub stores again: fail only when storing stops (not when it is slow)
                assert wait_progress(lambda: stored_count(db_path), before + DEVICES * 10) >= before + DEVICES * 10
        finally:
            result, summary = finish(sim, ledger, db_path, time.time())
    finally:
        broker.stop()
    print(f"embedded broker restart: {result.line()} reconnects={summary.reconnects} resent={summary.resent}")
    assert result.ok and result.covered > DEVICES * 40, result.line()
    assert summary.reconnects >= DEVICES * 2
    assert result.overflow_dropped == 0, result.line()  # a buffer may overflow on a slow machine: nothing given up


@pytest.mark.timeout(900)
def test_mosquitto_restart_loses_nothing(tmp_path: Path, db_path: Path, registry, start_hub) -> None:  # type: ignore[no-untyped-def]
    mosq = start_mosquitto(tmp_path)
    ledger = tmp_path / "ledger.db"
    procs: list[subprocess.Popen[bytes]] = [mosq.proc]
    try:
        start_hub(mosq.port)
        sim = BackgroundFleet(sim_settings(mosq.port, DEVICES, ledger), provision_fleet(db_path, DEVICES)).start()
        try:
            assert wait_progress(lambda: stored_count(db_path), DEVICES * 20) >= DEVICES * 20
            for _ in range(2):
                procs[-1].send_signal(signal.SIGKILL)
                procs[-1].wait(5)
                time.sleep(DOWN_S)
                assert MOSQUITTO is not None
                procs.append(subprocess.Popen([MOSQUITTO, "-c", str(mosq.conf)], stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
                before = stored_count(db_path)
                # the fleet is back and the hub stores again: fail only when storing stops (not when it is slow)
                assert wait_progress(lambda: stored_count(db_path), before + DEVICES * 10) >= before + DEVICES * 10
        finally:
            result, summary = finish(sim, ledger, db_path, time.time())
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(5)
    print(f"mosquitto restart: {result.line()} reconnects={summary.reconnects} resent={summary.resent}")
    assert result.ok and result.covered > DEVICES * 40, result.line()
    assert summary.reconnects >= DEVICES * 2
    assert result.overflow_dropped == 0, result.line()  # a buffer may overflow on a slow machine: nothing given up
