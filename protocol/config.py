"""Device configuration and self-description: the three messages of firmware_protocol.md section 13.

    hub -> device   d/<id>/k   ConfigSet      "set these keys" (only what differs from the device's last report)
    device -> hub   d/<id>/n   ConfigReport   what the device applied (with values) and refused (with reasons)
    device -> hub   d/<id>/x   Description    retained: metrics (unit, range), commands (argument types), config keys

Every ``ConfigSet`` carries the hub's per-device ``version``; a device applies a version only when it is
above the one it applied last (the newer version wins), and answers each with a ``ConfigReport`` of the
same version. Keys and values travel as one flat list ``[key, value, key, value, ...]`` (one CBOR array
header for any number of keys); a key is its name or, for a device whose description the hub holds, its
index in the description's ``config`` list: a one-key change is then 10 bytes of CBOR.

A description is a constant of the firmware: its bytes (either form) and their hash are made at build
time, so the device never computes SHA-256. The birth names the hash (``Status.desc``); the hub hashes
the bytes it receives and keeps the description under that hash.

Type specs (description values): ``bool``, ``int``, ``float``, ``text``; ``int`` and ``float`` may add an
inclusive range ``LOW..HIGH`` (``int 1..86400``). A metric spec is ``UNIT LOW..HIGH`` (``°C -40..85``).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from protocol.metrics import metric_by_name
from protocol.models import U32, ArgValue, ShortText, WireModel
from protocol.topics import MessageClass

MAX_CONFIG_KEYS = 32
"""Keys in one ConfigSet or ConfigReport, and config keys in one description."""
MAX_DESCRIBED = 32
"""Metrics and commands in one description."""
DESC_HASH_LEN = 16
"""Hex digits of a description hash: the first 8 bytes of the SHA-256 of the description's payload."""

_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
TYPE_SPEC_RE = re.compile(rf"^(bool|text|int|float)(?: ({_NUMBER})\.\.({_NUMBER}))?$")
METRIC_SPEC_RE = re.compile(rf"^(\S{{1,16}}) ({_NUMBER})\.\.({_NUMBER})$")

Flat = list[str | bool | int | float]
"""``[key, value, key, value, ...]``: a key is a name or its index in the device's description's ``config`` list."""


def _pairs(items: list[Any], what: str) -> list[tuple[Any, Any]]:
    if len(items) % 2:
        raise ValueError(f"{what} must alternate key and value (an even number of items)")
    return list(zip(items[0::2], items[1::2], strict=True))


def _check_key(key: Any) -> None:
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise ValueError(f"a key is a name or an index, not {key!r}")
    if isinstance(key, str) and not 1 <= len(key) <= 32:
        raise ValueError("a key name has 1 to 32 characters")
    if isinstance(key, int) and not 0 <= key < MAX_CONFIG_KEYS:
        raise ValueError(f"a key index is 0..{MAX_CONFIG_KEYS - 1}")


def _check_value(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("a value must be finite")
    if isinstance(value, str) and len(value) > 256:
        raise ValueError("a text value has at most 256 characters")


class ConfigSet(WireModel):
    """The hub's desired configuration for one device at ``version``: the keys that differ from its last report."""

    version: Annotated[int, Field(ge=1, le=2**32 - 1)]
    set: Annotated[Flat, Field(min_length=2, max_length=2 * MAX_CONFIG_KEYS)]
    """``[key, value, key, value, ...]``."""

    @field_validator("set")
    @classmethod
    def _alternating(cls, items: list[Any]) -> list[Any]:
        for key, value in _pairs(items, "set"):
            _check_key(key)
            _check_value(value)
        return items

    def pairs(self) -> list[tuple[str | int, ArgValue]]:
        """The (key, value) pairs of ``set``."""
        return _pairs(self.set, "set")


class ConfigReport(WireModel):
    """A device's answer to ``version``: keys applied (with the values now in force) and keys refused (with why)."""

    version: U32
    applied: Annotated[Flat, Field(max_length=2 * MAX_CONFIG_KEYS)] = []
    refused: Annotated[Flat, Field(max_length=2 * MAX_CONFIG_KEYS)] = []
    """``[key, reason, key, reason, ...]``; a reason is text of up to 256 characters."""

    @field_validator("applied")
    @classmethod
    def _applied(cls, items: list[Any]) -> list[Any]:
        for key, value in _pairs(items, "applied"):
            _check_key(key)
            _check_value(value)
        return items

    @field_validator("refused")
    @classmethod
    def _refused(cls, items: list[Any]) -> list[Any]:
        for key, reason in _pairs(items, "refused"):
            _check_key(key)
            if not isinstance(reason, str) or len(reason) > 256:
                raise ValueError("a refusal's reason is text of up to 256 characters")
        return items

    def applied_pairs(self) -> list[tuple[str | int, ArgValue]]:
        return _pairs(self.applied, "applied")

    def refused_pairs(self) -> list[tuple[str | int, str]]:
        return _pairs(self.refused, "refused")


TypeSpec = Annotated[str, Field(pattern=TYPE_SPEC_RE.pattern)]
MetricSpec = Annotated[str, Field(pattern=METRIC_SPEC_RE.pattern)]


class Description(WireModel):
    """What a device measures, what it can be told and how it can be configured (sent once, retained)."""

    metrics: Annotated[dict[ShortText, MetricSpec], Field(max_length=MAX_DESCRIBED)] = {}
    """Metric name (from the metric table) -> ``UNIT LOW..HIGH``: the device's own unit label and range."""
    commands: Annotated[dict[ShortText, Annotated[dict[ShortText, TypeSpec], Field(max_length=16)]],
                        Field(max_length=MAX_DESCRIBED)] = {}
    """Command name -> {argument name -> type spec}; every described argument is required."""
    config: Annotated[list[str], Field(max_length=2 * MAX_CONFIG_KEYS)] = []
    """``[name, type spec, name, type spec, ...]``; a key's index is its position among the names (0, 1, ...)."""

    @model_validator(mode="after")
    def _config_pairs(self) -> Description:
        names = set()
        for name, spec in _pairs(self.config, "config"):
            if not 1 <= len(name) <= 32:
                raise ValueError("a config key name has 1 to 32 characters")
            if not TYPE_SPEC_RE.match(spec):
                raise ValueError(f"config {name}: {spec!r} is not a type spec")
            if name in names:
                raise ValueError(f"config key {name!r} appears twice")
            names.add(name)
        unknown = [m for m in self.metrics if metric_by_name(m) is None]
        if unknown:
            raise ValueError(f"metric {unknown[0][:32]!r} is not in the metric table")
        for spec in [*self.metrics.values(), *(s for c in self.commands.values() for s in c.values()),
                     *self.config[1::2]]:
            parse_spec(spec)  # the range: LOW <= HIGH
        return self

    def config_keys(self) -> list[str]:
        """Config key names in index order."""
        return list(self.config[0::2])

    def config_types(self) -> dict[str, str]:
        return dict(_pairs(self.config, "config"))

    def metric_ranges(self) -> dict[str, tuple[str, float, float]]:
        """Metric name -> (unit, low, high)."""
        out = {}
        for name, spec in self.metrics.items():
            m = METRIC_SPEC_RE.match(spec)
            assert m is not None
            out[name] = (m.group(1), float(m.group(2)), float(m.group(3)))
        return out


@dataclass(frozen=True, slots=True)
class Spec:
    """A parsed type spec."""

    kind: str
    low: float | None = None
    high: float | None = None


def parse_spec(spec: str) -> Spec:
    """Parse a type spec or a metric spec; ValueError when its range is empty or it is neither."""
    m = TYPE_SPEC_RE.match(spec)
    if m is not None:
        kind, low, high = m.groups()
        if low is not None and kind not in ("int", "float"):
            raise ValueError(f"{spec!r}: only int and float take a range")
    else:
        m2 = METRIC_SPEC_RE.match(spec)
        if m2 is None:
            raise ValueError(f"{spec!r} is not a type spec")
        kind, low, high = "float", m2.group(2), m2.group(3)
    lo = float(low) if low is not None else None
    hi = float(high) if high is not None else None
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"{spec!r}: empty range")
    return Spec(kind, lo, hi)


