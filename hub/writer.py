"""The batch writer: turns a batch of inbound messages into one SQLite transaction.

Pure storage logic, no MQTT: :meth:`BatchWriter.write` stores a batch and returns what the
ingest loop must do after the commit (which messages to ack is the caller's business;
every message of a committed batch is persisted, dead letters included).

Each telemetry or alert message is filed under its stream key (device, incarnation, boot;
:mod:`hub.incarnations`). Its seq is *dealt with* once stored, or once dead-lettered when the
refused payload names its seq; a ``dropped`` field closes the device's given-up seqs as dropped
(:meth:`hub.gaps.SeqTracker.drop_upto`). The watermark of the device's current boot goes out
after every commit that changed it, and in answer to every live birth (firmware_protocol.md 5.1).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from hub.config import HubSettings
from hub.gaps import Gap, SeqTracker
from hub.inbound import Accepted, Inbound, Rejected, classify
from hub.incarnations import device_boot, incarnation_of, stream_boot
from hub.presence import PresenceEvent, PresenceTracker
from hub.skew import SkewTally
from hub.store import HubStore
from hub.storage.ingest import StoredTelemetry
from protocol.codec import encode_watermark
from protocol.errors import Reason
from protocol.fastpath import TelemetryRows
from protocol.limits import LIMITS
from protocol.models import Alert, CommandReply, Status, StatusState
from protocol.topics import MessageClass

log = logging.getLogger("fleet.hub.writer")


@dataclass
class HubStats:
    """Counters since the hub started (written by the writer thread only)."""

    messages: int = 0
    readings: int = 0
    duplicates: int = 0
    gaps: int = 0
    skewed: int = 0
    batches: int = 0
    deadletters: Counter[str] = field(default_factory=Counter)
    retention_deleted: int = 0
    received: Counter[str] = field(default_factory=Counter)
    """Messages taken from the broker, by class (t, a, s, r; ``invalid`` for a bad topic)."""
    persisted: Counter[str] = field(default_factory=Counter)
    """Messages stored, by class (duplicates and dead letters are not)."""
    retention_chunks: int = 0
    dropped: int = 0
    """Seqs the devices declared given up (gaps closed as dropped by device)."""
    resets: int = 0
    """Births whose boot went back: a new incarnation of the device."""
    deadletters_sequenced: int = 0
    """Dead letters whose seq counts as dealt with (the watermark moves past them)."""
    presence_flaps: int = 0
    """Devices back online soon after going offline, or before their will took effect."""

    def snapshot(self) -> dict[str, Any]:
        return {
            "messages": self.messages, "readings": self.readings, "duplicates": self.duplicates,
            "gaps": self.gaps, "skewed": self.skewed, "batches": self.batches,
            "dropped": self.dropped, "resets": self.resets, "presence_flaps": self.presence_flaps, "deadletters_sequenced": self.deadletters_sequenced,
            "deadletters": dict(self.deadletters), "retention_deleted": self.retention_deleted,
            "retention_chunks": self.retention_chunks,
            "received": dict(self.received), "persisted": dict(self.persisted),
        }


def reading_rows(telemetry: Iterable[StoredTelemetry]) -> Iterator[tuple[Any, ...]]:
    """The readings of stored messages as ``(device_id, boot, seq, idx, metric, value, ts, received_at, skewed)``."""
    for device_id, boot, seq, base_ms, readings, received_at, skewed in telemetry:
        for idx, (dt, metric, value) in enumerate(readings):
            yield device_id, boot, seq, idx, metric, value, (base_ms + dt) / 1000.0, received_at, skewed


_RECEIVED = {cls: "received:" + cls.value for cls in MessageClass}
_PERSISTED = {cls: "persisted:" + cls.value for cls in MessageClass}
"""The counters of messages received and stored, per class (each key built once, not per message)."""
_PERSISTED_T, _PERSISTED_A = _PERSISTED[MessageClass.TELEMETRY], _PERSISTED[MessageClass.ALERT]
_RECEIVED_T = _RECEIVED[MessageClass.TELEMETRY]
_UPTIME_BELOW = LIMITS.uptime_ts_below
"""Read once: an attribute of a pydantic model costs 40 ns, four times a plain one (per message)."""


class OutgoingWatermark(NamedTuple):
    """A watermark ready to publish: its seq (for log lines) and its payload."""

    seq: int
    payload: bytes


@dataclass
class BatchResult:
    """What a committed batch changed, for acks, watermarks and hooks."""

    watermarks: dict[str, OutgoingWatermark] = field(default_factory=dict)
    """Each device's watermark to publish, already in the form (json or cbor) its latest birth asked for."""
    replies: list[tuple[str, CommandReply]] = field(default_factory=list)
    presence: list[PresenceEvent] = field(default_factory=list)
    telemetry: list[StoredTelemetry] = field(default_factory=list)
    """The batch's stored telemetry messages, for the alarm engine and the range check: one tuple per
    message, so the writer does no per-reading work for them (:func:`reading_rows` spreads them out)."""



