"""The codec: lossless round trips in both forms, and one error type for anything else."""

from __future__ import annotations

import json
import math
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    LIMITS,
    Alert,
    Command,
    MessageClass,
    ProtocolError,
    Reading,
    Reason,
    Status,
    Telemetry,
    Watermark,
    decode,
    encode,
    parse_topic,
    topic_for,
)
from protocol.codec import MODEL_FOR, Encoding, detect_encoding, encode_watermark
from protocol.topics import valid_device_id
from protocol_strategies import cbor_scalars, json_scalars, messages, structures

BOUNDED = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLASS_OF = {model: cls for cls, model in MODEL_FOR.items()}
CLASSES = st.sampled_from(MessageClass)


def telemetry(*readings: Reading) -> Telemetry:
    return Telemetry(boot=1, seq=1, ts=1_700_000_000_000, readings=list(readings))


def reason_of(cls: MessageClass, payload: bytes) -> Reason:
    with pytest.raises(ProtocolError) as info:
        decode(cls, payload)
    return info.value.reason


# --------------------------------------------------------------------------- round trips


@BOUNDED
@given(message=messages, form=st.sampled_from(["json", "cbor"]))
def test_every_valid_message_round_trips_losslessly(message: Any, form: str) -> None:
    payload = encode(message, form)
    assert detect_encoding(payload).value == form
    back = decode(CLASS_OF[type(message)], payload)
    assert back == message
    assert encode(back, form) == payload  # the encoding is a function of the model: no drift on re-encode


@BOUNDED
@given(message=messages)
def test_binary_form_is_never_larger_than_json(message: Any) -> None:
    assert len(encode(message, "cbor")) <= len(encode(message, "json"))


def test_float_values_survive_bit_exact() -> None:
    values = [21.5, 3.7, -0.0, 1e-300, 5e-324, 0.1 + 0.2, 149.99999999999997]
    message = telemetry(*(Reading(metric="energy_wh", value=abs(v)) for v in values))
    for form in ("json", "cbor"):
        back = decode(MessageClass.TELEMETRY, encode(message, form))
        assert [math.copysign(1, r.value) * r.value for r in back.readings] == [abs(v) for v in values]


def test_cbor_integer_values_decode_as_floats() -> None:
    payload = cbor2.dumps({"b": 1, "q": 1, "t": 1_700_000_000_000, "r": [[0, 1, 21]]})
    assert decode(MessageClass.TELEMETRY, payload) == telemetry(Reading(metric="temperature", value=21.0))


# --------------------------------------------------------------------------- garbage


@BOUNDED
@given(cls=CLASSES, payload=st.binary(max_size=300))
def test_garbage_bytes_raise_only_protocol_error(cls: MessageClass, payload: bytes) -> None:
    try:
        decode(cls, payload)
    except ProtocolError as exc:
        assert isinstance(exc.reason, Reason)


@BOUNDED
@given(cls=CLASSES, data=structures(json_scalars))
def test_garbage_json_structures_raise_only_protocol_error(cls: MessageClass, data: Any) -> None:
    payload = json.dumps(data).encode()
    try:
        decode(cls, payload)
    except ProtocolError as exc:
        assert isinstance(exc.reason, Reason)


@BOUNDED
@given(cls=CLASSES, data=structures(cbor_scalars))
def test_garbage_cbor_structures_raise_only_protocol_error(cls: MessageClass, data: Any) -> None:
    payload = cbor2.dumps(data)
    try:
        decode(cls, payload)
    except ProtocolError as exc:
        assert isinstance(exc.reason, Reason)


@BOUNDED
@given(message=messages, form=st.sampled_from(["json", "cbor"]), data=st.data())
def test_damaged_valid_payloads_raise_only_protocol_error(message: Any, form: str, data: st.DataObject) -> None:
    payload = bytearray(encode(message, form))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(payload)))
    try:
        decode(CLASS_OF[type(message)], bytes(payload[:cut]))
    except ProtocolError as exc:
        assert isinstance(exc.reason, Reason)


