"""Render snapshots to rich renderables. Pure: no I/O, no clock, no terminal.

Everything the dashboard shows is built here from a :class:`~hub.overview.Snapshot` (the fleet
screen) or a :class:`~hub.overview.DeviceDetail` (the device screen); the Textual app in
:mod:`cli.dashboard.app` only places these pieces in widgets. Tests render them to text at a
given terminal size and read them like a user would.

Every string a device controls (firmware version, alert codes and messages, reply details,
dead-letter details) goes through :func:`protocol.text.inert` and into a rich ``Text`` (never
markup), so neither escape sequences nor ``[markup]`` in device text can reach the terminal.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.layout import Layout
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from hub.overview import (
    CommandView,
    DeviceDetail,
    DeviceView,
    EventView,
    MetricHistory,
    Snapshot,
    SortKey,
    ViewState,
)
from protocol.metrics import metric_by_name
from protocol.models import CommandState
from protocol.text import inert

SPARKS = "▁▂▃▄▅▆▇█"
MAIN_METRICS = ("temperature", "power_w", "speed_kmh", "humidity", "battery_v", "co2_ppm", "pressure_hpa")
STATE_STYLE = {
    CommandState.QUEUED: "white", CommandState.SENT: "cyan", CommandState.RECEIVED: "blue",
    CommandState.DELIVERED: "blue", CommandState.SUCCEEDED: "green", CommandState.FAILED: "red",
    CommandState.REJECTED: "magenta", CommandState.EXPIRED: "yellow", CommandState.TIMED_OUT: "yellow",
}
"""The color of each command state (every state has one)."""
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
SORT_LABEL = {SortKey.PROBLEMS: "problems first", SortKey.ID: "by device id", SortKey.LAST_SEEN: "last seen first"}
KEYS_FLEET = "↑↓ scroll  Enter open device  / filter  Esc clear  s sort  c send command  q quit"


# ---------------------------------------------------------------------------- values, names, times


def fmt_value(value: float) -> str:
    """A reading for people: thousands separators, sensible decimals, never an exponent."""
    if not math.isfinite(value):
        return str(value)
    mag = abs(value)
    if mag >= 1000 or value == int(value):
        return f"{value:,.0f}"
    if mag >= 10:
        return f"{value:.1f}"
    if mag >= 0.01:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.4f}".rstrip("0").rstrip(".")


def metric_label(name: str) -> str:
    """The metric's name without its unit suffix (``power_w`` -> ``power``): the unit is shown beside the value."""
    metric = metric_by_name(name)
    if metric is not None and metric.unit and "_" in name:
        return name.rsplit("_", 1)[0]
    return inert(name)


def metric_unit(name: str, declared: str = "") -> str:
    """The unit the device declares (its description), else the protocol's metric table's ('' when unknown)."""
    if declared:
        return inert(declared)
    metric = metric_by_name(name)
    return metric.unit if metric else ""


def with_unit(name: str, value: float, declared: str = "") -> str:
    """``21.5 °C``, ``4,512 W``, ``63 %``."""
    unit = metric_unit(name, declared)
    return f"{fmt_value(value)} {unit}" if unit else fmt_value(value)


def ago(ts: float | None, now: float) -> str:
    """A short 'time since' text: 3s ago, 4m ago, 2h ago, 5d ago; 'never'."""
    if ts is None:
        return "never"
    s = max(0.0, now - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit} ago"
    return f"{int(s)}s ago"


def clock(ts: float, now: float) -> str:
    """Local wall-clock time of ``ts``: ``14:02:11`` today, ``11-29 14:02`` on another day."""
    t, n = time.localtime(ts), time.localtime(now)
    if (t.tm_year, t.tm_yday) == (n.tm_year, n.tm_yday):
        return time.strftime("%H:%M:%S", t)
    return time.strftime("%m-%d %H:%M", t)


def sparkline(values: Sequence[float | None], width: int = 20) -> str:
    """Values as a row of block characters scaled between their min and max; None (no data) is a blank."""
    vals = list(values)[-width:] if width > 0 else []
    known = [v for v in vals if v is not None]
    if not known:
        return " " * len(vals)
    lo, hi = min(known), max(known)
    span = hi - lo
    out = []
    for v in vals:
        if v is None:
            out.append(" ")
        elif span <= 0:
            out.append(SPARKS[0 if hi == 0 else 3])
        else:
            out.append(SPARKS[min(len(SPARKS) - 1, int((v - lo) / span * (len(SPARKS) - 1) + 0.5))])
    return "".join(out)


