"""Two pbxmesh bridges on one real res_corosync ring (each on a corosync node of its own, both
in one mesh with a second site): no echo, no stale state kept alive between them, and the
ring keeps the other sites' states when one bridge dies (tests/harness/ring.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.asterisk import asterisk_missing_reason
from tests.harness.corosync import corosync_missing_reason
from tests.harness.nats import nats_missing_reason
from tests.harness.nodes import NodeProcess, wait_until
from tests.harness.ring import Ring, asterisk_ring, hint_state

pytestmark = [pytest.mark.asterisk, pytest.mark.integration]


@pytest.fixture(scope="module")
def ring(asterisk_build: object) -> Iterator[Ring]:
    """The ring, made again for each Asterisk build (``asterisk_build``)."""
    reason = asterisk_missing_reason() or corosync_missing_reason(netns=True)
    reason = reason or nats_missing_reason()
    if reason:
        pytest.skip(reason)
    with asterisk_ring(bridges=2) as r:
        yield r


def bridges_seen(node: NodeProcess) -> list[str]:
    (link,) = [x for x in node.status()["links"] if x["kind"] == "ring"]
    return list(link["extra"]["bridges"])


def test_two_bridges_neither_echo_nor_keep_stale_states(ring: Ring) -> None:
    first, second = ring.bridge, ring.extra[-1]
    # Each takes the other for a bridge as soon as it hears it on the ring.
    ring.cli(first, "publish", "device_state", "Custom:x", "NOT_INUSE")
    ring.cli(second, "publish", "device_state", "Custom:x", "NOT_INUSE")
    wait_until(lambda: bridges_seen(first) == [second.eid()], 10, "first sees second", 0.05)
    wait_until(lambda: bridges_seen(second) == [first.eid()], 10, "second sees first", 0.05)
    # The second site's state reaches the ring through both, and leaves it through both.
    ring.ami(0, "Setvar", Variable="DEVICE_STATE(Custom:far)", Value="INUSE")
    ring.wait_hints("102", "InUse")
    ring.ami(0, "Setvar", Variable="DEVICE_STATE(Custom:far)", Value="NOT_INUSE")
    ring.wait_hints("102", "Idle")
    # A ring state reaches the site and goes away there again: nobody keeps it alive.
    ring.ami(2, "Setvar", Variable="DEVICE_STATE(Custom:ringdev)", Value="BUSY")
    wait_until(lambda: hint_state(ring.site_pbx, "101") == "Busy", 15, "ring → site", 0.05)
    ring.ami(2, "Setvar", Variable="DEVICE_STATE(Custom:ringdev)", Value="NOT_INUSE")
    wait_until(lambda: hint_state(ring.site_pbx, "101") == "Idle", 15, "not stale", 0.05)
    ring.wait_hints("101", "Idle")
    # No echo: each bridge holds the ring Asterisk's state only as its own EID's slot there.
    origins = first.devices("Custom:ringdev")[0]["origins"]
    assert origins.get("02:00:00:00:0c:02") == "NOT_INUSE"


def test_the_ring_keeps_the_sites_states_when_one_bridge_dies(ring: Ring) -> None:
    ring.ami(0, "Setvar", Variable="DEVICE_STATE(Custom:far)", Value="RINGING")
    ring.wait_hints("102", "Ringing")
    ring.bridge.kill()
    # The second bridge still offers the site's state: the hint does not move.
    ring.ami(0, "Setvar", Variable="DEVICE_STATE(Custom:far)", Value="INUSE")
    ring.wait_hints("102", "InUse")
