"""Commands on d/<id>/c: acknowledge, execute, reply; each command id at most once."""

from __future__ import annotations

from pathlib import Path

from sim_helpers import HubSubscriber, command, provision_fleet, settings_for
from support import wait_for

from broker.background import BackgroundBroker
from device_sim.background import BackgroundFleet
from protocol import (
    CommandReply,
    CommandState,
    MessageClass,
    decode_command_reply,
    decode_status,
    decode_telemetry,
)

DEV = "sim-00001"


def replies(hub: HubSubscriber, cmd_id: str) -> list[CommandReply]:
    out = [decode_command_reply(s.payload) for s in hub.of(MessageClass.REPLY, DEV)]
    return [r for r in out if r.id == cmd_id]


def final(hub: HubSubscriber, cmd_id: str) -> CommandReply | None:
    done = [r for r in replies(hub, cmd_id) if r.state is not CommandState.RECEIVED]
    return done[-1] if done else None


def test_commands_are_acknowledged_executed_and_answered(db_path: Path, embedded_broker: BackgroundBroker,
                                                         hub: HubSubscriber) -> None:
    sim = BackgroundFleet(settings_for(embedded_broker.port, 1, rate=5.0, profile="env"), provision_fleet(db_path, 1)).start()
    try:
        assert wait_for(lambda: hub.of(MessageClass.TELEMETRY, DEV), timeout=10)
        hub.command(DEV, command("c-ping", "ping"))
        hub.command(DEV, command("c-unknown", "self_destruct"))
        hub.command(DEV, command("c-expired", "ping", ttl_s=-5))
        hub.command(DEV, command("c-interval", "set_interval", seconds=0.05))
        hub.command(DEV, command("c-bad-interval", "set_interval", seconds="soon"))
        hub.command(DEV, command("c-config", "set_config", encoding="cbor", batch=4))
        hub.command(DEV, command("c-bad-config", "set_config", colour="red"))
        ids = ["c-ping", "c-unknown", "c-expired", "c-interval", "c-bad-interval", "c-config", "c-bad-config"]
        assert wait_for(lambda: all(final(hub, i) for i in ids), timeout=10)
        for cmd_id in ids:
            assert replies(hub, cmd_id)[0].state is CommandState.RECEIVED
        assert final(hub, "c-ping").state is CommandState.SUCCEEDED  # type: ignore[union-attr]
        assert final(hub, "c-unknown").state is CommandState.REJECTED  # type: ignore[union-attr]
        expired = final(hub, "c-expired")
        assert expired is not None and expired.state is CommandState.REJECTED and expired.detail == "expired"
        assert final(hub, "c-interval").state is CommandState.SUCCEEDED  # type: ignore[union-attr]
        assert final(hub, "c-bad-interval").state is CommandState.REJECTED  # type: ignore[union-attr]  # bad args: not tried
        assert final(hub, "c-config").state is CommandState.SUCCEEDED  # type: ignore[union-attr]
        assert final(hub, "c-bad-config").state is CommandState.REJECTED  # type: ignore[union-attr]

        # set_config took effect: telemetry now arrives in CBOR with 4 samples (12 env readings) per message
        def cbor_batches() -> list[int]:
            out = []
            for s in hub.of(MessageClass.TELEMETRY, DEV):
                if s.payload[:1] != b"{":
                    out.append(len(decode_telemetry(s.payload).readings))
            return out

        assert wait_for(lambda: len(cbor_batches()) >= 2, timeout=10)
        assert set(cbor_batches()) <= {12}

        # reboot: new boot, seq restarts at 1, a new birth
        boot_before = decode_status(hub.of(MessageClass.STATUS, DEV)[-1].payload).boot
        hub.command(DEV, command("c-reboot", "reboot"))
        assert wait_for(lambda: final(hub, "c-reboot"), timeout=10)

        def new_boot_seqs() -> list[int]:
            return [t.seq for t in (decode_telemetry(s.payload) for s in hub.of(MessageClass.TELEMETRY, DEV))
                    if t.boot == boot_before + 1]

        assert wait_for(lambda: len(new_boot_seqs()) >= 2, timeout=10)
        assert new_boot_seqs()[:2] == [1, 2]
        births = [decode_status(s.payload) for s in hub.of(MessageClass.STATUS, DEV)]
        assert any(b.boot == boot_before + 1 and b.state.value == "online" for b in births)
    finally:
        summary = sim.stop()
    assert summary.commands["received"] == 8


def test_a_command_id_delivered_twice_executes_once(db_path: Path, embedded_broker: BackgroundBroker,
                                                    hub: HubSubscriber) -> None:
    sim = BackgroundFleet(settings_for(embedded_broker.port, 1, rate=5.0), provision_fleet(db_path, 1)).start()
    try:
        assert wait_for(lambda: hub.of(MessageClass.TELEMETRY, DEV), timeout=10)
        boot0 = decode_status(hub.of(MessageClass.STATUS, DEV)[-1].payload).boot
        hub.command(DEV, command("same-id", "reboot"))
        assert wait_for(lambda: any(decode_status(s.payload).boot == boot0 + 1
                                    for s in hub.of(MessageClass.STATUS, DEV)), timeout=10)
        assert wait_for(lambda: sim.summary().connected_peak >= 1 and sim.summary().connects == 2, timeout=10)
        hub.command(DEV, command("same-id", "reboot"))  # a retry of the same command
        assert wait_for(lambda: sim.summary().commands.get("duplicate") == 1, timeout=10)
        # the repeated delivery is answered with the stored result, not executed again
        assert wait_for(lambda: [r.state for r in replies(hub, "same-id")] ==
                        [CommandState.RECEIVED, CommandState.SUCCEEDED, CommandState.SUCCEEDED], timeout=5)
        # marker, not a sleep: a later command is answered on the same boot, so nothing rebooted in between
        hub.command(DEV, command("marker", "ping"))
        assert wait_for(lambda: final(hub, "marker"), timeout=30)
        assert final(hub, "marker").state is CommandState.SUCCEEDED  # type: ignore[union-attr]
        assert not any(decode_status(s.payload).boot == boot0 + 2 for s in hub.of(MessageClass.STATUS, DEV))
    finally:
        summary = sim.stop()
    # the device's own count, final once it stopped: the reboot ran once, the repeat was only answered
    assert summary.commands == {"received": 2, "succeeded": 2, "duplicate": 1}
    assert summary.connects == 2
