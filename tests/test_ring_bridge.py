"""A bridge to a res_corosync ring inside the mesh (in memory): the node's own slot as direct
assertions plus the ring's part, two bridges on one ring without echo, and ``[asterisk.ring]``.
The real ring is in ``test_ring_asterisk.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pbxmesh.config import load_config
from pbxmesh.control import ControlServer, device_json
from pbxmesh.eid import EID
from pbxmesh.links.ring import RING_PART, RingLink, RingLinkConfig
from pbxmesh.node import ChannelConfig, Node, NodeConfig
from pbxmesh.states import DeviceState
from pbxmesh.transport.memory import MemoryNetwork
from tests.harness.waits import eventually
from tests.ring_sim import SimRingAsterisk

S = DeviceState
CHANNELS = (ChannelConfig("device_state"),)


def node(net: MemoryNetwork, name: str) -> Node:
    return Node(NodeConfig(name, EID.generate(), CHANNELS), net.new_transport(name))


async def test_the_own_slot_folds_direct_assertions_and_the_rings_part() -> None:
    n = node(MemoryNetwork(), "bridge")
    await n.start()
    try:
        n.publish_device("Custom:x", S.INUSE, keep=True)
        n.publish_part(RING_PART, "Custom:x", S.NOT_INUSE)
        assert n.devices.slot_state("Custom:x", n.eid) is S.INUSE
        n.publish_part(RING_PART, "Custom:x", S.RINGING)
        assert n.devices.slot_state("Custom:x", n.eid) is S.RINGINUSE
        n.publish_device("Custom:x", S.INVALID)
        assert n.devices.slot_state("Custom:x", n.eid) is S.RINGING
        n.publish_device("Custom:x", S.BUSY, keep=True)
        assert [(d, s) for d, s, _ in n.own.own_state()[0]] == [("Custom:x", int(S.BUSY))]
        assert n.own.own_devices() == {"Custom:x": S.BUSY}  # without the ring's part
        n.publish_part(RING_PART, "Custom:y", S.INUSE)
        n.withdraw_reported()  # an AMI link's PBX gone: the ring's part stays
        assert n.devices.slot_state("Custom:y", n.eid) is S.INUSE
        n.publish_part(RING_PART, "Custom:y", S.INVALID)
        assert n.devices.slot_state("Custom:y", n.eid) is S.INVALID
        n.publish_mwi("1000@default", 1, 0, part=RING_PART)
        assert n.own.own_mwi() == {}
        n.publish_mwi("2000@default", 2, 0)
        assert n.own.own_mwi() == {"2000@default": (2, 0)}
    finally:
        await n.close()


@pytest.fixture
async def two_bridges() -> AsyncIterator[tuple[SimRingAsterisk, Node, Node, Node]]:
    """One ring Asterisk, bridges A and B on its ring, and a remote node, all one mesh."""
    mesh, ring = MemoryNetwork(), MemoryNetwork()
    ast = SimRingAsterisk(ring)
    a, b, remote = node(mesh, "a"), node(mesh, "b"), node(mesh, "remote")
    await ast.start()
    for n in (a, b, remote):
        await n.start()
    try:
        for n in (a, b):
            await n.add_link(
                RingLink(RingLinkConfig(), transport=ring.new_transport(n.config.name))
            )
        yield ast, a, b, remote
    finally:
        for n in (a, b, remote):
            await n.close()
        await ast.close()


async def test_two_bridges_on_one_ring_neither_echo_nor_keep_stale_states(
    two_bridges: tuple[SimRingAsterisk, Node, Node, Node],
) -> None:
    ast, a, b, remote = two_bridges
    await ast.set_device("Custom:phone", S.INUSE)
    await eventually(lambda: remote.devices.cluster_state("Custom:phone") is S.INUSE, "ring→mesh")
    await ast.set_device("Custom:phone", S.NOT_INUSE)
    await eventually(lambda: remote.devices.cluster_state("Custom:phone") is S.NOT_INUSE, "again")
    # A remote assertion reaches the ring through both bridges, each under its own EID.
    remote.publish_device("Custom:far", S.BUSY)
    await eventually(lambda: ast.hint("Custom:far") is S.BUSY, "mesh→ring")
    await eventually(
        lambda: (
            (ast.cache.get(("Custom:far", a.eid)), ast.cache.get(("Custom:far", b.eid)))
            == (S.BUSY, S.BUSY)
        ),
        "both bridges",
    )
    remote.publish_device("Custom:far", S.NOT_INUSE)
    await eventually(lambda: ast.hint("Custom:far") is S.NOT_INUSE, "no stale BUSY")
    for link in a.links + b.links:
        await link.wait_idle()
    # No echo: the ring's own device never came back to the ring under a bridge's EID, and
    # each bridge took the other for a bridge, not for an Asterisk.
    assert {e for (d, e) in ast.cache if d == "Custom:phone"} == {ast.eid}
    assert all(link.status().extra["bridges"] for link in a.links + b.links)
    # A bridge's direct assertion is offered by that bridge alone.
    a.publish_device("Custom:own", S.RINGING)
    await eventually(lambda: ast.hint("Custom:own") is S.RINGING, "bridge publish → ring")
    for link in a.links + b.links:
        await link.wait_idle()
    assert {e for (d, e) in ast.cache if d == "Custom:own"} == {a.eid}


async def test_the_lamp_pages_live_event_shows_the_same_origins_as_devices(
    two_bridges: tuple[SimRingAsterisk, Node, Node, Node],
) -> None:
    """The page's first picture (``devices``) and each live update list a device's origins
    alike, the ring Asterisk's own slot included."""
    ast, a, _b, _remote = two_bridges
    control = ControlServer(a, "127.0.0.1", 0)
    await ast.set_device("Custom:lamp", S.INUSE)
    await eventually(lambda: ast.eid in a.device_origins("Custom:lamp"), "ring slot")
    ((device, state, origins),) = a.device_rows("Custom:lamp")
    listed = device_json(device, state, origins)
    assert str(ast.eid) in listed["origins"]
    assert control._device_event("Custom:lamp") == {**listed, "removed": False}


