"""The alarm engine: a pure state machine over readings and device presence, driven by an explicit clock.

Cost model (issue 15, item 5): rules are indexed by metric, so a reading of a metric no rule
names costs one dict lookup. For a metric with rules, a value on the good side of a rule costs
a comparison and, only when that (rule, device) is being watched (pending or alarmed), a dict
lookup. State is created only when a value goes bad. Nothing here touches the database: the
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
class DeviceView:
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
        self.by_metric: dict[str, list[Rule]] = {}
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
        self.by_metric = {}
        for rule in new.values():
            if rule.kind in THRESHOLD_KINDS:
                assert rule.metric is not None
                self.by_metric.setdefault(rule.metric, []).append(rule)
        self.tick_rules = [r for r in new.values() if r.kind not in THRESHOLD_KINDS]

    def restore(self, rule: str, device_id: str, alarm_id: int, open_: bool, cleared_at: float | None,
                value: float | None) -> None:
        """Take back a stored alarm after a restart (open, or cleared recently enough to flap)."""
        if rule not in self.rules:
            return
        self.watches.setdefault(rule, {})[device_id] = Watch(None, open_, alarm_id, cleared_at, value)

    # ------------------------------------------------------------ readings (the ingest path's batches)

    def on_readings(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Evaluate a committed batch's readings, as the writer made them:
        ``(device_id, boot, seq, idx, metric, value, ts, received_at, skewed)``; time is ``received_at``."""
        by_metric = self.by_metric
        if not by_metric:
            return
        get = by_metric.get
        for row in rows:
            rules = get(row[4])
            if rules is not None:
                self.on_reading(row[0], rules, row[5], row[7])

    def on_reading(self, device_id: str, rules: list[Rule], value: float, now: float) -> None:
        """One reading against the rules of its metric."""
        self.counters.evaluations += 1
        groups = self.groups
        for rule in rules:
            if rule.group is not None and groups.get(device_id) != rule.group:
                continue
            threshold = rule.threshold
            assert threshold is not None
            bad = value > threshold if rule.kind is RuleKind.ABOVE else value < threshold
            watches = self.watches.get(rule.name)
            watch = watches.get(device_id) if watches is not None else None
            if not bad and watch is None:
                continue  # the common case: nothing watched, nothing wrong
            if watch is None:
                watch = self.watches.setdefault(rule.name, {}).setdefault(device_id, Watch())
            watch.value = value
            if watch.open:
                clear = threshold if rule.clear is None else rule.clear
                good = (value < clear or (rule.clear is None and value <= clear)) if rule.kind is RuleKind.ABOVE \
                    else (value > clear or (rule.clear is None and value >= clear))
                if good:
                    self._clear(rule, device_id, watch, value, f"{rule.metric} {value:g}: back to normal", now)
            elif bad:
                if watch.pending_since is None:
                    watch.pending_since = now
                    self.pending.add((rule.name, device_id))
                if now - watch.pending_since >= rule.for_s:
                    self._raise(rule, device_id, watch, value, f"{rule.metric} {value:g} ({rule.describe()})", now)
            elif watch.pending_since is not None:
                watch.pending_since = None
                self.pending.discard((rule.name, device_id))

    # ------------------------------------------------------------ the clock

    def tick(self, now: float, devices: Sequence[DeviceView] = (), metric_last: dict[str, dict[str, float]] | None = None
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


__all__ = ["AlarmEngine", "DeviceView", "EngineCounters", "Transition", "Watch"]
