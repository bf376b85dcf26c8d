"""Make device-supplied text inert before a person sees it.

Everything a device sends is untrusted, including strings an operator will read in a table, the
dashboard or a log line (``fw``, alert messages, reply details). A terminal obeys escape
sequences wherever they appear, so such text is shown with every control character escaped:
C0 (``\\x00``-``\\x1f``), DEL, C1 (``\\x80``-``\\x9f``) and the Unicode bidirectional overrides that can
make text read differently from what it is.
"""

from __future__ import annotations

_BIDI = {0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def _unsafe(code: int) -> bool:
    return code < 0x20 or 0x7F <= code <= 0x9F or code in _BIDI


_TABLE = {code: _escape(chr(code)) for code in (*range(0x20), *range(0x7F, 0xA0), *_BIDI)}
_TABLE[ord("\\")] = "\\\\"


def inert(text: object) -> str:
    """``text`` as a string with control characters escaped (``\\x1b`` for ESC), safe to print.

    Backslashes are doubled so an escaped form cannot be confused with a device that sent the
    four characters ``\\x1b`` itself. Plain printable text, including non-ASCII letters, is unchanged.
    """
    s = text if isinstance(text, str) else str(text)
    if s.isprintable() and "\\" not in s and not any(ord(c) in _BIDI for c in s):
        return s
    return s.translate(_TABLE)


def is_inert(text: str) -> bool:
    """True if ``text`` holds no character that :func:`inert` would escape (besides backslash)."""
    return not any(_unsafe(ord(c)) for c in text)
