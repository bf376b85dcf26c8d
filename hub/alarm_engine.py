"""The alarm engine: a pure state machine over readings and device presence, driven by an explicit clock.

Cost model (issue 15, item 5): rules are indexed by metric, so a reading of a metric no rule
names costs one dict lookup. The threshold rules of a metric are sorted: two bisects find the
rules a value is past, and the rules already watching the device (pending, alarmed, recently
cleared) are one dict lookup; a normal value on an unwatched device costs no more, however many
rules the metric has. State is created only when a value goes bad. Nothing here touches the database: the
engine returns :class:`Transition` objects and its owner (:mod:`hub.alarm_service`) writes them.

Per (rule, device), a :class:`Watch`:

* ``pending_since``: the condition has held since then; after ``for_s`` an alarm is raised (on
  the next reading or on a tick, whichever comes first).
* ``open``: an alarm is active (or acknowledged); it clears when the value is back past the
  clear threshold (hysteresis), not merely back past the threshold.
* a cleared alarm raised again within ``flap_window_s`` of clearing is re-opened and counted as
  a flap instead of a new alarm: a value that hovers at the threshold yields one alarm with a
  flap count, not a storm (and its action is not sent again).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hub.rules import THRESHOLD_KINDS, Rule, RuleKind

SLEEPING = "sleeping"
OFFLINE = "offline"


@dataclass(slots=True)
class Watch:
    """What the engine knows of one rule on one device."""

    pending_since: float | None = None
    open: bool = False
    alarm_id: int | None = None
    cleared_at: float | None = None
    value: float | None = None


class Compiled:
    """A threshold rule's fields as plain attributes (the hot loop reads them per reading)."""

    __slots__ = ("rule", "name", "is_above", "threshold", "clear", "clear_inclusive", "for_s", "group")

    def __init__(self, rule: Rule) -> None:
        assert rule.threshold is not None
        self.rule = rule
        self.name = rule.name
        self.is_above = rule.kind is RuleKind.ABOVE
        self.threshold = float(rule.threshold)
        self.clear = float(rule.threshold if rule.clear is None else rule.clear)
        self.clear_inclusive = rule.clear is None
        """Without a clear threshold, a value back at the threshold clears (it is no longer past it)."""
        self.for_s = rule.for_s
        self.group = rule.group


class MetricRules:
    """The threshold rules of one metric, sorted so a value finds the rules it is past with one bisect."""

    def __init__(self, compiled: list[Compiled]) -> None:
        self.above = sorted((c for c in compiled if c.is_above), key=lambda c: c.threshold)
        self.above_thr = [c.threshold for c in self.above]
        """Bad when value > threshold: the first ``bisect_left(above_thr, value)`` rules."""
        self.below = sorted((c for c in compiled if not c.is_above), key=lambda c: c.threshold)
        self.below_thr = [c.threshold for c in self.below]
        """Bad when value < threshold: the rules from ``bisect_right(below_thr, value)`` on."""
        self.n_below = len(self.below)
        self.by_name = {c.name: c for c in compiled}
        self.watched: dict[str, dict[str, tuple[Compiled, Watch]]] = {}
        """device id -> the rules of this metric watching it (pending, alarmed or recently cleared)."""


