"""One simulated device: lifecycle, seq numbering, store-and-forward, commands, faults.

A device speaks only ``firmware_protocol.md`` through :mod:`protocol`:

* CONNECT with client id = username = device id, a persistent session
  (clean_session=False) and a last will ``Status(offline)`` retained at QoS 1 on ``d/<id>/s``;
* subscribe at QoS 1 to ``d/<id>/c`` (commands) and ``d/<id>/w`` (the hub's watermark);
* birth ``Status(online, boot, fw, caps, enc, interval_s)`` retained at QoS 1;
* ``Telemetry(boot, seq, ts, readings)`` at QoS 1 on ``d/<id>/t``; ``seq`` starts at 1 in
  each boot and grows by one per message; ``boot`` grows by one per (re)boot (a reconnect
  is not a reboot);
* on a clean stop: ``Status(offline)`` then DISCONNECT.

Store-and-forward (firmware_protocol.md 5) lives in :mod:`device_sim.outbox`: each telemetry
and alert message stays in a bounded buffer until the hub's watermark covers it (a PUBACK
alone releases nothing: a broker acknowledges on receipt and may still lose the message,
AMQTT_NOTES.md #1). Re-sends follow rules R1 (after a reconnect: the un-PUBACKed messages when
the broker kept the session, everything when it did not), R2 (a watermark shows a hole) and
R3 (a ``rebirth`` command), never a timer. A full buffer drops its oldest message (counted as
``dropped``, written to the ledger as a ``buffer-overflow`` fault) and new messages then carry
``dropped`` until the hub's watermark has caught up.

Time: with ``rtc=False`` a device stamps uptime (ms since its power-up) and, once a live
watermark (RETAIN = 0) gave it the hub's clock, publishes a birth with ``boot_ts`` (4.4).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from device_sim.config_agent import ConfigAgent
from device_sim.faults import FaultKind
from device_sim.ledger import Ledger
from device_sim.mqtt import ConnectRefused, MqttClient, MqttError, Will
from device_sim.ota import OtaAgent, OtaPlan
from device_sim.outbox import Entry, Outbox
from device_sim.settings import Behaviour, SimSettings
from device_sim.signals import Profile, Signal
from protocol import (
    LIMITS,
    Alert,
    Command,
    CommandReply,
    CommandState,
    MessageClass,
    ProtocolError,
    Reading,
    Status,
    StatusState,
    Telemetry,
    Watermark,
    decode,
    encode,
    topic_for,
)

log = logging.getLogger("fleet.sim.device")
fault_log = logging.getLogger("fleet.sim.fault")

CAPABILITIES = ("reboot", "set_interval", "set_config", "ping", "rebirth", "describe")
RECENT_COMMANDS = LIMITS.remembered_commands
MALFORMED_PAYLOAD = b"\xff\x00 this is not a payload \x00\xfe"


@dataclass
class FleetStats:
    """Counters shared by every device of a fleet (one event loop, so no locks)."""

    connected: int = 0
    connected_peak: int = 0
    connects: int = 0
    reconnects: int = 0
    refused: int = 0
    births: int = 0
    messages: int = 0
    """Telemetry messages produced (each takes a seq)."""
    publishes: int = 0
    """Telemetry PUBLISH packets sent, re-sends and duplicates included."""
    resent: int = 0
    abandoned: int = 0
    """Messages given up after the maximum number of sends (rule R2)."""
    rebirths: int = 0
    readings: int = 0
    pubacks: int = 0
    watermarked: int = 0
    dropped: int = 0
    errors: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)


class SimDevice:
    """A simulated device; :meth:`run` is its whole life (cancel the task to switch it off)."""

    def __init__(self, device_id: str, index: int, secret: str, profile: Profile, signal: Signal,
                 settings: SimSettings, boot: int, stats: FleetStats, ledger: Ledger,
                 connect_gate: asyncio.Semaphore, faults: frozenset[FaultKind] = frozenset(),
                 ota: OtaPlan | None = None) -> None:
        self.device_id = device_id
        self.index = index
        self.secret = secret
        self.profile = profile
        self.signal = signal
        self.settings = settings
        behaviour: Behaviour = settings.behaviour_for(profile)
        self.encoding = behaviour.encoding
        self.batch = behaviour.batch
        self.deadband = behaviour.deadband
        self.interval = 1.0 / settings.rate
        self.boot = boot
        self.seq = 0
        self.stats = stats
        self.ledger = ledger
        self.gate = connect_gate
        self.faults = faults
        self.client: MqttClient | None = None
        self.outbox = Outbox(settings.buffer_size, boot)
        self._by_pid: dict[int, Entry] = {}
        self._samples: list[tuple[int, list[tuple[str, float]]]] = []
        self._last_sent: dict[str, float] = {}
        self._last_message = 0.0
        self._recent: OrderedDict[str, CommandState | None] = OrderedDict()
        self._powered_at = time.monotonic()
        self._boot_ts: int | None = None
        """Wall-clock ms of this boot's power-up, learned from a live watermark (devices without an RTC)."""
        self._session_present = False
        self._reboot_pending = False
        self._dead = False
        self._asleep = False
        """A sleepy device went to sleep (firmware_protocol.md 4.5): the run loop wakes it later."""
        self._skew_logged = False
        self._ticks = 0
        self._first_online: float | None = None
        self._next_storm = 0.0
        self.online_count = 0
        self._bytes_past = 0
        self.topic_t = topic_for(device_id, MessageClass.TELEMETRY)
        self.topic_a = topic_for(device_id, MessageClass.ALERT)
        self.topic_s = topic_for(device_id, MessageClass.STATUS)
        self.topic_r = topic_for(device_id, MessageClass.REPLY)
        self.topic_c = topic_for(device_id, MessageClass.COMMAND)
        self.topic_w = topic_for(device_id, MessageClass.WATERMARK)
        self.ota = OtaAgent(self, ota or OtaPlan(), settings.fw)
        self.config = ConfigAgent(self)

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Connect, report, reconnect after losses, until the task is cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self._dead:
                    await loop.create_future()  # silent death: stay dead until switched off
                await self.ota.may_connect()
                try:
                    client = await self._connect()
                except ConnectRefused as exc:
                    self.stats.refused += 1
                    bad = FaultKind.BAD_CREDENTIALS in self.faults
                    if bad:
                        self._fault(FaultKind.BAD_CREDENTIALS, f"login refused rc={exc.code}")
                    else:
                        log.warning("login refused device_id=%s rc=%s", self.device_id, exc.code)
                    await asyncio.sleep(self.settings.bad_login_retry_s if bad else self.settings.reconnect_delay)
                    continue
                except (OSError, MqttError, TimeoutError) as exc:
                    self.stats.errors += 1
                    log.info("connect failed device_id=%s error=%s", self.device_id, exc)
                    await asyncio.sleep(self.settings.reconnect_delay)
                    continue
                try:
                    await self._online(client)
                finally:
                    self.stats.connected -= 1
                    self._bytes_past += client.bytes_out
                if self._reboot_pending:
                    self._reboot()
                    continue
                if self._asleep:
                    self._asleep = False
                    await asyncio.sleep(self.settings.sleep_s * self.settings.sleep_fraction)
                    continue
                if not self._dead:
                    await asyncio.sleep(0.05 if FaultKind.DISCONNECT_STORM in self.faults else self.settings.reconnect_delay)
        finally:
            self._goodbye()

    @property
    def bytes_out(self) -> int:
        """MQTT bytes this device has written, all connections together."""
        client = self.client
        return self._bytes_past + (client.bytes_out if client is not None else 0)

    async def _connect(self) -> MqttClient:
        password = self.secret
        if FaultKind.BAD_CREDENTIALS in self.faults:
            password = self.secret + "-wrong"
        will = Will(self.topic_s, self._status(StatusState.OFFLINE), qos=1, retain=True)
        async with self.gate:
            client = MqttClient(self._on_message, self._on_puback)
            try:
                self._session_present = await client.connect(self.settings.host, self.settings.port, self.device_id,
                                     username=None if self.settings.anonymous else self.device_id,
                                     password=None if self.settings.anonymous else password, will=will,
                                     clean_session=False, keepalive=self.settings.keepalive,
                                     timeout=self.settings.connect_timeout)
                self.client = client
                granted = await client.subscribe([(self.topic_c, 1), (self.topic_w, 1), *self.ota.subscriptions,
                                                  *self.config.subscriptions],
                                                 timeout=self.settings.connect_timeout)
            except BaseException:
                client.abort()
                raise
        if 0x80 in granted:
            log.warning("subscription refused device_id=%s granted=%s", self.device_id, granted)
        return client

    async def _online(self, client: MqttClient) -> None:
        """Serve one connection until it closes."""
        loop = asyncio.get_running_loop()
        stats = self.stats
        stats.connected += 1
        stats.connected_peak = max(stats.connected_peak, stats.connected)
        stats.connects += 1
        if self.online_count:
            stats.reconnects += 1
        self.online_count += 1
        now = loop.time()
        if self._first_online is None:
            self._first_online = now
            self._next_storm = now + self.settings.fault_start_s
        self._by_pid.clear()
        # the link can already be gone here: a firmware apply (or any loss) that happened while _connect
        # waited for SUBACK closes it before this coroutine resumes (wait_for adds a loop hop). Raising
        # MqttError out of run() would end the device's task silently: no birth, no reboot, no goodbye.
        try:
            self.config.on_online()  # the description (once), before the birth that names it
            client.publish(self.topic_s, self._status(StatusState.ONLINE), qos=1, retain=True)
        except MqttError:
            self.client = None
            return  # the run loop reboots if one is pending, then reconnects
        stats.births += 1
        self.ota.on_online()
        try:
            self._resend(client, self.outbox.on_reconnect(self._session_present))  # rule R1
        except MqttError:
            self.client = None
            return
        wake_ticks = 0
        # spread the fleet's ticks over the interval, reproducibly
        next_tick = now + (self.index * 0.618034 % 1.0) * self.interval
        self._last_message = self._last_message or time.monotonic()
        while not client.closed.done():
            delay = next_tick - loop.time()
            if delay > 0:
                await asyncio.wait((client.closed,), timeout=delay)
                if client.closed.done():
                    break
            now = loop.time()
            next_tick = max(next_tick + self.interval, now)
            if self._fault_active(FaultKind.SILENT, now):
                self._fault(FaultKind.SILENT, "going silent: socket stays open, nothing more is sent")
                client.go_silent()
                self._dead = True
                await client.closed
                break
            if self._fault_active(FaultKind.DISCONNECT_STORM, now) and now >= self._next_storm:
                self._next_storm = now + self.settings.storm_period_s
                self._fault(FaultKind.DISCONNECT_STORM, "dropping the connection without DISCONNECT")
                client.abort()
                break
            try:
                self._tick(client, now)
            except MqttError:
                break  # lost between the wait and the write; the run loop reconnects
            wake_ticks += 1
            if self.settings.sleep_s and wake_ticks >= self.settings.wake_ticks:
                await self._sleep(client)
                break
            if self._reboot_pending:
                self._goodbye()
                break
        self.client = None

    async def _sleep(self, client: MqttClient) -> None:
        """End a wake (firmware_protocol.md 4.5): wait (briefly) for the watermark to cover what was sent, then
        DISCONNECT without an offline status; the run loop sleeps and wakes the device again."""
        if self._samples:
            self._flush(client, asyncio.get_running_loop().time())
        deadline = time.monotonic() + 2.0
        while len(self.outbox) and time.monotonic() < deadline and not client.closed.done():
            await asyncio.sleep(0.05)  # a device polls its radio; what stays uncovered goes out at the next wake
        self._asleep = True
        client.disconnect()

    def _reboot(self) -> None:
        self._reboot_pending = False
        self.boot += 1
        self.seq = 0
        self.outbox.new_boot(self.boot)
        self._powered_at = time.monotonic()
        self._boot_ts = None
        self._samples.clear()
        self._last_sent.clear()
        log.info("rebooted device_id=%s boot=%s", self.device_id, self.boot)

    def _goodbye(self) -> None:
        """A clean stop: offline status, then DISCONNECT (the broker discards the will)."""
        client, self.client = self.client, None
        if client is None or not client.is_connected:
            return
        try:
            client.publish(self.topic_s, self._status(StatusState.OFFLINE), qos=1, retain=True)
        except MqttError:
            pass
        client.disconnect()

    def _status(self, state: StatusState) -> bytes:
        status = Status(state=state, boot=self.boot, fw=self.ota.version, caps=list(CAPABILITIES),
                        enc=self.encoding, interval_s=self.settings.heartbeat_s, sleep_s=self.settings.sleep_s,
                        boot_ts=0 if self.settings.rtc else (self._boot_ts or 0),
                        desc=self.config.desc_hash, cfg=self.config.version)
        return encode(status, self.encoding)

    # ------------------------------------------------------------------ telemetry

    def _tick(self, client: MqttClient, now: float) -> None:
        self._ticks += 1
        if self._fault_active(FaultKind.MALFORMED, now) and self._ticks % self.settings.fault_every == 0:
            self._fault(FaultKind.MALFORMED, f"{len(MALFORMED_PAYLOAD)} bytes of garbage on the telemetry topic")
            client.publish(self.topic_t, MALFORMED_PAYLOAD, qos=1)
        sample = self.signal.step(self.interval)
        if self.settings.alerts:
            for code, severity, text in self.signal.alerts(sample):
                self._alert(client, now, code, severity, text)
        wall = time.monotonic()
        heartbeat_due = wall - self._last_message >= self.settings.heartbeat_s
        if self.deadband > 0 and not heartbeat_due:
            sample = [(m, v) for m, v in sample
                      if m not in self._last_sent or abs(v - self._last_sent[m]) > self.deadband]
        if sample:
            n_pending = sum(len(s) for _, s in self._samples)
            if n_pending + len(sample) > LIMITS.max_readings_per_batch:
                self._flush(client, now)
            self._samples.append((self._now_ms(now), sample))
        if self._samples and (len(self._samples) >= self.batch or heartbeat_due):
            self._flush(client, now)

    def _now_ms(self, now: float) -> int:
        if not self.settings.rtc:  # no clock: uptime stamps, turned into wall-clock time by the hub (4.4)
            return max(1, int((time.monotonic() - self._powered_at) * 1000))
        ms = int(time.time() * 1000)
        if self._fault_active(FaultKind.CLOCK_SKEW, now):
            ms += int(self.settings.clock_skew_h * 3_600_000)
            if not self._skew_logged:
                self._skew_logged = True
                self._fault(FaultKind.CLOCK_SKEW, f"clock {self.settings.clock_skew_h:+} h from seq {self.seq + 1}")
        return ms

    def _flush(self, client: MqttClient, now: float) -> None:
        """Turn the buffered samples into one Telemetry message and publish it."""
        samples, self._samples = self._samples, []
        ts = samples[0][0]
        pairs = [(m, v) for _, sample in samples for m, v in sample]
        readings = [Reading(dt=t - ts, metric=m, value=v) for t, sample in samples for m, v in sample]
        for _, sample in samples:
            self._last_sent.update(sample)
        self.seq += 1
        seq = self.seq
        msg = Telemetry(boot=self.boot, seq=seq, ts=ts, readings=readings, dropped=self.outbox.dropped_field())
        if self._fault_active(FaultKind.DEAD_LETTER, now) and seq % self.settings.fault_every == 0:
            # a reading the hub refuses (out_of_range): the message is dead-lettered under its seq
            bad = Reading.model_construct(dt=0, metric="temperature", value=1e6)
            msg = msg.model_copy(update={"readings": [bad, *readings[1:]]})
            payload = encode(msg, self.encoding, validate=False)
            self._last_message = time.monotonic()
            self.stats.messages += 1
            self.ledger.produced(self.device_id, self.boot, seq, "deadletter", pairs, ts, FaultKind.DEAD_LETTER)
            self._fault(FaultKind.DEAD_LETTER, "a reading out of range: the hub dead-letters it", seq)
            self._send(client, self._keep(seq, payload))
            return
        payload = encode(msg, self.encoding)
        self._last_message = time.monotonic()
        stats = self.stats
        stats.messages += 1
        stats.readings += len(readings)
        every = self.settings.fault_every
        if self._fault_active(FaultKind.PACKET_LOSS, now) and seq % every == 0:
            self.outbox.took_seq(seq)
            self.ledger.produced(self.device_id, self.boot, seq, "lost", pairs, ts, FaultKind.PACKET_LOSS)
            self._fault(FaultKind.PACKET_LOSS, "message never sent", seq)
            return
        if self._fault_active(FaultKind.OVERSIZED, now) and seq % every == 0:
            pad = LIMITS.max_payload_bytes + 512 - len(payload)
            payload += (b" " if self.encoding == "json" else b"\x00") * max(pad, 0)
            self.outbox.took_seq(seq)
            self.ledger.produced(self.device_id, self.boot, seq, "oversized", pairs, ts, FaultKind.OVERSIZED)
            self._fault(FaultKind.OVERSIZED, f"{len(payload)} bytes > {LIMITS.max_payload_bytes}", seq)
            client.publish(self.topic_t, payload, qos=1)
            stats.publishes += 1
            self.ledger.sent(self.device_id, self.boot, seq)
            return
        duplicate = self._fault_active(FaultKind.DUPLICATE, now) and seq % every == 0
        self.ledger.produced(self.device_id, self.boot, seq, "telemetry", pairs, ts,
                             FaultKind.DUPLICATE if duplicate else None)
        entry = self._keep(seq, payload)
        self._send(client, entry)
        if duplicate:
            self._fault(FaultKind.DUPLICATE, "published twice", seq)
            self._send(client, entry)

    def _alert(self, client: MqttClient, now: float, code: str, severity: str, text: str) -> None:
        """Publish an alert: the next seq, kept and re-sent like telemetry until the watermark covers it."""
        self.seq += 1
        ts = self._now_ms(now)
        payload = encode(Alert(boot=self.boot, seq=self.seq, ts=ts, code=code, severity=severity, message=text,
                               dropped=self.outbox.dropped_field()), self.encoding)
        self.ledger.produced(self.device_id, self.boot, self.seq, "alert", [], ts, None)
        self._last_message = time.monotonic()
        self.stats.messages += 1
        self._send(client, self._keep(self.seq, payload, self.topic_a))

    def _keep(self, seq: int, payload: bytes, topic: str | None = None) -> Entry:
        entry = Entry(self.boot, seq, payload, topic or self.topic_t, time.monotonic())
        for victim in self.outbox.add(entry):
            self.stats.dropped += 1
            self.ledger.fault(self.device_id, victim.boot, victim.seq, "buffer-overflow",
                              "dropped from a full buffer; declared to the hub with 'dropped'")
        return entry

    def _send(self, client: MqttClient, entry: Entry, dup: bool = False) -> None:
        pid = client.publish(entry.topic, entry.payload, qos=1, dup=dup)
        assert pid is not None
        self._by_pid[pid] = entry
        self.outbox.mark_sent(entry)
        self.stats.publishes += 1
        self.ledger.sent(self.device_id, entry.boot, entry.seq)

    def _resend(self, client: MqttClient, entries: list[Entry]) -> None:
        """Send ``entries`` again, oldest first, with the DUP flag (rules R1, R2, R3)."""
        for entry in entries:
            self._send(client, entry, dup=True)
            self.stats.resent += 1

    def oldest_unconfirmed(self) -> float | None:
        """``time.monotonic()`` at which the oldest message still waiting for a watermark was produced."""
        return self.outbox.oldest_made_at()

    def _on_puback(self, pid: int) -> None:
        entry = self._by_pid.pop(pid, None)
        if entry is None:
            return  # a birth or a reply
        self.stats.pubacks += 1
        if self.outbox.on_puback(entry):
            self.ledger.pubacked(self.device_id, entry.boot, entry.seq)

    def _on_watermark(self, wm: Watermark, retained: bool) -> None:
        if not retained and not self.settings.rtc and wm.ts and wm.boot == self.boot:
            self._learn_time(wm.ts)
        outcome = self.outbox.on_watermark(wm)
        self.stats.watermarked += outcome.covered
        self.ledger.watermarked(self.device_id, wm.boot, wm.seq)
        for entry in outcome.abandoned:
            self.stats.abandoned += 1
            self.ledger.fault(self.device_id, entry.boot, entry.seq, "abandoned",
                              f"given up after {entry.sends} sends; declared to the hub with 'dropped'")
        if outcome.resend and self.client is not None:
            self._resend(self.client, outcome.resend)  # rule R2

    def _learn_time(self, hub_ms: int) -> None:
        """A live watermark carries the hub's clock: anchor this boot's uptime stamps (firmware_protocol.md 4.4)."""
        boot_ts = hub_ms - int((time.monotonic() - self._powered_at) * 1000)
        if self._boot_ts is not None and abs(boot_ts - self._boot_ts) <= 1000:
            return
        self._boot_ts = boot_ts
        if self.client is not None:
            self.client.publish(self.topic_s, self._status(StatusState.ONLINE), qos=1, retain=True)
            self.stats.births += 1

    def _rebirth(self) -> None:
        """Rule R3: a new birth, then every buffered message again."""
        self.stats.rebirths += 1
        if self.client is not None:
            self.client.publish(self.topic_s, self._status(StatusState.ONLINE), qos=1, retain=True)
            self.stats.births += 1
            self._resend(self.client, self.outbox.everything())

    # ------------------------------------------------------------------ inbound

    def _on_message(self, topic: str, payload: bytes, retain: bool = False) -> None:
        try:
            if topic == self.topic_w:
                if payload:  # an empty retained message clears the watermark
                    wm = decode(MessageClass.WATERMARK, payload)
                    assert isinstance(wm, Watermark)
                    self._on_watermark(wm, retain)
            elif topic == self.config.topic_k:
                self.config.on_message(payload)
            elif self.ota.handles(topic):
                self.ota.on_message(topic, payload)
            elif topic == self.topic_c:
                cmd = decode(MessageClass.COMMAND, payload)
                assert isinstance(cmd, Command)
                self._on_command(cmd)
            else:
                log.warning("unexpected topic device_id=%s topic=%s", self.device_id, topic)
        except ProtocolError as exc:
            self.stats.errors += 1
            log.warning("bad inbound message device_id=%s topic=%s reason=%s detail=%s",
                        self.device_id, topic, exc.reason.value, exc.detail)
        except MqttError:
            pass  # the connection dropped while replying; the hub retries commands

    def _wall_ms(self) -> int | None:
        """The device's idea of the time (None: no clock and not learned yet, firmware_protocol.md 4.4)."""
        if self.settings.rtc:
            return int(time.time() * 1000)
        if self._boot_ts is None:
            return None
        return self._boot_ts + int((time.monotonic() - self._powered_at) * 1000)

    def _reply(self, reply: CommandReply) -> bytes:
        payload = encode(reply, self.encoding)
        if self.client is not None:
            self.client.publish(self.topic_r, payload, qos=1)
        return payload

    def _on_command(self, cmd: Command) -> None:
        counts = self.stats.commands
        if cmd.id in self._recent:
            counts["duplicate"] += 1
            log.info("duplicate command ignored device_id=%s command_id=%s", self.device_id, cmd.id)
            final = self._recent[cmd.id]
            # the hub may have missed the result: the remembered state (no detail or result: bounded memory)
            self._reply(CommandReply(id=cmd.id, state=final or CommandState.RECEIVED))
            return
        self._recent[cmd.id] = None
        while len(self._recent) > RECENT_COMMANDS:
            self._recent.popitem(last=False)
        counts["received"] += 1
        self._reply(CommandReply(id=cmd.id, state=CommandState.RECEIVED))
        state, detail, result = self._execute(cmd)
        counts[state.value] += 1
        log.info("command device_id=%s command_id=%s name=%s state=%s", self.device_id, cmd.id, cmd.name, state.value)
        self._reply(CommandReply(id=cmd.id, state=state, detail=detail, result=result))
        self._recent[cmd.id] = state
        if cmd.name == "rebirth" and state is CommandState.SUCCEEDED:
            self._rebirth()

    def _execute(self, cmd: Command) -> tuple[CommandState, str, dict[str, str | bool | int | float]]:
        now_ms = self._wall_ms()
        if now_ms is not None and cmd.expires < now_ms:
            return CommandState.REJECTED, "expired", {}
        now_ms = now_ms or 0
        if cmd.name == "rebirth":
            return CommandState.SUCCEEDED, "", {}  # the birth and the re-send follow the reply (_on_command)
        if cmd.name == "ping":
            return CommandState.SUCCEEDED, "", {"pong": now_ms}
        if cmd.name == "describe":  # the hub lacks the description the birth names (firmware_protocol.md 13.4)
            self.config.publish_description()
            return CommandState.SUCCEEDED, "", {}
        if cmd.name == "reboot":
            self._reboot_pending = True
            return CommandState.SUCCEEDED, "rebooting", {"boot": self.boot + 1}
        if cmd.name == "set_interval":
            seconds = cmd.args.get("seconds")
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0.01 <= seconds <= 86_400:
                return CommandState.REJECTED, "args.seconds must be a number in 0.01..86400", {}
            self.interval = float(seconds)
            return CommandState.SUCCEEDED, "", {"seconds": seconds}
        if cmd.name == "set_config":
            return self._set_config(cmd.args)
        return CommandState.REJECTED, f"unknown command {cmd.name!r}", {}

    def _set_config(self, args: dict[str, str | bool | int | float]) -> tuple[CommandState, str, dict[str, str | bool | int | float]]:
        """Apply ``deadband``, ``batch`` and ``encoding``; all or nothing."""
        new = {"deadband": self.deadband, "batch": self.batch, "encoding": self.encoding}
        for key, value in args.items():
            if key == "deadband" and isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                new["deadband"] = float(value)
            elif key == "batch" and type(value) is int and 1 <= value <= LIMITS.max_readings_per_batch:
                new["batch"] = value
            elif key == "encoding" and value in ("json", "cbor"):
                new["encoding"] = value
            else:
                return CommandState.REJECTED, f"bad or unknown setting {key}={value!r}", {}
        self.deadband, self.batch, self.encoding = float(new["deadband"]), int(new["batch"]), str(new["encoding"])
        return CommandState.SUCCEEDED, "", new

    # ------------------------------------------------------------------ faults

    def _fault_active(self, kind: FaultKind, now: float) -> bool:
        return (kind in self.faults and self._first_online is not None
                and now >= self._first_online + self.settings.fault_start_s)

    def _fault(self, kind: FaultKind, detail: str, seq: int | None = None) -> None:
        seq = self.seq if seq is None else seq
        self.stats.faults[kind.value] += 1
        self.ledger.fault(self.device_id, self.boot, seq, kind.value, detail)
        fault_log.info("fault kind=%s device_id=%s boot=%s seq=%s detail=%s", kind.value, self.device_id, self.boot, seq, detail)

