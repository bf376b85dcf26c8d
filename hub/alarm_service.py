"""The hub's alarm service: one thread that owns the alarm engine and its own database connection.

The ingest path only hands over each committed batch's readings (:meth:`AlarmService.on_batch`,
an append under a lock on the writer thread: no evaluation, no SQL, no wake-up there). This thread
evaluates them every 0.1 s against the rules (indexed by metric), ticks every ``alarm_check_s`` for the
``for`` durations, the no-data and offline rules (one query of the devices per tick), reloads
the rules when they change, and writes only transitions: a raise, a flap, a clear. When a
raised alarm's rule has an action, the command goes out through the command bridge.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
from collections import Counter
import threading
import time
from collections.abc import Callable
from typing import Any

from hub.alarm_engine import AlarmEngine, DeviceState, Transition
from hub.config import HubSettings
from hub.rules import Rule
from hub.storage import open_database, transaction
from hub.storage.alarms import AlarmStore
from hub.writer import BatchResult
from protocol.errors import FleetError
from protocol.text import inert

log = logging.getLogger("fleet.hub.alarms")

EVALUATE_S = 0.1
"""How often the alarm thread evaluates the readings committed since its last look."""

SUMMARY_S = 10.0
"""Clears and flaps are counted and logged in one line this often (raises get a line each)."""

MAX_PENDING_BATCHES = 10_000
"""Batches waiting for evaluation; beyond this the oldest are skipped (counted) so memory stays bounded."""

Submit = Callable[[str, str, dict[str, Any]], str]
"""Send a command (device, name, args); returns the command id."""


class AlarmService:
    """Owns the alarm thread; :meth:`on_batch` is the ingest hook."""

    def __init__(self, settings: HubSettings, submit: Submit | None = None) -> None:
        self.settings = settings
        self.submit = submit
        self.engine = AlarmEngine(settings.alarm_flap_window_s)
        self._lock = threading.Lock()
        self._batches: list[list[tuple[Any, ...]]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.skipped_batches = 0
        self.write_failures = 0
        self._summary: Counter[str] = Counter()
        self._open: dict[tuple[str, str], int] = {}
        """Open alarms by (state, severity), refreshed every tick (acknowledgements come from other processes)."""

    # ------------------------------------------------------------ from the writer thread

    def on_batch(self, result: BatchResult) -> None:
        """Ingest hook: queue the batch's readings for evaluation (cheap; never blocks on the engine)."""
        if not result.readings:
            return
        with self._lock:
            self._batches.append(result.readings)
            if len(self._batches) > MAX_PENDING_BATCHES:
                del self._batches[0]
                self.skipped_batches += 1
        # no wake-up per batch: the alarm thread takes what piled up every EVALUATE_S (a thread switch per
        # batch would cost the writer more than the evaluation itself)

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._main, name="fleet-hub-alarms", daemon=True)
        self._thread.start()
        self._ready.wait(timeout)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def snapshot(self) -> dict[str, Any]:
        """Figures for the metrics: open alarms by (state, severity), and counters since start."""
        c = self.engine.counters
        return {"open": dict(self._open), "raised": c.raised, "cleared": c.cleared, "flaps": c.flaps,
                "evaluations": c.evaluations, "rules": len(self.engine.rules), "skipped_batches": self.skipped_batches}

    # ------------------------------------------------------------ the thread

    def _main(self) -> None:
        try:
            conn = open_database(self.settings.db)
        except BaseException as exc:  # handed to start(), which re-raises it
            self._error = exc
            self._ready.set()
            return
        store = AlarmStore(conn)
        try:
            stamp = self._load(store)
            self._ready.set()
            next_tick = 0.0
            next_summary = time.monotonic() + SUMMARY_S
            while not self._stop.is_set():
                self._wake.wait(min(EVALUATE_S, max(0.0, next_tick - time.monotonic())))
                self._wake.clear()
                with self._lock:
                    batches, self._batches = self._batches, []
                for rows in batches:
                    self.engine.on_readings(rows)
                try:
                    if time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + self.settings.alarm_check_s
                        new_stamp = store.rules_stamp()
                        if new_stamp != stamp:
                            stamp = self._load(store)
                        self._tick(store)
                    self._apply(store, self.engine.take())
                    if time.monotonic() >= next_summary:
                        next_summary = time.monotonic() + SUMMARY_S
                        self._log_summary()
                except sqlite3.Error as exc:  # a busy or full database: transitions are found again next tick
                    self.write_failures += 1
                    if self.write_failures & (self.write_failures - 1) == 0:
                        log.error("alarm state not written error=%r failures=%s", exc, self.write_failures)
        finally:
            self._log_summary()
            conn.close()

    def _load(self, store: AlarmStore) -> tuple[int, float]:
        stamp = store.rules_stamp()
        self.engine.set_rules(Rule.from_row(r) for r in store.rules())
        self.engine.groups = store.groups()
        for a in store.open_and_recent(time.time() - self.settings.alarm_flap_window_s):
            self.engine.restore(a.rule, a.device_id, a.id, a.state != "cleared", a.cleared_at, a.value)
        log.info("alarm rules loaded count=%s", len(self.engine.rules))
        return stamp

    def _tick(self, store: AlarmStore) -> None:
        now = time.time()
        engine = self.engine
        engine.groups = store.groups()
        devices: list[DeviceState] = []
        metric_last: dict[str, dict[str, float]] = {}
        if engine.tick_rules:
            devices = [DeviceState(*row) for row in store.device_view()]
            for metric in {r.metric for r in engine.tick_rules if r.metric is not None}:
                metric_last[metric] = store.metric_last(metric)
        engine.tick(now, devices, metric_last)
        engine.forget_cleared(now)
        self._open = store.open_counts()

    def _apply(self, store: AlarmStore, transitions: list[Transition]) -> None:
        """Store a batch's transitions in one transaction, folded per alarm: a value that crosses back and
        forth within one batch costs one flap update and at most one clear, not a row per crossing."""
        if not transitions:
            return
        runs: dict[int, list[Transition]] = {}
        for t in transitions:
            runs.setdefault(id(t.watch), []).append(t)
        raised: list[Transition] = []
        with transaction(store.conn):
            for run in runs.values():
                watch = run[0].watch
                segment: list[Transition] = []
                for t in run:
                    if t.what == "raise" or (watch.alarm_id is None and t.what == "reopen"):
                        self._fold(store, watch.alarm_id, segment)
                        segment = []
                        watch.alarm_id = store.raise_alarm(t.rule.name, t.device_id, t.rule.severity.value, t.value,
                                                           t.detail, t.ts)
                        raised.append(t)
                    else:
                        segment.append(t)
                self._fold(store, watch.alarm_id, segment)
        self._summary.update(t.what for t in transitions)
        for t in raised:  # a new alarm is worth a line; flaps and clears are summarized
            log.info("alarm raised rule=%s device_id=%s alarm_id=%s severity=%s detail=%s", t.rule.name,
                     inert(t.device_id), t.watch.alarm_id, t.rule.severity.value, inert(t.detail))
        for t in raised:
            self._act(store, t)

    @staticmethod
    def _fold(store: AlarmStore, alarm_id: int | None, segment: list[Transition]) -> None:
        if alarm_id is None or not segment:
            return  # nothing stored to change (its raise was never written)
        reopens = [t for t in segment if t.what == "reopen"]
        if reopens:
            last = reopens[-1]
            store.reopen(alarm_id, last.value, last.detail, last.ts, count=len(reopens))
        if segment[-1].what == "clear":
            last = segment[-1]
            store.clear(alarm_id, last.value, last.detail, last.ts)

    def _log_summary(self) -> None:
        if self._summary:
            log.info("alarms in the last %.0f s: %s", SUMMARY_S,
                     " ".join(f"{k}={n}" for k, n in sorted(self._summary.items())))
            self._summary.clear()

    def _act(self, store: AlarmStore, t: Transition) -> None:
        rule = t.rule
        if rule.action_command is None or self.submit is None or t.watch.alarm_id is None:
            return
        try:
            command_id = self.submit(t.device_id, rule.action_command, dict(rule.action_args))
            detail = f"action: command {rule.action_command} sent as {command_id}"
        except FleetError as exc:  # unknown device, a busy device, a bad argument: said in the history
            detail = f"action: command {rule.action_command} not sent: {exc}"
        except queue.Empty:  # the command bridge did not answer within its call timeout
            detail = f"action: command {rule.action_command} not sent: the command bridge did not answer"
        log.info("alarm action rule=%s device_id=%s %s", rule.name, inert(t.device_id), detail)
        with transaction(store.conn):
            store.note(t.watch.alarm_id, time.time(), detail)