def rebucket(values: Sequence[float | None], width: int) -> list[float | None]:
    """``values`` (equal time slots) merged or stretched into ``width`` slots; a merged slot is the mean of its
    known values, None when it has none."""
    n = len(values)
    if n == 0 or width <= 0:
        return []
    out: list[float | None] = []
    for i in range(width):
        lo, hi = i * n // width, max(i * n // width + 1, (i + 1) * n // width)
        known = [v for v in values[lo:hi] if v is not None]
        out.append(sum(known) / len(known) if known else None)
    return out


def time_slots(m: MetricHistory, since: float, window_s: float, slots: int) -> list[float | None]:
    """The metric's bucket means placed on ``slots`` equal slots from ``since`` to ``since + window_s``."""
    out: list[float | None] = [None] * slots
    size = window_s / slots
    for ts, value in m.points:
        i = int((ts - since) / size + 1e-9)
        if 0 <= i < slots:
            out[i] = value
    return out


# ---------------------------------------------------------------------------- the fleet screen


def visible_devices(snapshot: Snapshot, view: ViewState) -> list[DeviceView]:
    """The devices to show, filtered (id, group or firmware contains the text) and sorted as the view asks."""
    needle = view.filter.lower()
    devices = [d for d in snapshot.devices
               if not needle or needle in d.id.lower() or needle in (d.group or "").lower() or needle in d.fw.lower()]
    if view.sort is SortKey.ID:
        return sorted(devices, key=lambda d: d.id)
    if view.sort is SortKey.LAST_SEEN:
        return sorted(devices, key=lambda d: (-(d.last_seen or 0), d.id))
    return sorted(devices, key=lambda d: (-d.problem_score, d.id))


def flow(chunks: list[Text], width: int, gap: str = "  ") -> Text:
    """``chunks`` side by side, separated by ``gap``, starting a new line where the next would not fit."""
    out = Text()
    used = 0
    for chunk in chunks:
        need = len(chunk) + (len(gap) if used else 0)
        if used and used + need > width:
            out.append("\n")
            used = 0
        elif used:
            out.append(gap)
        out.append_text(chunk)
        used += len(chunk) + (len(gap) if used else 0)
    return out


def summary_text(snapshot: Snapshot, width: int = 80) -> Text:
    """The header: hub state, device counts, rates and data-quality counters, wrapped to ``width``."""
    s = snapshot.summary
    hub = Text("hub up", style="bold green") if snapshot.hub_alive else Text.assemble(
        ("hub DOWN", "bold red"), (f" ({inert(snapshot.hub_message or 'no heartbeat')}; retrying)", "red"))
    devices = Text.assemble((f"{s.devices_total} device{'' if s.devices_total == 1 else 's'}: ", "bold"),
                            (f"{s.online} online", "green"), ", ",
                            *((f"{s.sleeping} sleeping", "cyan"), ", ") * bool(s.sleeping),
                            (f"{s.offline} offline", "bold red" if s.offline else "dim"))
    rates = Text.assemble(f"readings/s in {s.readings_in_per_s:,.0f}, stored {s.persisted_per_s:,.0f} ",
                          (sparkline(s.rate_history, 8), "cyan"))
    lag = Text("ingest lag " + ("-" if s.ingest_lag_s is None else f"{s.ingest_lag_s:.1f}s"))
    quality = [
        *[Text(f"alarms {s.alarms}", style="bold red")] * bool(s.alarms),
        Text(f"critical alerts {s.critical_alerts}", style="bold red" if s.critical_alerts else "dim"),
        Text(f"msgs missing {s.gaps}", style="yellow" if s.gaps else "dim"),
        Text(f"dead letters {s.deadletters}", style="red" if s.deadletters else "dim"),
        Text(f"duplicates {s.duplicates}", style="yellow" if s.duplicates else "dim"),
    ]
    return flow([hub, devices, rates, lag, *quality], width)


