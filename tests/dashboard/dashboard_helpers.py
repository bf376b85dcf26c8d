"""Helpers for the dashboard tests: the text a user sees on the app's screen, and waiting for it."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable

from rich.console import Console
from textual.app import App
from textual.pilot import Pilot


def screen_text(app: App) -> str:  # type: ignore[type-arg]
    """The current screen as plain text, exactly as large as the terminal (what a user reads)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system="truecolor",
                      record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text(styles=False)


def screen_ansi(app: App) -> str:  # type: ignore[type-arg]
    """The current screen with the escape sequences Textual itself would write (to look for device ones)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system="truecolor",
                      record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text(styles=True)


async def wait_screen(pilot: Pilot, predicate: Callable[[str], bool], timeout: float = 30.0) -> str:  # type: ignore[type-arg]
    """Let the app run until ``predicate(screen text)`` holds; returns the text (fails the test on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        await pilot.pause()
        text = screen_text(pilot.app)
        if predicate(text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"screen never matched within {timeout}s; last screen:\n{text}")
        await asyncio.sleep(0.05)
