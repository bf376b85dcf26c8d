"""Telemetry decoding for the hub's hot path, without a pydantic model per reading.

:func:`decode_telemetry_rows` accepts only payloads that :func:`protocol.codec.decode` would
accept with the same values, and answers None for everything else; the caller then runs
the strict decoder, which gives the verdict and the dead-letter reason. So this module
never refuses anything: it only recognises the common, well-formed case fast.

* JSON in the compact layout our encoder and the examples write: read by one regular expression; a
  single reading's text is judged once and remembered, as CBOR readings are. Any other spelling:
  parsed with orjson (4-5 times the standard library's speed on these payloads), then every
  field is checked as the strict model does (exact types, ranges, lengths, no unknown keys).
  Duplicate keys (which a dict hides) and escaped keys are caught by counting each key's quoted
  spelling in the raw bytes: a count that differs from what the parsed object holds sends the
  payload to the strict path.
* CBOR: accepted only in its canonical encoding (RFC 8949 4.2.1), which is what our encoder
  and the examples write: the payload must match one byte pattern (keys in canonical order,
  definite lengths, every integer in its shortest form, no tags, nothing after the map), and
  each reading's float must be the shortest that holds its value. That rules out duplicate
  keys and every second spelling of the same values without decoding twice or re-encoding; a
  device that encodes otherwise (allowed by the protocol) takes the strict path. A message of
  one reading has its own pattern, whose reading (dt, metric, value) is judged once per distinct
  bytes and remembered.
"""

from __future__ import annotations

import math
import re
import struct
from typing import NamedTuple

import orjson

from protocol.limits import LIMITS
from protocol.metrics import METRICS, metric_by_id, metric_by_name

_MAX_U32 = LIMITS.max_u32
_MAX_OFFSET = LIMITS.max_offset_ms
_MAX_READINGS = LIMITS.max_readings_per_batch
_MAX_PAYLOAD = LIMITS.max_payload_bytes  # read once: a pydantic model's attribute costs 40 ns a message
_TS_LIMIT = 2**48
_TOP_JSON = frozenset({"boot", "seq", "ts", "readings"})
_TOP_JSON_DROPPED = _TOP_JSON | {"dropped"}
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


def _float_size(value: float) -> int:
    """Bytes of the shortest CBOR float that holds ``value`` exactly (as cbor2's canonical encoder picks it)."""
    for fmt, n in (("e", 3), ("f", 5)):
        try:
            if struct.unpack(fmt, struct.pack(fmt, value))[0] == value:
                return n
        except OverflowError:
            continue
    return 9


# Canonical CBOR as byte patterns (RFC 8949 4.2.1: every integer in its shortest form). A head byte of major
# type m: m|0..m|23 holds the number itself, m|24..m|27 announce 1, 2, 4 or 8 bytes, which canonically
# could not have been fewer (so their leading byte, or bytes, are not all zero).
def _canonical_int(major: int, wide: bool) -> bytes:
    """The shortest-form encodings of major type ``major`` (0 unsigned, 1 negative); 64-bit ones when ``wide``."""
    def head(n: int) -> bytes:
        return b"\\x%02x" % ((major << 5) | n)

    alternatives = [b"[" + head(0) + b"-" + head(23) + b"]", head(24) + rb"[\x18-\xff]", head(25) + rb"[\x01-\xff].",
                    head(26) + rb"(?:[\x01-\xff].|\x00[\x01-\xff]).."]
    if wide:
        alternatives.append(head(27) + rb"(?:[\x01-\xff]...|\x00[\x01-\xff]..|\x00\x00[\x01-\xff].|\x00\x00\x00[\x01-\xff]).{4}")
    return b"(?:" + b"|".join(alternatives) + b")"


_C_U32 = _canonical_int(0, wide=False)
_C_TS = rb"(?:[\x01-\x17]|\x18[\x18-\xff]|\x19[\x01-\xff].|\x1a(?:[\x01-\xff].|\x00[\x01-\xff])..|\x1b\x00\x00(?:[\x01-\xff].|\x00[\x01-\xff]).{4})"
"""A positive integer below 2**48 (a ``ts``) in its shortest form."""
_C_VALUE = (b"(?:" + _canonical_int(0, wide=True) + b"|" + _canonical_int(1, wide=True)
            + rb"|\xf9..|\xfa.{4}|\xfb.{8})")
