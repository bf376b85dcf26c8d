"""Hypothesis strategies for valid wire messages and for garbage (shared by the protocol tests)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from protocol import (
    LIMITS,
    METRICS,
    Alert,
    Command,
    CommandReply,
    DEVICE_REPLY_STATES,
    Reading,
    Severity,
    Status,
    StatusState,
    Telemetry,
    Watermark,
)
from protocol.codec import SHORT_KEYS

u32 = st.integers(min_value=0, max_value=LIMITS.max_u32)
epoch_ms = st.integers(min_value=1, max_value=2**48 - 1)
short_text = st.text(min_size=1, max_size=32)
text = st.text(max_size=LIMITS.max_text_len)
finite = st.floats(allow_nan=False, allow_infinity=False)
arg_value = st.one_of(st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1), finite, st.text(max_size=40))
args = st.dictionaries(short_text, arg_value, max_size=LIMITS.max_command_args)


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    """A reading of a known metric with a value inside its range."""
    metric = draw(st.sampled_from(METRICS))
    value = draw(st.floats(min_value=metric.low, max_value=metric.high, allow_nan=False))
    return Reading(dt=draw(st.integers(0, LIMITS.max_offset_ms)), metric=metric.name, value=value)


telemetry = st.builds(Telemetry, boot=u32, seq=u32, ts=epoch_ms,
                      readings=st.lists(readings(), min_size=1, max_size=LIMITS.max_readings_per_batch))
alerts = st.builds(Alert, boot=u32, seq=u32, ts=epoch_ms, code=short_text,
                   severity=st.sampled_from(Severity), message=text)
statuses = st.builds(Status, state=st.sampled_from(StatusState), boot=u32, fw=st.text(max_size=32),
                     caps=st.lists(short_text, max_size=32), enc=st.sampled_from(["json", "cbor"]),
                     interval_s=st.integers(1, 86_400))
commands = st.builds(Command, id=short_text, name=short_text, args=args, expires=epoch_ms)
replies = st.builds(CommandReply, id=short_text, state=st.sampled_from(DEVICE_REPLY_STATES), detail=text, result=args)
watermarks = st.builds(Watermark, boot=u32, seq=u32)
messages = st.one_of(telemetry, alerts, statuses, commands, replies, watermarks)

# Keys a decoder really looks at, so garbage maps get past the first checks now and then.
FIELD_KEYS = sorted({k for keys in SHORT_KEYS.values() for pair in keys.items() for k in pair} | {"dt", "metric", "value"})
keys = st.one_of(st.sampled_from(FIELD_KEYS), st.text(max_size=8))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
cbor_scalars = st.one_of(json_scalars, st.binary(max_size=20), st.integers(min_value=-(2**80), max_value=2**80))


def structures(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Nested lists and maps of ``scalars``, top level usually a map."""
    nested = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=6),
                          max_leaves=30)
    return st.one_of(st.dictionaries(keys, nested, max_size=8), nested)
