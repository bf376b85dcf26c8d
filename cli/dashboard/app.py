"""The live dashboard as a Textual app: the fleet table, one device's screen, and a send form.

Data flow: a :class:`~cli.dashboard.feed.DashboardFeed` thread loads frozen snapshots from the
database and posts them to the app; the screens turn them into widgets with the pure functions of
:mod:`cli.dashboard.render`. Nothing on the UI loop touches SQLite or the network: sending runs in
a worker thread and its result arrives as a notification, the command's states through the feed.

Keys (also in the footer): arrows/PgUp/PgDn scroll, Enter opens a device, ``/`` filters, Esc
clears the filter or goes back, ``s`` changes the order, ``c`` sends a command, ``q`` quits.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import click
from pydantic import ValidationError
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.driver import Driver
from textual.drivers.linux_driver import LinuxDriver
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Static

from cli.dashboard.feed import DashboardFeed
from cli.dashboard.render import (
    Column,
    commands_table,
    events_table,
    fleet_columns,
    fleet_row,
    fleet_title,
    render_device,
    summary_text,
    visible_devices,
)
from cli.dashboard.sender import CommandSender, SendOutcome
from cli.dashboard.terminal import TerminalDriver
from hub.overview import DeviceDetail, DeviceView, Snapshot, SortKey, ViewState
from protocol.errors import FleetError
from protocol.text import inert

SORT_ORDER = (SortKey.PROBLEMS, SortKey.ID, SortKey.LAST_SEEN)


class FeedUpdate(Message):
    """A new snapshot (and the focused device's detail) from the feed thread."""

    def __init__(self, snapshot: Snapshot, detail: DeviceDetail | None) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.detail = detail


class FleetTable(DataTable[Text]):
    """The fleet table; Home and End go to the first and last device (DataTable scrolls sideways with them).

    It holds a row for every device, but the screen fills in only the rows in view (a row costs a
    fraction of a millisecond to build; thousands of them every refresh would stall the screen), so
    it says when it scrolls.
    """

    BINDINGS = [
        Binding("enter", "select_cursor", "Open device"),
        Binding("home", "scroll_top", "First", show=False),
        Binding("end", "scroll_bottom", "Last", show=False),
    ]

    class Scrolled(Message):
        """Other rows came into view."""

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if int(old_value) != int(new_value):
            self.post_message(self.Scrolled())

    def rows_in_view(self, margin: int = 2) -> range:
        """Indexes of the rows on screen (with a few either side)."""
        first = int(self.scroll_y)
        return range(max(0, first - margin), min(self.row_count, first + self.size.height + margin))


class FleetScreen(Screen[None]):
    """Every device in a scrollable table, problems first, with a filter and the recent commands and alerts."""

    AUTO_FOCUS = "#fleet"

    BINDINGS = [
        # priority: handled as the key arrives, so the keys typed right after it go to the filter, not the table
        Binding("slash", "filter", "Filter", priority=True),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("s", "sort", "Sort"),
        Binding("c", "send", "Send command"),
        Binding("q", "app.quit", "Quit"),
    ]
    DEFAULT_CSS = """
    FleetScreen #summary { height: auto; padding: 0 1; }
    FleetScreen #filter-bar { height: 1; }
    FleetScreen #filter-label { width: auto; padding: 0 0 0 1; text-style: bold; }
    FleetScreen #filter { border: none; height: 1; width: 1fr; padding: 0 1; background: $boost; }
    FleetScreen #filter:focus { background: $accent 30%; }
    FleetScreen #fleet-title { width: auto; height: 1; padding: 0 1; color: $text-muted; }
    FleetScreen #fleet { height: 1fr; }
    FleetScreen #lower { height: 7; }
    FleetScreen #lower Static { width: 1fr; height: 100%; border: round $primary 60%; border-title-color: $text; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.view = ViewState()
        self._columns: list[Column] = []
        self._keys: list[str] = []
        self._ready = False  # a snapshot or a resize may arrive before the widgets are mounted
        self._devices: dict[str, DeviceView] = {}
        self._stale: set[str] = set()
        self._taken_at = 0.0

    def compose(self) -> ComposeResult:
        yield Static(id="summary")
        with Horizontal(id="filter-bar"):
            yield Label("Filter (/):", id="filter-label")
            yield Input(placeholder="id, group or firmware contains ...", id="filter")
            yield Static(id="fleet-title")
        yield FleetTable(id="fleet", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="lower"):
            yield Static(id="commands")
            yield Static(id="events")
        yield Footer()

    def on_mount(self) -> None:
        self._ready = True
        self.query_one("#commands", Static).border_title = "recent commands"
        self.query_one("#events", Static).border_title = "alerts and rejected messages"
        self.query_one("#fleet", DataTable).focus()

    @property
    def dashboard(self) -> DashboardApp:
        assert isinstance(self.app, DashboardApp)
        return self.app

    def on_screen_resume(self) -> None:
        self.dashboard.set_focus_device(None)
        self.refresh_view()

    def on_resize(self) -> None:
        if not self._ready:
            return
        self._columns = []  # widths depend on the terminal: rebuild the columns
        self.query_one("#lower").styles.height = max(7, self.size.height // 4)
        self.refresh_view()

    def refresh_view(self) -> None:
        """Show the app's latest snapshot through the current filter and order."""
        snap = self.dashboard.snapshot
        if not self._ready:
            return
        if snap is None:
            self.query_one("#summary", Static).update(Text("loading ...", style="dim"))
            return
        self.query_one("#summary", Static).update(summary_text(snap, max(20, (self.size.width or 80) - 2)))
        devices = visible_devices(snap, self.view)
        self.query_one("#fleet-title", Static).update(Text(fleet_title(snap, self.view, len(devices))))
        self._fill_table(snap, devices)
        lower = self.query_one("#commands", Static)
        lower_rows = max(1, self.query_one("#lower").size.height - 2)
        lower.update(commands_table(snap.commands, snap.taken_at, lower_rows, width=lower.content_size.width or 38))
        self.query_one("#events", Static).update(events_table(snap.events, snap.taken_at, lower_rows))

    def _fill_table(self, snap: Snapshot, devices: list[DeviceView]) -> None:
        table = self.query_one("#fleet", FleetTable)
        width = self.size.width or self.app.size.width
        id_width = max((len(d.id) for d in snap.devices), default=6)
        columns = fleet_columns(width, id_width)
        keys = [d.id for d in devices]
        if columns != self._columns:
            table.clear(columns=True)
            for c in columns:
                table.add_column(Text(c.label, justify="right" if c.key == "seen" else "left"), width=c.width, key=c.key)
            self._columns, self._keys = columns, []
        if keys != self._keys:  # other rows or another order: rebuild, with placeholders until a row is in view
            current = self.highlighted_device()
            table.clear()
            blank = [Text()] * (len(columns) - 1)
            for d in devices:
                table.add_row(Text(d.id), *blank, key=d.id)
            self._keys = keys
            if current in keys:
                table.move_cursor(row=keys.index(current), animate=False)
        self._devices = {d.id: d for d in devices}
        self._taken_at = snap.taken_at
        self._stale = set(keys)
        self._fill_rows_in_view()

    @on(FleetTable.Scrolled)
    def _fill_rows_in_view(self) -> None:
        """Build the cells of the stale rows now in view (the rest wait until they scroll in)."""
        table = self.query_one("#fleet", FleetTable)
        for i in table.rows_in_view():
            key = self._keys[i] if i < len(self._keys) else None
            if key is None or key not in self._stale:
                continue
            self._stale.discard(key)
            for c, cell in zip(self._columns, fleet_row(self._devices[key], self._taken_at, self._columns), strict=True):
                table.update_cell(key, c.key, cell)

    def highlighted_device(self) -> str | None:
        """The id of the device under the cursor, if any."""
        table = self.query_one("#fleet", FleetTable)
        if not self._keys or table.cursor_row < 0 or table.cursor_row >= len(self._keys):
            return None
        return self._keys[table.cursor_row]

    @on(DataTable.RowSelected, "#fleet")
    def open_device(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.dashboard.open_device(str(event.row_key.value))

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.view = replace(self.view, filter=event.value.strip())
        self.refresh_view()

    # Focus moves at once (Screen.set_focus), not later (Widget.focus): keys typed right after "/" belong to the filter.
    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        self.set_focus(self.query_one("#fleet", DataTable))

    def action_filter(self) -> None:
        self.set_focus(self.query_one("#filter", Input))

    def action_clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""
        self.set_focus(self.query_one("#fleet", DataTable))

    def action_sort(self) -> None:
        i = SORT_ORDER.index(self.view.sort)
        self.view = replace(self.view, sort=SORT_ORDER[(i + 1) % len(SORT_ORDER)])
        self.refresh_view()

    def action_send(self) -> None:
        device = self.highlighted_device()
        if device is None:
            self.notify("no device selected", severity="warning")
            return
        self.dashboard.ask_send(device)


class DeviceScreen(Screen[None]):
    """One device: metrics with units and the last hour's history, commands, alerts, presence."""

    AUTO_FOCUS = "#device-scroll"

    BINDINGS = [
        Binding("escape,backspace", "app.pop_screen", "Back"),
        Binding("c", "send", "Send command"),
        Binding("m", "next_chart", "Chart next metric"),
        Binding("q", "app.quit", "Quit"),
    ]
    DEFAULT_CSS = """
    DeviceScreen #device-scroll { height: 1fr; padding: 0 1; }
    """

    def __init__(self, device_id: str) -> None:
        super().__init__()
        self.device_id = device_id
        self.chart_choice = 0
        self._ready = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="device-scroll"):
            yield Static(Text(f"{inert(self.device_id)}  loading ...", style="dim"), id="device")
        yield Footer()

    @property
    def dashboard(self) -> DashboardApp:
        assert isinstance(self.app, DashboardApp)
        return self.app

    def on_mount(self) -> None:
        self._ready = True
        self.refresh_view()

    def on_resize(self) -> None:
        self.refresh_view()

    def refresh_view(self) -> None:
        detail = self.dashboard.detail
        if not self._ready or detail is None or detail.id != self.device_id:
            return
        width = max(40, self.size.width - 4)  # padding and the scrollbar
        tall = self.size.height >= 40
        self.query_one("#device", Static).update(render_device(
            detail, width, chart_height=8 if tall else 4, rows=8 if tall else 3, chart_choice=self.chart_choice))

    def action_send(self) -> None:
        self.dashboard.ask_send(self.device_id)

    def action_next_chart(self) -> None:
        self.chart_choice += 1
        self.refresh_view()


class SendScreen(ModalScreen[tuple[str, dict] | None]):  # type: ignore[type-arg]
    """A small form: command name and key=value arguments (parsed like ``fleet send --arg``); Enter sends,
    Esc cancels. Dismisses with (name, args) or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    SendScreen { align: center middle; }
    SendScreen #form { width: 70; max-width: 100%; height: auto; border: thick $accent; background: $surface;
                       padding: 0 1; }
    SendScreen Input { margin: 0 0 0 0; }
    SendScreen #error { color: $error; height: auto; }
    SendScreen #buttons { height: auto; align-horizontal: right; }
    """

    def __init__(self, device_id: str) -> None:
        super().__init__()
        self.device_id = device_id

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Label(Text.assemble("Send a command to ", (inert(self.device_id), "bold")))
            yield Input(placeholder="command name, e.g. ping, or reboot", id="name")
            yield Input(placeholder="arguments: key=value key=value (optional)", id="args")
            yield Static(Text("Enter sends, Tab moves to the arguments, Esc cancels", style="dim"), id="hint")
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Send", variant="primary", id="send")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#send")
    def submit(self) -> None:
        from cli.send_cmd import parse_args  # the same key=value parsing as `fleet send --arg`

        # "set_interval seconds=30" in the name field works too: words after the name are arguments
        name, *extra = self.query_one("#name", Input).value.split() or [""]
        error = self.query_one("#error", Static)
        if not name:
            error.update("give a command name")
            self.set_focus(self.query_one("#name", Input))
            return
        try:
            args = parse_args((*extra, *self.query_one("#args", Input).value.split()))
        except click.BadParameter as exc:
            error.update(Text(f"arguments: {exc.message}"))
            return
        self.dismiss((name, args))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class DashboardApp(App[None]):
    """The dashboard of ``fleet dashboard`` and ``fleet up``."""

    TITLE = "fleet dashboard"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("ctrl+c", "quit", "Quit", show=False, priority=True)]

    def __init__(self, db: str | Path, refresh_s: float = 0.5, sender: CommandSender | None = None,
                 stop: threading.Event | None = None) -> None:
        super().__init__()
        self.db = db
        self.sender = sender
        self.stop_event = stop
        self.snapshot: Snapshot | None = None
        self.detail: DeviceDetail | None = None
        self.sent: list[SendOutcome] = []  # what the operator was told about each send, oldest first
        self.feed = DashboardFeed(db, refresh_s, lambda s, d: self.post_message(FeedUpdate(s, d)))

    def get_driver_class(self) -> type[Driver]:
        """Textual's driver, but on Linux and macOS one that draws on the terminal, not on stderr
        (see :mod:`cli.dashboard.terminal`); ``TEXTUAL_DRIVER`` still wins."""
        default = super().get_driver_class()
        return TerminalDriver if default is LinuxDriver else default

    def on_mount(self) -> None:
        self.push_screen(FleetScreen())
        self.feed.start()
        if self.stop_event is not None:
            self.set_interval(0.2, self._check_stop)

    def on_unmount(self) -> None:
        self.feed.stop()

    def _check_stop(self) -> None:
        if self.stop_event is not None and self.stop_event.is_set():
            self.exit()

    def on_feed_update(self, message: FeedUpdate) -> None:
        self.snapshot = message.snapshot
        if message.detail is not None:
            self.detail = message.detail
        if not self.screen_stack:  # starting up or shutting down
            return
        screen = self.screen
        try:
            if isinstance(screen, (FleetScreen, DeviceScreen)):
                screen.refresh_view()
        except NoMatches:  # a snapshot that arrives while the app closes finds its widgets gone
            if self.is_running:
                raise

    def set_focus_device(self, device_id: str | None) -> None:
        """Tell the feed which device's detail to load (None: only the fleet)."""
        self.feed.focus = device_id
        if device_id is not None:
            self.feed.wake()

    def open_device(self, device_id: str) -> None:
        """Show the device screen of ``device_id``."""
        self.detail = None
        self.set_focus_device(device_id)
        self.push_screen(DeviceScreen(device_id))

    def ask_send(self, device_id: str) -> None:
        """Open the send form for ``device_id``; send what it returns."""
        if self.sender is None:
            self.notify("sending is not available: no broker configured", severity="error")
            return

        def done(result: tuple[str, dict] | None) -> None:  # type: ignore[type-arg]
            if result is not None:
                self.notify(f"sending {result[0]} to {device_id} ...", markup=False, timeout=3)
                self._send(device_id, result[0], result[1])

        self.push_screen(SendScreen(device_id), done)

    @work(thread=True, group="send")
    def _send(self, device_id: str, name: str, args: dict) -> None:  # type: ignore[type-arg]
        assert self.sender is not None
        try:
            outcome = self.sender.send(device_id, name, args)
        except (FleetError, OSError) as exc:  # hub or broker unreachable, no operator account (read-only folder), ...
            outcome = SendOutcome(device_id, name, None, str(exc))
        except ValidationError as exc:  # the request itself breaks the protocol (a name over 32 characters, ...)
            first = exc.errors()[0]
            outcome = SendOutcome(device_id, name, None, f"{'.'.join(map(str, first['loc']))}: {first['msg']}")
        if self.is_running:
            self.call_from_thread(self._sent, outcome)

    def _sent(self, outcome: SendOutcome) -> None:
        self.sent.append(outcome)
        self.notify(outcome.message, markup=False, severity="information" if outcome.command_id else "error",
                    timeout=8)
        self.feed.wake()


def run_dashboard(db: str | Path, refresh_s: float = 0.5, sender: CommandSender | None = None,
                  stop: threading.Event | None = None) -> None:
    """Show the dashboard for ``db`` until the user presses q or Ctrl-C, or ``stop`` is set."""
    DashboardApp(db, refresh_s, sender, stop).run()
