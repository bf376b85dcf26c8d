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
