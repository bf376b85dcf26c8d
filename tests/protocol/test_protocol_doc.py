"""firmware_protocol.md and the code twin cannot drift: every example and table is checked here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from protocol import LIMITS, METRICS, MessageClass, Reason, decode, encode, parse_topic
from protocol.topics import DEVICE_PUBLISHES, DEVICE_SUBSCRIBES
from protocol.codec import ENUM_CODES, MODEL_FOR, SHORT_KEYS, Encoding, detect_encoding

DOC = Path(__file__).resolve().parents[2] / "firmware_protocol.md"
TEXT = DOC.read_text(encoding="utf-8")

# Every message class, and both sides of the command exchange, must have a worked example.
REQUIRED = {
    "telemetry (single reading)", "telemetry (batch)", "alert", "status (birth)", "status (last will)",
    "command", "reply (received)", "reply (succeeded)", "watermark",
}


@dataclass(frozen=True)
class Example:
    name: str
    topic: str
    json: bytes
    cbor: bytes
    json_size: int
    cbor_size: int


def _section(name: str) -> str:
    """The text of the ``## ...`` section whose heading contains ``name``."""
    match = re.search(rf"^## [^\n]*{re.escape(name)}[^\n]*\n(.*?)(?=^## |\Z)", TEXT, re.M | re.S)
    assert match, f"no section {name!r} in {DOC.name}"
    return match.group(1)


def _examples() -> list[Example]:
    found = []
    for block in re.split(r"^(?=### Example: )", TEXT, flags=re.M)[1:]:
        name = block.splitlines()[0].removeprefix("### Example: ").strip()
        block = re.split(r"^##? ", block, maxsplit=1, flags=re.M)[0]  # stop at the next section
        topic = re.search(r"Topic `([^`]+)`", block)
        json_block = re.search(r"```json\n(.*?)\n```", block, re.S)
        cbor_block = re.search(r"```cbor-hex\n(.*?)\n```", block, re.S)
        size = re.search(r"^Size: (\d+) bytes JSON, (\d+) bytes CBOR$", block, re.M)
        assert topic and json_block and cbor_block and size, f"example {name!r} lacks topic, blocks or size line"
        found.append(Example(name, topic.group(1), json_block.group(1).encode(),
                             bytes.fromhex("".join(cbor_block.group(1).split())),
                             int(size.group(1)), int(size.group(2))))
    return found


EXAMPLES = _examples()


def test_every_message_class_has_an_example() -> None:
    names = {e.name for e in EXAMPLES}
    assert REQUIRED <= names, f"missing examples: {REQUIRED - names}"
    assert {parse_topic(e.topic).cls for e in EXAMPLES} == set(MessageClass)
    assert len(names) == len(EXAMPLES), "two examples share a name"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_decodes_the_same_in_both_forms_and_re_encodes_exactly(example: Example) -> None:
    cls = parse_topic(example.topic).cls
    assert detect_encoding(example.json) is Encoding.JSON
    assert detect_encoding(example.cbor) is Encoding.CBOR
    from_json = decode(cls, example.json)
    from_cbor = decode(cls, example.cbor)
    assert isinstance(from_json, MODEL_FOR[cls])
    assert from_json == from_cbor
    assert encode(from_json, "json") == example.json
    assert encode(from_cbor, "cbor") == example.cbor
    assert (len(example.json), len(example.cbor)) == (example.json_size, example.cbor_size)


def test_examples_show_what_their_names_say() -> None:
    by_name = {e.name: decode(parse_topic(e.topic).cls, e.json) for e in EXAMPLES}
    assert len(by_name["telemetry (single reading)"].readings) == 1  # type: ignore[union-attr]
    assert len(by_name["telemetry (batch)"].readings) > 1  # type: ignore[union-attr]
    assert any(r.dt > 0 for r in by_name["telemetry (batch)"].readings)  # type: ignore[union-attr]
    assert by_name["status (birth)"].state == "online"  # type: ignore[union-attr]
    assert by_name["status (last will)"].state == "offline"  # type: ignore[union-attr]
    assert by_name["reply (received)"].state == "received"  # type: ignore[union-attr]
    assert by_name["reply (succeeded)"].state == "succeeded"  # type: ignore[union-attr]
    command = by_name["command"]
    assert by_name["reply (received)"].id == command.id  # type: ignore[union-attr]


