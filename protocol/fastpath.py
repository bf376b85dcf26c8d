"""Telemetry decoding for the hub's hot path, without a pydantic model per reading.

:func:`decode_telemetry_rows` accepts only payloads that :func:`protocol.codec.decode` would
accept with the same values, and answers None for everything else; the caller then runs
the strict decoder, which gives the verdict and the dead-letter reason. So this module
never refuses anything: it only recognises the common, well-formed case fast.

* JSON: parsed with orjson (4-5 times the standard library's speed on these payloads), then every field is checked as the strict model
  does (exact types, ranges, lengths, no unknown keys). Duplicate keys (which a dict hides)
  and escaped keys are caught by counting each key's quoted spelling in the raw bytes: a
  count that differs from what the parsed object holds sends the payload to the strict path.
* CBOR: parsed with cbor2's C decoder and accepted only when the payload is exactly the
  canonical encoding of what it decoded to. That rules out tags, indefinite lengths,
  duplicate keys, non-shortest forms and trailing bytes; a device that encodes otherwise
  (allowed by the protocol) takes the strict path. Checked without re-encoding (which cost
  more than the decoding): every other encoding of the same values is longer than the
  canonical one, except a map's key order and an indefinite-length array of 24 or more
  items, so the payload is canonical when its length is the canonical length (summed while
  the fields are checked), its keys come in canonical order, and (for 24+ readings) it holds
  no indefinite-array byte; when it does, the re-encoding decides.
"""

from __future__ import annotations

import math
import re
import struct
from typing import NamedTuple

import cbor2
import orjson

from protocol.limits import LIMITS
from protocol.metrics import METRICS, metric_by_id, metric_by_name

_MAX_U32 = LIMITS.max_u32
_MAX_OFFSET = LIMITS.max_offset_ms
_MAX_READINGS = LIMITS.max_readings_per_batch
_TS_LIMIT = 2**48
_TOP_JSON = frozenset({"boot", "seq", "ts", "readings"})
_TOP_JSON_DROPPED = _TOP_JSON | {"dropped"}
_CANONICAL_ORDER = (("b", "q", "r", "t"), ("b", "d", "q", "r", "t"))
"""The top-level keys in canonical order (shorter first, then bytewise), without and with ``d``: the only
key sets the fast path takes."""
_READING_KEYS = frozenset({"metric", "value"})
_READING_KEYS_DT = frozenset({"dt", "metric", "value"})


class TelemetryRows(NamedTuple):
    """A decoded telemetry message: its key and its readings as ``(dt, metric, value)`` tuples."""

    boot: int
    seq: int
    ts: int
    readings: list[tuple[int, str, float]]
    dropped: int = 0
    """The device gave up its unsent messages of this boot up to this seq (0: none)."""


_new = tuple.__new__
"""Makes a named tuple from a tuple of all its fields: half the cost of calling the class, whose generated
``__new__`` is a Python function (one per message on the hub's hot path)."""


def _u32(v: object) -> bool:
    return type(v) is int and 0 <= v <= _MAX_U32  # type: ignore[operator]


def _value(metric_name: str, value: object) -> float | None:
    """The reading's value as a float when it is in range for a known metric, else None."""
    metric = metric_by_name(metric_name)
    if metric is None:
        return None
    if type(value) is float:
        if not math.isfinite(value):
            return None
    elif type(value) is int:
        try:
            value = float(value)
        except OverflowError:
            return None
    else:
        return None
    return value if metric.low <= value <= metric.high else None  # type: ignore[operator]


def _int_size(n: int) -> int:
    """Bytes of the shortest CBOR encoding of integer ``n`` (head included)."""
    if n < 0:
        n = -1 - n
    if n < 24:
        return 1
    if n < 0x100:
        return 2
    if n < 0x10000:
        return 3
    if n < 0x100000000:
        return 5
    return 9  # beyond 2**64 a bignum (longer): the length check fails and the re-encode decides nothing wrong


_FLOAT_SIZES: dict[float, int] = {}


def _float_size(value: float) -> int:
    """Bytes of the shortest CBOR float that holds ``value`` exactly (as cbor2's canonical encoder picks it)."""
    size = _FLOAT_SIZES.get(value)
    if size is None:
        size = 9
        for fmt, n in (("e", 3), ("f", 5)):
            try:
                if struct.unpack(fmt, struct.pack(fmt, value))[0] == value:
                    size = n
                    break
            except OverflowError:
                continue
        if len(_FLOAT_SIZES) >= 1 << 16:
            _FLOAT_SIZES.clear()
        _FLOAT_SIZES[value] = size
    return size