def issues_text(d: DeviceView) -> Text:
    """A device's problems in words, the most serious first ('' when there are none)."""
    parts: list[tuple[str, str]] = []
    if d.alarms:
        parts.append((f"{d.alarms} alarm{'s' if d.alarms > 1 else ''}", "bold red"))
    if d.critical_alerts:
        parts.append((f"{d.critical_alerts} critical alert{'s' if d.critical_alerts > 1 else ''}", "bold red"))
    if d.resets:
        parts.append((f"{d.resets} reset{'s' if d.resets > 1 else ''}", "red"))
    if d.gaps:
        parts.append((f"{d.gaps} msgs missing", "yellow"))
    if d.deadletters:
        parts.append((f"{d.deadletters} rejected msgs", "yellow"))
    if d.reconnects:
        parts.append((f"{d.reconnects} reconnect{'s' if d.reconnects > 1 else ''}", "yellow"))
    other = d.alerts - d.critical_alerts
    if other:
        parts.append((f"{other} alert{'s' if other > 1 else ''}", "yellow"))
    text = Text(no_wrap=True, overflow="ellipsis")
    for i, (part, style) in enumerate(parts):
        if i:
            text.append(", ", style="dim")
        text.append(part, style=style)
    if not parts:
        text.append("none", style="dim")
    return text


def readings_text(d: DeviceView, width: int) -> Text:
    """As many of the device's main metrics as fit in ``width``: name, value with unit, and the recent trend."""
    order = {name: i for i, name in enumerate(MAIN_METRICS)}
    text = Text(no_wrap=True, overflow="ellipsis")
    used = 0
    for m in sorted(d.metrics, key=lambda m: (order.get(m.name, len(order)), m.name)):
        label, value = metric_label(m.name), with_unit(m.name, m.value, m.unit)
        need = len(label) + 1 + len(value) + (2 if used else 0)
        if used and used + need > width:
            break
        if used:
            text.append("  ")
        text.append(f"{label} ", style="dim")
        text.append(value)
        used += need
        room = min(6, width - used - 1)
        if len(m.trend) > 1 and room >= 3:
            text.append(" " + sparkline(m.trend, room), style="cyan")
            used += 1 + min(room, len(m.trend))
    if not d.metrics:
        text.append("no readings yet", style="dim")
    return text


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int


CELL_PADDING = 1
"""Blank cells left and right of every table cell (the Textual table's default)."""


SCROLLBAR = 2
"""Columns the table's vertical scrollbar takes."""


def fleet_columns(width: int, id_width: int) -> list[Column]:
    """The fleet table's columns for a terminal ``width`` wide; device ids are never cut.

    The least important columns give way first as the terminal narrows: group and firmware go,
    then the readings column shrinks (and goes), then the problems column shrinks; device, status
    and last seen always stay whole.
    """
    pad = 2 * CELL_PADDING
    cols = [Column("device", "device", max(6, id_width)), Column("status", "status", 7),
            Column("seen", "last seen", 9)]
    if width >= 150:
        cols.append(Column("group", "group", 10))
    if width >= 110:
        cols.append(Column("fw", "firmware", 12))
    rest = width - SCROLLBAR - sum(c.width + pad for c in cols)
    issues = min(20 if width < 110 else 34, rest - pad - 14 - pad)
    if issues >= 8:
        return [*cols, Column("issues", "problems", issues), Column("readings", "latest readings", rest - issues - 2 * pad)]
    return [*cols, Column("issues", "problems", max(8, rest - pad))]


def fleet_row(d: DeviceView, now: float, columns: list[Column]) -> tuple[Text, ...]:
    """One device as the cells of ``columns``."""
    cells: dict[str, Text] = {
        "device": Text(inert(d.id), no_wrap=True),
        "status": Text("online", style="green") if d.online else Text("sleeping", style="cyan") if d.sleeping
        else Text("OFFLINE", style="bold red"),
        "seen": Text(ago(d.last_seen, now), justify="right"),
        "group": Text(inert(d.group or "-"), no_wrap=True, overflow="ellipsis"),
        "fw": Text(inert(d.fw or "-"), no_wrap=True, overflow="ellipsis"),
        "issues": issues_text(d),
    }
    if columns[-1].key == "readings":
        cells["readings"] = readings_text(d, columns[-1].width)
    return tuple(cells[c.key] for c in columns)


def fleet_title(snapshot: Snapshot, view: ViewState, shown: int) -> str:
    """What the table holds: how many devices match, the filter and the order."""
    title = f"{shown} of {len(snapshot.devices)} devices"
    if view.filter:
        title += f" matching '{inert(view.filter)}'"
    return f"{title}, {SORT_LABEL[view.sort]}"


