"""The strict subset of JSON and CBOR that devices may send (firmware_protocol.md, 8.2 and 8.3).

Both forms are parsed by general-purpose libraries that accept more than the protocol allows:
cbor2 decodes tags (a tag 35 payload makes it compile a regular expression sent by the device),
indefinite-length items and repeated map keys; JSON parsers let a repeated name silently take
the last value. What a device sends must mean one thing to every implementation, so these are
refused, each with :attr:`~protocol.errors.Reason.UNDECODABLE`:

* CBOR: only major types 0, 1, 3, 4, 5 (text keys), 2 (byte strings, refused later by the
  schema) and 7 (``false``, ``true``, ``null``, half/single/double floats), all of definite
  length, nested at most :data:`MAX_DEPTH` deep, no repeated map key, valid UTF-8 text;
* JSON: no name twice in one object.

:func:`loads_cbor` is a complete decoder of that subset (one pass, no second library call).
"""

from __future__ import annotations

import json
import struct
from typing import Any

from protocol.errors import ProtocolError, Reason

MAX_DEPTH = 8
"""Deepest nesting of arrays and maps; the deepest message (a telemetry reading) needs 3."""

_HALF = struct.Struct(">e")
_SINGLE = struct.Struct(">f")
_DOUBLE = struct.Struct(">d")


def _refuse(detail: str) -> ProtocolError:
    return ProtocolError(Reason.UNDECODABLE, detail)


def _argument(data: bytes, pos: int, info: int) -> tuple[int, int]:
    """The argument of an item head whose additional information is ``info`` (24..27); refuses the rest."""
    if info == 24:
        size = 1
    elif info == 25:
        size = 2
    elif info == 26:
        size = 4
    elif info == 27:
        size = 8
    elif info == 31:
        raise _refuse("indefinite-length CBOR items are not allowed")
    else:
        raise _refuse(f"reserved CBOR additional information {info}")
    end = pos + size
    if end > len(data):
        raise _refuse("CBOR item runs past the end of the payload")
    return int.from_bytes(data[pos:end], "big"), end


def _item(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    """Decode the item at ``pos``; returns it and the position after it. Hot path: keep it flat."""
    try:
        initial = data[pos]
    except IndexError:
        raise _refuse("CBOR item runs past the end of the payload") from None
    pos += 1
    major, info = initial >> 5, initial & 0x1F
    if major == 7:
        if info == 25:
            end = pos + 2
            fmt = _HALF
        elif info == 27:
            end = pos + 8
            fmt = _DOUBLE
        elif info == 26:
            end = pos + 4
            fmt = _SINGLE
        elif info == 20:
            return False, pos
        elif info == 21:
            return True, pos
        elif info == 22:
            return None, pos
        elif info == 31:
            raise _refuse("a CBOR break outside an indefinite-length item")
        else:
            raise _refuse(f"CBOR simple value {info} is not allowed (only false, true, null and floats)")
        if end > len(data):
            raise _refuse("CBOR item runs past the end of the payload")
        return fmt.unpack_from(data, pos)[0], end
    if major == 6:
        tag = _argument(data, pos, info)[0] if 24 <= info <= 27 else info if info < 24 else "?"
        raise _refuse(f"CBOR tag {tag} is not allowed")
    if info < 24:
        arg = info
    else:
        arg, pos = _argument(data, pos, info)
    if major == 0:
        return arg, pos
    if major == 3:
        end = pos + arg
        if end > len(data):
            raise _refuse("CBOR item runs past the end of the payload")
        try:
            return data[pos:end].decode("utf-8"), end
        except UnicodeDecodeError:
            raise _refuse("CBOR text string is not valid UTF-8") from None
    if major == 4:
        if depth >= MAX_DEPTH:
            raise _refuse(f"CBOR nested deeper than {MAX_DEPTH} levels")
        if arg > len(data) - pos:  # every item takes a byte at least: refuse a huge count at once
            raise _refuse("CBOR array longer than the payload")
        out_list = []
        append = out_list.append
        depth += 1
        for _ in range(arg):
            value, pos = _item(data, pos, depth)
            append(value)
        return out_list, pos
    if major == 5:
        if depth >= MAX_DEPTH:
            raise _refuse(f"CBOR nested deeper than {MAX_DEPTH} levels")
        if 2 * arg > len(data) - pos:
            raise _refuse("CBOR map longer than the payload")
        out: dict[Any, Any] = {}
        depth += 1
        for _ in range(arg):
            key, pos = _item(data, pos, depth)
            if isinstance(key, (list, dict)):
                raise _refuse("CBOR map key must be a text string")
            if key in out:
                raise _refuse(f"CBOR map repeats the key {str(key)[:32]!r}")
            out[key], pos = _item(data, pos, depth)
        return out, pos
    if major == 1:
        return -1 - arg, pos
    # major 2: a byte string (no field takes one: the schema refuses it)
    end = pos + arg
    if end > len(data):
        raise _refuse("CBOR item runs past the end of the payload")
    return data[pos:end], end


def loads_cbor(payload: bytes) -> Any:
    """Decode one CBOR item of the strict subset that fills ``payload`` exactly."""
    value, pos = _item(payload, 0, 0)
    if pos != len(payload):
        raise _refuse(f"{len(payload) - pos} bytes after the CBOR item")
    return value


def _no_repeated_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _refuse(f"JSON object repeats the name {name[:32]!r}")
            seen.add(name)
    return out


def check_json(payload: bytes) -> None:
    """Refuse a JSON payload in which an object repeats a name (broken JSON is left to the model)."""
    try:
        json.loads(payload, object_pairs_hook=_no_repeated_names)
    except RecursionError:
        raise _refuse("JSON nested too deep") from None
    except ValueError as exc:
        if isinstance(exc, ProtocolError):
            raise
        # not JSON at all (or NaN-like constants): pydantic's parser reports it with its own words
