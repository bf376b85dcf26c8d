"""Helpers of the conformance tests."""

from __future__ import annotations

from hub.conformance import CheckSettings, Report, run_check


def check(settings: CheckSettings) -> Report:
    """Run the checker; the report is printed so a failing test shows the evidence."""
    report = run_check(settings)
    for r in report.results:
        print(f"{r.outcome.value.upper():4} §{r.section} {r.check}: {r.summary}")
        for e in r.evidence:
            print("      " + e.line())
    return report
