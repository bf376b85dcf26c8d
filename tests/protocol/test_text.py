"""protocol.text.inert: device text is shown with every control character escaped."""

import pytest

from protocol.text import inert, is_inert


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;PWNED\x07", "\\x1b]0;PWNED\\x07"),
        ("\x1b[2J\x1b[1;1H ALL SYSTEMS NORMAL", "\\x1b[2J\\x1b[1;1H ALL SYSTEMS NORMAL"),
        ("line1\nline2\r", "line1\\nline2\\r"),
        ("\x9b31m", "\\x9b31m"),  # C1 CSI
        ("abc\u202edef", "abc\\u202edef"),  # right-to-left override
        ("back\\x1b", "back\\\\x1b"),  # a literal backslash cannot pose as an escape
        ("temp 21.5 °C é", "temp 21.5 °C é"),
    ],
)
def test_inert_escapes_controls(raw: str, shown: str) -> None:
    out = inert(raw)
    assert out == shown
    assert is_inert(out)


def test_inert_takes_non_strings() -> None:
    assert inert(12.5) == "12.5"