"""A reading's value: an integer, or a half, single or double float (which one is shortest is checked per value)."""
_C_READING = rb"\x83(" + _C_U32 + rb")(" + _C_U32 + _C_VALUE + rb")"
"""One reading [dt, metric id, value]; groups: dt, and the metric id with the value (the cache key)."""
_C_READING_NC = rb"\x83" + _C_U32 + _C_U32 + _C_VALUE
_CBOR_COMPACT = re.compile(
    rb"([\xa4\xa5])\x61b(" + _C_U32 + rb")(?:\x61d(" + _C_U32 + rb"))?\x61q(" + _C_U32 + rb")\x61r([\x81-\x97]|\x98[\x18-" + b"\\x%02x" % _MAX_READINGS + rb"])"
    + _C_READING + rb"((?:" + _C_READING_NC + rb")*)\x61t(" + _C_TS + rb")",
    re.DOTALL)
"""The canonical encoding of a telemetry map: keys b, (d,) q, r, t in canonical order, definite lengths, every
integer shortest, 1 to 64 readings. Groups: map head, boot, dropped, seq, readings head, the first reading's dt
and metric-and-value, the other readings, ts."""
_CBOR_MORE = re.compile(_C_READING, re.DOTALL)
_FLOAT_FORMS = {0xF9: (">e", 3), 0xFA: (">f", 5), 0xFB: (">d", 9)}


_UINT_BODY = {2: struct.Struct(">B"), 3: struct.Struct(">H"), 5: struct.Struct(">I"), 9: struct.Struct(">Q")}
"""The big-endian number after a 1-, 2-, 4- or 8-byte integer head, by the encoding's whole length."""


def _uint(encoded: bytes) -> int:
    """The number a shortest-form CBOR integer head and body hold (head byte included, major type masked off:
    the magnitude of a negative integer is ``-1 - n``)."""
    if len(encoded) == 1:
        return encoded[0] & 0x1F
    return _UINT_BODY[len(encoded)].unpack_from(encoded, 1)[0]  # type: ignore[no-any-return]


def _int_width(head: int) -> int:
    """Bytes of an unsigned CBOR integer, head included, from its head byte (0x00-0x17 alone, 0x18-0x1b: 1-8 more)."""
    return 1 if head < 0x18 else 1 + (1 << (head - 0x18))


_CBOR_READINGS: dict[bytes, tuple[str, float] | None] = {}
"""The encoded metric id and value of a reading -> (metric name, value as a float), None when refused: sensors
repeat their values, so most readings are checked by one look-up."""
_UNSEEN = object()


def _cbor_reading(encoded: bytes) -> tuple[str, float] | None:
    """Check one reading's metric id and value (``encoded``: both, canonical integer heads already matched)
    and remember the verdict in ``_CBOR_READINGS``."""
    width = _int_width(encoded[0])
    metric = metric_by_id(_uint(encoded[:width]))
    raw = encoded[width:]
    value: object
    if raw[0] in _FLOAT_FORMS:
        fmt, size = _FLOAT_FORMS[raw[0]]
        value = struct.unpack(fmt, raw[1:])[0]
        canonical = _float_size(value) == size  # type: ignore[arg-type]
    else:
        number = _uint(raw)
        value = number if raw[0] < 0x20 else -1 - number
        canonical = True
    entry = None
    if metric is not None and canonical:
        checked = _value(metric.name, value)
        if checked is not None:
            entry = (metric.name, checked)
    if len(_CBOR_READINGS) >= 1 << 16:
        _CBOR_READINGS.clear()
    _CBOR_READINGS[encoded] = entry
    return entry


def _dropped_ok(dropped: object, seq: int) -> bool:
    """``dropped`` is a u32 below ``seq``, or 0 (the model's rule)."""
    return _u32(dropped) and (dropped == 0 or dropped < seq)  # type: ignore[operator]


