"""A device whose link closes while it waits for SUBACK (a firmware apply finishing then) still reboots and comes back.

Regression for the flaky worker-rollout run: the last chunk arrived before ``_connect`` resumed,
the apply sent the offline status and DISCONNECT, and the birth publish on the closed link raised
MqttError out of ``SimDevice.run``: the device's task ended silently (no birth, no goodbye).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sim_helpers import HubSubscriber, provision_fleet, settings_for
from support import wait_for

from broker.background import BackgroundBroker
from device_sim.background import BackgroundFleet
from device_sim.device import SimDevice
from device_sim.mqtt import MqttClient
from protocol import MessageClass, StatusState, decode_status


def test_link_closed_by_an_apply_during_connect_reboots_and_reconnects(
        db_path: Path, embedded_broker: BackgroundBroker, hub: HubSubscriber,
        monkeypatch: pytest.MonkeyPatch) -> None:
    dev = "sim-00001"
    real_connect = SimDevice._connect
    applied: list[int] = []

    async def connect_then_apply(self: SimDevice) -> MqttClient:
        client = await real_connect(self)
        if not applied:
            # what OtaAgent._on_chunk does for the last chunk, landed while _connect awaited SUBACK;
            # waiting for `closed` makes the ordering the race produced (link gone before the birth) certain
            applied.append(self.boot)
            self._reboot_pending = True
            self._goodbye()
            await client.closed
        return client

    monkeypatch.setattr(SimDevice, "_connect", connect_then_apply)
    sim = BackgroundFleet(settings_for(embedded_broker.port, 1, rate=0.5), provision_fleet(db_path, 1)).start()
    try:
        def births() -> list[int]:
            return [st.boot for s in hub.of(MessageClass.STATUS, dev)
                    if (st := decode_status(s.payload)).state is StatusState.ONLINE]

        assert wait_for(lambda: applied and applied[0] + 1 in births(), timeout=30), \
            f"no birth after the reboot: applied at boot {applied}, births {births()}"
    finally:
        summary = sim.stop()
    offline = [decode_status(s.payload) for s in hub.of(MessageClass.STATUS, dev)]
    assert offline[-1].state is StatusState.OFFLINE, "no goodbye when the fleet stopped: the task had died"
    assert summary is not None
