"""Strict decoding (firmware_protocol.md 8.2, 8.3): what a device sends means one thing to every parser.

CBOR tags, indefinite-length items and repeated keys are refused as ``undecodable`` (a dead letter),
never interpreted: cbor2 alone accepted tags 4 and 30 as values and compiled the regular expression
of a tag 35.
"""

from __future__ import annotations

import datetime
import re
from decimal import Decimal
from fractions import Fraction

import cbor2
import pytest

from protocol import MessageClass, ProtocolError, Reason, Telemetry, decode, encode
from protocol.models import Reading
from protocol.strict import MAX_DEPTH, loads_cbor

GOOD = {"b": 1, "q": 1, "t": 1_700_000_000_000, "r": [[0, 1, 21.5]]}


def reason_of(cls: MessageClass, payload: bytes) -> Reason:
    with pytest.raises(ProtocolError) as info:
        decode(cls, payload)
    return info.value.reason


def with_value(value_bytes: bytes) -> bytes:
    """A telemetry payload whose only reading's value is the raw CBOR item ``value_bytes``."""
    body = cbor2.dumps({"b": 1, "q": 1, "r": [[0, 1, 0]], "t": 1_700_000_000_000})
    marker = b"\x83\x00\x01\x00"
    assert marker in body
    return body.replace(marker, b"\x83\x00\x01" + value_bytes)


@pytest.mark.parametrize("value", [
    Decimal("21.5"),                                   # tag 4: accepted as a number before
    Fraction(43, 2),                                   # tag 30: accepted as a number before
    re.compile("a+"),                                  # tag 35: compiled by the decoder before
    datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),  # tag 0
    2**70,                                             # tag 2 (bignum)
], ids=["tag4-decimal", "tag30-rational", "tag35-regex", "tag0-datetime", "tag2-bignum"])
def test_cbor_tags_are_refused_as_undecodable(value: object) -> None:
    payload = cbor2.dumps({**GOOD, "r": [[0, 1, value]]})
    assert payload[0] != 0x7B
    assert reason_of(MessageClass.TELEMETRY, payload) is Reason.UNDECODABLE


def test_a_tag_anywhere_is_refused_even_around_the_whole_message() -> None:
    assert reason_of(MessageClass.TELEMETRY, cbor2.dumps(cbor2.CBORTag(55799, GOOD))) is Reason.UNDECODABLE
    assert reason_of(MessageClass.TELEMETRY, with_value(b"\xc1\x1a\x65\x53\xf1\x00")) is Reason.UNDECODABLE  # tag 1


@pytest.mark.parametrize("payload", [
    b"\xbf" + cbor2.dumps(GOOD)[1:] + b"\xff",                                   # indefinite map
    cbor2.dumps({**GOOD, "r": []})[:-1] + b"\x9f\x83\x00\x01\xf9\x4d\x60\xff",  # indefinite array
], ids=["map", "array"])
def test_indefinite_length_items_are_refused(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        loads_cbor(payload)
    assert info.value.reason is Reason.UNDECODABLE
    assert reason_of(MessageClass.TELEMETRY, payload) is Reason.UNDECODABLE


def test_indefinite_length_text_is_refused() -> None:
    payload = b"\xa2\x61i\x7f\x62c-\x62x1\xff\x61s\x00"  # {"i": (_ "c-", "x1"), "s": 0}
    assert cbor2.loads(payload) == {"i": "c-x1", "s": 0}  # what a lax decoder makes of it
    assert reason_of(MessageClass.REPLY, payload) is Reason.UNDECODABLE


def test_repeated_keys_are_refused_in_both_forms() -> None:
    cbor_twice = b"\xa3\x61b\x01\x61q\x01\x61q\x02"  # {"b": 1, "q": 1, "q": 2}
    assert reason_of(MessageClass.WATERMARK, cbor_twice) is Reason.UNDECODABLE
    json_twice = b'{"boot":1,"seq":1,"seq":2}'
    assert reason_of(MessageClass.WATERMARK, json_twice) is Reason.UNDECODABLE
    nested = b'{"boot":7,"seq":1,"ts":1700000000000,"readings":[{"metric":"humidity","value":1,"value":2}]}'
    assert reason_of(MessageClass.TELEMETRY, nested) is Reason.UNDECODABLE


def test_other_simple_values_and_bad_text_are_refused() -> None:
    assert reason_of(MessageClass.TELEMETRY, with_value(b"\xf7")) is Reason.UNDECODABLE  # undefined
    assert reason_of(MessageClass.TELEMETRY, with_value(b"\xf8\x20")) is Reason.UNDECODABLE  # simple(32)
    assert reason_of(MessageClass.REPLY, b"\xa2\x61i\x62\xff\xfe\x61s\x00") is Reason.UNDECODABLE  # not UTF-8


def test_nesting_is_bounded() -> None:
    deep = b"\x81" * (MAX_DEPTH + 1) + b"\x00"
    with pytest.raises(ProtocolError):
        loads_cbor(deep)
    assert loads_cbor(b"\x81" * MAX_DEPTH + b"\x00") is not None
    deep_json = b'{"boot":1,"seq":1,"ts":1,"readings":' + b"[" * 2000 + b"]" * 2000 + b"}"
    assert reason_of(MessageClass.TELEMETRY, deep_json) in (Reason.UNDECODABLE, Reason.SCHEMA)  # never a crash


def test_lengths_beyond_the_payload_are_refused_without_allocating() -> None:
    for payload in (b"\x9b" + b"\xff" * 8, b"\xbb" + b"\xff" * 8, b"\x7b" + b"\x00" * 7 + b"\x05"):
        with pytest.raises(ProtocolError):
            loads_cbor(payload)


def test_the_strict_decoder_reads_everything_the_encoder_writes() -> None:
    for value in (0, 23, 24, 255, 256, 65535, 65536, 2**32, 2**64 - 1, -1, -25, -(2**64), 21.5, 3.7, 1e300,
                  float("inf"), "", "é", [], {}, True, False, None, b"\x00"):
        assert loads_cbor(cbor2.dumps(value)) == value
    message = Telemetry(boot=7, seq=42, ts=1_700_000_000_000, readings=[Reading(metric="temperature", value=21.5)])
    assert decode(MessageClass.TELEMETRY, encode(message, "cbor")) == message
