"""A pbxmesh bridge on a real res_corosync ring: three real Asterisk servers on one corosync
ring, the bridge on a fourth corosync node of its own, and a second site over NATS with its
own Asterisk linked over AMI (tests/harness/ring.py).

Marked ``asterisk``: without a real Asterisk (tests/harness/asterisk.py) these tests skip.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.harness.asterisk import asterisk_missing_reason
from tests.harness.corosync import corosync_missing_reason
from tests.harness.nats import nats_missing_reason
from tests.harness.nodes import wait_until
from tests.harness.ring import Ring, asterisk_ring, ring_eid

pytestmark = [pytest.mark.asterisk, pytest.mark.integration]


@pytest.fixture(scope="module")
def ring(asterisk_build: object) -> Iterator[Ring]:
    """The ring, made again for each Asterisk build (``asterisk_build``)."""
    reason = asterisk_missing_reason() or corosync_missing_reason(netns=True)
    reason = reason or nats_missing_reason()
    if reason:
        pytest.skip(reason)
    with asterisk_ring() as r:
        yield r


def devices(r: Ring, pattern: str) -> dict[str, str]:
    rows = r.bridge.devices(pattern)
    return rows[0]["origins"] if rows else {}


def test_members_lists_the_rings_asterisks_beside_pbxmesh_nodes(ring: Ring) -> None:
    out = ring.cli(ring.bridge, "members", "--json")
    assert out.returncode == 0, out.stderr
    members = json.loads(out.stdout)
    ast = sorted((m for m in members if m["kind"] == "asterisk"), key=lambda m: m["nodeid"])
    assert [(m["nodeid"], m["address"], m["eid"]) for m in ast] == [
        (f"0x{i:08x}", ring.cluster.address(i), ring_eid(i)) for i in (1, 2, 3)
    ]
    assert {m["name"] for m in members if m["kind"] == "pbxmesh"} == {"bridge", "site"}
    table = ring.cli(ring.bridge, "members").stdout
    assert table.count("(Asterisk on the res_corosync ring)") == 3
    # The bridge's PING at join: each Asterisk logged the bridge's EID, as for `corosync ping`.
    ping = f"Got event PING from server with EID: '{ring.bridge.eid()}'"
    wait_until(lambda: all(ping in a.messages() for a in ring.asterisks.values()), 10, "PING")


def test_a_publish_lights_every_ring_asterisks_hint(ring: Ring) -> None:
    ring.ami(1, "Setvar", Variable="DEVICE_STATE(Custom:x)", Value="NOT_INUSE")
    ring.wait_hints("100", "Idle")
    out = ring.cli(ring.bridge, "publish", "device_state", "Custom:x", "INUSE")
    assert out.returncode == 0, out.stderr
    ring.wait_hints("100", "InUse")  # the hint itself is unchanged: Custom:x only


def test_a_ring_asterisks_state_shows_under_its_own_eid_and_mwi_arrives(ring: Ring) -> None:
    ring.ami(2, "Setvar", Variable="DEVICE_STATE(Custom:ringdev)", Value="BUSY")
    wait_until(lambda: devices(ring, "Custom:ringdev").get(ring_eid(2)) == "BUSY", 10, "slot", 0.05)
    ring.ami(3, "MWIUpdate", Mailbox="4711@default", NewMessages=3, OldMessages=1)

    def mwi() -> bool:
        return any(
            (m["mailbox"], m["new"], m["old"]) == ("4711@default", 3, 1) for m in ring.bridge.mwi()
        )

    wait_until(mwi, 10, "ring MWI in pbxmesh mwi", 0.05)
    out = ring.cli(ring.bridge, "devices", "Custom:ringdev").stdout
    assert f"{ring_eid(2)}=BUSY" in out


def test_the_second_site_and_the_ring_light_each_others_lamps(ring: Ring) -> None:
    from tests.harness.ring import hint_state

    ring.ami(0, "Setvar", Variable="DEVICE_STATE(Custom:far)", Value="INUSE")
    ring.wait_hints("102", "InUse")  # the site's PBX → its pbxmesh → NATS → bridge → ring
    ring.ami(2, "Setvar", Variable="DEVICE_STATE(Custom:ringdev)", Value="RINGING")
    wait_until(lambda: hint_state(ring.site_pbx, "101") == "Ringing", 15, "ring → site", 0.05)
    ring.ami(0, "Setvar", Variable="DEVICE_STATE(Custom:far)", Value="NOT_INUSE")
    ring.wait_hints("102", "Idle")
    # One origin for the ring in the mesh: the bridge; the site reported nothing of its own.
    slots = ring.site.devices("Custom:ringdev")[0]["origins"]
    assert slots == {ring.bridge.eid(): "RINGING"}


def _own_state_saved(ring: Ring, device: str) -> bool:
    path = ring.bridge.state_dir / "own-state.json"
    return path.exists() and device in path.read_text()


def test_a_killed_bridge_leaves_every_hint_and_comes_back(ring: Ring) -> None:
    ring.ami(1, "Setvar", Variable="DEVICE_STATE(Custom:x)", Value="NOT_INUSE")
    out = ring.cli(ring.bridge, "publish", "device_state", "Custom:x", "INUSE")
    assert out.returncode == 0, out.stderr
    ring.wait_hints("100", "InUse")
    wait_until(lambda: _own_state_saved(ring, "Custom:x"), 10, "own state saved", 0.05)
    ring.bridge.kill()
    ring.wait_hints("100", "Idle")  # Asterisk 1's NOT_INUSE is all that is left
    ring.bridge.start()
    ring.wait_hints("100", "InUse")


def test_a_restarted_ring_asterisk_gets_the_bridged_states_again(ring: Ring) -> None:
    ring.wait_hints("100", "InUse")
    ring.asterisks[3].restart()
    ring.wait_hints("100", "InUse")  # the bridge's join dump; Asterisk 1 re-sends its own


def test_corosync_restarted_under_the_bridge_is_rejoined(ring: Ring) -> None:
    ring.wait_hints("100", "InUse")
    ring.cluster.kill(4)
    ring.wait_hints("100", "Idle")  # the ring saw the bridge's node go
    ring.cluster.start(4)
    ring.wait_hints("100", "InUse", within=30)
    out = ring.cli(ring.bridge, "publish", "device_state", "Custom:x", "BUSY")
    assert out.returncode == 0, out.stderr
    ring.wait_hints("100", "Busy")
    ring.ami(3, "Setvar", Variable="DEVICE_STATE(Custom:ringdev)", Value="ONHOLD")
    wait_until(
        lambda: devices(ring, "Custom:ringdev").get(ring_eid(3)) == "ONHOLD", 10, "learned", 0.05
    )


def test_the_link_refuses_a_corosync_node_that_runs_an_asterisk(ring: Ring) -> None:
    """Placement: a bridge beside Asterisk 1 (corosync node 1) refuses to join the ring."""
    from tests.harness.asterisk import free_port
    from tests.harness.nodes import NodeProcess

    ns1 = ring.cluster.netns(1)
    node = NodeProcess("beside", ring.workdir / "beside", "ringplace", free_port(), netns=ns1)
    node.write_config()
    with node.config_path.open("a") as f:
        f.write('[asterisk.ring]\ngroup = "asterisk"\n')
    try:
        with pytest.raises(Exception, match="exited at start"):
            node.start(ready_timeout=20)
        log = node.log_path.read_text()
        assert "corosync node 1" in log and "Run the ring link on a corosync node of its own" in log
    finally:
        node.stop()
    ring.wait_hints("100", "Busy")  # nobody's states were touched


def test_an_asterisk_started_beside_the_bridge_is_flagged_and_its_leave_repaired(
    ring: Ring,
) -> None:
    """Placement: an Asterisk joining on the bridge's own node is reported; when it goes, the
    other Asterisks drop the bridge's states with it, and the bridge sends them again."""
    from tests.harness.ring import _ring_asterisk

    ring.wait_hints("100", "Busy")
    beside = _ring_asterisk(ring.cluster, 4)
    beside.write()
    try:
        beside.start()

        def flagged() -> bool:
            links = ring.bridge.status()["links"]
            return any(link["extra"].get("colocated") for link in links)

        wait_until(flagged, 10, "the bridge flags the Asterisk on its node", 0.05)
    finally:
        beside.stop()
        beside.cleanup()
    ring.wait_hints("100", "Busy")
    assert "sending them again" in ring.bridge.log_path.read_text()
