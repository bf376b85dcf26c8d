"""Alarm rules: what they mean, their checks, and the library twins of ``fleet rules add/list/remove``.

Four kinds of rule:

``above`` / ``below``
    a metric crosses ``threshold`` and stays past it for ``for_s`` seconds: an alarm is raised.
    It clears only once the value is back past ``clear`` (hysteresis; default: the threshold
    itself), so a value hovering between ``clear`` and ``threshold`` changes nothing.
``no_data``
    a device sent no telemetry (of ``metric``, when given) for ``for_s`` seconds. A sleepy
    device between its wakes is not "without data": it is keeping its schedule.
``offline``
    a device has been ``offline`` for more than ``for_s`` seconds (a ``sleeping`` device is
    not offline; one that misses its wake is).

``group`` limits a rule to the devices of one registry group. ``action_command`` (with
``action_args``) is sent to the device, through the hub's command bridge, when an alarm of the
rule is raised (not when a flapping one is raised again).
"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hub.storage import StorageError, open_database, reading
from hub.storage.alarms import AlarmStore, RuleRow
from protocol.errors import FleetError
from protocol.models import ArgValue, Command, Severity


class RuleKind(StrEnum):
    ABOVE = "above"
    BELOW = "below"
    NO_DATA = "no_data"
    OFFLINE = "offline"


THRESHOLD_KINDS = (RuleKind.ABOVE, RuleKind.BELOW)


class RuleError(FleetError):
    """A rule that cannot be stored: bad fields, a duplicate name, an unknown rule."""


class UnknownRule(RuleError):
    """No rule of that name."""


class Rule(BaseModel):
    """One alarm rule, checked at the edge (the CLI or a script) before it is stored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    kind: RuleKind
    metric: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    threshold: float | None = None
    clear: float | None = None
    """Threshold kinds: the value must be back past this to clear (None: the threshold itself)."""
    for_s: Annotated[float, Field(ge=0, le=30 * 86_400)] = 0.0
    severity: Severity = Severity.WARNING
    group: str | None = None
    action_command: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    action_args: dict[str, ArgValue] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.kind in THRESHOLD_KINDS:
            if self.metric is None or self.threshold is None:
                raise ValueError(f"an {self.kind.value} rule needs a metric and a threshold")
            if self.clear is not None:
                wrong = self.clear > self.threshold if self.kind is RuleKind.ABOVE else self.clear < self.threshold
                if wrong:
                    side = "below" if self.kind is RuleKind.ABOVE else "above"
                    raise ValueError(f"the clear threshold ({self.clear:g}) must be at or {side} the threshold "
                                     f"({self.threshold:g}) of an {self.kind.value} rule")
        elif self.threshold is not None or self.clear is not None:
            raise ValueError(f"a {self.kind.value} rule takes no threshold")
        elif self.kind is RuleKind.OFFLINE and self.metric is not None:
            raise ValueError("an offline rule takes no metric")
        if self.action_command is not None:
            Command(id="c0", name=self.action_command, args=self.action_args, expires=1)  # the wire's own checks
        elif self.action_args:
            raise ValueError("action arguments need an action command")
        return self

    def row(self, now: float) -> RuleRow:
        """The rule as stored."""
        return RuleRow(self.name, self.kind.value, self.metric, self.threshold, self.clear, self.for_s,
                       self.severity.value, self.group, self.action_command, dict(self.action_args), now)

    @classmethod
    def from_row(cls, row: RuleRow) -> Rule:
        """A stored rule (trusted: written through :meth:`row`)."""
        return cls.model_construct(name=row.name, kind=RuleKind(row.kind), metric=row.metric, threshold=row.threshold,
                                   clear=row.clear, for_s=row.for_s, severity=Severity(row.severity), group=row.grp,
                                   action_command=row.action_command, action_args=row.action_args)

    def describe(self) -> str:
        """A short text of the condition, for tables and alarm details."""
        if self.kind in THRESHOLD_KINDS:
            text = f"{self.metric} {'>' if self.kind is RuleKind.ABOVE else '<'} {self.threshold:g}"
            if self.clear is not None and self.clear != self.threshold:
                text += f" (clears {'<' if self.kind is RuleKind.ABOVE else '>'} {self.clear:g})"
        elif self.kind is RuleKind.NO_DATA:
            text = f"no {self.metric or 'data'}"
        else:
            text = "offline"
        return text + (f" for {self.for_s:g}s" if self.for_s else "")


def make_rule(**fields: Any) -> Rule:
    """A :class:`Rule` from loose fields; RuleError with the first problem in one line."""
    try:
        return Rule(**fields)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise RuleError(f"bad rule: {where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}") from None


def add_rule(db: str | Path, rule: Rule, now: float | None = None) -> Rule:
    """Store ``rule``; a running hub picks it up within a second. RuleError when the name is taken."""
    conn = open_database(db)
    try:
        if not AlarmStore(conn).add_rule(rule.row(time.time() if now is None else now)):
            raise RuleError(f"a rule named {rule.name!r} exists already (fleet rules remove {rule.name} first)")
    finally:
        conn.close()
    return rule


def list_rules(db: str | Path) -> list[dict[str, Any]]:
    """Every rule as a dict, with its condition as text."""
    with reading(db) as conn:
        rows = AlarmStore(conn).rules()
    return [{**r.public(), "condition": Rule.from_row(r).describe()} for r in rows]


def remove_rule(db: str | Path, name: str) -> int:
    """Delete rule ``name``; its open alarms are cleared ("rule removed"). Returns how many were cleared."""
    conn = open_database(db)
    try:
        cleared = AlarmStore(conn).remove_rule(name, time.time())
    finally:
        conn.close()
    if cleared is None:
        raise UnknownRule(f"no rule named {name!r}")
    return cleared


__all__ = ["Rule", "RuleError", "RuleKind", "StorageError", "THRESHOLD_KINDS", "UnknownRule", "add_rule", "list_rules", "make_rule",
           "remove_rule"]