def decode_telemetry_rows(payload: bytes) -> TelemetryRows | None:
    """The telemetry in ``payload`` when it is well-formed in the common way; None means "ask the strict decoder"."""
    if not payload or len(payload) > _MAX_PAYLOAD:
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
_NUMBER = rb"(-?[1-9][0-9]{0,15}(?:\.[0-9]{1,17})?|-?0\.[0-9]{1,20}|0)"
"""A number as Python's repr and our encoder write it without an exponent: up to 17 significant digits, and below 1
up to three zeros after the point before them (repr switches to an exponent below 1e-4)."""
_READING = rb'\{(?:"dt":' + _U + rb',)?"metric":"([a-z0-9_]{1,32})","value":' + _NUMBER + rb"\}"
_READING_NC = rb'\{(?:"dt":(?:0|[1-9][0-9]{0,9}),)?"metric":"[a-z0-9_]{1,32}","value":-?[0-9.]{1,34}\}'
_COMPACT = re.compile(rb'\{"boot":' + _U + rb',"seq":' + _U + rb',"ts":([1-9][0-9]{0,14}),"readings":\[' + _READING
                      + rb"((?:," + _READING_NC + rb')*)\](?:,"dropped":' + _U + rb")?\}")
"""Groups: boot, seq, ts; the first reading's dt, metric and value; the other readings; dropped."""
_COMPACT_READING = re.compile(rb"," + _READING)
_JSON_LIMITS = {m.name.encode(): (m.name, m.low, m.high) for m in METRICS}
"""A metric's name as it appears in the payload -> (name, lowest, highest value): plain tuple items, no attribute
look-ups per reading."""


def _compact_reading(dt: bytes | None, name: bytes, number: bytes) -> tuple[int, str, float] | None:
    """One reading of the compact layout as ``(dt, metric, value)``, None when the strict decoder must judge it."""
    limits = _JSON_LIMITS.get(name)
    if limits is None:
        return None
    value = float(number)
    offset = int(dt) if dt else 0
    if not (limits[1] <= value <= limits[2] and offset <= _MAX_OFFSET):
        return None
    return (offset, limits[0], value)


def _json_rows(boot: bytes, seq: bytes, ts: bytes, readings: list[tuple[int, str, float]],
               dropped: bytes | None) -> TelemetryRows | None:
    """The message of the compact layout's key fields (digits as matched) and its checked readings; None when a
    field is out of range."""
    b, q, t = int(boot), int(seq), int(ts)
    if b > _MAX_U32 or q > _MAX_U32 or t >= _TS_LIMIT:
        return None
    d = 0 if dropped is None else int(dropped)
    if d and not _dropped_ok(d, q):  # rare: most messages declare nothing
        return None
    return _new(TelemetryRows, (b, q, t, readings, d))


def _from_compact_json(m: re.Match[bytes]) -> TelemetryRows | None:
    boot, seq, ts, dt, name, number, more, dropped = m.groups()
    first = _compact_reading(dt, name, number)
    if first is None:
        return None
    readings = [first]
    if more:
        found = _COMPACT_READING.findall(more)
        if len(found) + 1 > _MAX_READINGS or len(found) != more.count(b"{"):
            return None  # a value the loose pattern let through that the exact one does not take
        for dt, name, number in found:
            reading = _compact_reading(dt, name, number)
            if reading is None:
                return None
            readings.append(reading)
    return _json_rows(boot, seq, ts, readings, dropped)


_ONE_READING = re.compile(rb'\{"boot":' + _U + rb',"seq":' + _U + rb',"ts":([1-9][0-9]{0,14}),"readings":'
                          rb'\[(\{[^][{}]{1,104}\})\](?:,"dropped":' + _U + rb")?\}")
"""The compact layout with one reading, its text as one group (boot, seq, ts, the reading, dropped): the reading is
judged by :func:`_json_reading` once per distinct text."""
_ONE_READING_MAX = 197
"""The longest payload :data:`_ONE_READING` can take (every number at its widest, a 32-character metric name, a
``dropped``); longer ones, which hold more readings, skip it."""
_READING_ALONE = re.compile(_READING)
_JSON_READINGS: dict[bytes, tuple[int, str, float] | None] = {}
"""A single reading's text -> ``(dt, metric, value)``, None when the exact pattern or the metric's range refuses it:
sensors repeat their values (as for CBOR, ``_CBOR_READINGS``), so most readings are one look-up."""
_JSON_READINGS_MAX = 1 << 14
"""Entries kept at most (a reading's text is at most 106 bytes: about 3.5 MB when full)."""


def _json_reading(text: bytes) -> tuple[int, str, float] | None:
    """Check one reading's text against the exact pattern and its metric's range; remember the verdict."""
    m = _READING_ALONE.fullmatch(text)
    entry = None if m is None else _compact_reading(*m.groups())
    if len(_JSON_READINGS) >= _JSON_READINGS_MAX:
        _JSON_READINGS.clear()
    _JSON_READINGS[text] = entry
    return entry


