"""Nodes over the in-memory transport: Asterisk's semantics end to end, and healing."""

from __future__ import annotations

import asyncio

import pytest

from pbxmesh.eid import EID
from pbxmesh.node import ChannelConfig, Node, NodeConfig, make_listener
from pbxmesh.presence import PresenceState
from pbxmesh.states import DeviceState
from pbxmesh.transport.memory import MemoryNetwork

S = DeviceState


async def wait_for(predicate, deadline: float = 5.0) -> None:
    """Poll a condition of in-memory nodes until it holds (fails after ``deadline`` s)."""
    async with asyncio.timeout(deadline):
        while not predicate():  # noqa: ASYNC110 - the nodes' state has no event to await
            await asyncio.sleep(0.005)


def make_node(net: MemoryNetwork, name: str, eid: EID | None = None, **kw) -> Node:
    config = NodeConfig(name=name, eid=eid or EID.generate(), **kw)
    return Node(config, net.new_transport(name))


@pytest.fixture
async def trio():
    net = MemoryNetwork()
    nodes = [make_node(net, f"pbx{i}") for i in (1, 2, 3)]
    try:
        for n in nodes:
            await n.start()
        yield net, nodes
    finally:
        for n in nodes:
            await n.close()


def same_everywhere(nodes) -> bool:
    first = nodes[0].devices.canonical(), nodes[0].mwi.canonical()
    return all((n.devices.canonical(), n.mwi.canonical()) == first for n in nodes[1:])


async def test_a_change_reaches_every_node_with_asterisk_aggregation(trio) -> None:
    _, (a, b, c) = trio
    a.publish_device("Custom:mystate", S.INUSE)
    await wait_for(lambda: c.devices.cluster_state("Custom:mystate") is S.INUSE)
    b.publish_device("Custom:mystate", S.RINGING)
    await wait_for(
        lambda: all(n.devices.cluster_state("Custom:mystate") is S.RINGINUSE for n in trio[1])
    )
    assert c.devices.slots_of("Custom:mystate").keys() == {a.eid, b.eid}
    assert a.remote_state("Custom:mystate") is S.RINGING
    assert c.remote_state("Custom:mystate") is S.RINGINUSE


async def test_mwi_last_writer_wins_everywhere(trio) -> None:
    _, (a, b, c) = trio
    a.publish_mwi("1000", 2, 1)
    await wait_for(lambda: c.mwi.get("1000@default") is not None)
    b.publish_mwi("1000@default", 0, 3)
    await wait_for(
        lambda: all(
            (n.mwi.get("1000@default").new, n.mwi.get("1000@default").old) == (0, 3)
            for n in trio[1]
        )
    )
    assert same_everywhere(trio[1])


async def test_a_late_joiner_gets_everything(trio) -> None:
    net, nodes = trio
    for i in range(300):
        nodes[i % 3].publish_device(f"PJSIP/{i}", S.INUSE if i % 2 else S.NOT_INUSE)
    nodes[0].publish_mwi("42@sales", 5, 6)
    late = make_node(net, "pbx4")
    await late.start()
    try:
        await wait_for(lambda: len(late.devices) == 300 and len(late.mwi) == 1)
        await wait_for(lambda: same_everywhere([*nodes, late]))
    finally:
        await late.close()


async def test_a_node_leaving_is_visible_including_the_remote_aggregate(trio) -> None:
    _, (a, b, c) = trio
    seen = []
    remote = []
    c.listeners.append(
        make_listener(on_device=seen.append, on_remote_device=lambda d, s: remote.append((d, s)))
    )
    a.publish_device("Custom:only-a", S.BUSY)
    b.publish_device("Custom:shared", S.NOT_INUSE)
    a.publish_device("Custom:shared", S.INUSE)
    await wait_for(lambda: c.devices.cluster_state("Custom:shared") is S.INUSE)
    await a.close()
    await wait_for(lambda: "Custom:only-a" not in c.devices)
    assert c.devices.cluster_state("Custom:shared") is S.NOT_INUSE
    removed = [ch for ch in seen if ch.device == "Custom:only-a" and ch.removed]
    assert removed and removed[-1].state is S.INVALID
    assert ("Custom:only-a", S.INVALID) in remote
    assert remote[-1] == ("Custom:shared", S.NOT_INUSE) or ("Custom:shared", S.NOT_INUSE) in remote
    await wait_for(lambda: same_everywhere([b, c]))


