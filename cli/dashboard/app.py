"""The live dashboard loop: load a snapshot, render it, read keys; about twice a second."""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.live import Live

from cli.dashboard.keys import KeyHandler, KeyReader
from cli.dashboard.render import render
from hub.overview import OverviewLoader


def run_dashboard(db: str, refresh_s: float = 0.5, console: Console | None = None,
                  stop: threading.Event | None = None) -> None:
    """Show the dashboard for ``db`` until the user presses q, Ctrl-C, or ``stop`` is set."""
    console = console or Console()
    loader = OverviewLoader(db)
    keys = KeyHandler()
    stop = stop or threading.Event()
    with KeyReader() as reader, Live(console=console, screen=True, auto_refresh=False, transient=True) as live:
        while not keys.quit and not stop.is_set():
            snapshot = loader.load()
            view = keys.view if keys.typing is None else keys.feed("")
            width, height = console.size
            live.update(render(snapshot, view, width, height), refresh=True)
            deadline = time.monotonic() + refresh_s
            while not keys.quit and not stop.is_set() and time.monotonic() < deadline:
                pressed = reader.read(max(0.0, deadline - time.monotonic()))
                if pressed:
                    keys.feed(pressed)
                    live.update(render(snapshot, keys.feed(""), width, height), refresh=True)
                elif reader.fd is None:
                    time.sleep(max(0.0, deadline - time.monotonic()))
    loader.close()
