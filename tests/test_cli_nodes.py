"""The real CLI against real running nodes over a real corosync (loopback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.harness.nodes import NodeProcess, node_group, wait_converged, wait_until

pytestmark = pytest.mark.integration


def cli(node: NodeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbxmesh", "-c", str(node.config_path), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def pair(corosync_loopback, corosync_group):
    with node_group([("pbx1", None), ("pbx2", None)], corosync_group, base_port=19765) as nodes:
        for n in nodes:
            n.start()
        wait_until(lambda: all(len(n.members()) == 2 for n in nodes), 20, "two members")
        yield nodes


def test_members_channels_devices_mwi_publish_status(pair) -> None:
    a, b = pair
    out = cli(a, "publish", "device_state", "Custom:mystate", "inuse")
    assert out.returncode == 0 and "Custom:mystate is now INUSE on this node" in out.stdout
    assert cli(a, "publish", "mwi", "1000", "3", "1").returncode == 0
    wait_until(lambda: b.devices("Custom:*"), 10, "the state on pbx2")
    wait_until(b.mwi, 10, "the mailbox on pbx2")

    members = json.loads(cli(b, "--json", "members").stdout)
    assert sorted(m["name"] for m in members) == ["pbx1", "pbx2"]
    for m in members:
        assert set(m) >= {"name", "nodeid", "address", "eid", "member", "self"}
        assert m["nodeid"].startswith("0x") and m["member"] is True
        assert len(m["eid"]) == 17
    assert [m["self"] for m in members if m["name"] == "pbx2"] == [True]
    human = cli(b, "members").stdout
    assert "NODE NAME" in human and "pbx2 (this node)" in human and "quorate: yes" in human

    assert json.loads(cli(b, "--json", "channels").stdout) == [
        {
            "name": "device_state",
            "publish": ["device_state", "mwi", "presence_state"],
            "subscribe": ["device_state", "mwi", "presence_state"],
        }
    ]
    devices = json.loads(cli(b, "--json", "devices", "Custom:*").stdout)
    assert devices == [
        {"device": "Custom:mystate", "state": "INUSE", "origins": {a.eid(): "INUSE"}}
    ]
    assert "Custom:mystate  INUSE" in cli(b, "devices").stdout
    assert json.loads(cli(b, "--json", "devices", "PJSIP/*").stdout) == []
    mwi = json.loads(cli(b, "--json", "mwi").stdout)
    assert mwi == [{"mailbox": "1000@default", "new": 3, "old": 1, "origin": a.eid()}]
    assert "(pbx1)" in cli(b, "mwi").stdout

    status = cli(b, "status")
    assert status.returncode == 0 and "link up" in status.stdout
    assert json.loads(cli(b, "--json", "status").stdout)["devices"] == 1

    out = cli(a, "publish", "presence_state", "alice", "DND", "", "back at 3, maybe")
    assert out.returncode == 0, out.stderr
    assert "CustomPresence:alice is now dnd (back at 3, maybe)" in out.stdout
    wait_until(lambda: cli(b, "--json", "presence").stdout.strip() != "[]", 10, "presence")
    assert json.loads(cli(b, "--json", "presence", "ali*").stdout) == [
        {
            "presentity": "CustomPresence:alice",
            "state": "dnd",
            "subtype": "",
            "message": "back at 3, maybe",
            "origin": a.eid(),
        }
    ]
    shown = cli(b, "presence").stdout
    assert "CustomPresence:alice  dnd" in shown and "back at 3, maybe" in shown
    assert json.loads(cli(b, "--json", "presence", "bob*").stdout) == []


def test_bad_input_is_refused_with_one_line(pair) -> None:
    a, _ = pair
    out = cli(a, "publish", "device_state", "Custom:x", "idle")
    assert out.returncode == 2 and "'idle' is not a device state" in out.stderr
    out = cli(a, "publish", "device_state", "bad&name", "INUSE")
    assert out.returncode == 2 and "separators" in out.stderr
    out = cli(a, "publish", "mwi", "@nobox", "1", "0")
    assert out.returncode == 2 and "empty mailbox part" in out.stderr
    out = cli(a, "publish", "presence_state", "alice", "busy")
    assert out.returncode == 2 and "valid states are not_set, unavailable" in out.stderr
    out = cli(a, "publish", "presence_state", "alice", "away", "", "two\nlines")
    assert out.returncode == 2 and "control character" in out.stderr
    out = cli(a, "publish", "presence_state", "alice", "away", "", "x" * 300)
    assert out.returncode == 2 and "at most 255" in out.stderr
    out = cli(a, "publish", "presence_state", "XMPP:alice", "away")
    assert out.returncode == 2 and "only CustomPresence:NAME" in out.stderr
    out = cli(a, "hints")
    assert out.returncode == 1 and "no [asterisk] link" in out.stderr
    for o in (out,):
        assert o.stderr.count("\n") == 1


def test_sigterm_leaves_and_the_other_node_drops_its_state_at_once(pair) -> None:
    a, b = pair
    a.publish_device("Custom:gone", "BUSY")
    wait_until(lambda: b.devices("Custom:gone"), 10, "the state on pbx2")
    t0 = time.monotonic()
    a.stop()
    wait_until(lambda: not b.devices("Custom:gone"), 5, "pbx2 to drop pbx1's state")
    assert time.monotonic() - t0 < 3.0
    assert len(b.members()) == 1


def test_sighup_reload_changes_channels_under_load_without_losing_state(pair) -> None:
    a, b = pair
    stop = threading.Event()
    sent: list[str] = []

    def load() -> None:
        i = 0
        while not stop.is_set():
            device = f"Custom:load{i % 500}"
            a.publish_device(device, ("INUSE", "BUSY", "RINGING")[i % 3])
            sent.append(device)
            i += 1

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(0.5)
        text = a.config_path.read_text()
        a.config_path.write_text(
            text + '\n[[channel]]\nname = "extra"\npublish = ["mwi"]\nsubscribe = ["mwi"]\n'
        )
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGHUP)
        wait_until(
            lambda: len(json.loads(cli(a, "--json", "channels").stdout)) == 2,
            10,
            "the reloaded channels",
        )
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join()
    assert len(sent) > 100
    wait_converged([a, b], 20)
    on_b = {d["device"]: d for d in b.devices("Custom:load*")}
    on_a = {d["device"]: d for d in a.devices("Custom:load*")}
    assert on_a == on_b and len(on_b) == min(500, len(sent))
    assert "reload done channels=device_state,extra" in a.log_path.read_text()