async def test_a_crashed_node_is_dropped_and_its_restart_is_taken_whole(trio) -> None:
    net, (a, b, c) = trio
    a.publish_device("Custom:x", S.INUSE)
    await wait_for(lambda: c.devices.cluster_state("Custom:x") is S.INUSE)
    net.crash(a.transport)  # as kill -9
    await wait_for(lambda: "Custom:x" not in c.devices)
    again = Node(a.config, net.new_transport("pbx1"))  # same EID, new process
    await again.start()
    try:
        again.publish_device("Custom:x", S.ONHOLD)
        await wait_for(lambda: c.devices.cluster_state("Custom:x") is S.ONHOLD)
        await wait_for(lambda: same_everywhere([again, b, c]))
    finally:
        await again.close()


async def test_partition_then_heal_converges(trio) -> None:
    net, (a, b, c) = trio
    a.publish_device("d", S.INUSE)
    await wait_for(lambda: c.devices.cluster_state("d") is S.INUSE)
    net.partition([c.transport])
    await wait_for(lambda: "d" not in c.devices and len(c.members()) == 1)
    c.publish_device("d", S.RINGING)  # written on the minority side
    a.publish_device("d", S.NOT_INUSE)  # and on the majority side
    b.publish_mwi("7@x", 1, 1)
    net.heal()
    await wait_for(lambda: same_everywhere([a, b, c]))
    assert all(n.devices.cluster_state("d") is S.RINGING for n in (a, b, c))
    assert all(n.mwi.get("7@x") is not None for n in (a, b, c))


async def test_channels_filter_what_is_sent_and_applied() -> None:
    net = MemoryNetwork()
    only_dev = (
        ChannelConfig("device_state", frozenset({"device_state"}), frozenset({"device_state"})),
    )
    a = make_node(net, "a", channels=only_dev)
    b = make_node(net, "b")  # default channel named device_state, both kinds
    c = make_node(net, "c", channels=(ChannelConfig("other"),))
    for n in (a, b, c):
        await n.start()
    try:
        a.publish_mwi("1@x", 1, 0)  # a does not publish mwi
        a.publish_device("Custom:a", S.INUSE)
        b.publish_mwi("2@x", 1, 0)  # b publishes mwi, a does not subscribe to it
        await wait_for(lambda: b.devices.cluster_state("Custom:a") is S.INUSE)
        await asyncio.sleep(0.05)
        assert b.mwi.get("1@x") is None
        assert a.mwi.get("2@x") is None
        assert "Custom:a" not in c.devices  # another channel name: nothing shared
    finally:
        for n in (a, b, c):
            await n.close()


async def test_a_duplicate_eid_is_reported_and_ignored(caplog) -> None:
    net = MemoryNetwork()
    eid = EID.generate()
    a, b = make_node(net, "a", eid), make_node(net, "b", eid)
    await a.start()
    await b.start()
    try:
        a.publish_device("Custom:z", S.BUSY)
        await wait_for(lambda: b.stats.rejected.get("duplicate-eid", 0) > 0)
        assert "our own entity id" in caplog.text
    finally:
        await a.close()
        await b.close()


async def test_garbage_frames_are_counted_and_dropped(trio) -> None:
    _, (a, _b, c) = trio
    await a.transport.send(b"not a frame at all")
    a.publish_device("after", S.INUSE)
    await wait_for(lambda: c.devices.cluster_state("after") is S.INUSE)
    assert c.stats.rejected.get("malformed") == 1


async def test_reload_of_channels_keeps_state_and_reannounces(trio) -> None:
    _, (a, _b, c) = trio
    a.publish_device("Custom:keep", S.INUSE)
    await wait_for(lambda: c.devices.cluster_state("Custom:keep") is S.INUSE)
    a.reconfigure((ChannelConfig("device_state"), ChannelConfig("extra")))
    a.publish_device("Custom:keep2", S.BUSY)
    await wait_for(lambda: c.devices.cluster_state("Custom:keep2") is S.BUSY)
    assert a.devices.cluster_state("Custom:keep") is S.INUSE
    assert [ch.name for ch in a.channels()] == ["device_state", "extra"]