_CBOR_READINGS: dict[tuple[int, object, type], tuple[str, int] | None] = {}
"""(metric id, value, value type) -> (metric name, encoded size of the value), None when refused: sensors
repeat their values, so most readings are checked by one look-up (the value itself is always the
payload's, so 0.0 and -0.0 share an entry without mixing their signs)."""


def _cbor_reading(metric_id: int, value: object) -> tuple[str, int] | None:
    key = (metric_id, value, type(value))
    try:
        return _CBOR_READINGS[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable value (a list, a map): not a reading
        return None
    metric = metric_by_id(metric_id)
    entry = None
    if metric is not None and _value(metric.name, value) is not None:
        entry = (metric.name, _float_size(value) if type(value) is float else _int_size(value))  # type: ignore[arg-type]
    if len(_CBOR_READINGS) >= 1 << 16:
        _CBOR_READINGS.clear()
    _CBOR_READINGS[key] = entry
    return entry


def _dropped_ok(dropped: object, seq: int) -> bool:
    """``dropped`` is a u32 below ``seq``, or 0 (the model's rule)."""
    return _u32(dropped) and (dropped == 0 or dropped < seq)  # type: ignore[operator]


def decode_telemetry_rows(payload: bytes) -> TelemetryRows | None:
    """The telemetry in ``payload`` when it is well-formed in the common way; None means "ask the strict decoder"."""
    if not payload or len(payload) > LIMITS.max_payload_bytes:
        return None
    if payload[0] == 0x7B:  # "{"
        return _from_json(payload)
    return _from_cbor(payload)


# The compact layout devices and our encoder write (firmware_protocol.md's examples): keys in this order,
# no spaces, numbers without exponents, metric names without escapes. A payload of exactly this shape
# has no duplicate or escaped keys and no number that parses differently in two ways, so its fields are
# read by one regular-expression match instead of a parse plus per-key checks (3x faster on one reading).
# Any other valid spelling takes the general path below. "-0" is left out: JSON's integer -0 is the
# value 0.0, float("-0") is -0.0.
_U = rb"(0|[1-9][0-9]{0,9})"
_NUMBER = rb"(-?[1-9][0-9]{0,15}(?:\.[0-9]{1,17})?|-?0\.[0-9]{1,17}|0)"
_READING = rb'\{(?:"dt":' + _U + rb',)?"metric":"([a-z0-9_]{1,32})","value":' + _NUMBER + rb"\}"
_READING_NC = rb'\{(?:"dt":(?:0|[1-9][0-9]{0,9}),)?"metric":"[a-z0-9_]{1,32}","value":-?[0-9.]{1,34}\}'
_COMPACT = re.compile(rb'\{"boot":' + _U + rb',"seq":' + _U + rb',"ts":([1-9][0-9]{0,14}),"readings":\[' + _READING
                      + rb"((?:," + _READING_NC + rb')*)\](?:,"dropped":' + _U + rb")?\}")
"""Groups: boot, seq, ts; the first reading's dt, metric and value; the other readings; dropped."""
_COMPACT_READING = re.compile(rb"," + _READING)
_JSON_METRICS = {m.name.encode(): m for m in METRICS}


def _from_compact_json(m: re.Match[bytes]) -> TelemetryRows | None:
    boot, seq, ts, dt, name, number, more, dropped = m.groups()
    boot, seq, ts = int(boot), int(seq), int(ts)
    dropped = 0 if dropped is None else int(dropped)
    if not (boot <= _MAX_U32 and seq <= _MAX_U32 and ts < _TS_LIMIT and _dropped_ok(dropped, seq)):
        return None
    found: list[tuple[bytes, bytes, bytes]] | tuple[tuple[bytes, bytes, bytes]] = ((dt, name, number),)
    if more:
        found = _COMPACT_READING.findall(more)
        if len(found) + 1 > _MAX_READINGS or len(found) != more.count(b"{"):
            return None  # a value the loose pattern let through that the exact one does not take
        found.insert(0, (dt, name, number))
    readings = []
    for dt, name, number in found:
        metric = _JSON_METRICS.get(name)
        if metric is None:
            return None
        value = float(number)
        offset = int(dt) if dt else 0
        if not (metric.low <= value <= metric.high and offset <= _MAX_OFFSET):
            return None
        readings.append((offset, metric.name, value))
    return _new(TelemetryRows, (boot, seq, ts, readings, dropped))


def _from_json(payload: bytes) -> TelemetryRows | None:
    m = _COMPACT.fullmatch(payload)
    if m is not None:
        return _from_compact_json(m)
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict:
        return None
    keys = data.keys()
    dropped_given = keys == _TOP_JSON_DROPPED
    if keys == _TOP_JSON:
        dropped = 0
    elif dropped_given:
        dropped = data["dropped"]
    else:
        return None
    boot, seq, ts, raw = data["boot"], data["seq"], data["ts"], data["readings"]
    if not (_u32(boot) and _u32(seq) and type(ts) is int and 0 < ts < _TS_LIMIT and _dropped_ok(dropped, seq)):
        return None
    if type(raw) is not list or not 1 <= len(raw) <= _MAX_READINGS:
        return None
    readings = []
    with_dt = 0
    for r in raw:
        if type(r) is not dict:
            return None
        fields = r.keys()
        if fields == _READING_KEYS:
            dt = 0
        elif fields == _READING_KEYS_DT:
            dt = r["dt"]
            if type(dt) is not int or not 0 <= dt <= _MAX_OFFSET:
                return None
            with_dt += 1
        else:
            return None
        metric = r["metric"]
        if type(metric) is not str:
            return None
        value = _value(metric, r["value"])
        if value is None:
            return None
        readings.append((dt, metric, value))
    n = len(readings)
    # a dict keeps the last of duplicate keys and unescapes "\u0062oot": the raw spelling counts tell
    count = payload.count
    if (count(b'"boot"') != 1 or count(b'"seq"') != 1 or count(b'"ts"') != 1 or count(b'"readings"') != 1
            or count(b'"metric"') != n or count(b'"value"') != n or count(b'"dt"') != with_dt
            or count(b'"dropped"') != (1 if dropped_given else 0)):
        return None
    return _new(TelemetryRows, (boot, seq, ts, readings, dropped))


def _from_cbor(payload: bytes) -> TelemetryRows | None:
    try:
        data = cbor2.loads(payload)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError, MemoryError):
        return None
    if type(data) is not dict:
        return None
    # the key set and its canonical order in one comparison (shorter keys first, then bytewise)
    order = tuple(data)
    if order == _CANONICAL_ORDER[0]:
        dropped, size = 0, 9  # map head and four one-letter keys
    elif order == _CANONICAL_ORDER[1]:
        dropped = data["d"]
        if not _u32(dropped):
            return None
        size = 11 + _int_size(dropped)
    else:
        return None
    boot, seq, ts, raw = data["b"], data["q"], data["t"], data["r"]
    if not (_u32(boot) and _u32(seq) and type(ts) is int and 0 < ts < _TS_LIMIT and _dropped_ok(dropped, seq)):
        return None
    if type(raw) is not list or not 1 <= len(raw) <= _MAX_READINGS:
        return None
    n = len(raw)
    # the canonical length: map head and keys (above), the integers, the readings' array head ...
    size += _int_size(boot) + _int_size(seq) + _int_size(ts) + _int_size(n)
    readings = []
    append = readings.append
    cache = _CBOR_READINGS
    for r in raw:
        if type(r) is not list or len(r) != 3:
            return None
        dt, metric_id, value = r
        if type(dt) is not int or not 0 <= dt <= _MAX_OFFSET or type(metric_id) is not int:
            return None
        try:
            entry = cache[(metric_id, value, type(value))]
        except (KeyError, TypeError):
            entry = _cbor_reading(metric_id, value)
        if entry is None:
            return None
        # ... and each reading: a 3-item array head, dt, metric id, the value as it came (int or float)
        size += 1 + (1 if dt < 24 else _int_size(dt)) + (1 if metric_id < 24 else _int_size(metric_id)) + entry[1]
        append((dt, entry[0], value if type(value) is float else float(value)))  # type: ignore[arg-type]
    if size != len(payload):
        return None
    if n >= 24 and 0x9F in payload:  # an indefinite-length array of 24+ items is as long as the definite one
        try:
            if cbor2.dumps(data, canonical=True) != payload:
                return None
        except (cbor2.CBORError, ValueError, TypeError):
            return None
    return _new(TelemetryRows, (boot, seq, ts, readings, dropped))
