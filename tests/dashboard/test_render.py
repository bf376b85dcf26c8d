"""The dashboard's renderers are pure functions of a snapshot: render to text and read it like a user."""

from __future__ import annotations

import re

from cli.dashboard.render import (
    fleet_columns,
    fmt_value,
    render_device_text,
    render_text,
    sparkline,
    visible_devices,
)
from hub.overview import (
    CommandView,
    DeviceDetail,
    DeviceView,
    EventView,
    MetricHistory,
    MetricView,
    PresenceView,
    Snapshot,
    SortKey,
    Summary,
    ViewState,
)

NOW = 1_800_000_000.0
ESCAPES = "\x1b]0;PWNED\x07\x1b[2J\x1b[1;1H ALL SYSTEMS NORMAL [bold red]x[/]"


def fleet(n: int = 30, **overrides: DeviceView) -> Snapshot:
    devices = [
        DeviceView(id=f"sim-{i:05d}", online=i != 7, last_seen=NOW - i, fw="1.2.0", group="north" if i < 10 else "south",
                   metrics=(MetricView("temperature", 20.0 + i, (1.0, 2.0, 3.0)),
                            MetricView("energy_wh", 13_400.0 + i)), gaps=5 if i == 12 else 0)
        for i in range(n)
    ]
    devices = [overrides.get(d.id, d) for d in devices]
    return Snapshot(
        taken_at=NOW,
        hub_alive=True,
        summary=Summary(devices_total=n, online=n - 1, readings_in_per_s=250, persisted_per_s=249,
                        rate_history=(1, 5, 9), duplicates=4, gaps=5, deadletters=2, ingest_lag_s=0.12,
                        critical_alerts=1),
        devices=tuple(devices),
        commands=(CommandView("c-1", "sim-00003", "reboot", "delivered", NOW),),
        events=(EventView(NOW - 65, "deadletter", "sim-00009", "schema: seq: Field required"),
                EventView(NOW - 5, "alert", "sim-00004", "overheat temperature 92 above 90", severity="critical")),
    )


def lines(text: str) -> list[str]:
    return text.rstrip("\n").split("\n")


def clock(ts: float) -> str:
    import time

    return time.strftime("%H:%M:%S", time.localtime(ts))


def device_rows(text: str) -> list[str]:
    return [r for r in lines(text) if re.match(r"^ ?sim-\d{5} ", r)]


def test_fits_80x24_header_says_what_it_counts_problems_first():
    text = render_text(fleet(), width=80, height=24)
    rows = lines(text)
    assert len(rows) <= 24 and all(len(r) <= 80 for r in rows)
    assert "30 devices: 29 online, 1 offline" in text
    assert "critical alerts 1" in text and "msgs missing 5" in text and "dead letters 2" in text
    assert "duplicates 4" in text
    ordered = device_rows(text)
    assert "sim-00007" in ordered[0] and "OFFLINE" in ordered[0]  # offline first
    assert "sim-00012" in ordered[1] and "5 msgs missing" in ordered[1]  # then the one with lost messages
    assert "problems" in rows[[i for i, r in enumerate(rows) if "device" in r and "status" in r][0]]


def test_critical_alerts_and_resets_sort_as_problems():
    snap = fleet(**{
        "sim-00020": DeviceView(id="sim-00020", online=True, last_seen=NOW, critical_alerts=2, alerts=2),
        "sim-00021": DeviceView(id="sim-00021", online=True, last_seen=NOW, resets=1),
        "sim-00022": DeviceView(id="sim-00022", online=True, last_seen=NOW, alerts=1),
    })
    order = [d.id for d in visible_devices(snap, ViewState())]
    assert order[:4] == ["sim-00007", "sim-00020", "sim-00021", "sim-00012"]
    assert order.index("sim-00022") < order.index("sim-00000")
    text = render_text(snap, width=80, height=24)
    assert "2 critical alerts" in text and "1 reset" in text


def test_metric_names_whole_with_units_and_no_exponents():
    assert "temperature 20 °C" in render_text(fleet(), width=80, height=24)
    text = render_text(fleet(), width=200, height=30)
    assert "temperature 20 °C" in text and "energy 13,400 Wh" in text
    assert "e+0" not in text
    assert fmt_value(13_398.2) == "13,398" and fmt_value(1.34e4) == "13,400" and fmt_value(0.5) == "0.5"
    assert fmt_value(1e-5) == "0" and fmt_value(21.456) == "21.5" and fmt_value(-3.0) == "-3"


def test_commands_alerts_and_dead_letters_have_times():
    text = render_text(fleet(), width=200, height=40)
    assert f"{clock(NOW)} sim-00003 reboot" in text and "delivered" in text
    assert f"{clock(NOW - 65)} sim-00009 rejected schema: seq: Field required" in text
    assert f"{clock(NOW - 5)} sim-00004 critical overheat temperature 92 above 90" in text


def test_wide_terminal_shows_more_devices_firmware_group_and_more_readings():
    small = render_text(fleet(), width=80, height=24)
    large = render_text(fleet(), width=200, height=50)
    assert len(device_rows(large)) > len(device_rows(small))
    assert all(len(r) <= 200 for r in lines(large))
    assert "firmware" in large and "1.2.0" in large and "group" in large and "north" in large
    assert "temperature" in large and "energy" in large.split("sim-00000")[1].split("\n")[0]