async def test_local_state_is_served_while_alone() -> None:
    net = MemoryNetwork()
    a = make_node(net, "a")
    await a.start()
    try:
        change = a.publish_device("PJSIP/100", S.INUSE)
        assert change is not None and change.state is S.INUSE
        assert a.devices.cluster_state("PJSIP/100") is S.INUSE
        assert a.remote_state("PJSIP/100") is S.INVALID
        with pytest.raises(Exception, match="control character"):
            a.publish_device("bad\nname", S.INUSE)
    finally:
        await a.close()


async def test_withdrawing_reported_states_keeps_kept_ones_and_mwi_everywhere(trio) -> None:
    """Asterisk gone: what its link reported stops counting on every node; what a person
    published (kept) and MWI stay."""
    _, (a, b, c) = trio
    a.publish_device("PJSIP/100", S.INUSE)  # from Asterisk
    a.publish_device("Custom:dnd100", S.BUSY, keep=True)  # from `pbxmesh publish`
    a.publish_mwi("100@default", 2, 0)
    b.publish_device("PJSIP/100", S.NOT_INUSE)
    await wait_for(lambda: c.devices.cluster_state("Custom:dnd100") is S.BUSY)
    await wait_for(lambda: c.devices.cluster_state("PJSIP/100") is S.INUSE)
    assert a.withdraw_reported() == 1
    for n in (a, b, c):
        await wait_for(lambda n=n: n.devices.cluster_state("PJSIP/100") is S.NOT_INUSE)
        assert n.devices.cluster_state("Custom:dnd100") is S.BUSY
        assert a.eid not in n.devices.slots_of("PJSIP/100")
        assert (n.mwi.get("100@default").new, n.mwi.get("100@default").old) == (2, 0)
    await wait_for(lambda: same_everywhere([a, b, c]))
    # The link's next resync reports Asterisk's states again.
    a.publish_device("PJSIP/100", S.RINGING)
    await wait_for(lambda: c.devices.cluster_state("PJSIP/100") is S.RINGING)


async def test_a_joining_node_is_caught_up_once_every_members_snapshot_is_in(trio) -> None:
    """A link reads Asterisk only after this (daemon.py): a copy of another server's mailbox
    left in Asterisk is then compared with the cluster's counts, not with nothing (the chaos
    drill found a node restarted without its state directory claiming stale copies)."""
    net, (a, b, c) = trio
    for k, n in enumerate((a, b, c)):
        n.publish_mwi(f"{k}000@default", k + 1, 0)
        n.publish_presence(f"CustomPresence:p{k}", PresenceState.AWAY, "", "")
    await wait_for(lambda: all(len(n.mwi.canonical()) == 3 for n in (a, b, c)))
    d = make_node(net, "pbx4")
    try:
        await d.start()
        assert await d.wait_caught_up(5.0)
        assert {r.mailbox for r in d.mwi_rows(None)} == {"0000@default", "1000@default",
                                                         "2000@default"}  # fmt: skip
        assert len(d.presence) == 3
    finally:
        await d.close()
    alone = make_node(MemoryNetwork(), "alone")
    try:
        await alone.start()
        assert await alone.wait_caught_up(0.0)
    finally:
        await alone.close()


async def test_mailbox_and_presence_changes_are_counted_once_whatever_their_origin(trio) -> None:
    # The saver (daemon) and /metrics read these counters: a change of our own counts as
    # much as one from another node, and each change counts once on every node.
    _, (a, b, c) = trio
    a.publish_mwi("1000@default", 2, 0)
    b.publish_presence("CustomPresence:alice", PresenceState.DND, "", "back at 3")
    await wait_for(
        lambda: (
            c.mwi.get("1000@default") is not None
            and c.presence.get("CustomPresence:alice") is not None
        )
    )
    await wait_for(lambda: a.presence.get("CustomPresence:alice") is not None)
    await wait_for(lambda: b.mwi.get("1000@default") is not None)
    for n in (a, b, c):
        assert (n.stats.mwi_changes, n.stats.presence_changes) == (1, 1), n.config.name
    assert a.publish_mwi("1000@default", 2, 0) is None  # the same counts: no change
    assert a.stats.mwi_changes == 1
