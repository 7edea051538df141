"""Presence as a cluster event type: the model's edge checks, the LWW store's laws, the wire
item, and nodes over the in-memory transport (channels, snapshots, grants, kept state)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxmesh.config import PeerConfig, SecurityConfig
from pbxmesh.daemon import OwnStateFile
from pbxmesh.eid import EID
from pbxmesh.errors import RemoteProtocolError, StateError
from pbxmesh.node import ChannelConfig, Node, NodeConfig, make_listener
from pbxmesh.presence import (
    PresenceChange,
    PresenceState,
    PresenceStore,
    check_presence_text,
    check_presentity,
    parse_presence,
)
from pbxmesh.security import build_guard, eid_for_key, keygen, load_private_key
from pbxmesh.transport.memory import MemoryNetwork
from pbxmesh.wire import frame as wire
from pbxmesh.wire.frame import DeviceItem, Frame, FrameType, MwiItem, PresenceItem
from tests.test_node import make_node, wait_for

P = PresenceState


# -- the model's edge ---------------------------------------------------------------------------
def test_states_parse_as_asterisk_spells_them_and_unknown_ones_list_the_valid() -> None:
    assert parse_presence("DND") is P.DND and parse_presence(" not_set ") is P.NOT_SET
    assert [s.text for s in P] == [
        "not_set",
        "unavailable",
        "available",
        "away",
        "xa",
        "chat",
        "dnd",
    ]
    with pytest.raises(StateError, match=r"valid states are not_set, unavailable, .*dnd"):
        parse_presence("busy")


def test_presentity_names() -> None:
    assert check_presentity("alice") == "CustomPresence:alice"
    assert check_presentity("custompresence:alice") == "CustomPresence:alice"
    for bad, why in (
        ("Foo:alice", "only CustomPresence"),
        ("CustomPresence:", "empty name"),
        ("CustomPresence:a,b", "contains ','"),
        ("CustomPresence:a&b", "contains '&'"),
        ("CustomPresence:a/b", "contains '/'"),
        ("CustomPresence:a b", "contains ' '"),
        ("CustomPresence:a)", "contains '\\)'"),
        ("CustomPresence:a\r\nAction: Logoff", "contains '\\\\r'"),
        ("CustomPresence:" + "x" * 70, "Asterisk cuts presence names at 79"),
    ):
        with pytest.raises(StateError, match=why):
            check_presentity(bad)


def test_subtype_and_message_at_the_edge() -> None:
    assert check_presence_text("message", "in a meeting, back at 3") == "in a meeting, back at 3"
    assert check_presence_text("message", "é" * 127)  # 254 bytes
    with pytest.raises(StateError, match="at most 255"):
        check_presence_text("message", "é" * 128)
    for bad in ("line\nbreak", "tab\there", "nul\x00", "del\x7f"):
        with pytest.raises(StateError, match="control character"):
            check_presence_text("message", bad)
    with pytest.raises(StateError, match="not valid UTF-8"):
        check_presence_text("message", "\udc96")


# -- the store's laws ---------------------------------------------------------------------------
EIDS = [EID.parse(f"02:00:00:00:00:0{i}") for i in (1, 2, 3)]
# An origin's versions strictly increase and each names one write: the value is a function of
# (origin, version), as in a real cluster.
writes = st.lists(
    st.tuples(
        st.sampled_from(EIDS),
        st.sampled_from(["CustomPresence:a", "CustomPresence:b"]),
        st.integers(1, 20),
    ),
    max_size=12,
)


def _apply(writes_: list[tuple[EID, str, int]]) -> dict[str, object]:
    store = PresenceStore()
    for origin, name, version in writes_:
        value = version * 7 + origin.raw[-1]
        store.apply(origin, name, P(value % 7), "", f"m{value % 3}", version)
    return store.canonical()


@given(writes, st.randoms())
def test_last_writer_wins_whatever_the_order_and_repetition(ws, rnd) -> None:
    shuffled = list(ws) * 2
    rnd.shuffle(shuffled)
    assert _apply(ws) == _apply(shuffled)


def test_a_change_is_reported_only_when_the_value_changes() -> None:
    store = PresenceStore()
    first = store.apply(EIDS[0], "CustomPresence:a", P.DND, "", "back at 3", 5)
    assert isinstance(first, PresenceChange) and first.previous is None
    assert store.apply(EIDS[1], "CustomPresence:a", P.DND, "", "back at 3", 6) is None
    record = store.get("CustomPresence:a")
    assert record is not None and record.origin == EIDS[1]  # the newer writer took it
    assert store.apply(EIDS[2], "CustomPresence:a", P.AVAILABLE, "", "", 4) is None  # older
    again = store.apply(EIDS[2], "CustomPresence:a", P.AVAILABLE, "", "", 7)
    assert again is not None and again.previous is not None and again.previous.state is P.DND
    assert [r.presentity for r in store.written_by(EIDS[2])] == ["CustomPresence:a"]


# -- the wire -----------------------------------------------------------------------------------
names = st.from_regex(r"CustomPresence:[A-Za-z0-9_.@+-]{1,20}", fullmatch=True)
texts = st.text(st.characters(min_codepoint=32, blacklist_categories=("Cs",)), max_size=60).filter(
    lambda t: "\x7f" not in t
)
items = st.builds(PresenceItem, names, st.integers(0, 6), texts, texts, st.integers(0, 2**64 - 1))


@given(st.lists(items, max_size=20))
def test_presence_items_round_trip(presence) -> None:
    f = Frame(type=FrameType.CHANGES, origin=EIDS[0], seq=1, channel="c", items=tuple(presence))
    assert wire.decode(wire.encode(f)) == f
    snap = Frame(
        type=FrameType.SNAPSHOT,
        origin=EIDS[0],
        seq=2,
        items=tuple(presence),
        kinds=wire.SNAP_PRESENCE,
    )
    assert wire.decode(wire.encode(snap)) == snap


def test_a_frame_of_before_presence_still_decodes_and_a_bad_item_is_a_protocol_error() -> None:
    old = Frame(
        type=FrameType.SNAPSHOT,
        origin=EIDS[0],
        seq=3,
        items=(DeviceItem("Custom:a", 2, 1), MwiItem("1@default", 1, 0, 1)),
        kinds=wire.SNAP_DEVICES | wire.SNAP_MWI,
    )
    assert wire.decode(wire.encode(old)) == old
    good = wire.encode(
        Frame(
            type=FrameType.CHANGES,
            origin=EIDS[0],
            seq=4,
            items=(PresenceItem("CustomPresence:a", 6, "", "ok", 1),),
        )
    )
    # A peer's message with a line break (it would end up in an AMI line): rejected whole.
    evil = good.replace(b"\x02ok", b"\x02\r\n")
    with pytest.raises(RemoteProtocolError, match="control character"):
        wire.decode(evil)
    with pytest.raises(RemoteProtocolError, match="presence state 9"):
        wire.decode(good.replace(b"\x06\x00\x00", b"\x09\x00\x00", 1))
    with pytest.raises(RemoteProtocolError, match="truncated"):
        wire.decode(good.replace(b"\x02ok", b"\x05ok"))  # a message longer than the frame


# -- nodes --------------------------------------------------------------------------------------
@pytest.fixture
async def pair():
    net = MemoryNetwork()
    nodes = [make_node(net, f"pbx{i}") for i in (1, 2)]
    try:
        for n in nodes:
            await n.start()
        yield net, nodes
    finally:
        for n in nodes:
            await n.close()


async def test_presence_reaches_the_other_nodes_and_stays_when_its_writer_leaves(pair) -> None:
    net, (a, b) = pair
    seen: list[PresenceChange] = []
    b.listeners.append(make_listener(on_presence=seen.append))
    a.publish_presence("alice", P.DND, "", "back at 3")
    await wait_for(lambda: b.presence.get("CustomPresence:alice") is not None)
    record = b.presence.get("CustomPresence:alice")
    assert record is not None and record.value == (P.DND, "", "back at 3")
    assert record.origin == a.eid and seen[-1].record == record
    a.publish_presence("CustomPresence:alice", P.AVAILABLE)
    await wait_for(lambda: b.presence.get("CustomPresence:alice").state is P.AVAILABLE)
    late = make_node(net, "pbx3")
    await late.start()  # learns it from a's snapshot
    try:
        await wait_for(lambda: late.presence.get("CustomPresence:alice") is not None)
        await a.close()
        assert late.presence.get("CustomPresence:alice").state is P.AVAILABLE  # kept, like MWI
        assert [r.presentity for r in late.presence_rows("ali*")] == ["CustomPresence:alice"]
        assert late.presence_rows("CustomPresence:b*") == []
    finally:
        await late.close()


async def test_unknown_states_and_bad_text_are_refused_at_publish(pair) -> None:
    _, (a, _) = pair
    with pytest.raises(StateError, match="control character"):
        a.publish_presence("alice", P.DND, "", "two\nlines")
    with pytest.raises(StateError, match="only CustomPresence"):
        a.publish_presence("Foo:alice", P.DND)
    assert len(a.presence) == 0


async def test_a_channel_without_presence_state_neither_sends_nor_takes_it() -> None:
    net = MemoryNetwork()
    plain = (ChannelConfig("c", frozenset({"device_state"}), frozenset({"device_state"})),)
    full = (ChannelConfig("c"),)
    a = make_node(net, "a", channels=full)
    b = make_node(net, "b", channels=plain)
    c = make_node(net, "c", channels=full)
    for n in (a, b, c):
        await n.start()
    try:
        a.publish_presence("alice", P.AWAY)
        b.publish_presence("bob", P.AWAY)  # b does not publish it
        a.publish_device("Custom:marker", 2)
        await wait_for(lambda: "Custom:marker" in b.devices and "Custom:marker" in c.devices)
        await wait_for(lambda: c.presence.get("CustomPresence:alice") is not None)
        assert b.presence.get("CustomPresence:alice") is None
        assert c.presence.get("CustomPresence:bob") is None
    finally:
        for n in (a, b, c):
            await n.close()


async def test_presentity_grants_are_enforced(tmp_path: Path) -> None:
    net = MemoryNetwork()
    grants = {"pbx1": ("CustomPresence:sales-*",), "pbx2": ()}
    public = {n: keygen(tmp_path / n / "node.key") for n in grants}
    peers = tuple(
        PeerConfig(n, public[n], devices=("*",), mailboxes=("*",), presentities=g)
        for n, g in grants.items()
    )

    def node(name: str) -> Node:
        sec = SecurityConfig(key=tmp_path / name / "node.key", peers=peers)
        eid = eid_for_key(load_private_key(sec.key).public_key())
        guard = build_guard(sec, eid, name, tmp_path / name)
        return Node(NodeConfig(name=name, eid=eid), net.new_transport(name), guard=guard)

    a, b = node("pbx1"), node("pbx2")
    for n in (a, b):
        await n.start()
    try:
        a.publish_presence("sales-ann", P.DND)  # granted
        a.publish_presence("ceo", P.DND)  # not granted: every receiver drops it
        b.publish_presence("sales-bob", P.AWAY)  # pbx2 may assert no presence at all
        await wait_for(lambda: b.presence.get("CustomPresence:sales-ann") is not None)
        await wait_for(lambda: a.stats.rejected.get("unauthorised", 0) >= 1)
        assert b.presence.get("CustomPresence:ceo") is None
        assert a.presence.get("CustomPresence:sales-bob") is None
        assert b.stats.rejected.get("unauthorised", 0) >= 1
    finally:
        for n in (a, b):
            await n.close()


async def test_presence_survives_a_restart_kept_or_reported(tmp_path: Path) -> None:
    net = MemoryNetwork()
    eid = EID.generate()
    a = make_node(net, "a", eid=eid)
    await a.start()
    a.publish_presence("alice", P.DND, "", "back at 3", keep=True)
    a.publish_presence("bob", P.AWAY)  # from Asterisk: announced at the next join as well
    own = OwnStateFile(tmp_path / "own-state.json")
    own.save(*a.own.own_state(), a.own.own_presence())
    await a.close()
    again = make_node(MemoryNetwork(), "a", eid=eid)
    again.own.restore(*own.load(), own.load_presence())
    record = again.presence.get("CustomPresence:alice")
    assert record is not None and record.value == (P.DND, "", "back at 3")
    bob = again.presence.get("CustomPresence:bob")
    assert bob is not None and bob.value == (P.AWAY, "", "") and bob.origin == eid
    assert again.clock.tick() > max(record.version, bob.version)


# -- the AMI side's pure helpers ----------------------------------------------------------------
@given(st.text(max_size=80))
def test_unescaping_undoes_what_presence_state_change_escapes(text) -> None:
    from pbxmesh.links.ami.presence import unescape_c
    from pbxmesh.pbxsim.presence import escape_c

    assert unescape_c(escape_c(text)) == text


def test_remote_presence_is_written_base64_with_the_e_option() -> None:
    from pbxmesh.links.ami.presence import setvar_fields
    from pbxmesh.pbxsim.presence import base64_decode, parse_data

    fields = setvar_fields("CustomPresence:alice", P.AWAY, "lunch, 1h", 'back "soon", ok')
    assert fields["Variable"] == "PRESENCE_STATE(CustomPresence:alice)"
    parsed = parse_data(fields["Value"])  # as func_presencestate reads it
    assert parsed is not None
    state, subtype, message, options = parsed
    assert (state, options) == (int(P.AWAY), "e")
    assert base64_decode(subtype, 255) == "lunch, 1h"
    assert base64_decode(message, 255) == 'back "soon", ok'
    assert "\r" not in fields["Value"] and "\n" not in fields["Value"]


@given(st.binary(max_size=120), st.integers(0, 200))
def test_a_damaged_presence_frame_is_a_protocol_error_and_nothing_else(noise, at) -> None:
    good = wire.encode(
        Frame(
            type=FrameType.CHANGES,
            origin=EIDS[0],
            seq=4,
            items=(PresenceItem("CustomPresence:a", 6, "sub", "msg", 1),),
        )
    )
    at = min(at, len(good))
    data = good[:at] + noise + good[at + len(noise) :]
    try:
        decoded = wire.decode(data)
    except RemoteProtocolError as exc:  # anything else (a crash) fails the test
        assert str(exc)
    else:
        assert isinstance(decoded, Frame) and all(
            isinstance(i, PresenceItem) and "\n" not in i.message for i in decoded.items
        )


# -- the AMI link's edges -----------------------------------------------------------------------
async def test_an_asterisk_without_the_presence_modules_is_said_once_and_the_rest_works(
    caplog,
) -> None:
    from pbxmesh.links.ami import AmiConfig, AmiLink
    from pbxmesh.states import DeviceState
    from tests.ami_helpers import SECRET, USER, FakeCluster, start_sim, wait_until

    sim = await start_sim(presence=False)
    cluster = FakeCluster()
    cluster.presentities["CustomPresence:bob"] = (P.DND, "", "")
    link = AmiLink(AmiConfig.local("127.0.0.1", sim.port, USER, SECRET))
    try:
        await link.start(cluster)
        async with asyncio.timeout(5):
            await link.wait_synced()
        assert link.status().extra["presence"] is False
        assert "Load func_presencestate and res_manager_presencestate" in caplog.text
        link.remote_presence("CustomPresence:bob", P.AWAY, "", "", EIDS[1])
        assert link.status().queue_depth == 0  # nothing queued that cannot be written
        sim.pbx.set_custom("Custom:alive", "INUSE")
        await wait_until(lambda: cluster.last("Custom:alive") is DeviceState.INUSE)
    finally:
        await link.close()
        await sim.close()


async def test_local_presence_the_cluster_cannot_carry_is_skipped_and_the_link_survives(
    caplog,
) -> None:
    from pbxmesh.links.ami import AmiConfig, AmiLink
    from tests.ami_helpers import SECRET, USER, FakeCluster, start_sim, wait_until

    sim = await start_sim()
    cluster = FakeCluster()
    link = AmiLink(AmiConfig.local("127.0.0.1", sim.port, USER, SECRET))
    try:
        await link.start(cluster)
        assert sim.pbx.presence is not None
        sim.pbx.presence.write("CustomPresence:bad name", "dnd")  # a blank: not shareable
        sim.pbx.presence.write("CustomPresence:tab", "dnd,,a\tb")  # a control character
        sim.pbx.presence.write("CustomPresence:ok", 'away,,say "hi" \\ now')
        await wait_until(lambda: bool(cluster.published_presence))
        assert cluster.published_presence == [("CustomPresence:ok", P.AWAY, "", 'say "hi" \\ now')]
        assert "presence not shared" in caplog.text
        assert link.status().connected
    finally:
        await link.close()
        await sim.close()