class BatchWriter:
    """Owns the store, the seq trackers and the presence tracker; used by one thread."""

    def __init__(self, store: HubStore, settings: HubSettings) -> None:
        self.store = store
        self.settings = settings
        self._skew_threshold_s = settings.skew_threshold_s  # per message: read from the model once (_UPTIME_BELOW)
        self.stats = HubStats()
        self.skew = SkewTally()
        """Skewed messages since the last summary line (the ingest loop logs and resets it)."""
        self.presence = self._make_presence()
        self._streams: dict[tuple[str, int], SeqTracker] = {}
        self._published: dict[str, tuple[int, int, int, int]] = {}
        self._dirty: set[tuple[str, int]] = set()

    def write(self, batch: list[Inbound], reload: bool = False) -> BatchResult:
        """Store ``batch`` in one transaction (raises sqlite3.Error with nothing committed).

        ``reload`` (a worker group, where other workers write too): forget the in-memory state inside
        the transaction, so that seq trackers and presence are judged on every worker's committed rows
        and no row read before another worker's commit is written back over it."""
        try:
            return self._write(batch, reload)
        except BaseException:
            self.reset()  # the in-memory trackers ran ahead of the rolled-back database
            raise

    def _write(self, batch: list[Inbound], reload: bool) -> BatchResult:
        verdicts = [classify(m) for m in batch]
        active: set[str] | None = None
        if self.settings.require_registered:
            ids = {v.device_id for v in verdicts
                   if isinstance(v, Accepted) or (isinstance(v, Rejected) and v.seq is not None and v.device_id)}
            active = self.store.active_devices(ids)
        result = BatchResult()
        touched: dict[str, tuple[int, SeqTracker]] = {}
        births: list[str] = []
        counts: Counter[str] = Counter()
        dead: Counter[str] = Counter()
        readings = [0]  # readings staged in this batch
        skew = SkewTally()
        with self.store.transaction():
            if reload:
                self.reset()
            # each device's telemetry is gathered and stored per device (the hot path's per-message work is then
            # a few look-ups); anything else from that device first stores what it sent before, so each device's
            # messages are still dealt with in the order they came
            telemetry: dict[str, list[tuple[Inbound, TelemetryRows]]] = {}
            for msg, verdict in zip(batch, verdicts):
                if verdict is None:
                    continue
                device_id = verdict.device_id
                if type(verdict) is Accepted:
                    if active is not None and device_id not in active:
                        verdict = Rejected(device_id, Reason.UNKNOWN_DEVICE,
                                           f"{device_id!r} is not an active device in the registry")
                    elif type(verdict.message) is TelemetryRows:
                        group = telemetry.get(device_id)
                        if group is None:
                            telemetry[device_id] = [(msg, verdict.message)]
                        else:
                            group.append((msg, verdict.message))
                        continue
                if device_id in telemetry:
                    self._accept_telemetry(device_id, telemetry.pop(device_id), result, touched, counts, readings, skew)
                if type(verdict) is Rejected:
                    counts["received:invalid"] += 1
                    if self._dead_letter(msg, verdict, active, touched, counts):
                        dead[verdict.reason.value] += 1
                    continue
                counts[_RECEIVED[verdict.cls]] += 1
                if type(verdict.message) is Alert:
                    self._accept_alert(msg, verdict.device_id, verdict.message, result, touched, counts, skew)
                else:
                    self._accept(msg, verdict, result, births, counts)
            for device_id, group in telemetry.items():
                self._accept_telemetry(device_id, group, result, touched, counts, readings, skew)
            for key in self._dirty:
                self.store.save_stream(key[0], key[1], self._streams[key])
            self.presence.flush()
        self._dirty.clear()
        self._forget_old_boots(touched)
        self.stats.batches += 1
        self.stats.messages += counts["stored"]
        self.stats.readings += readings[0]
        self.stats.duplicates += counts["duplicate"]
        self.stats.gaps += counts["gap"]
        self.stats.skewed += counts["skewed"]
        self.skew.merge(skew)
        self.stats.dropped += counts["dropped"]
        self.stats.resets += counts["reset"]
        self.stats.deadletters_sequenced += counts["deadletter_seq"]
        self.stats.deadletters.update(dead)
        self.stats.presence_flaps += self.presence.take_flaps()
        for key, n in counts.items():  # after the commit, so a rolled-back batch counts nothing
            what, _, cls = key.partition(":")
            if what == "received":
                self.stats.received[cls] += n
            elif what == "persisted":
                self.stats.persisted[cls] += n
        if self.settings.publish_watermarks:
            self._watermarks(result, touched, births)
        return result

    # ------------------------------------------------------------------ watermarks

    def _watermarks(self, result: BatchResult, touched: dict[str, tuple[int, SeqTracker]], births: list[str]) -> None:
        """The watermark of each device's current stream that changed in this batch, or was asked for by a birth."""
        now_ms = int(time.time() * 1000)
        for device_id, (key, tracker) in touched.items():
            current = self._current_key(device_id)
            if current is None or key >= current:  # never the watermark of an older boot: it would replace the retained one
                self._offer(result, device_id, key, tracker, now_ms, force=False)
        for device_id in births:
            key = self._current_key(device_id)
            if key is not None:
                tracker = self._tracker(device_id, key) or SeqTracker.empty()
                self._offer(result, device_id, key, tracker, now_ms, force=True)

    def watermark_now(self, device_id: str) -> BatchResult:
        """The current watermark of ``device_id`` (as a birth would get it), e.g. when a checker's hold ends."""
        result = BatchResult()
        key = self._current_key(device_id)
        if key is not None and self.settings.publish_watermarks:
            tracker = self._tracker(device_id, key) or SeqTracker.empty()
            self._offer(result, device_id, key, tracker, int(time.time() * 1000), force=True)
        return result

    def _current_key(self, device_id: str) -> int | None:
        boot = self.presence.current_boot(device_id)
        return None if boot is None else stream_boot(self.presence.incarnation(device_id), boot)

    def _offer(self, result: BatchResult, device_id: str, key: int, tracker: SeqTracker, now_ms: int,
               force: bool) -> None:
        nxt, top = tracker.hole
        mark = (key, tracker.watermark, nxt, top)
        if not force and self._published.get(device_id) == mark:
            return
        self._published[device_id] = mark
        # built straight to bytes: one per device and commit, which is one per message when devices send rarely
        result.watermarks[device_id] = OutgoingWatermark(tracker.watermark, encode_watermark(
            device_boot(key), tracker.watermark, nxt, top, now_ms, self.presence.encoding(device_id)))

    # ------------------------------------------------------------------ messages

    def _accept(self, msg: Inbound, verdict: Accepted, result: BatchResult, births: list[str],
                counts: Counter[str]) -> None:
        """A status or a command reply (not sequenced: stored as it comes)."""
        device_id, message, now = verdict.device_id, verdict.message, msg.received_at
        counts[_PERSISTED[verdict.cls]] += 1
        if isinstance(message, Status):
            outcome = self.presence.on_status(device_id, message, now)
            if outcome.event:
                result.presence.append(outcome.event)
            counts["reset"] += outcome.reset
            if outcome.boot_ts_changed and message.boot_ts:
                key = stream_boot(self.presence.incarnation(device_id), message.boot)
                fixed = self.store.correct_uptime_stamps(device_id, key, message.boot_ts,
                                                         self.settings.skew_threshold_s)
                if fixed:
                    log.info("uptime stamps corrected device_id=%s boot=%s readings=%s boot_ts=%s",
                             device_id, message.boot, fixed, message.boot_ts)
            if message.state == StatusState.ONLINE and not msg.retain and device_id not in births:
                births.append(device_id)  # a live birth (not the stored copy a subscribing hub gets): answer it
            return
        event = self.presence.on_message(device_id, now)
        if event:
            result.presence.append(event)
        assert isinstance(message, CommandReply)
        self.store.insert_reply(device_id, message.id, message.state.value, message.detail, dict(message.result), now)
        result.replies.append((device_id, message))

    def _accept_telemetry(self, device_id: str, group: list[tuple[Inbound, TelemetryRows]], result: BatchResult,
                          touched: dict[str, tuple[int, SeqTracker]], counts: Counter[str], readings: list[int],
                          skew: SkewTally) -> None:
        """A device's telemetry messages of one batch, in the order they came: each stored once under its
        (device, incarnation, boot, seq). The hot path: presence, the stream and the counters once per device."""
        presence = self.presence
        for now in (group[0][0].received_at, group[-1][0].received_at):  # first: any wake-up; last: last_seen
            event = presence.on_message(device_id, now)
            if event:
                result.presence.append(event)
        incarnation = presence.incarnation(device_id)  # only a status changes it, and none is in the group
        insert, telemetry, threshold = self.store.insert_message, result.telemetry, self._skew_threshold_s
        first_stored = len(telemetry)
        boot = key = -1
        tracker: SeqTracker | None = None
        stored = skewed_n = n_readings = 0
        ahead = behind = 0.0  # the largest clock offsets of the skewed messages, each way
        for msg, message in group:
            if message.boot != boot:
                if tracker is not None:
                    self._observed(device_id, key, tracker, touched)
                    tracker = None
                boot = message.boot
                key = stream_boot(incarnation, boot)
            now = msg.received_at
            base = message.ts
            if base < _UPTIME_BELOW:
                base, skewed = self._wall_clock(device_id, message, now)
            else:  # _wall_clock's rule for a wall-clock stamp, inline (once per message, and the call cost more)
                skewed = abs(base / 1000.0 - now) > threshold
            seq = message.seq
            if not insert(device_id, key, seq, "t", base, now, skewed):
                counts["duplicate"] += 1
                log.debug("duplicate device_id=%s boot=%s seq=%s mid=%s", device_id, boot, seq, msg.mid)
                if message.dropped:
                    self._drop(device_id, key, message.dropped, now, touched, counts)
                continue
            stored += 1
            if skewed:  # counted, and summarized by the ingest loop: never a log line per message
                skewed_n += 1
                offset = base / 1000.0 - now
                if offset > ahead:
                    ahead = offset
                elif offset < behind:
                    behind = offset
            if tracker is None:
                tracker = self._stream(device_id, key)
            if seq == tracker.max_seq + 1:  # SeqTracker.observe's common case, inline (once per message)
                tracker.max_seq = seq
                tracker.dirty = True
            else:
                gaps = tracker.observe(seq, now)
                if gaps:
                    self._save_gaps(device_id, key, gaps, now, counts)
            if message.dropped:
                self._drop(device_id, key, message.dropped, now, touched, counts)
            values = message.readings
            telemetry.append((device_id, key, seq, base, values, now, skewed))
            n_readings += len(values)
        if tracker is not None:
            self._observed(device_id, key, tracker, touched)
        self.store.stage_readings(telemetry[first_stored:])  # the group's stored messages, in one call
        if skewed_n:
            skew.add(device_id, ahead if ahead >= -behind else behind, skewed_n)
        counts[_RECEIVED_T] += len(group)
        counts["stored"] += stored
        counts[_PERSISTED_T] += stored
        counts["skewed"] += skewed_n
        readings[0] += n_readings

    def _accept_alert(self, msg: Inbound, device_id: str, message: Alert, result: BatchResult,
                      touched: dict[str, tuple[int, SeqTracker]], counts: Counter[str], skew: SkewTally) -> None:
        """An alert: stored once under its (device, incarnation, boot, seq), like telemetry."""
        now = msg.received_at
        event = self.presence.on_message(device_id, now)
        if event:
            result.presence.append(event)
        key = stream_boot(self.presence.incarnation(device_id), message.boot)
        base, skewed = self._wall_clock(device_id, message, now)
        seq = message.seq
        if not self.store.insert_message(device_id, key, seq, "a", base, now, skewed):
            counts["duplicate"] += 1
            log.debug("duplicate device_id=%s boot=%s seq=%s mid=%s", device_id, message.boot, seq, msg.mid)
        else:
            counts["stored"] += 1
            counts[_PERSISTED_A] += 1
            if skewed:
                counts["skewed"] += 1
                skew.add(device_id, base / 1000.0 - now)
            self._track(device_id, key, seq, now, touched, counts)
            self.store.insert_alert(device_id, key, seq, base / 1000.0, message.code, message.severity.value,
                                    message.message, now)
        if message.dropped:
            self._drop(device_id, key, message.dropped, now, touched, counts)

    def _wall_clock(self, device_id: str, message: TelemetryRows | Alert, now: float) -> tuple[int, bool]:
        """The message's time in ms since the epoch (uptime stamps turned into wall-clock time when the
        boot's ``boot_ts`` is known), and whether it is skewed (firmware_protocol.md 4.4)."""
        ts = message.ts
        if ts < _UPTIME_BELOW:
            anchor = self.presence.boot_ts(device_id, message.boot)
            if anchor is None:
                return ts, True  # corrected when a birth brings boot_ts
            ts += anchor
        return ts, abs(ts / 1000.0 - now) > self._skew_threshold_s

    def _tracker(self, device_id: str, boot: int) -> SeqTracker | None:
        """The tracker of stream (device_id, boot) from memory or the database; None when nothing is stored."""
        tracker = self._streams.get((device_id, boot))
        if tracker is None:
            tracker = self.store.load_stream(device_id, boot)
            if tracker is not None:
                self._streams[(device_id, boot)] = tracker
        return tracker

    def _drop(self, device_id: str, boot: int, upto: int, now: float, touched: dict[str, tuple[int, SeqTracker]],
              counts: Counter[str]) -> None:
        """The device gave up every seq up to ``upto`` that it still held (firmware_protocol.md 5.4)."""
        tracker = self._tracker(device_id, boot)
        if tracker is None:
            return
        before = tracker.dropped
        changed = tracker.drop_upto(upto, now)
        if not changed:
            return
        for gap in changed:
            self.store.save_gap(device_id, boot, gap, now)
        n = tracker.dropped - before
        counts["dropped"] += n
        log.warning("seqs dropped by device device_id=%s boot=%s upto=%s newly_dropped=%s",
                    device_id, device_boot(boot), upto, n)
        self._dirty.add((device_id, boot))
        self._remember(device_id, boot, tracker, touched)

    def _stream(self, device_id: str, boot: int) -> SeqTracker:
        """The tracker of stream (device_id, boot), a new one when nothing of it is stored yet."""
        tracker = self._tracker(device_id, boot)
        if tracker is None:
            tracker = self._streams[(device_id, boot)] = SeqTracker.empty()
        return tracker

    def _track(self, device_id: str, boot: int, seq: int, now: float, touched: dict[str, tuple[int, SeqTracker]],
               counts: Counter[str]) -> None:
        tracker = self._stream(device_id, boot)
        self._save_gaps(device_id, boot, tracker.observe(seq, now), now, counts)
        self._observed(device_id, boot, tracker, touched)

    def _save_gaps(self, device_id: str, boot: int, gaps: list[Gap], now: float, counts: Counter[str]) -> None:
        """Store the gaps a seq opened or changed; a new one is counted and logged."""
        for gap in gaps:
            if gap.id is None:
                counts["gap"] += 1
                log.warning("gap device_id=%s boot=%s incarnation=%s from_seq=%s to_seq=%s missing=%s",
                            device_id, device_boot(boot), incarnation_of(boot), gap.from_seq, gap.to_seq, gap.missing)
            self.store.save_gap(device_id, boot, gap, now)

    def _observed(self, device_id: str, boot: int, tracker: SeqTracker, touched: dict[str, tuple[int, SeqTracker]]) -> None:
        """The stream took new seqs: saved at the commit, and its watermark offered."""
        self._dirty.add((device_id, boot))
        self._remember(device_id, boot, tracker, touched)

    @staticmethod
    def _remember(device_id: str, boot: int, tracker: SeqTracker, touched: dict[str, tuple[int, SeqTracker]]) -> None:
        current = touched.get(device_id)
        if current is None or boot >= current[0]:
            touched[device_id] = (boot, tracker)

    def _forget_old_boots(self, touched: dict[str, tuple[int, SeqTracker]]) -> None:
        # one tracker per device (its newest boot) stays in memory; older boots reload from the db if needed
        old = [k for k in self._streams if k[0] in touched and k[1] < touched[k[0]][0]]
        for key in old:
            del self._streams[key]

    def reset(self) -> None:
        """Forget in-memory state after a rolled-back batch; it reloads from the database."""
        self._streams.clear()
        self._published.clear()
        self._dirty.clear()
        wills = self.presence._wills  # wills in their hysteresis are not in the database: keep them
        self.presence = self._make_presence()
        self.presence._wills.update(wills)

    def _make_presence(self) -> PresenceTracker:
        s = self.settings
        return PresenceTracker(self.store, staleness_factor=s.staleness_factor, staleness_min_s=s.staleness_min_s,
                               offline_hysteresis_s=s.offline_hysteresis_s, flap_window_s=s.flap_window_s,
                               sleep_grace=s.sleep_grace)

    def _dead_letter(self, msg: Inbound, verdict: Rejected, active: set[str] | None,
                     touched: dict[str, tuple[int, SeqTracker]], counts: Counter[str]) -> bool:
        """Store a dead letter; one whose seq is readable counts as dealt with (False: a duplicate of it)."""
        cap = self.settings.max_deadletter_bytes
        payload = msg.payload[:cap]
        detail = verdict.detail if len(msg.payload) <= cap else f"{verdict.detail} (payload cut to {cap} bytes)"
        device_id, key, seq = verdict.device_id, None, verdict.seq
        # a seq counts only for a device the hub takes data from: garbage ids must not grow stream state
        sequenced = (device_id is not None and verdict.boot is not None and seq is not None
                     and (active is None or device_id in active))
        if sequenced:
            assert device_id is not None and verdict.boot is not None and seq is not None
            key = stream_boot(self.presence.incarnation(device_id), verdict.boot)
            tracker = self._tracker(device_id, key)
            if tracker is not None and tracker.seen(seq):
                counts["duplicate"] += 1
                return False
        if not self.store.insert_deadletter(device_id, msg.topic, verdict.reason.value, detail, payload,
                                            len(msg.payload), msg.received_at, key, seq if sequenced else None):
            counts["duplicate"] += 1
            return False
        if sequenced:
            assert device_id is not None and key is not None and seq is not None
            counts["deadletter_seq"] += 1
            self._track(device_id, key, seq, msg.received_at, touched, counts)
        log.warning("dead letter reason=%s device_id=%s topic=%s boot=%s seq=%s detail=%s",
                    verdict.reason.value, device_id, msg.topic, verdict.boot, verdict.seq, verdict.detail)
        return True

    def check_stale(self, now: float, reload: bool = False) -> list[PresenceEvent]:
        """Mark silent devices offline or sleeping, and apply due wills (own short transaction).

        ``reload`` (a worker group): judge on the database's rows (last_seen comes from every worker),
        and read them again inside the write transaction before changing any."""
        if reload:
            self.reset()
        if not self.presence.due(now):
            return []
        with self.store.transaction():
            if reload:
                self.reset()
            events = self.presence.apply_due(now)
        self.stats.presence_flaps += self.presence.take_flaps()
        return events

    def delete_old(self, cutoff: float) -> int:
        """One retention chunk; returns the readings deleted."""
        n = self.store.delete_old_readings(cutoff, self.settings.retention_chunk)
        self.stats.retention_deleted += n
        self.stats.retention_chunks += n > 0
        return n
