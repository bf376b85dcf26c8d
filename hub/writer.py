"""The batch writer: turns a batch of inbound messages into one SQLite transaction.

Pure storage logic, no MQTT: :meth:`BatchWriter.write` stores a batch and returns what the
ingest loop must do after the commit (which messages to ack is the caller's business;
every message of a committed batch is persisted, dead letters included).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hub.config import HubSettings
from hub.gaps import SeqTracker
from hub.inbound import Accepted, Inbound, Rejected, classify
from hub.presence import PresenceEvent, PresenceTracker
from hub.skew import SkewTally
from hub.store import HubStore
from protocol.errors import Reason
from protocol.fastpath import TelemetryRows
from protocol.models import Alert, CommandReply, Status, Watermark

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

    def snapshot(self) -> dict[str, Any]:
        return {
            "messages": self.messages, "readings": self.readings, "duplicates": self.duplicates,
            "gaps": self.gaps, "skewed": self.skewed, "batches": self.batches,
            "deadletters": dict(self.deadletters), "retention_deleted": self.retention_deleted,
            "retention_chunks": self.retention_chunks,
            "received": dict(self.received), "persisted": dict(self.persisted),
        }


@dataclass
class BatchResult:
    """What a committed batch changed, for acks, watermarks and hooks."""

    watermarks: dict[str, Watermark] = field(default_factory=dict)
    replies: list[tuple[str, CommandReply]] = field(default_factory=list)
    presence: list[PresenceEvent] = field(default_factory=list)


class BatchWriter:
    """Owns the store, the seq trackers and the presence tracker; used by one thread."""

    def __init__(self, store: HubStore, settings: HubSettings) -> None:
        self.store = store
        self.settings = settings
        self.stats = HubStats()
        self.skew = SkewTally()
        """Skewed messages since the last summary line (the ingest loop logs and resets it)."""
        self.presence = PresenceTracker(store, staleness_factor=settings.staleness_factor,
                                        staleness_min_s=settings.staleness_min_s)
        self._streams: dict[tuple[str, int], SeqTracker] = {}
        self._published: dict[str, tuple[int, int]] = {}
        self._dirty: set[tuple[str, int]] = set()

    def write(self, batch: list[Inbound]) -> BatchResult:
        """Store ``batch`` in one transaction (raises sqlite3.Error with nothing committed)."""
        try:
            return self._write(batch)
        except BaseException:
            self.reset()  # the in-memory trackers ran ahead of the rolled-back database
            raise

    def _write(self, batch: list[Inbound]) -> BatchResult:
        verdicts = [classify(m) for m in batch]
        active: set[str] | None = None
        if self.settings.require_registered:
            ids = {v.device_id for v in verdicts if isinstance(v, Accepted)}
            active = self.store.active_devices(ids)
        result = BatchResult()
        touched: dict[str, tuple[int, SeqTracker]] = {}
        counts: Counter[str] = Counter()
        dead: Counter[str] = Counter()
        readings: list[tuple[Any, ...]] = []
        latest: dict[tuple[str, str], tuple[str, str, float, float, float]] = {}
        skew = SkewTally()
        with self.store.transaction():
            for msg, verdict in zip(batch, verdicts):
                if verdict is None:
                    continue
                if isinstance(verdict, Accepted) and active is not None and verdict.device_id not in active:
                    verdict = Rejected(verdict.device_id, Reason.UNKNOWN_DEVICE,
                                       f"{verdict.device_id!r} is not an active device in the registry")
                counts["received:" + (verdict.cls.value if isinstance(verdict, Accepted) else "invalid")] += 1
                if isinstance(verdict, Rejected):
                    self._dead_letter(msg, verdict)
                    dead[verdict.reason.value] += 1
                    continue
                self._accept(msg, verdict, result, touched, counts, readings, latest, skew)
            if readings:
                self.store.insert_readings(readings)
                self.store.upsert_latest(latest.values())
            for key in self._dirty:
                self.store.save_stream(key[0], key[1], self._streams[key])
            self.presence.flush()
        self._dirty.clear()
        self._forget_old_boots(touched)
        self.stats.batches += 1
        self.stats.messages += counts["stored"]
        self.stats.readings += len(readings)
        self.stats.duplicates += counts["duplicate"]
        self.stats.gaps += counts["gap"]
        self.stats.skewed += counts["skewed"]
        self.skew.merge(skew)
        self.stats.deadletters.update(dead)
        for key, n in counts.items():  # after the commit, so a rolled-back batch counts nothing
            what, _, cls = key.partition(":")
            if what == "received":
                self.stats.received[cls] += n
            elif what == "persisted":
                self.stats.persisted[cls] += n
        if self.settings.publish_watermarks:
            for device_id, (boot, tracker) in touched.items():
                mark = (boot, tracker.watermark)
                if self._published.get(device_id) != mark:
                    self._published[device_id] = mark
                    result.watermarks[device_id] = Watermark(boot=boot, seq=tracker.watermark)
        return result

    def _accept(self, msg: Inbound, verdict: Accepted, result: BatchResult, touched: dict[str, tuple[int, SeqTracker]],
                counts: Counter[str], readings: list[tuple[Any, ...]],
                latest: dict[tuple[str, str], tuple[str, str, float, float, float]], skew: SkewTally) -> None:
        device_id, message, now = verdict.device_id, verdict.message, msg.received_at
        if not isinstance(message, (TelemetryRows, Alert)):
            counts["persisted:" + verdict.cls.value] += 1
        if isinstance(message, Status):
            event = self.presence.on_status(device_id, message, now)
            if event:
                result.presence.append(event)
            return
        event = self.presence.on_message(device_id, now)
        if event:
            result.presence.append(event)
        if isinstance(message, CommandReply):
            self.store.insert_reply(device_id, message.id, message.state.value, message.detail, dict(message.result), now)
            result.replies.append((device_id, message))
            return
        assert isinstance(message, (TelemetryRows, Alert))
        offset = message.ts / 1000.0 - now
        skewed = abs(offset) > self.settings.skew_threshold_s
        kind = "t" if isinstance(message, TelemetryRows) else "a"
        if not self.store.insert_message(device_id, message.boot, message.seq, kind, message.ts, now, skewed):
            counts["duplicate"] += 1
            log.debug("duplicate device_id=%s boot=%s seq=%s mid=%s", device_id, message.boot, message.seq, msg.mid)
            return
        counts["stored"] += 1
        counts["persisted:" + kind] += 1
        if skewed:  # counted, and summarized by the ingest loop: never a log line per message
            counts["skewed"] += 1
            skew.add(device_id, offset)
        self._track(device_id, message.boot, message.seq, now, touched, counts)
        if isinstance(message, Alert):
            self.store.insert_alert(device_id, message.boot, message.seq, message.ts / 1000.0, message.code,
                                    message.severity.value, message.message, now)
            return
        base, boot, seq, flag = message.ts, message.boot, message.seq, int(skewed)
        append = readings.append
        for idx, (dt, metric, value) in enumerate(message.readings):
            ts = (base + dt) / 1000.0
            append((device_id, boot, seq, idx, metric, value, ts, now, flag))
            key = (device_id, metric)
            prev = latest.get(key)
            if prev is None or ts >= prev[2]:
                latest[key] = (device_id, metric, ts, value, now)

    def _track(self, device_id: str, boot: int, seq: int, now: float, touched: dict[str, tuple[int, SeqTracker]],
               counts: Counter[str]) -> None:
        key = (device_id, boot)
        tracker = self._streams.get(key)
        if tracker is None:
            tracker = self.store.load_stream(device_id, boot)
            if tracker is None:
                tracker = SeqTracker.start(seq)
                self._streams[key] = tracker
                self._dirty.add(key)
                self._remember(device_id, boot, tracker, touched)
                return
            self._streams[key] = tracker
        for gap in tracker.observe(seq, now):
            if gap.id is None:
                counts["gap"] += 1
                log.warning("gap device_id=%s boot=%s from_seq=%s to_seq=%s missing=%s",
                            device_id, boot, gap.from_seq, gap.to_seq, gap.missing)
            self.store.save_gap(device_id, boot, gap, now)
        self._dirty.add(key)
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
        self.presence = PresenceTracker(self.store, staleness_factor=self.settings.staleness_factor,
                                        staleness_min_s=self.settings.staleness_min_s)

    def _dead_letter(self, msg: Inbound, verdict: Rejected) -> None:
        cap = self.settings.max_deadletter_bytes
        payload = msg.payload[:cap]
        detail = verdict.detail if len(msg.payload) <= cap else f"{verdict.detail} (payload cut to {cap} bytes)"
        self.store.insert_deadletter(verdict.device_id, msg.topic, verdict.reason.value, detail, payload,
                                     len(msg.payload), msg.received_at)
        log.warning("dead letter reason=%s device_id=%s topic=%s detail=%s",
                    verdict.reason.value, verdict.device_id, msg.topic, verdict.detail)

    def check_stale(self, now: float) -> list[PresenceEvent]:
        """Mark silent devices offline (own short transaction)."""
        return self.presence.check_stale(now)

    def delete_old(self, cutoff: float) -> int:
        """One retention chunk; returns the readings deleted."""
        n = self.store.delete_old_readings(cutoff, self.settings.retention_chunk)
        self.stats.retention_deleted += n
        self.stats.retention_chunks += n > 0
        return n
