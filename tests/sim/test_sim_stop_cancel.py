"""A cancel that lands as an answer arrives ends the device's wait, and the fleet's stop never hangs on one device.

Regression for a disconnect-storm test whose ``BackgroundFleet.stop()`` timed out on a busy
machine: on Python 3.11, ``asyncio.wait_for`` returns the result and drops a cancel delivered
in the same loop pass as that result. A device cancelled just as its SUBACK came in kept running
its loop, and ``Fleet.stop()`` waited for it forever.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sim_helpers import HubSubscriber, provision_fleet, settings_for
from support import wait_for

from broker.background import BackgroundBroker
from device_sim.background import BackgroundFleet
from device_sim.device import SimDevice
from device_sim.mqtt import MqttClient
from protocol import MessageClass, StatusState, decode_status


def test_a_cancel_delivered_with_the_suback_is_not_lost(db_path: Path, embedded_broker: BackgroundBroker) -> None:
    creds = provision_fleet(db_path, 1)
    dev, cred = next(iter(creds.devices.items()))

    async def scenario() -> str:
        client = MqttClient()
        await client.connect("127.0.0.1", embedded_broker.port, dev, username=dev, password=cred.secret)
        try:
            task = asyncio.create_task(client.subscribe([(f"d/{dev}/c", 1)], timeout=30))
            while not client._suback:  # the SUBSCRIBE is written, its answer awaited
                await asyncio.sleep(0)
            # the race, made certain: the answer and the cancel in one loop pass
            next(iter(client._suback.values())).set_result([1])
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return "cancelled"
            return "cancel lost: subscribe returned"
        finally:
            client.disconnect()

    assert asyncio.run(scenario()) == "cancelled"


def test_stop_cancels_again_a_device_that_ignored_the_first_cancel(
        db_path: Path, embedded_broker: BackgroundBroker, hub: HubSubscriber,
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_run = SimDevice.run
    swallowed: list[str] = []

    async def run_dropping_one_cancel(self: SimDevice) -> None:
        try:
            await real_run(self)
        except asyncio.CancelledError:
            if self.index == 0 and not swallowed:  # what a lost cancel looks like: the device goes on
                swallowed.append(self.device_id)
                await real_run(self)
            raise

    monkeypatch.setattr(SimDevice, "run", run_dropping_one_cancel)
    sim = BackgroundFleet(settings_for(embedded_broker.port, 3, rate=1.0), provision_fleet(db_path, 3)).start()
    assert wait_for(lambda: len(hub.devices(MessageClass.STATUS)) == 3, 30)
    summary = sim.stop()  # raises TimeoutError if the straggler is never cancelled again
    assert swallowed, "the first cancel reached no device: the test did not make its straggler"
    assert summary.devices == 3

    def last_status(dev: str) -> StatusState | None:
        seen = hub.of(MessageClass.STATUS, dev)
        return decode_status(seen[-1].payload).state if seen else None

    assert wait_for(lambda: all(last_status(d) is StatusState.OFFLINE for d in sim.fleet.ids()), 15)  # type: ignore[union-attr]


def test_no_asyncio_wait_for_in_the_code() -> None:
    """The rule that keeps the bug out: waits with a deadline use ``asyncio.timeout``."""
    root = Path(__file__).resolve().parents[2]
    files = [p for top in ("broker", "hub", "cli", "device_sim", "protocol", "bench") for p in (root / top).rglob("*.py")]
    assert len(files) > 50
    offenders = [f"{p.relative_to(root)}:{n}" for p in files
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if "asyncio.wait_for(" in line and not line.lstrip().startswith("#")]
    assert not offenders, offenders
