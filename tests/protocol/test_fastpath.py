"""The hub's fast telemetry decoder never accepts what the strict decoder refuses, nor changes a value."""

from __future__ import annotations

import json
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import MessageClass, ProtocolError, Reading, Telemetry, decode, encode
from protocol.fastpath import TelemetryRows, decode_telemetry_rows
from protocol_strategies import cbor_scalars, json_scalars, structures, telemetry

BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TS = 1_700_000_000_000


def assert_agrees(payload: bytes) -> TelemetryRows | None:
    """Fast answer None, or exactly what the strict decoder makes of ``payload``."""
    rows = decode_telemetry_rows(payload)
    if rows is None:
        return None
    strict = decode(MessageClass.TELEMETRY, payload)  # must not raise: the fast path accepted it
    assert isinstance(strict, Telemetry)
    assert rows == TelemetryRows(strict.boot, strict.seq, strict.ts, [(r.dt, r.metric, r.value) for r in strict.readings],
                                 strict.dropped)
    assert all(type(v) is float for _, _, v in rows.readings)
    return rows


@BOUNDED
@given(message=telemetry, form=st.sampled_from(["json", "cbor"]))
def test_valid_telemetry_takes_the_fast_path_with_the_same_values(message: Telemetry, form: str) -> None:
    try:
        payload = encode(message, form)
    except ProtocolError:
        return  # an unknown metric or a value out of range: the strict path's business
    assert assert_agrees(payload) is not None


@BOUNDED
@given(data=structures(json_scalars))
def test_any_json_is_refused_or_decoded_as_strictly(data: Any) -> None:
    assert_agrees(json.dumps(data).encode())


@BOUNDED
@given(data=structures(cbor_scalars))
def test_any_cbor_is_refused_or_decoded_as_strictly(data: Any) -> None:
    assert_agrees(cbor2.dumps(data))


@BOUNDED
@given(message=telemetry, form=st.sampled_from(["json", "cbor"]), data=st.data())
def test_damaged_payloads_are_refused_or_decoded_as_strictly(message: Telemetry, form: str, data: st.DataObject) -> None:
    try:
        payload = bytearray(encode(message, form))
    except ProtocolError:
        return
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    assert_agrees(bytes(payload))
    if form == "cbor":
        assert_canonical_rule(bytes(payload))


def canonical(payload: bytes) -> bool:
    """The CBOR payload is exactly the canonical encoding of what it decodes to (trailing bytes included)."""
    try:
        return cbor2.dumps(cbor2.loads(payload), canonical=True) == payload
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError):
        return False


def assert_canonical_rule(payload: bytes) -> None:
    """The fast path takes a CBOR payload exactly when it is canonical and valid (it re-encodes only rarely)."""
    rows = decode_telemetry_rows(payload)
    if rows is not None:
        assert canonical(payload), payload.hex()
    elif canonical(payload):
        try:
            decode(MessageClass.TELEMETRY, payload)
        except ProtocolError:
            return
        raise AssertionError(f"a canonical, valid payload missed the fast path: {payload.hex()}")


@BOUNDED
@given(message=telemetry, data=st.data())
def test_cbor_is_taken_exactly_when_canonical(message: Telemetry, data: st.DataObject) -> None:
    try:
        payload = encode(message, "cbor")
    except ProtocolError:
        return
    assert_canonical_rule(payload)
    decoded = cbor2.loads(payload)
    keys = data.draw(st.permutations(list(decoded)))  # another key order: same length, not canonical
    reordered = cbor2.dumps({k: decoded[k] for k in keys}, canonical=False)
    assert_canonical_rule(reordered)


def one(**fields: Any) -> dict[str, Any]:
    return {"boot": 1, "seq": 2, "ts": TS, "readings": [{"metric": "temperature", "value": 21.5}]} | fields


