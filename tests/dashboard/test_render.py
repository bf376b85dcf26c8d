"""The dashboard renderer is a pure function of a snapshot: render to text and read it like a user."""

from __future__ import annotations

from cli.dashboard.render import render_text, sparkline, visible_devices
from hub.overview import CommandView, DeviceView, EventView, MetricView, Snapshot, SortKey, Summary, ViewState

NOW = 1_800_000_000.0


def fleet(n: int = 30) -> Snapshot:
    devices = tuple(
        DeviceView(id=f"sim-{i:05d}", online=i != 7, last_seen=NOW - i, fw="1.2.0", group="north" if i < 10 else "south",
                   metrics=(MetricView("temperature", 20.0 + i, (1.0, 2.0, 3.0)),), gaps=5 if i == 12 else 0)
        for i in range(n)
    )
    return Snapshot(
        taken_at=NOW,
        hub_alive=True,
        summary=Summary(devices_total=n, online=n - 1, readings_in_per_s=250, persisted_per_s=249,
                        rate_history=(1, 5, 9), duplicates=4, gaps=5, deadletters=2, ingest_lag_s=0.12),
        devices=devices,
        commands=(CommandView("c-1", "sim-00003", "reboot", "delivered", NOW),),
        events=(EventView(NOW, "deadletter", "sim-00009", "schema: seq: Field required"),
                EventView(NOW, "alert", "sim-00004", "critical overheat")),
    )


def lines(text: str) -> list[str]:
    return text.rstrip("\n").split("\n")


def test_fits_80x24_and_shows_the_summary_problems_first():
    text = render_text(fleet(), width=80, height=24)
    rows = lines(text)
    assert len(rows) <= 24
    assert all(len(r) <= 80 for r in rows)
    assert "29 online" in text and "1 offline" in text and "30 total" in text
    assert "dead letters 2" in text and "gaps 5" in text and "dups 4" in text
    device_rows = [r for r in rows if "sim-000" in r and ("online" in r or "offline" in r)]
    # the offline device comes first, then the one with gaps
    assert "sim-00007" in device_rows[0] and "offline" in device_rows[0]
    assert "sim-00012" in device_rows[1]


def test_commands_alerts_and_dead_letters_are_listed_with_state_and_reason():
    text = render_text(fleet(), width=120, height=40)
    assert "sim-00003 reboot" in text and "delivered" in text
    assert "schema: seq: Field required" in text
    assert "critical overheat" in text


def test_large_terminal_shows_more_devices_and_firmware():
    small = render_text(fleet(), width=80, height=24)
    large = render_text(fleet(), width=140, height=50)
    count = lambda t: sum(1 for r in lines(t) if "sim-000" in r and "line" in r)  # noqa: E731
    assert count(large) > count(small)
    assert "1.2.0" in large


def test_hub_down_is_said_on_screen():
    snap = Snapshot(taken_at=NOW, hub_alive=False, hub_message="no heartbeat for 12s")
    text = render_text(snap)
    assert "hub DOWN" in text and "no heartbeat for 12s" in text


def test_filter_and_sort_keys():
    snap = fleet()
    north = visible_devices(snap, ViewState(filter="north"))
    assert len(north) == 10 and all(d.group == "north" for d in north)
    by_id = visible_devices(snap, ViewState(sort=SortKey.ID))
    assert [d.id for d in by_id] == sorted(d.id for d in snap.devices)
    text = render_text(snap, ViewState(filter="sim-0002"))
    assert "sim-00021" in text and "sim-00012" not in text


def test_sparkline_scales_between_min_and_max():
    assert sparkline([0, 7]) == "▁█"
    assert sparkline([]) == ""
    assert len(sparkline(list(range(100)), width=10)) == 10
