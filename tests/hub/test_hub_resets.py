"""A device whose boot counter goes back (flash wiped, board replaced) is a reset, never discarded.

firmware_protocol.md 4.1: the hub starts a new incarnation, keeps old and new data apart under
the exactly-once key, and shows the reset in ``fleet devices list``, the metrics and the
overview snapshot. Before contract v2 the birth was ignored (``status ignored reason=older_boot``)
and a new boot 1 collided with the old boot 1: its messages were dropped as duplicates.
"""

from __future__ import annotations

import json
import urllib.request

from click.testing import CliRunner

from cli.main import cli
from hub.overview import OverviewLoader
from hub.queries import devices_with_presence
from hub.storage import open_database as connect_db
from hub.storage.queries import resets as query_resets
from hub_helpers import birth, publish, publish_seqs, scalar, stop_client
from protocol.codec import encode
from protocol.models import Status
from protocol.topics import MessageClass
from support import add_device, connect, wait_for

DEV = "reset-1"


def test_a_lower_boot_is_a_reset_and_its_data_is_stored_apart(embedded_broker, registry, db_path, start_hub):
    hub = start_hub(embedded_broker.port, metrics_port=0)
    client = connect(embedded_broker.port, add_device(registry, DEV))
    try:
        # the first life of the board: boots 1 and 2
        for boot, seqs in ((1, range(1, 4)), (2, range(1, 3))):
            publish(client, DEV, MessageClass.STATUS, encode(birth(boot=boot)), retain=True).wait_for_publish(5)
            publish_seqs(client, DEV, seqs, boot=boot, n=2)
        assert wait_for(lambda: scalar(db_path, "SELECT COUNT(*) FROM messages") == 5)
        # flash wiped: the device starts again at boot 1, with seqs the old boot 1 also had
        publish(client, DEV, MessageClass.STATUS, encode(birth(boot=1, fw="2.0.0")), retain=True).wait_for_publish(5)
        publish_seqs(client, DEV, range(1, 5), boot=1, n=2)
        assert wait_for(lambda: scalar(db_path, "SELECT COUNT(*) FROM messages") == 9), \
            scalar(db_path, "SELECT COUNT(*) FROM messages")
        assert scalar(db_path, "SELECT COUNT(*) FROM readings") == 18
        assert hub.stats["duplicates"] == 0 and hub.stats["resets"] == 1
        conn = connect_db(db_path)
        try:
            (reset,) = query_resets(conn, DEV)
            assert (reset["old_boot"], reset["new_boot"], reset["incarnation"]) == (2, 1, 1)
        finally:
            conn.close()
        (row,) = devices_with_presence(db_path, [{"id": DEV}])
        assert (row["boot"], row["resets"], row["fw"], row["state"]) == (1, 1, "2.0.0", "online")
        out = CliRunner().invoke(cli, ["--db", str(db_path), "devices", "list", "--json"])
        assert out.exit_code == 0 and [r["resets"] for r in json.loads(out.stdout) if r["id"] == DEV] == [1]
        snapshot = OverviewLoader(db_path).load()
        (view,) = [d for d in snapshot.devices if d.id == DEV]
        assert view.resets == 1 and snapshot.summary.resets == 1
        assert any(e.kind == "reset" and e.device_id == DEV for e in snapshot.events)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{hub.metrics_port}/metrics", timeout=5).read().decode()
        assert "fleet_device_resets_total 1.0" in metrics
        # a stale will of the old boot changes nothing
        publish(client, DEV, MessageClass.STATUS, encode(Status(state="offline", boot=2)),
                retain=True).wait_for_publish(5)
        publish_seqs(client, DEV, [5], boot=1)
        assert wait_for(lambda: scalar(db_path, "SELECT COUNT(*) FROM messages") == 10)
        (row,) = devices_with_presence(db_path, [{"id": DEV}])
        assert (row["state"], row["boot"]) == ("online", 1)
    finally:
        stop_client(client)
