"""The command state machine against a real SQLite file, driven with an explicit clock.

The MQTT side is a list that records what the bridge publishes; end-to-end delivery over a
real broker is covered in test_commands_e2e.py.
"""

from __future__ import annotations

import pytest

from hub.storage import CommandStore
from protocol.models import CommandState
from hub.commands import CommandBridge, CommandError, CommandSettings
from protocol import CommandReply, MessageClass, decode

T0 = 1_800_000_000.0


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []

    def __call__(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.sent.append((topic, payload, qos, retain))

    def commands(self, device_id: str) -> list:
        return [decode(MessageClass.COMMAND, p) for t, p, _, _ in self.sent if t == f"d/{device_id}/c"]


@pytest.fixture
def bridge(tmp_path):
    pub = Recorder()
    b = CommandBridge(CommandStore(str(tmp_path / "fleet.db")), pub, known_device=lambda d: d.startswith("dev"),
                      settings=CommandSettings(ack_timeout_s=5, max_attempts=3, backoff=2, result_timeout_s=30))
    b.pub = pub  # type: ignore[attr-defined]
    return b


def test_round_trip_online_device(bridge):
    bridge.on_presence("dev-1", True, "cbor", now=T0)
    rec = bridge.submit("dev-1", "ping", ttl_s=60, now=T0)
    [cmd] = bridge.pub.commands("dev-1")
    assert cmd.id == rec.id and cmd.name == "ping" and cmd.expires == int((T0 + 60) * 1000)
    assert bridge.pub.sent[0][1][:1] != b"{"  # the device asked for CBOR in its birth
    bridge.on_reply("dev-1", CommandReply(id=rec.id, state="received"), now=T0 + 0.1)
    bridge.on_reply("dev-1", CommandReply(id=rec.id, state="succeeded", result={"pong": 1}), now=T0 + 0.2)
    stored = bridge.store.get(rec.id)
    assert stored.state is CommandState.SUCCEEDED and stored.result == {"pong": 1}
    assert [h["state"] for h in bridge.store.history(rec.id)] == ["queued", "sent", "delivered", "succeeded"]


def test_unknown_device_is_refused_before_anything_is_stored(bridge):
    with pytest.raises(CommandError, match="unknown device 'nope'"):
        bridge.submit("nope", "ping")
    assert bridge.store.list() == []


def test_offline_device_gets_command_on_birth_and_expiry_wins_after_ttl(bridge):
    early = bridge.submit("dev-2", "reboot", ttl_s=60, now=T0)
    late = bridge.submit("dev-3", "reboot", ttl_s=10, now=T0)
    bridge.tick(now=T0 + 5)
    assert bridge.pub.sent == [] and bridge.store.get(early.id).state is CommandState.QUEUED
    bridge.on_presence("dev-2", True, now=T0 + 20)
    assert [c.id for c in bridge.pub.commands("dev-2")] == [early.id]
    bridge.tick(now=T0 + 11)
    assert bridge.store.get(late.id).state is CommandState.EXPIRED
    bridge.on_presence("dev-3", True, now=T0 + 12)
    assert bridge.pub.commands("dev-3") == []  # an expired command is never sent


def test_unacknowledged_send_is_retried_with_same_id_then_times_out(bridge):
    bridge.on_presence("dev-4", True, now=T0)
    rec = bridge.submit("dev-4", "ping", ttl_s=3600, now=T0)
    bridge.tick(now=T0 + 4.9)
    assert len(bridge.pub.commands("dev-4")) == 1
    bridge.tick(now=T0 + 5.0)  # ack timeout 5 s
    bridge.tick(now=T0 + 5.0 + 10.0)  # then backoff doubles: 10 s
    ids = [c.id for c in bridge.pub.commands("dev-4")]
    assert ids == [rec.id] * 3
    bridge.tick(now=T0 + 5.0 + 10.0 + 20.0)
    assert bridge.store.get(rec.id).state is CommandState.TIMED_OUT


def test_rejected_failed_and_device_side_expiry(bridge):
    bridge.on_presence("dev-5", True, now=T0)
    a = bridge.submit("dev-5", "frobnicate", now=T0)
    b = bridge.submit("dev-5", "set_interval", {"seconds": -1}, now=T0)
    c = bridge.submit("dev-5", "ping", now=T0)
    bridge.on_reply("dev-5", CommandReply(id=a.id, state="rejected", detail="unknown command"), now=T0 + 1)
    bridge.on_reply("dev-5", CommandReply(id=b.id, state="failed", detail="seconds must be > 0"), now=T0 + 1)
    bridge.on_reply("dev-5", CommandReply(id=c.id, state="rejected", detail="expired"), now=T0 + 1)
    assert bridge.store.get(a.id).state is CommandState.REJECTED
    assert bridge.store.get(b.id).state is CommandState.FAILED
    assert bridge.store.get(b.id).detail == "seconds must be > 0"
    assert bridge.store.get(c.id).state is CommandState.EXPIRED


def test_reply_from_another_device_is_ignored(bridge):
    bridge.on_presence("dev-6", True, now=T0)
    rec = bridge.submit("dev-6", "reboot", now=T0)
    assert bridge.on_reply("dev-7", CommandReply(id=rec.id, state="succeeded"), now=T0 + 1) is None
    assert bridge.counters["forged_replies"] == 1
    assert bridge.store.get(rec.id).state is CommandState.SENT


def test_restart_resumes_commands_in_flight(bridge, tmp_path):
    bridge.on_presence("dev-8", True, now=T0)
    rec = bridge.submit("dev-8", "ping", ttl_s=600, now=T0)
    pub = Recorder()
    again = CommandBridge(CommandStore(str(tmp_path / "fleet.db")), pub, known_device=lambda d: True)
    again.load()
    assert rec.id in again.active
    again.on_presence("dev-8", True, now=T0 + 1)
    assert [c.id for c in pub.commands("dev-8")] == [rec.id]


def test_final_state_is_not_overwritten_by_late_replies(bridge):
    bridge.on_presence("dev-9", True, now=T0)
    rec = bridge.submit("dev-9", "ping", now=T0)
    bridge.on_reply("dev-9", CommandReply(id=rec.id, state="succeeded"), now=T0 + 1)
    bridge.on_reply("dev-9", CommandReply(id=rec.id, state="failed"), now=T0 + 2)
    bridge.on_reply("dev-9", CommandReply(id=rec.id, state="received"), now=T0 + 3)
    assert bridge.store.get(rec.id).state is CommandState.SUCCEEDED
    assert [h["state"] for h in bridge.store.history(rec.id)][-1] == "succeeded"