def _list_table() -> Table:
    return Table(box=None, expand=True, show_header=False, padding=(0, 1), collapse_padding=True, show_edge=False,
                 pad_edge=False)


def commands_table(commands: tuple[CommandView, ...], now: float, rows: int, with_device: bool = True,
                   width: int = 80) -> Table:
    """Recent commands: when, device, name and arguments, state (coloured) and, when there is room, the detail."""
    table = _list_table()
    table.add_column("time", no_wrap=True)
    if with_device:
        table.add_column("device", no_wrap=True)
    table.add_column("command", no_wrap=True, overflow="ellipsis", ratio=2, min_width=6)
    table.add_column("state", no_wrap=True)
    detail = width >= 60
    if detail:
        table.add_column("detail", no_wrap=True, overflow="ellipsis", ratio=2)
    for c in commands[: max(0, rows)]:
        args = "" if c.args in ("", "{}") else f" {c.args}"
        cells: list[RenderableType] = [Text(clock(c.updated_at, now), style="dim")]
        if with_device:
            cells.append(Text(inert(c.device_id)))
        cells += [Text(inert(c.name + args)), Text(c.state, style=STATE_STYLE.get(c.state, "white"))]
        if detail:
            said = " ".join(x for x in (c.detail, "" if c.result in ("", "{}") else c.result) if x)
            cells.append(Text(inert(said), style="dim"))
        table.add_row(*cells)
    if not commands:
        table.add_row(Text("no commands yet", style="dim"))
    return table


