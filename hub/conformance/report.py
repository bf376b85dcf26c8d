"""What a conformance run found: one result per checked rule, each with the evidence behind it.

A result names the section of ``firmware_protocol.md`` it checks, so a firmware engineer reads
the verdict next to the rule. Evidence is what went over the wire (what the checker sent, what
came back, when), already made inert for a terminal: everything a device sends is untrusted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    """The verdict on one rule. Only ``fail`` and ``skip`` make the run not pass."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    """A *should* of the document is not met; a *must* is not at stake."""
    SKIP = "skip"
    """Could not be checked in this run (the reason says why); the run does not pass."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """One line of what happened: ``at`` seconds after the result's scenario started."""

    at: float
    what: str

    def line(self) -> str:
        return f"+{self.at:7.3f}s  {self.what}"


@dataclass(frozen=True, slots=True)
class Result:
    """The verdict on one rule of one section."""

    section: str
    """Section of firmware_protocol.md, e.g. ``"6"`` or ``"5.3 R1"``."""
    check: str
    """A short name, stable across versions (for CI filters): ``duplicate-command``."""
    outcome: Outcome
    summary: str
    evidence: tuple[Evidence, ...] = ()
    seconds: float = 0.0

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = self.outcome.value
        data["evidence"] = [e.line() for e in self.evidence]
        return data


@dataclass(slots=True)
class Report:
    """Every result of one run against one device."""

    device_id: str
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Facts about the run itself (hub detected, device form, settings), not verdicts."""

    @property
    def passed(self) -> bool:
        """True when every rule passed (warnings allowed, skips not)."""
        return bool(self.results) and all(r.outcome in (Outcome.PASS, Outcome.WARN) for r in self.results)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.outcome is Outcome.FAIL]

    def outcome_of(self, check: str) -> Outcome | None:
        """The outcome of the named check, or None when it was not run."""
        return next((r.outcome for r in self.results if r.check == check), None)

    def exit_code(self) -> int:
        """0 every rule passed, 1 some rule failed, 2 nothing failed but something was skipped."""
        if self.failed or not self.results:
            return 1
        return 0 if self.passed else 2

    def public(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "passed": self.passed, "notes": list(self.notes),
                "results": [r.public() for r in self.results]}