def test_device_ids_are_never_cut():
    long_id = "greenhouse-north-sensor-0042"
    snap = fleet(**{"sim-00001": DeviceView(id=long_id, online=False, last_seen=NOW)})
    text = render_text(snap, width=80, height=24)
    assert long_id in text and "OFFLINE" in text and "0s ago" in text and "problems" in text
    assert fleet_columns(80, len(long_id))[0].width == len(long_id)
    assert sum(c.width + 2 for c in fleet_columns(80, 40)) <= 80 - 2  # 2: the scrollbar
    assert "readings" not in [c.key for c in fleet_columns(80, 40)]


def test_hub_down_is_said_on_screen():
    snap = Snapshot(taken_at=NOW, hub_alive=False, hub_message="no heartbeat for 12s")
    text = render_text(snap)
    assert "hub DOWN (no heartbeat for 12s; retrying)" in text


def test_filter_shown_and_applied_to_id_group_and_firmware():
    snap = fleet()
    north = visible_devices(snap, ViewState(filter="north"))
    assert len(north) == 10 and all(d.group == "north" for d in north)
    by_id = visible_devices(snap, ViewState(sort=SortKey.ID))
    assert [d.id for d in by_id] == sorted(d.id for d in snap.devices)
    text = render_text(snap, ViewState(filter="sim-0002"))
    assert "sim-00021" in text and "sim-00012" not in text
    assert "Filter (/): sim-0002" in text and "10 of 30 devices matching 'sim-0002'" in text
    assert "Filter (/): none" in render_text(snap)


def test_sparkline_scales_between_min_and_max_and_leaves_gaps_blank():
    assert sparkline([0, 7]) == "▁█"
    assert sparkline([]) == ""
    assert sparkline([1, None, 3]) == "▁ █"
    assert len(sparkline(list(range(100)), width=10)) == 10


def detail(**kw: object) -> DeviceDetail:
    points = tuple((NOW - 3600 + i * 60, 20.0 + (i % 10)) for i in range(30, 60))
    base: dict[str, object] = dict(
        id="sim-00004", taken_at=NOW, device=DeviceView(id="sim-00004", online=True, last_seen=NOW - 2, fw="1.2.0",
                                                        group="north", critical_alerts=1, alerts=1),
        state_since=NOW - 600, state_reason="birth", boot=3,
        metrics=(MetricHistory("temperature", 21.5, points, 19.5, 29.5), MetricHistory("power_w", 13_400.0)),
        presence=(PresenceView(NOW - 600, "online", "birth", 3), PresenceView(NOW - 700, "offline", "will", 2)),
        commands=(CommandView("c1", "sim-00004", "ping", "succeeded", NOW - 10, NOW - 11, "", "{}", '{"pong": 1}'),
                  CommandView("c2", "sim-00004", "set_interval", "queued", NOW - 5, NOW - 5, "", '{"seconds": 5}')),
        alerts=(EventView(NOW - 30, "alert", "sim-00004", "overheat temperature 92 above 90", "critical"),),
    )
    return DeviceDetail(**(base | kw))  # type: ignore[arg-type]


def test_device_view_at_80_columns_shows_everything_with_units_and_times():
    text = render_device_text(detail(), width=80, chart_height=4)
    assert all(len(r) <= 80 for r in lines(text))
    assert "sim-00004  online since" in text and "(birth)" in text and "last seen 2s ago" in text
    assert "firmware 1.2.0" in text and "boot 3" in text and "1 critical alert" in text
    assert "temperature" in text and "21.5 °C" in text and "19.5..29.5" in text and "13,400 W" in text
    assert "last hour" in text and "-60m" in text and "now" in text
    assert any(ch in text for ch in "▁▂▃▄▅▆▇█")
    assert f"{clock(NOW - 10)} ping" in text and "succeeded" in text and '{"pong": 1}' in text
    assert 'set_interval {"seconds": 5}' in text and "queued" in text
    assert f"{clock(NOW - 30)} critical overheat temperature 92 above 90" in text
    assert re.search(rf"{clock(NOW - 600)}  online +birth, boot 3", text)
    assert re.search(rf"{clock(NOW - 700)}  offline +will, boot 2", text)


def test_device_view_of_an_unknown_device_says_so():
    text = render_device_text(DeviceDetail(id="ghost", taken_at=NOW, known=False))
    assert "ghost  unknown device" in text


def test_device_text_is_inert_in_fleet_and_device_views():
    evil = DeviceView(id="sim-00001", online=True, last_seen=NOW, fw=ESCAPES, group=ESCAPES)
    snap = fleet(**{"sim-00001": evil})
    snap = Snapshot(taken_at=NOW, hub_alive=True, summary=snap.summary, devices=snap.devices,
                    commands=(CommandView("c", "sim-00001", "ping", "failed", NOW, NOW, ESCAPES, "{}", "{}"),),
                    events=(EventView(NOW, "alert", "sim-00001", ESCAPES, "critical"),
                            EventView(NOW, "deadletter", "sim-00001", ESCAPES)))
    det = detail(device=evil, alerts=(EventView(NOW, "alert", "sim-00001", ESCAPES, "warning"),),
                 commands=snap.commands, state_reason=ESCAPES)
    for text in (render_text(snap, width=200, height=50), render_device_text(det, width=200)):
        assert "\x1b" not in text and "\x07" not in text
        assert "\\x1b]0;PWNED\\x07\\x1b[2J" in text
        assert "[bold red]x[/]" in text  # markup in device text is shown, not obeyed
