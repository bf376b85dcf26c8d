"""One device cannot starve the fleet: per-device quotas enforced as backpressure on its own socket.

The flooders here are raw sockets that write PUBLISHes as fast as the kernel takes them and never
wait for a PUBACK (paho would pace itself). The goal test runs the real hub in-process and
measures, for well-behaved devices, the time from a publish to the hub's watermark covering it.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho_helpers import Inbox, close, subscribe
from raw_mqtt import ack_packet, connect_packet, parse_publish, publish_packet, raw_session, read_packet, subscribe_packet

import broker.inflight

from broker.background import BackgroundBroker
from broker.config import BrokerSettings
from broker.quota import Quota
from broker.registry import Registry, Role
from broker.server import free_port
from protocol.codec import decode, encode
from protocol.models import Reading, Telemetry, Watermark
from protocol.topics import MessageClass
from support import Creds, add_device, connect, load_factor, wait_for


def _on_loop(fn):  # type: ignore[no-untyped-def]
    async def run():  # type: ignore[no-untyped-def]
        return fn()
    return run


def counters(broker: BackgroundBroker) -> dict[str, float]:
    return broker.call(_on_loop(broker.broker.counters))  # type: ignore[union-attr]


def telemetry(seq: int) -> bytes:
    return encode(Telemetry(boot=1, seq=seq, ts=int(time.time() * 1000), readings=[Reading(metric="temperature",
                                                                                             value=20.0)]))


class Flooder:
    """A raw-socket device writing QoS 1 (or 2, with its PUBREL) PUBLISHes back to back, never waiting."""

    def __init__(self, port: int, creds: Creds, qos: int = 1) -> None:
        self.sock, _, rc = raw_session(port, creds.username, username=creds.username, password=creds.password)
        assert rc == 0
        self.sock.settimeout(None)
        self.topic = f"d/{creds.username}/t"
        self.qos = qos
        self.sent = 0
        self.closed_by_broker = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, daemon=True),
                         threading.Thread(target=self._drain, daemon=True)]

    def start(self) -> Flooder:
        for t in self._threads:
            t.start()
        return self

    def _chunk(self, first_seq: int, n: int = 100) -> bytes:
        out = bytearray()
        for seq in range(first_seq, first_seq + n):
            packet_id = seq % 65535 + 1
            out += publish_packet(self.topic, telemetry(seq), qos=self.qos, packet_id=packet_id)
            if self.qos == 2:
                out += ack_packet("pubrel", packet_id)
        return bytes(out)

    def _write(self) -> None:
        seq = 1
        try:
            while not self._stop.is_set():
                self.sock.sendall(self._chunk(seq))
                seq += 100
                self.sent = seq - 1
        except OSError:
            self.closed_by_broker.set()

    def _drain(self) -> None:
        """Read (and discard) the PUBACKs, so the broker never blocks writing to us; notice the close."""
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([self.sock], [], [], 0.5)  # the socket stays blocking for sendall
                if readable and not self.sock.recv(65536):
                    self.closed_by_broker.set()
                    return
            except (OSError, ValueError):
                self.closed_by_broker.set()
                return

    def stop(self) -> None:
        self._stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for t in self._threads:
            t.join(5)


class LagProbe:
    """A well-behaved device: telemetry every ``period_s``; lag = publish until the hub's watermark covers it."""

    def __init__(self, port: int, creds: Creds, period_s: float = 0.5) -> None:
        self.device_id = creds.username
        self.period_s = period_s
        self.sent_at: dict[int, float] = {}
        self.lags: list[float] = []
        self.covered = 0
        self._lock = threading.Lock()
        self.client = connect(port, creds)
        self.client.on_message = self._on_watermark
        assert subscribe(self.client, f"d/{self.device_id}/w") == 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_watermark(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        mark = decode(MessageClass.WATERMARK, msg.payload)
        assert isinstance(mark, Watermark)
        now = time.monotonic()
        with self._lock:
            for seq in range(self.covered + 1, mark.seq + 1):
                sent = self.sent_at.get(seq)
                if sent is not None:
                    self.lags.append(now - sent)
            self.covered = max(self.covered, mark.seq)

    def start(self) -> LagProbe:
        self._thread.start()
        return self

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            with self._lock:
                self.sent_at[seq] = time.monotonic()
            self.client.publish(f"d/{self.device_id}/t", telemetry(seq), qos=1)
            self._stop.wait(self.period_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def pending_lag(self) -> float:
        """Age of the oldest message the watermark does not cover yet (0 when all are covered)."""
        with self._lock:
            waiting = [t for s, t in self.sent_at.items() if s > self.covered]
        return time.monotonic() - min(waiting) if waiting else 0.0

    def all_covered(self) -> bool:
        with self._lock:
            return self.covered >= len(self.sent_at)


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@pytest.fixture
def quota_broker(db_path, registry) -> Iterator[BackgroundBroker]:  # type: ignore[no-untyped-def]
    """An embedded broker with a small, quick device quota (so the tests see it act within seconds)."""
    settings = BrokerSettings(port=free_port(), db=db_path, log_summary_s=60,
                              device_quota=Quota(msgs_per_s=50, burst_msgs=50, bytes_per_s=64 * 1024,
                                                 burst_bytes=64 * 1024, hard_limit_s=60))
    with BackgroundBroker(settings) as broker:
        yield broker


def test_flooding_device_is_held_to_its_quota_while_others_keep_their_round_trip(quota_broker, registry, caplog):
    port = quota_broker.port
    caplog.set_level(logging.INFO, logger="fleet.broker.guard")
    hub = connect(port, add_device(registry, "hub", Role.HUB))
    inbox = Inbox().attach(hub)
    assert subscribe(hub, "d/+/t") == 1
    steady = connect(port, add_device(registry, "steady"))
    flood_creds = add_device(registry, "flood")
    logged_in = time.monotonic()  # the flooder's buckets start full at its login
    flooder = Flooder(port, flood_creds).start()
    began = time.monotonic()
    round_trips = []
    while time.monotonic() - began < 4.0:
        t0 = time.monotonic()
        marker = f"rt-{len(round_trips)}".encode()
        steady.publish("d/steady/t", marker, qos=1)
        assert wait_for(lambda m=marker: m in inbox.payloads("d/steady/t"), timeout=5)
        round_trips.append(time.monotonic() - t0)
    elapsed = time.monotonic() - logged_in
    routed = len(inbox.payloads("d/flood/t"))
    flooder.stop()
    print(f"quota: flooder wrote {flooder.sent} PUBLISHes, {routed} routed in {elapsed:.1f} s; "
          f"steady round trip max {max(round_trips) * 1000:.0f} ms over {len(round_trips)}")
    assert flooder.sent > 5 * routed, "the flooder was not held back (or could not write)"
    assert routed <= 50 + 50 * elapsed + 10, f"{routed} routed in {elapsed:.1f} s: over the quota of 50/s + burst 50"
    # 1 s on a quiet machine (an unthrottled flood stalled everyone for seconds); scaled by the load of
    # this shared machine (1.14 s was seen at load 22 on 2 cores)
    assert max(round_trips) < 1.0 * load_factor(), f"steady round trips {round_trips}"
    c = counters(quota_broker)
    assert c["quota_waits"] > 0 and c["quota_disconnects"] == 0
    held = [r for r in caplog.records if "reading held back client_id=flood" in r.getMessage()]
    assert len(held) == 1, "throttling must be logged once per interval, not per packet"
    close(hub, steady)


def test_device_held_back_past_the_hard_limit_is_disconnected(db_path, registry):
    settings = BrokerSettings(port=free_port(), db=db_path)
    creds = add_device(registry, "hog")
    registry.set_quota("hog", msgs_per_s=10, burst_msgs=10, hard_limit_s=1.0)
    with BackgroundBroker(settings) as broker:
        flooder = Flooder(broker.port, creds).start()
        assert flooder.closed_by_broker.wait(10), "a device over its hard limit stayed connected"
        flooder.stop()
        assert counters(broker)["quota_disconnects"] == 1, counters(broker)


def test_quota_comes_from_the_registry_per_device_then_role_then_default(registry: Registry) -> None:
    from broker.quota import QuotaBook

    registry.add("slow")
    registry.add("fast")
    registry.set_quota("role:device", msgs_per_s=5)
    registry.set_quota("fast", msgs_per_s=0, bytes_per_s=0)  # unlimited
    book = QuotaBook({None: Quota(), Role.DEVICE: Quota(), Role.HUB: Quota(msgs_per_s=0, bytes_per_s=0)},
                     registry.quota_override)
    assert book.quota_of("slow", Role.DEVICE).msgs_per_s == 5
    assert book.quota_of("slow", Role.DEVICE).bytes_per_s == Quota().bytes_per_s
    assert book.for_login("fast", Role.DEVICE) is None
    assert book.for_login("hub", Role.HUB) is None
    slow = book.for_login("slow", Role.DEVICE)
    assert slow is not None and book.for_login("slow", Role.DEVICE) is slow, "buckets must survive a reconnect"


def test_qos2_messages_awaiting_pubrel_are_bounded_per_client(embedded_broker, registry):
    creds = add_device(registry, "q2flood")
    sock, _, rc = raw_session(embedded_broker.port, "q2flood", username="q2flood", password=creds.password)
    assert rc == 0
    limit = embedded_broker.settings.max_inflight_in
    sock.sendall(b"".join(publish_packet("d/q2flood/t", b"x", qos=2, packet_id=i) for i in range(1, limit + 2)))
    sock.settimeout(5)
    closed = False
    try:
        while sock.recv(4096):
            pass
        closed = True
    except ConnectionError:
        closed = True
    except TimeoutError:
        pass
    assert closed, f"{limit + 1} QoS 2 messages without PUBREL did not close the connection"
    assert counters(embedded_broker)["inflight_disconnects"] == 1
    sock.close()


@pytest.mark.parametrize("qos", [1, 2])
def test_one_device_flooding_keeps_every_other_devices_watermark_lag_under_2s(embedded_broker, registry, start_hub,
                                                                             qos):
    """The issue's goal in small: 10 s of unpaced flood (the bench runs 30 s); RSS is reported."""
    port = embedded_broker.port
    hub = start_hub(port)
    probes = [LagProbe(port, add_device(registry, f"honest-{i}")).start() for i in range(3)]
    assert wait_for(lambda: all(p.lags for p in probes), timeout=20), "hub never published a watermark"
    rss_before = rss_mb()
    flooder = Flooder(port, add_device(registry, "flooder"), qos=qos).start()
    rss_peak, worst_pending = rss_before, 0.0
    flood_until = time.monotonic() + 10
    while time.monotonic() < flood_until:
        rss_peak = max(rss_peak, rss_mb())
        worst_pending = max([worst_pending, *(p.pending_lag() for p in probes)])
        time.sleep(0.1)
    flooder.stop()
    for p in probes:
        p.stop()
    assert wait_for(lambda: all(p.all_covered() for p in probes), timeout=15)
    rss_after = rss_mb()
    worst = max(max(p.lags) for p in probes)
    print(f"flood qos{qos}: {flooder.sent} PUBLISHes written in 10 s; other devices' worst watermark lag "
          f"{worst:.2f} s (pending max {worst_pending:.2f} s); test process RSS {rss_before:.0f} -> "
          f"{rss_peak:.0f} (peak) -> {rss_after:.0f} MB; hub stats {hub.stats['messages']} messages")
    # the goal is 2 s on an idle machine; a loaded one (other jobs, make test-stress) slows every client alike
    bound = 2.0 * load_factor()
    assert worst < bound and worst_pending < bound, f"lag bound {bound:.1f} s"
    assert rss_peak - rss_before < 50, "memory grew with the flood"
    for p in probes:
        close(p.client)


def test_hold_ends_only_when_the_sender_pauses_and_a_steady_flood_reaches_the_hard_limit() -> None:
    from broker.quota import ClientQuota

    now = [0.0]
    quota = ClientQuota(Quota(msgs_per_s=10, burst_msgs=10, hard_limit_s=5), clock=lambda: now[0])
    # an honest device re-sending 30 buffered messages, then quiet: held a while, never disconnected
    for _ in range(30):
        now[0] += quota.charge(100) * 1.5  # the reader wakes up late, as on a busy machine
    assert quota.held_since is not None and not quota.over_hard_limit()
    now[0] += 1.0  # quiet for a second: half the burst is back
    assert quota.charge(100) == 0 and quota.held_since is None
    # a flood: every packet waits (late wake-ups let a few slip through), disconnected after 5 s
    flood_began = now[0]
    while not quota.over_hard_limit():
        assert now[0] < 10, "a steady flood never reached the hard limit"
        wait = quota.charge(100)
        now[0] += wait * 1.5 if wait else 0.001
    assert 5.0 <= now[0] - flood_began <= 7.0


def test_a_subscriber_that_stops_reading_holds_up_only_itself(embedded_broker, registry, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """A device that stops reading its socket (a stalled MCU, a dead radio with the TCP link still up)
    while its commands keep coming: the broker's buffer for it backs up and its deliveries wait on the
    socket (``CoalescingWriter.backed_up``), another device's command still arrives, and once the
    stalled device reads again it gets every command in order. Its PUBACK timeouts (every delivery
    times out while it reads nothing) are logged once per interval, not once per message."""
    monkeypatch.setattr(broker.inflight, "PUBACK_TIMEOUT_S", 1.0)  # time out while the test waits
    caplog.set_level(logging.WARNING, logger="fleet.broker")

    stuck_creds = add_device(registry, "stuck")
    hub = connect(embedded_broker.port, add_device(registry, "hub", Role.HUB))
    fine = connect(embedded_broker.port, add_device(registry, "fine"))
    inbox = Inbox().attach(fine)
    assert subscribe(fine, "d/fine/c") == 1
    stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small TCP window
    stuck.settimeout(30 * load_factor())
    stuck.connect(("127.0.0.1", embedded_broker.port))
    stuck.sendall(connect_packet("stuck", username="stuck", password=stuck_creds.password, keepalive=0))
    assert read_packet(stuck)[0] == 2  # CONNACK
    stuck.sendall(subscribe_packet("d/stuck/c", qos=1))
    assert read_packet(stuck)[0] == 9  # SUBACK; from here on it reads nothing

    def backed_up() -> bool:
        async def read() -> bool:
            assert embedded_broker.broker is not None
            handler = embedded_broker.broker.amqtt._sessions["stuck"][1]
            return bool(getattr(handler.writer, "backed_up", False))
        return bool(embedded_broker.call(read))

    n, size = 2000, 4000  # 8 MB: more than loopback's socket buffers take (4 MB send + 4 KB receive)
    for i in range(n):
        hub.publish("d/stuck/c", f"{i:06d}".encode() + b"x" * (size - 6), qos=1)
    assert wait_for(backed_up, 20), "the broker never had to wait for the stalled device's socket"
    hub.publish("d/fine/c", b"marker", qos=1).wait_for_publish(10)
    assert wait_for(lambda: b"marker" in inbox.payloads(), 10), "one stalled subscriber held up another device"
    timeouts = lambda: [r for r in caplog.records if r.getMessage().startswith("no PUBACK client_id=stuck")]  # noqa: E731
    assert wait_for(lambda: timeouts(), 20), "no delivery to the stalled device timed out"

    got: list[int] = []
    while len(got) < n:  # reading again: everything arrives, in order, each acknowledged
        kind, flags, body = read_packet(stuck)
        if kind == 3:
            topic, packet_id, payload = parse_publish(flags, body)
            assert topic == "d/stuck/c" and len(payload) == size
            got.append(int(payload[:6]))
            if packet_id is not None:
                stuck.sendall(ack_packet("puback", packet_id))
    assert got == list(range(n))
    assert len(timeouts()) == 1, [r.getMessage() for r in timeouts()][:5]
    stuck.close()
    close(fine)
    close(hub)


def test_deliveries_past_the_inflight_window_wait_for_acknowledgements(db_path, registry) -> None:  # type: ignore[no-untyped-def]
    """amqtt started every delivery at once (AMQTT_NOTES.md #16): a subscriber that acknowledges nothing
    had all its messages in flight, with packet ids found by a linear scan of those in use (the event
    loop stalled for minutes near 65,535) and none left beyond. With a window of 50, a device that
    reads but does not acknowledge sees exactly 50 QoS 1 commands before a QoS 0 one sent after all of
    them; each PUBACK lets one more through, and every command arrives once, in order."""
    window, n = 50, 600
    settings = BrokerSettings(port=free_port(), db=db_path, max_inflight_out=window)
    with BackgroundBroker(settings) as embedded_broker:
        slow_creds = add_device(registry, "slow")
        hub = connect(embedded_broker.port, add_device(registry, "hub", Role.HUB))
        slow = socket.create_connection(("127.0.0.1", embedded_broker.port), timeout=30 * load_factor())
        slow.sendall(connect_packet("slow", username="slow", password=slow_creds.password, keepalive=0))
        assert read_packet(slow)[0] == 2  # CONNACK
        slow.sendall(subscribe_packet("d/slow/c", qos=1))
        assert read_packet(slow)[0] == 9  # SUBACK
        with slow:
            sent = [hub.publish("d/slow/c", f"{i:06d}".encode(), qos=1) for i in range(n)]
            for info in sent:  # all routed before the marker is published (paho sends QoS 0 ahead of queued QoS 1)
                info.wait_for_publish(10 * load_factor())
            hub.publish("d/slow/c", b"marker", qos=0).wait_for_publish(10)

            before_marker: list[tuple[int, int]] = []  # (seq, packet id) read before the QoS 0 marker
            while True:
                kind, flags, body = read_packet(slow)
                assert kind == 3
                topic, packet_id, payload = parse_publish(flags, body)
                if payload == b"marker":
                    break
                assert packet_id is not None
                before_marker.append((int(payload), packet_id))
            assert [seq for seq, _ in before_marker] == list(range(window))
            assert len({pid for _, pid in before_marker}) == window  # distinct packet ids in flight

            got = [seq for seq, _ in before_marker]
            for _, packet_id in before_marker:
                slow.sendall(ack_packet("puback", packet_id))
            while len(got) < n:
                kind, flags, body = read_packet(slow)
                assert kind == 3
                topic, packet_id, payload = parse_publish(flags, body)
                assert topic == "d/slow/c" and packet_id is not None
                got.append(int(payload))
                slow.sendall(ack_packet("puback", packet_id))
            assert got == list(range(n))
        close(hub)
