"""The configuration and description messages of firmware_protocol.md 13: strict models, type specs, checks."""

from __future__ import annotations

import pytest

from protocol import MessageClass, ProtocolError, Reason, decode, encode
from protocol.config import ConfigReport, ConfigSet, Description, check_value, command_error, config_error, description_hash

DESC = Description(metrics={"temperature": "°C -40..85"}, commands={"set_interval": {"seconds": "int 1..86400"}},
                   config=["report_s", "int 1..86400", "deadband", "float 0..10", "mode", "text", "led", "bool"])


@pytest.mark.parametrize(("spec", "value", "ok"), [
    ("int", 3, True), ("int", 3.0, False), ("int", True, False), ("int", "3", False),
    ("int 1..10", 10, True), ("int 1..10", 11, False), ("float", 3, True), ("float -0.5..2.5", 2.6, False),
    ("float", False, False), ("bool", True, True), ("bool", 1, False), ("text", "x", True), ("text", 1, False),
])
def test_values_are_checked_against_type_specs_without_coercion(spec: str, value: object, ok: bool) -> None:
    assert (check_value(spec, value) is None) is ok


def test_command_and_config_checks_name_what_is_wrong() -> None:
    assert command_error(DESC, "set_interval", {"seconds": 30}) is None
    assert command_error(DESC, "ping", {"anything": 1}) is None  # not described: the device judges it
    assert "missing" in (command_error(DESC, "set_interval", {}) or "")
    assert "unknown argument 'minutes'" in (command_error(DESC, "set_interval", {"seconds": 3, "minutes": 1}) or "")
    assert command_error(DESC, "set_interval", {"seconds": "soon"}) == (
        "set_interval: argument 'seconds' must be an integer 1..86400, not 'soon'")
    assert config_error(DESC, "mode", "eco") is None
    assert config_error(DESC, "led", "on") == "led must be true or false, not 'on'"
    assert "unknown config key 'colour'" in (config_error(DESC, "colour", 1) or "")


@pytest.mark.parametrize("payload", [
    b'{"version":1,"set":["a"]}',                 # a key without its value
    b'{"version":0,"set":["a",1]}',               # versions start at 1
    b'{"version":1,"set":[true,1]}',              # a key is a name or an index
    b'{"version":1,"set":["a",[1]]}',             # values are scalars
    b'{"version":1,"set":[]}',                    # nothing to set
    b'{"version":1,"set":{"a":1}}',               # a flat list, not a map
])
def test_malformed_config_sets_are_schema_errors(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(MessageClass.CONFIG_SET, payload)
    assert info.value.reason is Reason.SCHEMA


@pytest.mark.parametrize("description", [
    '{"config":["a","int","a","text"]}',          # a key twice
    '{"config":["a","integer"]}',                 # not a type spec
    '{"config":["a","int 5..1"]}',                # an empty range
    '{"config":["a","text 1..5"]}',               # only numbers take a range
    '{"metrics":{"temperature":"-40..85"}}',      # a metric spec needs its unit
    '{"config":["a"]}',                           # a name without its type
    '{"metrics":{"warp_factor":"x 0..9"}}',       # not in the metric table
])
def test_malformed_descriptions_are_schema_errors(description: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(MessageClass.DESCRIPTION, description.encode())
    assert info.value.reason is Reason.SCHEMA


def test_both_forms_carry_the_same_messages_and_the_hash_is_of_the_bytes() -> None:
    for message, cls in ((ConfigSet(version=7, set=[0, 30, "mode", "eco"]), MessageClass.CONFIG_SET),
                         (ConfigReport(version=7, applied=[0, 30], refused=["mode", "no"]), MessageClass.CONFIG_REPORT),
                         (DESC, MessageClass.DESCRIPTION)):
        for form in ("json", "cbor"):
            assert decode(cls, encode(message, form)) == message
    assert description_hash(encode(DESC, "json")) != description_hash(encode(DESC, "cbor"))
    assert len(description_hash(b"x")) == 16
    assert DESC.config_keys() == ["report_s", "deadband", "mode", "led"]
    assert DESC.metric_ranges() == {"temperature": ("°C", -40.0, 85.0)}