def test_known_nasty_inputs_get_their_reason() -> None:
    huge = cbor2.dumps({"b": 1, "q": 1, "t": 1_700_000_000_000, "r": [[0, 1, 10**400]]})
    assert reason_of(MessageClass.TELEMETRY, huge) is Reason.UNDECODABLE  # a bignum is tag 2: no tags allowed
    widest = cbor2.dumps({"b": 1, "q": 1, "t": 1_700_000_000_000, "r": [[0, 1, 2**64 - 1]]})
    assert reason_of(MessageClass.TELEMETRY, widest) is Reason.OUT_OF_RANGE
    assert reason_of(MessageClass.STATUS, b"") is Reason.UNDECODABLE
    assert reason_of(MessageClass.STATUS, b'{"state":"online"') is Reason.UNDECODABLE
    assert reason_of(MessageClass.STATUS, b'{"state":"online","boot":"7"}') is Reason.SCHEMA  # strict: no coercion
    assert reason_of(MessageClass.STATUS, b' {"state":"online","boot":7}') is Reason.UNDECODABLE  # must start with {
    assert reason_of(MessageClass.WATERMARK, cbor2.dumps({"b": 1, "q": 1}) + b"\x00") is Reason.UNDECODABLE
    assert reason_of(MessageClass.WATERMARK, cbor2.dumps({"boot": 1, "seq": 1})) is Reason.SCHEMA  # short keys only
    assert reason_of(MessageClass.WATERMARK, cbor2.dumps([1, 1])) is Reason.SCHEMA
    assert reason_of(MessageClass.STATUS, cbor2.dumps({"s": 2, "b": 1})) is Reason.SCHEMA  # enum code out of table
    assert reason_of(MessageClass.WATERMARK, b'{"boot":1,"seq":1,"extra":0}') is Reason.SCHEMA
    assert reason_of(MessageClass.WATERMARK, b'{"boot":-1,"seq":1}') is Reason.SCHEMA
    assert reason_of(MessageClass.WATERMARK, b'{"boot":4294967296,"seq":1}') is Reason.SCHEMA


# --------------------------------------------------------------------------- limits and metrics


def test_oversized_payload_is_refused_before_parsing() -> None:
    limit = LIMITS.max_payload_bytes
    alert = Alert(boot=1, seq=1, ts=1_700_000_000_000, code="x", message="m")
    assert decode(MessageClass.ALERT, encode(alert).ljust(limit)) == alert  # trailing spaces are JSON whitespace
    assert reason_of(MessageClass.ALERT, encode(alert).ljust(limit + 1)) is Reason.OVERSIZED
    assert reason_of(MessageClass.TELEMETRY, b"\xff" * (limit + 1)) is Reason.OVERSIZED


def test_a_full_batch_fits_the_payload_limit_only_in_the_binary_form() -> None:
    """The worst full batch fits in CBOR; in JSON it does not, so a device must measure before sending."""
    full = Telemetry(boot=LIMITS.max_u32, seq=LIMITS.max_u32, ts=2**48 - 1, readings=[
        Reading(dt=LIMITS.max_offset_ms, metric="pressure_hpa", value=1013.2500000000001)
    ] * LIMITS.max_readings_per_batch)
    binary = encode(full, "cbor")
    assert len(binary) <= LIMITS.max_payload_bytes
    assert decode(MessageClass.TELEMETRY, binary) == full
    readable = encode(full, "json")
    assert len(readable) > LIMITS.max_payload_bytes
    assert reason_of(MessageClass.TELEMETRY, readable) is Reason.OVERSIZED


