"""Keyboard input for the dashboard: single keys without Enter, never blocking the refresh loop."""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
from dataclasses import replace
from types import TracebackType

from hub.overview import SortKey, ViewState

SORT_ORDER = (SortKey.PROBLEMS, SortKey.ID, SortKey.LAST_SEEN)


class KeyReader:
    """Puts the terminal in cbreak mode for its lifetime; :meth:`read` returns pending keys."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno() if sys.stdin.isatty() else None
        self._saved: list | None = None

    def __enter__(self) -> KeyReader:
        if self.fd is not None:
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.fd is not None and self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def read(self, timeout: float) -> str:
        """Keys typed within ``timeout`` seconds (possibly none)."""
        if self.fd is None:
            return ""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return ""
        return os.read(self.fd, 64).decode(errors="ignore")


class KeyHandler:
    """Turns keys into view changes. ``/`` starts typing a filter, Enter ends it, Esc cancels."""

    def __init__(self) -> None:
        self.view = ViewState()
        self.typing: str | None = None
        self.quit = False

    def feed(self, keys: str) -> ViewState:
        for key in keys:
            if self.typing is not None:
                if key in ("\r", "\n"):
                    self.view = replace(self.view, filter=self.typing)
                    self.typing = None
                elif key == "\x1b":
                    self.typing = None
                elif key in ("\x7f", "\b"):
                    self.typing = self.typing[:-1]
                elif key.isprintable():
                    self.typing += key
                continue
            if key in ("q", "Q", "\x03"):
                self.quit = True
            elif key == "s":
                i = SORT_ORDER.index(self.view.sort)
                self.view = replace(self.view, sort=SORT_ORDER[(i + 1) % len(SORT_ORDER)])
            elif key == "/":
                self.typing = ""
            elif key == "c":
                self.view = replace(self.view, filter="")
        return self.view if self.typing is None else replace(self.view, filter=self.typing)
