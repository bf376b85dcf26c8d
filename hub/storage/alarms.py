"""Alarm rules, alarms and their history: ``alarm_rules``, ``alarms``, ``alarm_events`` (schema version 8).

An alarm is one occurrence of a rule's condition on one device. Its states:

    active --ack--> acknowledged --clear--> cleared
       \\-------------------clear-------------/

A cleared alarm raised again within the flap window is re-opened (state ``active``, ``flaps`` + 1)
instead of a new one being made; every change is a row in ``alarm_events`` (the history).
The hub's alarm engine writes only on those transitions, never per reading.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any

ACTIVE = "active"
ACKNOWLEDGED = "acknowledged"
CLEARED = "cleared"
ALARM_STATES = (ACTIVE, ACKNOWLEDGED, CLEARED)
OPEN_STATES = (ACTIVE, ACKNOWLEDGED)


@dataclass(frozen=True, slots=True)
class RuleRow:
    """One alarm rule as stored (see :class:`hub.rules.Rule` for its meaning)."""

    name: str
    kind: str
    metric: str | None
    threshold: float | None
    clear: float | None
    for_s: float
    severity: str
    grp: str | None
    action_command: str | None
    action_args: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0

    def public(self) -> dict[str, Any]:
        """The rule as a JSON-ready dict (``group`` for ``grp``)."""
        d = asdict(self)
        d["group"] = d.pop("grp")
        return d


@dataclass(slots=True)
class AlarmRow:
    """One alarm as stored."""

    id: int
    rule: str
    device_id: str
    severity: str
    state: str
    value: float | None
    detail: str
    raised_at: float
    acked_at: float | None
    acked_by: str | None
    cleared_at: float | None
    flaps: int
    updated_at: float

    def public(self) -> dict[str, Any]:
        return asdict(self)


ALARM_COLUMNS = ("id, rule, device_id, severity, state, value, detail, raised_at, acked_at, acked_by, cleared_at,"
                 " flaps, updated_at")
RULE_COLUMNS = "name, kind, metric, threshold, clear, for_s, severity, grp, action_command, action_args, created_at"


def _rule(row: tuple[Any, ...]) -> RuleRow:
    *head, args, created = row
    return RuleRow(*head, action_args=json.loads(args), created_at=created)


class AlarmStore:
    """The alarm tables on one connection (the alarm engine's, or a CLI's short-lived one)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # ------------------------------------------------------------ rules

    def add_rule(self, rule: RuleRow) -> bool:
        """Store ``rule``; False when a rule of that name exists already."""
        try:
            self.conn.execute(
                f"INSERT INTO alarm_rules ({RULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rule.name, rule.kind, rule.metric, rule.threshold, rule.clear, rule.for_s, rule.severity, rule.grp,
                 rule.action_command, json.dumps(rule.action_args), rule.created_at))
        except sqlite3.IntegrityError:
            return False
        return True

    def rules(self) -> list[RuleRow]:
        """Every rule, by name."""
        return [_rule(r) for r in self.conn.execute(f"SELECT {RULE_COLUMNS} FROM alarm_rules ORDER BY name")]

    def rules_stamp(self) -> tuple[int, float]:
        """A cheap fingerprint of the rule set (count, newest creation): the engine reloads when it moves."""
        n, newest, total = self.conn.execute(
            "SELECT COUNT(*), COALESCE(MAX(created_at), 0), COALESCE(SUM(created_at), 0) FROM alarm_rules").fetchone()
        return int(n), float(newest) + float(total)

    def remove_rule(self, name: str, now: float) -> int | None:
        """Delete rule ``name`` and clear its open alarms; the number cleared, None when no such rule."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            if self.conn.execute("DELETE FROM alarm_rules WHERE name = ?", (name,)).rowcount == 0:
                self.conn.execute("ROLLBACK")
                return None
            ids = [r[0] for r in self.conn.execute(
                "SELECT id FROM alarms WHERE rule = ? AND state != ?", (name, CLEARED))]
            for alarm_id in ids:
                self._set_cleared(alarm_id, now, None, "rule removed")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return len(ids)

    # ------------------------------------------------------------ alarms (the engine's writes)

    def raise_alarm(self, rule: str, device_id: str, severity: str, value: float | None, detail: str,
                    now: float) -> int:
        """A new active alarm with its first history row; returns its id."""
        cur = self.conn.execute(
            "INSERT INTO alarms (rule, device_id, severity, state, value, detail, raised_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (rule, device_id, severity, ACTIVE, value, detail, now, now))
        alarm_id = int(cur.lastrowid or 0)
        self._event(alarm_id, ACTIVE, now, value, detail)
        return alarm_id

    def reopen(self, alarm_id: int, value: float | None, detail: str, now: float, count: int = 1) -> None:
        """Raise a recently cleared alarm again (``count`` flaps, folded into one history row): active once
        more (an acknowledged one too: it is a new occurrence)."""
        self.conn.execute(
            "UPDATE alarms SET state = ?, value = ?, detail = ?, cleared_at = NULL, flaps = flaps + ?,"
            " updated_at = ? WHERE id = ?", (ACTIVE, value, detail, count, now, alarm_id))
        times = f" {count} times" if count > 1 else ""
        self._event(alarm_id, ACTIVE, now, value, f"raised again{times} (flap): {detail}")

    def clear(self, alarm_id: int, value: float | None, detail: str, now: float) -> None:
        """The condition is over: the alarm is cleared (acknowledged or not)."""
        self._set_cleared(alarm_id, now, value, detail)

    def _set_cleared(self, alarm_id: int, now: float, value: float | None, detail: str) -> None:
        self.conn.execute("UPDATE alarms SET state = ?, cleared_at = ?, updated_at = ? WHERE id = ?",
                          (CLEARED, now, now, alarm_id))
        self._event(alarm_id, CLEARED, now, value, detail)

    def note(self, alarm_id: int, now: float, detail: str) -> None:
        """A history row that changes no state (e.g. the action's command id)."""
        row = self.conn.execute("SELECT state FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
        if row:
            self._event(alarm_id, row[0], now, None, detail)

    def _event(self, alarm_id: int, state: str, ts: float, value: float | None, detail: str) -> None:
        self.conn.execute("INSERT INTO alarm_events (alarm_id, state, ts, value, detail) VALUES (?, ?, ?, ?, ?)",
                          (alarm_id, state, ts, value, detail))

    def open_and_recent(self, since: float) -> list[AlarmRow]:
        """Open alarms, and those cleared after ``since`` (the engine's start: flaps re-open them)."""
        return [AlarmRow(*r) for r in self.conn.execute(
            f"SELECT {ALARM_COLUMNS} FROM alarms WHERE state != ? OR cleared_at >= ? ORDER BY id",
            (CLEARED, since))]

    # ------------------------------------------------------------ operators

    def acknowledge(self, alarm_id: int, operator: str | None, now: float) -> AlarmRow | None:
        """Acknowledge an alarm (an active one becomes ``acknowledged``; a cleared one keeps its state and
        records the acknowledgement). None when there is no such alarm."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            row = self.get(alarm_id)
            if row is not None and row.acked_at is None:
                state = ACKNOWLEDGED if row.state == ACTIVE else row.state
                self.conn.execute("UPDATE alarms SET state = ?, acked_at = ?, acked_by = ?, updated_at = ?"
                                  " WHERE id = ?", (state, now, operator, now, alarm_id))
                self._event(alarm_id, ACKNOWLEDGED, now, None, f"acknowledged by {operator or 'operator'}")
                row = self.get(alarm_id)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return row

    def get(self, alarm_id: int) -> AlarmRow | None:
        """One alarm, or None."""
        r = self.conn.execute(f"SELECT {ALARM_COLUMNS} FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
        return AlarmRow(*r) if r else None

    def alarms(self, active: bool = False, device_id: str | None = None, limit: int = 1000) -> list[AlarmRow]:
        """Alarms, newest first; ``active``: only those not cleared."""
        where, args = [], []  # type: list[str], list[Any]
        if active:
            where.append("state != ?")
            args.append(CLEARED)
        if device_id is not None:
            where.append("device_id = ?")
            args.append(device_id)
        sql = f"SELECT {ALARM_COLUMNS} FROM alarms {'WHERE ' + ' AND '.join(where) if where else ''}" \
              f" ORDER BY raised_at DESC, id DESC LIMIT ?"
        return [AlarmRow(*r) for r in self.conn.execute(sql, (*args, limit))]

    def history(self, alarm_id: int) -> list[dict[str, Any]]:
        """An alarm's transitions, oldest first."""
        return [{"state": s, "ts": ts, "value": v, "detail": d} for s, ts, v, d in self.conn.execute(
            "SELECT state, ts, value, detail FROM alarm_events WHERE alarm_id = ? ORDER BY ts, rowid", (alarm_id,))]

    def open_counts(self) -> dict[tuple[str, str], int]:
        """Open alarms by (state, severity), for the dashboard and the metrics."""
        return {(s, sev): n for s, sev, n in self.conn.execute(
            "SELECT state, severity, COUNT(*) FROM alarms WHERE state != ? GROUP BY state, severity", (CLEARED,))}

    def open_by_device(self) -> dict[str, int]:
        """Open alarms per device, for the dashboard."""
        return dict(self.conn.execute(
            "SELECT device_id, COUNT(*) FROM alarms WHERE state != ? GROUP BY device_id", (CLEARED,)))

    # ------------------------------------------------------------ what tick-time rules read

    def device_view(self) -> list[tuple[str, str, str, float, float | None, int, str | None, float | None]]:
        """Per known device: (id, presence state, reason, state_since, last_seen, sleep_s, group, last telemetry
        received_at). One query per engine tick, never per reading."""
        return list(self.conn.execute(
            "SELECT d.device_id, d.state, d.state_reason, d.state_since, d.last_seen, d.sleep_s, p.grp,"
            " (SELECT MAX(l.received_at) FROM latest l WHERE l.device_id = d.device_id)"
            " FROM devices d LEFT JOIN principals p ON p.id = d.device_id"))

    def metric_last(self, metric: str) -> dict[str, float]:
        """When each device's latest reading of ``metric`` was received."""
        return dict(self.conn.execute("SELECT device_id, received_at FROM latest WHERE metric = ?", (metric,)))

    def groups(self) -> dict[str, str]:
        """Group of every principal that has one."""
        return dict(self.conn.execute("SELECT id, grp FROM principals WHERE grp IS NOT NULL"))