def _from_json(payload: bytes) -> TelemetryRows | None:
    m = _ONE_READING.fullmatch(payload) if len(payload) <= _ONE_READING_MAX else None
    if m is not None:
        boot, seq, ts, text, dropped = m.groups()
        entry = _JSON_READINGS.get(text, _UNSEEN)
        if entry is _UNSEEN:
            entry = _json_reading(text)
        if entry is not None:
            return _json_rows(boot, seq, ts, [entry], dropped)
        # not the exact reading pattern, or out of range: the general paths below judge it
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


_CBOR_ONE = re.compile(
    rb"([\xa4\xa5])\x61b(" + _C_U32 + rb")(?:\x61d(" + _C_U32 + rb"))?\x61q(" + _C_U32 + rb")\x61r\x81("
    + _C_READING_NC + rb")\x61t(" + _C_TS + rb")", re.DOTALL)
"""The canonical telemetry map with one reading, the reading (dt, metric id, value) as one group: groups map head,
boot, dropped, seq, the reading, ts."""
_CBOR_ONE_READINGS: dict[bytes, tuple[int, str, float] | None] = {}
"""A single reading's bytes -> ``(dt, metric, value)``, None when refused (judged once, like ``_CBOR_READINGS``)."""


def _cbor_one_reading(encoded: bytes) -> tuple[int, str, float] | None:
    """Judge one whole reading ``[dt, metric id, value]`` (its integer heads already canonical) and remember it."""
    width = _int_width(encoded[1])
    offset = _uint(encoded[1:1 + width])
    reading = encoded[1 + width:]
    entry = _CBOR_READINGS.get(reading, _UNSEEN)
    if entry is _UNSEEN:
        entry = _cbor_reading(reading)
    found = None if entry is None or offset > _MAX_OFFSET else (offset, entry[0], entry[1])
    if len(_CBOR_ONE_READINGS) >= 1 << 16:
        _CBOR_ONE_READINGS.clear()
    _CBOR_ONE_READINGS[encoded] = found
    return found


def _from_cbor(payload: bytes) -> TelemetryRows | None:
    m = _CBOR_ONE.fullmatch(payload)
    if m is not None:
        head, boot, dropped, seq, reading, ts = m.groups()
        entry = _CBOR_ONE_READINGS.get(reading, _UNSEEN)
        if entry is _UNSEEN:
            entry = _cbor_one_reading(reading)
        return None if entry is None else _cbor_rows(head, boot, dropped, seq, ts, [entry])
    m = _CBOR_COMPACT.fullmatch(payload)
    if m is None:
        return None  # not canonical (or not telemetry): the strict decoder decides
    head, boot, dropped, seq, count, dt, reading, more, ts = m.groups()
    found: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes]] = ((dt, reading),)
    if more:
        found = _CBOR_MORE.findall(more)
        found.insert(0, (dt, reading))
    if len(found) != _uint(count):  # the readings array's head
        return None
    readings = []
    cache = _CBOR_READINGS
    for dt, reading in found:
        entry = cache.get(reading, _UNSEEN)
        if entry is _UNSEEN:
            entry = _cbor_reading(reading)
        offset = _uint(dt)
        if entry is None or offset > _MAX_OFFSET:
            return None
        readings.append((offset, entry[0], entry[1]))
    return _cbor_rows(head, boot, dropped, seq, ts, readings)


def _cbor_rows(head: bytes, boot: bytes, dropped: bytes | None, seq: bytes, ts: bytes,
               readings: list[tuple[int, str, float]]) -> TelemetryRows | None:
    """The message of a canonical map's head and key fields (integer encodings as matched) and its checked readings;
    None when the head's key count and the keys disagree, or ``dropped`` is not below ``seq``."""
    if (head == b"\xa5") != (dropped is not None):
        return None
    # _uint inline for the three fields every message has (unsigned: a one-byte head is the number itself)
    n = len(boot)
    b = boot[0] if n == 1 else _UINT_BODY[n].unpack_from(boot, 1)[0]
    n = len(seq)
    q = seq[0] if n == 1 else _UINT_BODY[n].unpack_from(seq, 1)[0]
    n = len(ts)
    t = ts[0] if n == 1 else _UINT_BODY[n].unpack_from(ts, 1)[0]
    d = 0 if dropped is None else _uint(dropped)
    if d and not _dropped_ok(d, q):
        return None
    return _new(TelemetryRows, (b, q, t, readings, d))