@pytest.mark.parametrize("payload", [
    b'{"boot":1,"boot":9,"seq":2,"ts":1700000000000,"readings":[{"metric":"temperature","value":21.5}]}',
    b'{"boot":1,"seq":2,"ts":1700000000000,"readings":[{"metric":"temperature","value":1,"value":21.5}]}',
    b'{"\\u0062oot":1,"seq":2,"ts":1700000000000,"readings":[{"metric":"temperature","value":21.5}]}',
    json.dumps(one(seq=True)).encode(),
    json.dumps(one(seq=2.0)).encode(),
    json.dumps(one(ts=0)).encode(),
    json.dumps(one(boot=2**32)).encode(),
    json.dumps(one(readings=[])).encode(),
    json.dumps(one(readings=[{"metric": "temperature", "value": 21.5}] * 65)).encode(),
    json.dumps(one(readings=[{"metric": "nope", "value": 1.0}])).encode(),
    json.dumps(one(readings=[{"metric": "temperature", "value": 1e9}])).encode(),
    json.dumps(one(readings=[{"metric": "temperature", "value": "21"}])).encode(),
    json.dumps(one(readings=[{"metric": "temperature", "value": 21.5, "dt": -1}])).encode(),
    json.dumps(one(readings=[{"metric": "temperature", "value": 21.5, "x": 1}])).encode(),
    json.dumps(one(extra=1)).encode(),
    json.dumps(one(dropped=2)).encode(),  # dropped must be below seq
    json.dumps(one(dropped=-1)).encode(),
    b'{"boot":1,"seq":2,"ts":1700000000000,"readings":[{"metric":"temperature","value":21.5}],"dropped":2}',  # compact
    b'{"boot":1,"seq":2,"ts":1700000000000,"readings":[{"metric":"temperature","value":21.5}],"dropped":4294967296}',
    b'{"boot":1,"seq":2,"ts":1700000000000,"dropped":0,"dropped":1,"readings":[{"metric":"temperature","value":2}]}',
    b'{"boot":1,"seq":2,"ts":1700000000000,"readings":[{"metric":"temperature","value":NaN}]}',
    b'{"boot":1,"seq":2,"ts":1700000000000,"readings":[{"metric":"temperature","value":1e999}]}',
    json.dumps(one()).encode() + b"x",
    cbor2.dumps(cbor2.CBORTag(2, b"\x01"), canonical=True),
    cbor2.dumps({"b": 1, "q": cbor2.CBORTag(2, b"\x02"), "t": TS, "r": [[0, 1, 21.5]]}),
    b"\xbf" + cbor2.dumps({"b": 1, "q": 2, "t": TS, "r": [[0, 1, 21.5]]}, canonical=True)[1:] + b"\xff",
    cbor2.dumps({"b": 1, "q": 2, "t": TS, "r": [[0, 1, 21.5]]}, canonical=True) + b"\x00",
    b"\xa5" + cbor2.dumps({"b": 1, "q": 2, "t": TS, "r": [[0, 1, 21.5]]}, canonical=True)[1:] + b"\x61b\x02",
])
def test_suspicious_payloads_go_to_the_strict_decoder(payload: bytes) -> None:
    assert decode_telemetry_rows(payload) is None


def _many(n: int, value: float = 21.5) -> dict[str, Any]:
    return {"b": 1, "q": 2, "r": [[0, 1, value]] * n, "t": TS}


@pytest.mark.parametrize("payload", [
    # an indefinite-length readings array of 24+ items is exactly as long as the definite one
    (lambda c: c[:c.index(b"\x98")] + b"\x9f" + c[c.index(b"\x98") + 2:-11] + b"\xff" + c[-11:])(
        cbor2.dumps(_many(30), canonical=True)),
    b"\xa4" + b"".join(cbor2.dumps(k) + cbor2.dumps(v, canonical=True) for k, v in
                        [("q", 2), ("b", 1), ("r", [[0, 1, 21.5]]), ("t", TS)]),  # keys out of order
    cbor2.dumps(_many(1), canonical=True).replace(b"\x61q\x02", b"\x61q\x18\x02"),  # seq not in its shortest form
])
def test_non_canonical_cbor_of_canonical_length_or_form_goes_to_the_strict_decoder(payload: bytes) -> None:
    assert decode_telemetry_rows(payload) is None


def test_many_readings_whose_bytes_hold_an_indefinite_head_still_take_the_fast_path() -> None:
    payload = cbor2.dumps(_many(30, 18.484375), canonical=True)  # the half float f9 4c 9f
    assert b"\x4c\x9f" in payload
    rows = assert_agrees(payload)
    assert rows is not None and len(rows.readings) == 30


