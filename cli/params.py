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


def format_duration(seconds: float) -> str:
    """600.0 -> ``'10m'``: the largest unit that divides ``seconds`` evenly."""
    for unit in ("w", "d", "h", "m", "s"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


class Duration(click.ParamType):
    """A click parameter holding a duration in seconds."""

    name = "duration"

    def __init__(self, max_s: float | None = None, positive: bool = False) -> None:
        self.max_s = max_s
        self.positive = positive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            seconds = float(value) if isinstance(value, (int, float)) else parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if self.positive and seconds <= 0:
            self.fail(f"{value!r}: must be more than zero", param, ctx)
        if self.max_s is not None and seconds > self.max_s:
            self.fail(f"{value!r} is too long: at most {format_duration(self.max_s)}", param, ctx)
        return seconds


DURATION = Duration()