async def test_a_leaving_asterisk_takes_its_states_from_the_mesh(
    two_bridges: tuple[SimRingAsterisk, Node, Node, Node],
) -> None:
    ast, a, _b, remote = two_bridges
    await ast.set_device("Custom:gone", S.BUSY)
    await eventually(lambda: remote.devices.cluster_state("Custom:gone") is S.BUSY, "arrived")
    assert a.device_rows("Custom:gone")[0][2][ast.eid] is S.BUSY  # shown under its own EID
    assert [m.kind for m in a.link_members()] == ["asterisk"]
    await ast.close()
    await eventually(
        lambda: remote.devices.cluster_state("Custom:gone") in (S.INVALID, None), "dropped"
    )


def test_the_ring_section_configures_a_bridge_without_ami(tmp_path: Path) -> None:
    path = tmp_path / "pbxmesh.toml"
    path.write_text(
        '[node]\nname = "bridge"\nstate_dir = "state"\n'
        '[cluster]\ntransport = "nats"\ngroup = "mesh"\n'
        '[asterisk.ring]\ngroup = "asterisk"\nexclude = ["Local/*"]\n'
    )
    cfg = load_config(path)
    assert cfg.asterisk is None
    assert cfg.ring is not None and cfg.ring.group == "asterisk"
    assert cfg.ring.exclude == ("Local/*",)


async def test_removing_the_link_takes_the_rings_part_but_not_direct_assertions() -> None:
    mesh, ring = MemoryNetwork(), MemoryNetwork()
    ast = SimRingAsterisk(ring)
    bridge, remote = node(mesh, "bridge"), node(mesh, "remote")
    await ast.start()
    for n in (bridge, remote):
        await n.start()
    link = RingLink(RingLinkConfig(), transport=ring.new_transport("bridge"))
    try:
        await bridge.add_link(link)
        bridge.publish_device("Custom:mine", S.BUSY)
        await ast.set_device("Custom:theirs", S.INUSE)
        await eventually(lambda: remote.devices.cluster_state("Custom:theirs") is S.INUSE, "in")
        await bridge.remove_link(link)  # e.g. [asterisk.ring] removed by a reload
        await eventually(
            lambda: remote.devices.cluster_state("Custom:theirs") is S.INVALID, "ring part gone"
        )
        assert remote.devices.cluster_state("Custom:mine") is S.BUSY
    finally:
        for n in (bridge, remote):
            await n.close()
        await ast.close()