def test_a_valid_non_canonical_cbor_payload_is_left_to_the_strict_decoder() -> None:
    """Devices need not be canonical (firmware_protocol.md): a double where a half float suffices is valid."""
    payload = cbor2.dumps({"b": 1, "q": 2, "r": [[0, 1, 21.5]], "t": TS})  # not canonical: float64, key order
    assert decode_telemetry_rows(payload) is None
    assert decode(MessageClass.TELEMETRY, payload).readings[0].value == 21.5


def test_a_dropped_declaration_takes_the_fast_path_in_both_forms() -> None:
    msg = Telemetry(boot=1, seq=9, ts=TS, readings=[Reading(metric="temperature", value=21.5)], dropped=4)
    for form in ("json", "cbor"):
        rows = assert_agrees(encode(msg, form))
        assert rows is not None and rows.dropped == 4


def test_integer_values_become_floats_like_the_strict_decoder() -> None:
    rows = assert_agrees(json.dumps(one(readings=[{"metric": "temperature", "value": 21, "dt": 5}])).encode())
    assert rows is not None and rows.readings == [(5, "temperature", 21.0)]
    msg = Telemetry(boot=1, seq=2, ts=TS, readings=[Reading(metric="temperature", value=21.0)])
    assert assert_agrees(encode(msg, "cbor")) is not None


COMPACT = b'{"boot":1,"seq":2,"ts":1700000000000,"readings":[{"metric":"temperature","value":%s}]}'


@pytest.mark.parametrize("number, expected", [
    (b"21", 21.0), (b"-21.5", -21.5), (b"0", 0.0), (b"-0.0", -0.0), (b"0.1", 0.1), (b"149.99999999999999999", None),
])
def test_the_compact_layout_reads_numbers_as_json_does(number: bytes, expected: float | None) -> None:
    rows = assert_agrees(COMPACT % number)
    if expected is None:  # out of the compact pattern's digits: the general path decides (here: in range)
        return
    assert rows is not None
    assert repr(rows.readings[0][2]) == repr(expected)  # the sign of zero included


@pytest.mark.parametrize("value", [0.036752034951348385, 0.00012345678901234567, -0.0001, 123.45678901234568])
def test_every_value_our_encoder_writes_takes_the_fast_path_in_any_reading(value: float) -> None:
    """repr gives up to 17 significant digits, and below 1 up to three zeros before them (found by hypothesis:
    a second reading of 0.036752034951348385, 18 digits after the point, went to the strict decoder)."""
    for values in ([value, 21.5], [21.5, value]):  # as the first reading, and as a later one
        msg = Telemetry(boot=1, seq=2, ts=TS, readings=[Reading(metric="temperature", value=v) for v in values])
        rows = assert_agrees(encode(msg, "json"))
        assert rows is not None and [r[2] for r in rows.readings] == values


@pytest.mark.parametrize("number", [b"-0", b"01", b"1e1", b"1.", b".5", b"+1", b"1.5e400", b"--1", b"1.2.3"])
def test_numbers_outside_the_compact_layout_are_decoded_as_strictly(number: bytes) -> None:
    """``-0`` is JSON's integer zero (0.0, not -0.0); the rest is not JSON, or not this layout."""
    rows = assert_agrees(COMPACT % number)
    if number == b"-0":
        assert rows is not None and repr(rows.readings[0][2]) == "0.0"


@BOUNDED
@given(message=telemetry, data=st.data())
def test_compact_json_with_any_key_order_and_spacing_agrees(message: Telemetry, data: st.DataObject) -> None:
    """The same values spelled another way (key order, spaces) take the general path with the same result."""
    try:
        payload = encode(message, "json")
    except ProtocolError:
        return
    compact = assert_agrees(payload)
    assert compact is not None
    obj = json.loads(payload)
    keys = data.draw(st.permutations(list(obj)))
    spaced = json.dumps({k: obj[k] for k in keys}, separators=data.draw(st.sampled_from([(",", ":"), (", ", ": ")])))
    assert assert_agrees(spaced.encode()) == compact


def test_compact_json_with_more_readings_than_allowed_is_refused() -> None:
    reading = b'{"metric":"temperature","value":21.5}'
    payload = b'{"boot":1,"seq":2,"ts":1700000000000,"readings":[' + b",".join([reading] * 65) + b"]}"
    assert decode_telemetry_rows(payload) is None
    ok = payload.replace(b"[" + b",".join([reading] * 65), b"[" + b",".join([reading] * 64))
    rows = assert_agrees(ok)
    assert rows is not None and len(rows.readings) == 64