@dataclass(frozen=True, slots=True)
class Transition:
    """A change the owner must store: ``raise`` (new alarm), ``reopen`` (a flap) or ``clear``."""

    what: Literal["raise", "reopen", "clear"]
    rule: Rule
    device_id: str
    value: float | None
    detail: str
    ts: float
    watch: Watch


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A device as tick-time rules see it (from one query per tick)."""

    device_id: str
    state: str
    reason: str
    state_since: float
    last_seen: float | None
    sleep_s: int
    group: str | None
    last_data: float | None


@dataclass
class EngineCounters:
    raised: int = 0
    cleared: int = 0
    flaps: int = 0
    evaluations: int = 0


class AlarmEngine:
    """Evaluates rules; one owner thread. ``transitions`` collects what :meth:`on_reading` and :meth:`tick` found."""

    def __init__(self, flap_window_s: float = 300.0) -> None:
        self.flap_window_s = flap_window_s
        self.rules: dict[str, Rule] = {}
        self.by_metric: dict[str, MetricRules] = {}
        self.tick_rules: list[Rule] = []
        self.watches: dict[str, dict[str, Watch]] = {}
        self.groups: dict[str, str] = {}
        self.pending: set[tuple[str, str]] = set()
        self.transitions: list[Transition] = []
        self.counters = EngineCounters()

    # ------------------------------------------------------------ rules and restored state

    def set_rules(self, rules: Iterable[Rule]) -> None:
        """Replace the rule set; the state of rules that are gone (or changed) is forgotten."""
        new = {r.name: r for r in rules}
        for name, old in self.rules.items():
            if new.get(name) != old:
                self.watches.pop(name, None)
                self.pending = {k for k in self.pending if k[0] != name}
        self.rules = new
        by_metric: dict[str, list[Compiled]] = {}
        for rule in new.values():
            if rule.kind in THRESHOLD_KINDS:
                assert rule.metric is not None
                by_metric.setdefault(rule.metric, []).append(Compiled(rule))
        self.by_metric = {metric: MetricRules(compiled) for metric, compiled in by_metric.items()}
        self.tick_rules = [r for r in new.values() if r.kind not in THRESHOLD_KINDS]
        for name, watches in self.watches.items():  # the per-device index of what survived
            self._index(name, watches)

    def _index(self, rule_name: str, watches: dict[str, Watch]) -> None:
        rule = self.rules.get(rule_name)
        if rule is None or rule.metric is None or rule.metric not in self.by_metric:
            return
        mr = self.by_metric[rule.metric]
        compiled = mr.by_name[rule_name]
        for device_id, watch in watches.items():
            mr.watched.setdefault(device_id, {})[rule_name] = (compiled, watch)

    def restore(self, rule: str, device_id: str, alarm_id: int, open_: bool, cleared_at: float | None,
                value: float | None) -> None:
        """Take back a stored alarm after a restart (open, or cleared recently enough to flap)."""
        if rule not in self.rules:
            return
        watch = Watch(None, open_, alarm_id, cleared_at, value)
        self.watches.setdefault(rule, {})[device_id] = watch
        self._index(rule, {device_id: watch})

    # ------------------------------------------------------------ readings (the ingest path's batches)

    def on_readings(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Evaluate a committed batch's readings, as the writer made them:
        ``(device_id, boot, seq, idx, metric, value, ts, received_at, skewed)``; time is ``received_at``."""
        by_metric = self.by_metric
        if not by_metric:
            return
        get = by_metric.get
        n = 0
        for row in rows:
            mr = get(row[4])
            if mr is None:
                continue
            n += 1
            value = row[5]
            # thresholds sorted: the rules a value is past are one bisect away; the others matter only
            # where this device is already watched (pending or alarmed)
            above = bisect_left(mr.above_thr, value)
            below = bisect_right(mr.below_thr, value)
            watched = mr.watched.get(row[0])
            if above == 0 and below == mr.n_below and not watched:
                continue
            self._evaluate(mr, row[0], value, row[7], above, below, watched)
        self.counters.evaluations += n

    def on_reading(self, device_id: str, metric: str, value: float, now: float) -> None:
        """One reading (a batch of one)."""
        self.on_readings([(device_id, 0, 0, 0, metric, value, now, now, 0)])

    def _evaluate(self, mr: MetricRules, device_id: str, value: float, now: float, above: int, below: int,
                  watched: dict[str, tuple[Compiled, Watch]] | None) -> None:
        bad = [*mr.above[:above], *mr.below[below:]]
        seen: set[str] = set()
        groups = self.groups
        for c in bad:
            if c.group is not None and groups.get(device_id) != c.group:
                continue
            seen.add(c.name)
            entry = watched.get(c.name) if watched is not None else None
            if entry is None:
                watch = Watch()
                self.watches.setdefault(c.name, {})[device_id] = watch
                mr.watched.setdefault(device_id, {})[c.name] = (c, watch)
            else:
                watch = entry[1]
            self._step(c, device_id, watch, value, now, True)
        if watched:
            for name, (c, watch) in list(watched.items()):
                if name not in seen:
                    self._step(c, device_id, watch, value, now, False)

    def _step(self, c: Compiled, device_id: str, watch: Watch, value: float, now: float, bad: bool) -> None:
        watch.value = value
        rule = c.rule
        if watch.open:
            good = value < c.clear if c.is_above else value > c.clear
            if c.clear_inclusive:
                good = good or value == c.clear
            if good:
                self._clear(rule, device_id, watch, value, f"{rule.metric} {value:g}: back to normal", now)
        elif bad:
            if watch.pending_since is None:
                watch.pending_since = now
                self.pending.add((c.name, device_id))
            if now - watch.pending_since >= c.for_s:
                self._raise(rule, device_id, watch, value, f"{rule.metric} {value:g} ({rule.describe()})", now)
        elif watch.pending_since is not None:
            watch.pending_since = None
            self.pending.discard((c.name, device_id))

    # ------------------------------------------------------------ the clock

    def tick(self, now: float, devices: Sequence[DeviceState] = (), metric_last: dict[str, dict[str, float]] | None = None
             ) -> None:
        """Raise threshold alarms whose ``for`` elapsed without a new reading; evaluate no-data and offline rules."""
        for key in list(self.pending):
            rule = self.rules.get(key[0])
            watch = self.watches.get(key[0], {}).get(key[1])
            if rule is None or watch is None or watch.pending_since is None:
                self.pending.discard(key)
                continue
            if now - watch.pending_since >= rule.for_s:
                self._raise(rule, key[1], watch, watch.value,
                            f"{rule.metric} {watch.value:g} ({rule.describe()})", now)
        for rule in self.tick_rules:
            for dev in devices:
                if rule.group is not None and dev.group != rule.group:
                    continue
                if rule.kind is RuleKind.OFFLINE:
                    since = dev.state_since
                    bad = dev.state == OFFLINE and now - since >= rule.for_s
                    detail = f"offline since {since:.0f} ({dev.reason})" if bad else f"{dev.state} again"
                else:
                    last = dev.last_data if rule.metric is None else (metric_last or {}).get(rule.metric, {}).get(
                        dev.device_id)
                    since = last if last is not None else dev.state_since
                    # a sleeping device is keeping its schedule: its silence is not missing data
                    bad = dev.state != SLEEPING and now - since >= rule.for_s
                    detail = (f"no {rule.metric or 'data'} for {now - since:.0f} s" if bad
                              else f"{rule.metric or 'data'} again")
                watches = self.watches.get(rule.name)
                watch = watches.get(dev.device_id) if watches is not None else None
                if watch is None:
                    if not bad:
                        continue
                    watch = self.watches.setdefault(rule.name, {}).setdefault(dev.device_id, Watch())
                if bad and not watch.open:
                    self._raise(rule, dev.device_id, watch, None, detail, now)
                elif not bad and watch.open:
                    self._clear(rule, dev.device_id, watch, None, detail, now)

    # ------------------------------------------------------------ transitions

    def _raise(self, rule: Rule, device_id: str, watch: Watch, value: float | None, detail: str, now: float) -> None:
        watch.pending_since = None
        self.pending.discard((rule.name, device_id))
        watch.open = True
        if watch.cleared_at is not None and now - watch.cleared_at <= self.flap_window_s:
            self.counters.flaps += 1
            self.transitions.append(Transition("reopen", rule, device_id, value, detail, now, watch))
        else:
            watch.alarm_id = None  # a new alarm; its id comes back from the store
            self.counters.raised += 1
            self.transitions.append(Transition("raise", rule, device_id, value, detail, now, watch))
        watch.cleared_at = None

    def _clear(self, rule: Rule, device_id: str, watch: Watch, value: float | None, detail: str, now: float) -> None:
        watch.open = False
        watch.cleared_at = now
        self.counters.cleared += 1
        self.transitions.append(Transition("clear", rule, device_id, value, detail, now, watch))

    def take(self) -> list[Transition]:
        """The transitions found since the last call."""
        out, self.transitions = self.transitions, []
        return out

    def forget_cleared(self, now: float) -> None:
        """Drop watches of alarms cleared longer ago than the flap window (bounded memory)."""
        horizon = now - self.flap_window_s
        for watches in self.watches.values():
            stale = [d for d, w in watches.items()
                     if not w.open and w.pending_since is None and (w.cleared_at is None or w.cleared_at < horizon)]
            for d in stale:
                del watches[d]
        for mr in self.by_metric.values():
            for device_id, entries in list(mr.watched.items()):
                for name in [n for n, (_, w) in entries.items() if self.watches.get(n, {}).get(device_id) is not w]:
                    del entries[name]
                if not entries:
                    del mr.watched[device_id]


__all__ = ["AlarmEngine", "DeviceState", "EngineCounters", "Transition", "Watch"]