def test_batch_limits() -> None:
    one = Reading(metric="humidity", value=50.0)
    over = '{"boot":1,"seq":1,"ts":1700000000000,"readings":[%s]}' % ",".join(['{"metric":"humidity","value":5.0}'] * 65)
    assert reason_of(MessageClass.TELEMETRY, over.encode()) is Reason.SCHEMA
    assert reason_of(MessageClass.TELEMETRY, b'{"boot":1,"seq":1,"ts":1700000000000,"readings":[]}') is Reason.SCHEMA
    late = '{"boot":1,"seq":1,"ts":1700000000000,"readings":[{"dt":%d,"metric":"humidity","value":5.0}]}'
    assert decode(MessageClass.TELEMETRY, (late % LIMITS.max_offset_ms).encode()).readings[0].dt == LIMITS.max_offset_ms
    assert reason_of(MessageClass.TELEMETRY, (late % (LIMITS.max_offset_ms + 1)).encode()) is Reason.SCHEMA
    assert len(telemetry(*[one] * 64).readings) == 64


@pytest.mark.parametrize("form", ["json", "cbor"])
def test_unknown_metric_is_refused(form: str) -> None:
    bad = telemetry(Reading(metric="temperature", value=1.0), Reading(metric="flux_capacity", value=1.0))
    with pytest.raises(ProtocolError) as info:
        encode(bad, form)  # the device side cannot even build it
    assert info.value.reason is Reason.UNKNOWN_METRIC
    json_payload = b'{"boot":1,"seq":1,"ts":1700000000000,"readings":[{"metric":"flux_capacity","value":1.0}]}'
    cbor_payload = cbor2.dumps({"b": 1, "q": 1, "t": 1_700_000_000_000, "r": [[0, 99, 1.0]]})
    assert reason_of(MessageClass.TELEMETRY, json_payload if form == "json" else cbor_payload) is Reason.UNKNOWN_METRIC


@pytest.mark.parametrize("form", ["json", "cbor"])
@pytest.mark.parametrize(("metric", "value", "ok"), [
    ("humidity", 100.0, True), ("humidity", 100.5, False), ("humidity", -0.1, False),
    ("temperature", -60.0, True), ("temperature", -60.5, False), ("lat", 90.5, False), ("rssi_dbm", 1.0, False),
])
def test_out_of_range_values_are_refused(form: str, metric: str, value: float, ok: bool) -> None:
    message = telemetry(Reading(metric=metric, value=value))
    if ok:
        assert decode(MessageClass.TELEMETRY, encode(message, form)) == message
        return
    with pytest.raises(ProtocolError) as info:
        encode(message, form)
    assert info.value.reason is Reason.OUT_OF_RANGE
    raw = (json.dumps({"boot": 1, "seq": 1, "ts": 1_700_000_000_000, "readings": [{"metric": metric, "value": value}]})
           .encode() if form == "json" else
           cbor2.dumps({"b": 1, "q": 1, "t": 1_700_000_000_000, "r": [[0, _id(metric), value]]}))
    assert reason_of(MessageClass.TELEMETRY, raw) is Reason.OUT_OF_RANGE


def _id(metric: str) -> int:
    from protocol import metric_by_name

    found = metric_by_name(metric)
    assert found is not None
    return found.id


def test_status_and_command_defaults_are_omitted_on_the_wire() -> None:
    will = Status(state="offline", boot=3)
    assert encode(will) == b'{"state":"offline","boot":3}'
    assert decode(MessageClass.STATUS, encode(will, "cbor")) == will
    ping = Command(id="p1", name="ping", expires=1_700_000_000_000)
    assert b"args" not in encode(ping)


# --------------------------------------------------------------------------- topics

device_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,31}\Z")


@BOUNDED
@given(device_id=device_ids, cls=CLASSES)
def test_topics_round_trip(device_id: str, cls: MessageClass) -> None:
    topic = topic_for(device_id, cls)
    assert topic == f"d/{device_id}/{cls.value}"
    assert len(topic.encode()) == 4 + len(device_id)
    parsed = parse_topic(topic)
    assert (parsed.device_id, parsed.cls) == (device_id, cls)
    assert str(parsed) == topic


