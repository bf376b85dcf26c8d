"""Click parameter types shared by the commands: durations like ``30s``, ``10m``, ``2h``, ``7d``."""

from __future__ import annotations

import re
from typing import Any

import click

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration(text: str) -> float:
    """``'10m'`` -> 600.0 seconds; a bare number is seconds. Raises ValueError otherwise."""
    match = _RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (examples: 30s, 10m, 2h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


class Duration(click.ParamType):
    """A click parameter holding a duration in seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()
