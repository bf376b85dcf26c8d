"""Where the dashboard draws: on the terminal the operator looks at, never into a redirected stderr.

Textual's ``LinuxDriver`` writes the screen to ``sys.__stderr__`` (``drivers/linux_driver.py``,
``self._file``), so ``fleet up 2>fleet.log`` captured the whole screen in the log file and left the
terminal blank, while the log lines that belong in that file were buried in escape sequences.
:class:`TerminalDriver` draws on stdout when it is a terminal (the usual case: ``fleet up`` shows the
dashboard only then), on stderr when only that one is, and keeps everything else of Textual's driver.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from textual.drivers.linux_driver import LinuxDriver


def screen_stream() -> TextIO:
    """The stream to draw on: stdout if it is a terminal, else stderr if that is one, else stdout."""
    for stream in (sys.__stdout__, sys.__stderr__):
        if stream is not None and stream.isatty():
            return stream
    assert sys.__stdout__ is not None
    return sys.__stdout__


class TerminalDriver(LinuxDriver):
    """Textual's Linux driver, drawing on :func:`screen_stream` instead of always on stderr."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        # a private attribute of LinuxDriver (Textual 8): the file its writer thread writes the screen to
        self._file = screen_stream()
