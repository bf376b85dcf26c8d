"""Render a :class:`~cli.dashboard.snapshot.Snapshot` to a rich renderable. Pure: no I/O, no clock."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.layout import Layout
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from hub.overview import DeviceView, Snapshot, SortKey, ViewState
from protocol.models import CommandState

SPARKS = "▁▂▃▄▅▆▇█"
MAIN_METRICS = ("temperature", "humidity", "power_w", "speed_kmh", "battery_v")
STATE_STYLE = {
    CommandState.QUEUED: "white", CommandState.SENT: "cyan", CommandState.RECEIVED: "blue",
    CommandState.DELIVERED: "blue", CommandState.SUCCEEDED: "green", CommandState.FAILED: "red",
    CommandState.REJECTED: "magenta", CommandState.EXPIRED: "yellow", CommandState.TIMED_OUT: "yellow",
}
"""The color of each command state (every state has one)."""


def sparkline(values: tuple[float, ...] | list[float], width: int = 20) -> str:
    """Values as a row of block characters scaled between their min and max."""
    vals = list(values)[-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo
    if span <= 0:
        return SPARKS[0 if hi == 0 else 3] * len(vals)
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - lo) / span * (len(SPARKS) - 1) + 0.5))] for v in vals)


def ago(ts: float | None, now: float) -> str:
    """A short 'time since' text: 3s, 4m, 2h, 5d."""
    if ts is None:
        return "never"
    s = max(0.0, now - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


def visible_devices(snapshot: Snapshot, view: ViewState) -> list[DeviceView]:
    """The devices to show, filtered and sorted as the view asks."""
    needle = view.filter.lower()
    devices = [d for d in snapshot.devices if not needle or needle in d.id.lower() or needle in (d.group or "").lower()]
    if view.sort is SortKey.ID:
        return sorted(devices, key=lambda d: d.id)
    if view.sort is SortKey.LAST_SEEN:
        return sorted(devices, key=lambda d: -(d.last_seen or 0))
    return sorted(devices, key=lambda d: (-d.problem_score, d.id))


def render(snapshot: Snapshot, view: ViewState | None = None, width: int = 80, height: int = 24) -> RenderableType:
    """The whole dashboard for a terminal of ``width`` x ``height``."""
    view = view or ViewState()
    layout = Layout()
    header = _header(snapshot, view)
    # rows: header 5, footer 1; the rest split between devices and the two recent lists
    body_h = max(6, height - 6)
    lower_h = max(4, min(10, body_h // 3))
    device_rows = max(1, body_h - lower_h - 3)
    layout.split_column(
        Layout(header, name="header", size=5),
        Layout(_devices(snapshot, view, device_rows, width), name="devices"),
        Layout(name="lower", size=lower_h),
        Layout(_footer(view), name="footer", size=1),
    )
    layout["lower"].split_row(
        Layout(_commands(snapshot, lower_h - 2), name="commands"),
        Layout(_events(snapshot, lower_h - 2), name="events"),
    )
    return layout


def _header(snapshot: Snapshot, view: ViewState) -> RenderableType:
    s = snapshot.summary
    if snapshot.hub_alive:
        status = Text("hub up", style="bold green")
    else:
        status = Text("hub DOWN", style="bold red")
    lag = "-" if s.ingest_lag_s is None else f"{s.ingest_lag_s:.1f}s"
    line1 = Text.assemble(
        status, "  devices ", (f"{s.online}", "green"), " online ", (f"{s.offline}", "red" if s.offline else "dim"),
        f" offline {s.devices_total} total",
    )
    line2 = Text.assemble(
        f"in {s.readings_in_per_s:,.0f}/s  persisted {s.persisted_per_s:,.0f}/s ",
        (sparkline(s.rate_history, 24), "cyan"),
        f"  lag {lag}",
    )
    line3 = Text.assemble(
        "dups ", (f"{s.duplicates}", "yellow" if s.duplicates else "dim"),
        "  gaps ", (f"{s.gaps}", "yellow" if s.gaps else "dim"),
        "  dead letters ", (f"{s.deadletters}", "red" if s.deadletters else "dim"),
    )
    subtitle = None if snapshot.hub_alive else Text(f"{snapshot.hub_message or 'no heartbeat'}; retrying", style="red")
    return Panel(Group(line1, line2, line3), title="fleet", subtitle=subtitle, padding=(0, 1), height=5)


def _devices(snapshot: Snapshot, view: ViewState, rows: int, width: int) -> RenderableType:
    devices = visible_devices(snapshot, view)
    table = Table(expand=True, box=None, padding=(0, 1), show_edge=False)
    table.add_column("device", no_wrap=True, ratio=2)
    table.add_column("status", no_wrap=True)
    table.add_column("seen", no_wrap=True, justify="right")
    wide = width >= 110
    if wide:
        table.add_column("fw", no_wrap=True)
    table.add_column("latest", no_wrap=True, ratio=4)
    table.add_column("link", no_wrap=True, justify="right")
    shown = devices[:rows]
    for d in shown:
        status = Text("online", style="green") if d.online else Text("offline", style="bold red")
        latest = Text()
        for m in [m for m in d.metrics if m.name in MAIN_METRICS][: (3 if wide else 2)]:
            latest.append(f"{m.name[:4]} {m.value:.4g} ")
            latest.append(sparkline(m.trend, 6), style="cyan")
            latest.append(" ")
        link = Text(f"g{d.gaps} r{d.reconnects}", style="yellow" if d.gaps or d.reconnects else "dim")
        cells: list[RenderableType] = [d.id, status, ago(d.last_seen, snapshot.taken_at)]
        if wide:
            cells.append(d.fw or "-")
        cells += [latest, link]
        table.add_row(*cells)
    title = f"devices {len(shown)}/{len(devices)}"
    if view.filter:
        title += f" matching '{view.filter}' of {len(snapshot.devices)}"
    title += f", sort {view.sort.value}"
    return Panel(table, title=title, padding=(0, 0))


def _commands(snapshot: Snapshot, rows: int) -> RenderableType:
    table = Table(box=None, expand=True, show_header=False, padding=(0, 1))
    table.add_column("cmd", no_wrap=True, overflow="ellipsis")
    table.add_column("state", no_wrap=True)
    for c in snapshot.commands[: max(0, rows)]:
        table.add_row(f"{c.device_id} {c.name}", Text(c.state, style=STATE_STYLE.get(c.state, "white")))
    if not snapshot.commands:
        table.add_row(Text("no commands yet", style="dim"), "")
    return Panel(table, title="commands", padding=(0, 0))


def _events(snapshot: Snapshot, rows: int) -> RenderableType:
    table = Table(box=None, expand=True, show_header=False, padding=(0, 1))
    table.add_column("event", no_wrap=True, overflow="ellipsis")
    for e in snapshot.events[: max(0, rows)]:
        style = "red" if e.kind == "deadletter" else "yellow"
        table.add_row(Text(f"{e.kind[:5]} {e.device_id or '?'} {e.text}", style=style))
    if not snapshot.events:
        table.add_row(Text("no alerts or dead letters", style="dim"))
    return Panel(table, title="alerts & dead letters", padding=(0, 0))


def _footer(view: ViewState) -> RenderableType:
    return Text(" s: sort  /: filter  c: clear filter  q: quit", style="reverse")


def render_text(snapshot: Snapshot, view: ViewState | None = None, width: int = 80, height: int = 24) -> str:
    """The dashboard as plain text, the way a terminal of that size would show it (for tests)."""
    import io

    from rich.console import Console

    console = Console(width=width, height=height, record=True, file=io.StringIO(), color_system=None)
    console.print(render(snapshot, view, width, height), height=height)
    return console.export_text()