def check_value(spec: str, value: Any) -> str | None:
    """Why ``value`` does not fit type spec ``spec`` (one short phrase), or None when it does."""
    s = parse_spec(spec)
    if s.kind == "bool":
        ok = type(value) is bool
    elif s.kind == "int":
        ok = type(value) is int
    elif s.kind == "float":
        ok = type(value) in (int, float)
    else:
        ok = type(value) is str
    if not ok:
        noun = {"int": "an integer", "float": "a number", "bool": "true or false", "text": "text"}[s.kind]
        return f"must be {noun}" + (
            f" {_fmt(s.low)}..{_fmt(s.high)}" if s.low is not None else "") + f", not {value!r}"
    if s.low is not None and s.high is not None and not s.low <= value <= s.high:
        return f"must be in {_fmt(s.low)}..{_fmt(s.high)}, not {value!r}"
    return None


def _fmt(x: float | None) -> str:
    return f"{x:g}" if x is not None else ""


def command_error(description: Description, name: str, args: dict[str, Any]) -> str | None:
    """Why command ``name`` with ``args`` does not fit the description (None: it fits, or is not described)."""
    declared = description.commands.get(name)
    if declared is None:
        return None  # standard commands (rebirth, ping, ...) and undeclared ones are the device's to judge
    for arg, spec in declared.items():
        if arg not in args:
            return f"{name}: argument {arg!r} ({spec}) is missing"
        why = check_value(spec, args[arg])
        if why:
            return f"{name}: argument {arg!r} {why}"
    extra = sorted(set(args) - set(declared))
    if extra:
        return f"{name}: unknown argument {extra[0]!r} (takes {', '.join(declared) or 'none'})"
    return None


def config_error(description: Description, key: str, value: Any) -> str | None:
    """Why ``key=value`` does not fit the description's config keys (None: it fits)."""
    types = description.config_types()
    if key not in types:
        return f"unknown config key {key!r} (the device declares {', '.join(types) or 'none'})"
    why = check_value(types[key], value)
    return f"{key} {why}" if why else None


def description_hash(payload: bytes) -> str:
    """The hash a birth names for the description whose payload is ``payload`` (the exact bytes sent)."""
    return hashlib.sha256(payload).hexdigest()[:DESC_HASH_LEN]


CONFIG_MODELS: dict[MessageClass, type[WireModel]] = {
    MessageClass.CONFIG_SET: ConfigSet,
    MessageClass.CONFIG_REPORT: ConfigReport,
    MessageClass.DESCRIPTION: Description,
}
"""The model of each configuration topic class (merged into ``protocol.codec.MODEL_FOR``)."""

CONFIG_SHORT_KEYS: dict[type[WireModel], dict[str, str]] = {
    ConfigSet: {"version": "v", "set": "s"},
    ConfigReport: {"version": "v", "applied": "a", "refused": "r"},
    Description: {"metrics": "m", "commands": "c", "config": "k"},
}
"""One-letter CBOR keys (merged into ``protocol.codec.SHORT_KEYS``; the table in section 13.3)."""

__all__ = ["ConfigReport", "ConfigSet", "Description", "check_value", "command_error", "config_error",
           "description_hash", "parse_assignment"]
