"""Helpers of the conformance tests."""

from __future__ import annotations

from hub.conformance import CheckSettings, Report, run_check

FAST = {"timeout_s": 20.0, "hold_s": 2.5, "messages": 3, "hub_answer_s": 1.0}
"""Short hold and hub-answer windows (the devices here send every 0.3 s); generous per-event timeouts."""


def check(settings: CheckSettings) -> Report:
    """Run the checker; the report is printed so a failing test shows the evidence."""
    report = run_check(settings)
    for r in report.results:
        print(f"{r.outcome.value.upper():4} §{r.section} {r.check}: {r.summary}")
        for e in r.evidence:
            print("      " + e.line())
    return report