# every integer width CBOR has, at its edges: each is canonical in exactly one form
EDGES = st.sampled_from([0, 1, 23, 24, 255, 256, 0xFFFF, 0x10000, 2**32 - 1, 2**32, 2**48 - 1, 2**48, 2**64 - 1])
WIDTHS = st.one_of(EDGES, st.integers(0, 2**64 - 1))


@st.composite
def cbor_values(draw: st.DrawFn) -> int | float:
    """A reading value as a device may send it: an integer of any width and sign, or a half, single or double."""
    kind = draw(st.sampled_from(["uint", "negint", "half", "single", "double"]))
    if kind == "uint":
        return draw(WIDTHS)
    if kind == "negint":
        return -1 - draw(WIDTHS)
    width = {"half": 16, "single": 32, "double": 64}[kind]
    return draw(st.floats(width=width, allow_nan=True, allow_infinity=True))  # type: ignore[arg-type]


@BOUNDED
@given(boot=WIDTHS, seq=WIDTHS, ts=WIDTHS, dropped=st.none() | WIDTHS, data=st.data(),
       readings=st.lists(st.tuples(WIDTHS, st.integers(0, 300), cbor_values()), min_size=0, max_size=66))
def test_canonical_cbor_of_every_integer_width_and_float_size_agrees(
        boot: int, seq: int, ts: int, dropped: int | None, readings: list[tuple[int, int, int | float]],
        data: st.DataObject) -> None:
    """The byte pattern takes a payload exactly when it is canonical and valid, whatever widths its numbers need."""
    body: dict[str, Any] = {"b": boot, "q": seq, "t": ts, "r": [list(r) for r in readings]}
    if dropped is not None:
        body["d"] = dropped
    payload = cbor2.dumps(body, canonical=True)
    assert_agrees(payload)
    assert_canonical_rule(payload)
    if len(payload) > 1:  # one byte changed anywhere: still never a different verdict from the strict path
        damaged = bytearray(payload)
        damaged[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
        assert_agrees(bytes(damaged))
        assert_canonical_rule(bytes(damaged))


def _cbor(**fields: Any) -> bytes:
    return cbor2.dumps({"b": 1, "q": 2, "t": TS, "r": [[0, 1, 21.5]]} | fields, canonical=True)


@pytest.mark.parametrize("payload", [
    _cbor(b=2**32 - 1, q=2**32 - 1),  # u32 fields in their widest form
    _cbor(t=2**48 - 1), _cbor(t=2**32), _cbor(t=5),  # ts in 8, 8 and 1 bytes (a device without a clock)
    _cbor(r=[[3_600_000, 4, 2**40]]),  # energy as a 64-bit integer, dt in 4 bytes
    _cbor(r=[[0, 5, -1_000_000]]),  # power as a negative integer (major type 1, 4 bytes)
    _cbor(r=[[10, 1, 10.0]]),  # 0x0a bytes inside: the pattern matches any byte
    _cbor(r=[[0, 1, 0.1]]),  # needs a double
    _cbor(r=[[0, 1, 0.5 + 2**-20]]),  # needs a single
    _cbor(r=[[i, 1, 21.5] for i in range(64)]),
    _cbor(d=0), _cbor(d=1),
])
def test_canonical_cbor_in_every_form_takes_the_fast_path(payload: bytes) -> None:
    assert assert_agrees(payload) is not None


@pytest.mark.parametrize("payload", [
    _cbor(r=[[0, 1, 21.5]]).replace(b"\xf9\x4d\x60", b"\xfa\x41\xac\x00\x00"),  # 21.5 as a single: valid, not canonical
    _cbor(r=[[0, 1, 21.5]]).replace(b"\xf9\x4d\x60", b"\xfb\x40\x35\x80\x00\x00\x00\x00\x00"),  # ... as a double
    _cbor(r=[[0, 1, 21.5]] * 65),  # more readings than a message may hold
    _cbor(r=[[0, 1, 21.5]]).replace(b"\x81\x83", b"\x82\x83"),  # the head counts two readings, one follows
    _cbor(d=2),  # dropped must be below seq
    _cbor(r=[[0, 99, 21.5]]),  # no such metric
    _cbor(r=[[3_600_001, 1, 21.5]]),  # dt beyond the limit
    _cbor(t=2**48),  # ts beyond the limit
    _cbor(q=2**32),  # seq beyond u32
    b"\xa5" + _cbor()[1:],  # the map head counts five keys, four follow (no dropped)
    b"\xa4" + _cbor(d=1)[1:],  # ... counts four, five follow
    b"\xa5" + _cbor(r=[[0, 1, 21.5], [5, 1, 22.0]])[1:],  # the same with two readings
])
def test_cbor_the_byte_pattern_does_not_take_goes_to_the_strict_decoder(payload: bytes) -> None:
    assert decode_telemetry_rows(payload) is None


@pytest.mark.parametrize("reading, taken", [
    (b'{"metric":"temperature","value":21.5}', True), (b'{"dt":250,"metric":"humidity","value":48}', True),
    (b'{"metric":"temperature","value":1000}', False),  # out of range: the strict decoder refuses it
    (b'{"metric":"no_such_metric","value":1}', False), (b'{"metric":"temperature","value":1e1}', False),
    (b'{"value":21.5,"metric":"temperature"}', False), (b'{"dt":99999999999,"metric":"temperature","value":1}', False),
])
def test_a_single_reading_is_judged_the_same_each_time_it_repeats(reading: bytes, taken: bool) -> None:
    """One reading's verdict is remembered by its text (devices repeat their values); the second, third ... message
    with the same reading must get exactly what the first got, and what the strict decoder says."""
    for seq in (1, 2, 3):
        payload = b'{"boot":1,"seq":%d,"ts":%d,"readings":[%s]}' % (seq, TS + seq, reading)
        rows = assert_agrees(payload)
        if taken:
            assert rows is not None and rows.seq == seq and rows.ts == TS + seq
        else:  # refused here, or taken by the general path with the strict decoder's values (assert_agrees)
            try:
                decode(MessageClass.TELEMETRY, payload)
            except ProtocolError:
                assert rows is None


@pytest.mark.parametrize("reading, taken", [
    ([0, 1, 21.5], True), ([250, 2, 48], True), ([3_600_000, 1, -3.25], True),
    ([0, 1, 1000.0], False), ([0, 99, 1.0], False), ([3_600_001, 1, 21.5], False),
])
def test_a_single_cbor_reading_is_judged_the_same_each_time_it_repeats(reading: list[Any], taken: bool) -> None:
    for seq in (1, 2, 3):
        rows = assert_agrees(_cbor(q=seq, t=TS + seq, r=[reading]))
        assert (rows is not None) == taken
        if rows is not None:
            assert rows.seq == seq and rows.ts == TS + seq and rows.readings[0][0] == reading[0]


def test_remembered_readings_stay_bounded() -> None:
    from protocol import fastpath

    for i in range(fastpath._JSON_READINGS_MAX + 10):
        value = 20 + i / 1000
        rows = decode_telemetry_rows(b'{"boot":1,"seq":1,"ts":%d,"readings":[{"metric":"temperature","value":%r}]}'
                                     % (TS, value))
        assert rows is not None and rows.readings == [(0, "temperature", value)]
    assert 0 < len(fastpath._JSON_READINGS) <= fastpath._JSON_READINGS_MAX


def test_the_widest_single_reading_payload_is_within_the_length_that_tries_its_pattern() -> None:
    from protocol import fastpath

    widest = (b'{"boot":4294967295,"seq":4294967295,"ts":999999999999999,"readings":[{"dt":4294967295,"metric":"'
              + b"a" * 32 + b'","value":-1234567890123456.12345678901234567}],"dropped":4294967295}')
    assert fastpath._ONE_READING.fullmatch(widest) is not None
    assert len(widest) == fastpath._ONE_READING_MAX
    assert fastpath._ONE_READING.fullmatch(widest[:-1] + b"0}") is None  # one more character is not this layout


@pytest.mark.parametrize("value", [0, 1, 16, 23, 24, 255, 256, 65535, 65536, 2**32 - 1])
def test_a_single_reading_cbor_message_reads_boot_seq_and_ts_of_every_width(value: int) -> None:
    for fields in ({"b": value}, {"q": max(value, 1)}, {"t": max(value, 1)}, {"t": 2**48 - 1}):
        rows = assert_agrees(_cbor(**fields))
        assert rows is not None
        assert (rows.boot, rows.seq, rows.ts) == (fields.get("b", 1), fields.get("q", 2), fields.get("t", TS))