def test_metric_table_matches_the_code() -> None:
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| ([^|]+) \| ([-\d.e+]+) \| ([-\d.e+]+) \|$", _section("Payloads"), re.M)
    documented = [(int(i), name, unit.strip(), float(lo), float(hi)) for i, name, unit, lo, hi in rows]
    assert documented == [(m.id, m.name, m.unit, m.low, m.high) for m in METRICS]


def test_reason_codes_match_the_code() -> None:
    documented = re.findall(r"^\| `(\w+)` \| ", _section("Errors"), re.M)
    assert documented == [r.value for r in Reason]


def test_cbor_key_table_matches_the_code() -> None:
    table = {}
    for model, fields, keys in re.findall(r"^\| (\w+) \| ([\w, ]+) \| ((?:`\w`(?:, )?)+) \|$", TEXT, re.M):
        table[model] = dict(zip([f.strip() for f in fields.split(",")], re.findall(r"`(\w)`", keys), strict=True))
    assert table == {model.__name__: keys for model, keys in SHORT_KEYS.items()}


def test_enum_code_table_matches_the_code() -> None:
    documented = {}
    for row in re.findall(r"^\| (\w+ `\w+`) \| ((?:\d `\w+`(?:, )?)+) \|$", TEXT, re.M):
        documented[row[0]] = [v for _, v in re.findall(r"(\d) `(\w+)`", row[1])]
    expected = {
        "Alert `severity`": ENUM_CODES["severity"], "Status `state`": ENUM_CODES["state:Status"],
        "Status `enc`": ENUM_CODES["enc"], "CommandReply `state`": ENUM_CODES["state:CommandReply"],
    }
    assert documented == {k: [str(v) for v in codes] for k, codes in expected.items()}


def test_limits_are_stated() -> None:
    limits = _section("Payloads")
    assert f"**{LIMITS.max_payload_bytes} bytes**" in limits
    assert f"**{LIMITS.max_readings_per_batch}**" in limits
    assert f"0..{LIMITS.max_offset_ms} ms" in limits
    assert f"0..{LIMITS.max_u32}" in limits
    assert f"up to {LIMITS.max_text_len} chars" in limits
    assert f"up to {LIMITS.max_command_args} entries" in limits


def test_topic_byte_costs_are_right() -> None:
    for topic, length, wire in re.findall(r"^\| `([^`]+)`[^|]* \| (\d+) \| (\d+) bytes \|$", _section("Topics"), re.M):
        assert (len(topic.encode()), len(topic.encode()) + 2) == (int(length), int(wire))



def test_section_1_lists_every_topic_with_its_direction() -> None:
    # section 1 is where a firmware engineer looks for the topics: every class is there, not only in a later section
    topics = _section("Topics")
    rows = dict(re.findall(r"^\| `(\w)` \| `d/<id>/\w` \| (device -> hub|hub -> device) \|", topics, re.M))
    assert set(rows) == {cls.value for cls in MessageClass}, "section 1's table must list every message class"
    assert {c for c, d in rows.items() if d == "device -> hub"} == {c.value for c in DEVICE_PUBLISHES}
    assert {c for c, d in rows.items() if d == "hub -> device"} == {c.value for c in DEVICE_SUBSCRIBES}
    sentence = " ".join(re.search(r"^A device publishes only to .*?\.", topics, re.M | re.S).group(0).split())  # type: ignore[union-attr]
    pubs, subs = sentence.split("subscribes")
    assert set(re.findall(r"`(\w)`", pubs)) == {c.value for c in DEVICE_PUBLISHES}
    assert set(re.findall(r"`(\w)`", subs)) == {c.value for c in DEVICE_SUBSCRIBES}