def events_table(events: tuple[EventView, ...], now: float, rows: int, with_device: bool = True) -> Table:
    """Alerts (severity, code, message) and rejected messages (reason, detail) with the time the hub received them."""
    table = _list_table()
    table.add_column("time", no_wrap=True)
    if with_device:
        table.add_column("device", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("text", no_wrap=True, overflow="ellipsis", ratio=1)
    for e in events[: max(0, rows)]:
        if e.kind == "alert":
            kind = Text(e.severity or "alert", style=SEVERITY_STYLE.get(e.severity, "yellow"))
        elif e.kind == "deadletter":
            kind = Text("rejected", style="red")
        else:  # e.g. "reset": the device's boot counter went backwards
            kind = Text(e.kind, style="red")
        cells: list[RenderableType] = [Text(clock(e.ts, now), style="dim")]
        if with_device:
            cells.append(Text(inert(e.device_id or "?")))
        cells += [kind, Text(inert(e.text))]
        table.add_row(*cells)
    if not events:
        table.add_row(Text("none", style="dim"))
    return table


def render(snapshot: Snapshot, view: ViewState | None = None, width: int = 80, height: int = 24) -> RenderableType:
    """The whole fleet screen for a terminal of ``width`` x ``height`` (what the app shows, as one renderable)."""
    view = view or ViewState()
    devices = visible_devices(snapshot, view)
    lower_h = max(4, min(10, (height - 5) // 3))
    device_rows = max(1, height - 2 - 1 - lower_h - 1 - 1)  # header 2, filter 1, lower, table header 1, footer 1
    columns = fleet_columns(width, max((len(d.id) for d in devices), default=6))
    table = Table(box=None, padding=(0, CELL_PADDING), show_edge=False, expand=False)
    for c in columns:
        table.add_column(c.label, width=c.width, no_wrap=True, overflow="ellipsis",
                         justify="right" if c.key == "seen" else "left")
    header = summary_text(snapshot, width)
    header_h = len(header.plain.split("\n"))
    device_rows = max(1, device_rows - (header_h - 2))
    title = fleet_title(snapshot, view, len(devices))
    hint = inert(view.filter) or "none (id, group or firmware)"
    filter_line = Text.assemble(("Filter (/): ", "bold"), (hint, "" if view.filter else "dim"), no_wrap=True,
                                overflow="ellipsis")
    filter_line.append(" " * max(1, width - len(filter_line) - len(title)) + title, style="dim")
    filter_line.truncate(width)
    layout = Layout()
    layout.split_column(
        Layout(header, name="header", size=header_h),
        Layout(filter_line, name="filter", size=1),
        Layout(table, name="devices"),
        Layout(name="lower", size=lower_h),
        Layout(Text(KEYS_FLEET, style="reverse", no_wrap=True, overflow="ellipsis"), name="footer", size=1),
    )
    for d in devices[:device_rows]:
        table.add_row(*fleet_row(d, snapshot.taken_at, columns))
    layout["lower"].split_row(
        Layout(Panel(commands_table(snapshot.commands, snapshot.taken_at, lower_h - 2, width=width // 2 - 2),
                     title="recent commands",
                     padding=(0, 0)), name="commands"),
        Layout(Panel(events_table(snapshot.events, snapshot.taken_at, lower_h - 2), title="alerts and rejected messages",
                     padding=(0, 0)), name="events"),
    )
    return layout


# ---------------------------------------------------------------------------- the device screen


def chart(values: Sequence[float | None], height: int) -> list[str]:
    """A bar chart of ``values`` (one column each; None is blank) in ``height`` rows of block characters."""
    known = [v for v in values if v is not None]
    if not known or height <= 0:
        return []
    lo, hi = min(known), max(known)
    levels = height * 8
    heights = [0 if v is None else levels // 2 if hi == lo else round((v - lo) / (hi - lo) * (levels - 1)) + 1
               for v in values]
    rows = []
    for row in range(height - 1, -1, -1):
        line = []
        for h in heights:
            fill = h - row * 8
            line.append(" " if fill <= 0 else "█" if fill >= 8 else SPARKS[fill - 1])
        rows.append("".join(line))
    return rows


def device_header(detail: DeviceDetail) -> Text:
    """Who the device is and how it is: status since when, last seen, firmware, boot, group, problems."""
    d = detail.device
    text = Text()
    text.append(inert(detail.id), style="bold")
    if not detail.known:
        text.append("  unknown device: the hub has no record of it", style="bold red")
        return text
    if d is not None:
        text.append("  ")
        text.append("online" if d.online else "OFFLINE", style="green" if d.online else "bold red")
    if detail.state_since is not None:
        text.append(f" since {clock(detail.state_since, detail.taken_at)}")
        if detail.state_reason:
            text.append(f" ({inert(detail.state_reason)})", style="dim")
    if d is not None:
        text.append(f", last seen {ago(d.last_seen, detail.taken_at)}")
        text.append(f"\nfirmware {inert(d.fw or '-')}  boot {detail.boot if detail.boot is not None else '-'}"
                    f"  group {inert(d.group or '-')}  problems: ")
        text.append_text(issues_text(d))
    return text


def window_label(window_s: float) -> str:
    minutes = int(window_s // 60)
    return "last hour" if minutes == 60 else f"last {minutes} min"


def metric_series(detail: DeviceDetail, m: MetricHistory, width: int) -> list[float | None]:
    """One metric's history window as ``width`` columns (blank where the device sent nothing)."""
    slots = time_slots(m, detail.taken_at - detail.window_s, detail.window_s, detail.buckets)
    return rebucket(slots, width)


def metrics_table(detail: DeviceDetail, width: int) -> Table:
    """Each metric: full name, value now with its unit, lowest and highest of the window, and a chart of the window
    (oldest on the left, now on the right; blank where no reading arrived)."""
    spark_w = max(12, min(60, width - 44))
    table = Table(box=None, padding=(0, 1), collapse_padding=True, show_edge=False, pad_edge=False, expand=False)
    table.add_column("metric", no_wrap=True)
    table.add_column("now", no_wrap=True, justify="right")
    table.add_column(f"low..high, {window_label(detail.window_s)}", no_wrap=True)
    table.add_column(f"{window_label(detail.window_s)} ({detail.window_s / detail.buckets:g}s means)", no_wrap=True,
                     width=spark_w)
    for m in detail.metrics:
        now = Text("-" if m.latest is None else with_unit(m.name, m.latest, m.unit), style="bold")
        span = f"{fmt_value(m.low)}..{fmt_value(m.high)}" if m.low is not None and m.high is not None else "-"
        series = metric_series(detail, m, spark_w)
        spark = sparkline(series, spark_w) if m.points else "no readings in this window"
        table.add_row(Text(metric_label(m.name)), now, Text(span, style="dim"),
                      Text(spark, style="cyan" if m.points else "dim"))
    if not detail.metrics:
        table.add_row(Text("no readings yet", style="dim"), "", "", "")
    return table


def history_chart(detail: DeviceDetail, m: MetricHistory, width: int, height: int) -> RenderableType:
    """A taller chart of one metric over the window, with its range and a time axis."""
    unit = metric_unit(m.name, m.unit)
    title = Text.assemble((metric_label(m.name), "bold"), f" ({unit})" if unit else "",
                          f", {window_label(detail.window_s)}")
    values = [v for _, v in m.points]
    if not values:
        return Group(title, Text("no readings in this window", style="dim"))
    top, bottom = fmt_value(max(values)), fmt_value(min(values))
    label_w = max(len(top), len(bottom))
    plot_w = max(10, width - label_w - 1)
    rows = chart(metric_series(detail, m, plot_w), height)
    out: list[RenderableType] = [title]
    for i, row in enumerate(rows):
        label = top if i == 0 else bottom if i == len(rows) - 1 else ""
        out.append(Text.assemble((label.rjust(label_w), "dim"), " ", (row, "cyan"), no_wrap=True))
    start = f"-{int(detail.window_s // 60)}m"
    out.append(Text(" " * (label_w + 1) + start + " " * max(1, plot_w - len(start) - 3) + "now", style="dim",
                    no_wrap=True))
    return Group(*out)


def presence_table(detail: DeviceDetail, rows: int) -> Table:
    """Online/offline transitions, newest first, with the reason and boot."""
    table = Table(box=None, expand=True, show_header=False, padding=(0, 1), show_edge=False)
    table.add_column("time", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("why", no_wrap=True, overflow="ellipsis", ratio=1)
    for p in detail.presence[:rows]:
        table.add_row(Text(clock(p.ts, detail.taken_at), style="dim"),
                      Text(p.state, style="green" if p.state == "online" else "red"),
                      Text(inert(p.reason) + (f", boot {p.boot}" if p.boot is not None else ""), style="dim"))
    if not detail.presence:
        table.add_row(Text("no presence changes recorded", style="dim"))
    return table


def section(title: str) -> Text:
    return Text(title, style="bold reverse")


def charted_metric(detail: DeviceDetail, choice: int = 0) -> MetricHistory | None:
    """The metric the big chart shows: the ``choice``-th, counting main metrics first (wraps around)."""
    if not detail.metrics:
        return None
    order = {name: i for i, name in enumerate(MAIN_METRICS)}
    ranked = sorted(detail.metrics, key=lambda m: (order.get(m.name, len(order)), m.name))
    return ranked[choice % len(ranked)]


def render_device(detail: DeviceDetail, width: int = 80, chart_height: int = 0, rows: int = 5,
                  chart_choice: int = 0) -> RenderableType:
    """The device screen: header, metrics with history, commands, alerts, presence (top to bottom).

    ``chart_height`` > 0 adds a taller chart of one metric (``chart_choice`` picks which).
    """
    parts: list[RenderableType] = [device_header(detail), section(" metrics "), metrics_table(detail, width)]
    charted = charted_metric(detail, chart_choice)
    if chart_height > 0 and charted is not None:
        parts.append(history_chart(detail, charted, width, chart_height))
    parts += [
        section(" recent commands "),
        commands_table(detail.commands, detail.taken_at, rows, with_device=False, width=width),
        section(" alerts "), events_table(detail.alerts, detail.taken_at, rows, with_device=False),
        section(" presence "), presence_table(detail, rows),
    ]
    return Group(*parts)


# ---------------------------------------------------------------------------- as text, for tests and pipes


def to_text(renderable: RenderableType, width: int, height: int | None = None) -> str:
    """``renderable`` as plain text the way a terminal of that size shows it."""
    console = Console(width=width, height=height or 10_000, record=True, file=io.StringIO(), color_system=None,
                      legacy_windows=False)
    console.print(renderable, height=height) if height else console.print(renderable)
    return console.export_text()


def render_text(snapshot: Snapshot, view: ViewState | None = None, width: int = 80, height: int = 24) -> str:
    """The fleet screen as plain text (for tests, and for ``fleet dashboard`` when output is not a terminal)."""
    return to_text(render(snapshot, view, width, height), width, height)


def render_device_text(detail: DeviceDetail, width: int = 80, chart_height: int = 0, chart_choice: int = 0) -> str:
    """The device screen as plain text (for tests)."""
    return to_text(render_device(detail, width, chart_height, chart_choice=chart_choice), width)