@BOUNDED
@given(topic=st.text(max_size=60))
def test_arbitrary_topics_parse_or_raise_bad_topic(topic: str) -> None:
    try:
        parsed = parse_topic(topic)
    except ProtocolError as exc:
        assert exc.reason is Reason.BAD_TOPIC
    else:
        assert str(parsed) == topic


@pytest.mark.parametrize("topic", [
    "", "d", "d/", "d//t", "d/sensor-1", "d/sensor-1/", "d/sensor-1/z", "d/sensor-1/tt", "d/sensor-1/t/extra",
    "x/sensor-1/t", "D/sensor-1/t", "/d/sensor-1/t", "d/+/t", "d/#", "d/sensor 1/t", "d/-sensor/t", "d/_s/t",
    "d/" + "a" * 33 + "/t", "fleet/devices/sensor-1/telemetry", "d/sensör/t",
])
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_topic(topic)
    assert info.value.reason is Reason.BAD_TOPIC


@pytest.mark.parametrize("device_id", ["", "-x", "a/b", "a+b", "a#", "a" * 33, "é", "a b"])
def test_bad_device_ids_cannot_build_topics(device_id: str) -> None:
    assert not valid_device_id(device_id)
    with pytest.raises(ProtocolError) as info:
        topic_for(device_id, MessageClass.TELEMETRY)
    assert info.value.reason is Reason.BAD_TOPIC


def test_command_args_must_be_finite_because_json_cannot_carry_inf() -> None:
    with pytest.raises(ValueError):
        Command(id="c1", name="set_config", args={"gain": math.inf}, expires=1_700_000_000_000)
    payload = cbor2.dumps({"i": "c1", "n": "set_config", "a": {"gain": math.nan}, "x": 1_700_000_000_000})
    assert reason_of(MessageClass.COMMAND, payload) is Reason.SCHEMA


_U32 = st.integers(0, 2**32 - 1)


@st.composite
def watermark_fields(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    """(boot, seq, next, max, ts) as the hub's trackers make them: next and max both 0, or seq + 1 < next <= max."""
    seq = draw(st.integers(0, 2**32 - 3))
    nxt = top = 0
    if draw(st.booleans()):
        nxt = draw(st.integers(seq + 2, 2**32 - 1))
        top = draw(st.integers(nxt, 2**32 - 1))
    ts = draw(st.one_of(st.just(0), st.integers(1, 2**48 - 1)))
    return draw(_U32), seq, nxt, top, ts


@given(watermark_fields(), st.sampled_from(["json", "cbor", Encoding.JSON, Encoding.CBOR]))
def test_the_hubs_watermark_bytes_are_the_models(fields: tuple[int, int, int, int, int], encoding: str) -> None:
    boot, seq, nxt, top, ts = fields
    model = Watermark(boot=boot, seq=seq, next=nxt, max=top, ts=ts)
    payload = encode_watermark(boot, seq, nxt, top, ts, encoding)
    assert payload == encode(model, encoding)
    assert decode(MessageClass.WATERMARK, payload) == model


_WIDTH_EDGES = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 3]
"""Where a CBOR integer changes width (1, 2, 3 and 5 bytes), each side."""


@pytest.mark.parametrize("encoding", ["json", "cbor"])
@pytest.mark.parametrize("value", _WIDTH_EDGES)
def test_watermark_bytes_at_every_integer_width(value: int, encoding: str) -> None:
    for boot, seq, nxt, top, ts in [(value, 7, 0, 0, 0), (1, value, 0, 0, value), (1, value, value + 2, value + 2, 0),
                                    (value, 0, 2**32 - 2, 2**32 - 1, 2**32), (2, value, 0, 0, 2**48 - 1)]:
        model = Watermark(boot=boot, seq=seq, next=nxt, max=top, ts=ts)
        assert encode_watermark(boot, seq, nxt, top, ts, encoding) == encode(model, encoding), model
