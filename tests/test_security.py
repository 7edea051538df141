"""Origin authentication, authorisation and replay protection, over real nodes in memory."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from pbxmesh.config import PeerConfig, SecurityConfig
from pbxmesh.errors import ConfigError, SecurityError, StateError
from pbxmesh.node import Node, NodeConfig
from pbxmesh.security import (
    build_guard,
    build_peers,
    eid_for_key,
    keygen,
    load_private_key,
    parse_public_key,
)
from pbxmesh.states import DeviceState
from pbxmesh.transport.base import Message
from pbxmesh.transport.memory import MemoryNetwork
from pbxmesh.wire import frame as wire
from pbxmesh.wire.frame import DeviceItem, Frame, FrameType
from tests.test_node import wait_for

S = DeviceState


class Site:
    """Three nodes with keys; pbx1 may assert PJSIP/1*, pbx2 PJSIP/2*, pbx3 anything."""

    grants: ClassVar = {
        "pbx1": ("PJSIP/1*", "1*@*"),
        "pbx2": ("PJSIP/2*", "2*@*"),
        "pbx3": ("*", "*"),
    }

    def __init__(self, root: Path) -> None:
        self.root = root
        self.public = {n: keygen(root / n / "node.key") for n in self.grants}
        self.peers = tuple(
            PeerConfig(n, self.public[n], devices=(d,), mailboxes=(m,))
            for n, (d, m) in self.grants.items()
        )
        self.net = MemoryNetwork()

    def node(self, name: str) -> Node:
        sec = SecurityConfig(key=self.root / name / "node.key", peers=self.peers)
        eid = eid_for_key(load_private_key(sec.key).public_key())
        guard = build_guard(sec, eid, name, self.root / name)
        return Node(NodeConfig(name=name, eid=eid), self.net.new_transport(name), guard=guard)


@pytest.fixture
async def site(tmp_path):
    s = Site(tmp_path)
    nodes = [s.node(n) for n in ("pbx1", "pbx2", "pbx3")]
    for n in nodes:
        await n.start()
    try:
        yield s, nodes
    finally:
        for n in nodes:
            await n.close()


async def test_signed_frames_flow_and_grants_are_enforced(site) -> None:
    _, (a, b, c) = site
    a.publish_device("PJSIP/100", S.INUSE)  # granted
    a.publish_device("PJSIP/200", S.BUSY)  # pbx2's device: refused by every receiver
    a.publish_mwi("1000@default", 1, 0)
    await wait_for(lambda: c.devices.cluster_state("PJSIP/100") is S.INUSE)
    await wait_for(lambda: c.mwi.get("1000@default") is not None)
    assert "PJSIP/200" not in c.devices and "PJSIP/200" not in b.devices
    assert c.stats.rejected.get("unauthorised", 0) >= 1
    assert a.devices.cluster_state("PJSIP/200") is S.BUSY  # its own view is its business


def _inject(node: Node, data: bytes, sender: str = "mem-x") -> None:
    node._on_message(sender, data)


async def test_forged_replayed_wrong_origin_unknown_and_unsigned_frames_are_rejected(
    site, caplog
) -> None:
    s, (a, b, c) = site
    captured: list[bytes] = []
    original = c._on_message

    def tap(sender: str, data: bytes) -> None:
        captured.append(data)
        original(sender, data)

    c._on_message = tap  # type: ignore[method-assign]
    b.publish_device("PJSIP/201", S.RINGING)
    await wait_for(lambda: c.devices.cluster_state("PJSIP/201") is S.RINGING)
    changes = [d for d in captured if wire.decode(d).type is FrameType.CHANGES]
    good = changes[-1]

    # Replay: the very same bytes again.
    _inject(c, good)
    assert c.stats.rejected.get("replay") == 1

    # Forged: one bit flipped in the device name.
    forged = bytearray(good)
    forged[good.index(b"PJSIP/201") + 8] ^= 0x01
    _inject(c, bytes(forged))
    assert c.stats.rejected.get("bad-signature") == 1

    # Wrong origin: pbx2 signs properly but claims pbx1's entity id.
    key2 = load_private_key(s.root / "pbx2" / "node.key")
    f = Frame(
        type=FrameType.CHANGES,
        origin=a.eid,
        seq=b.clock.tick() + 10,
        name="pbx2",
        items=(DeviceItem("PJSIP/202", 2, 1),),
    )
    body = wire.signed_part(wire.encode(f, signed=True))
    _inject(c, body + key2.sign(body))
    assert c.stats.rejected.get("wrong-origin") == 1

    # Unknown node, and unsigned frames while signatures are required.
    f = Frame(
        type=FrameType.CHANGES,
        origin=b.eid,
        seq=2**60,
        name="intruder",
        items=(DeviceItem("PJSIP/203", 2, 1),),
    )
    body = wire.signed_part(wire.encode(f, signed=True))
    _inject(c, body + key2.sign(body))
    assert c.stats.rejected.get("unknown-origin") == 1
    _inject(
        c,
        wire.encode(
            Frame(
                type=FrameType.CHANGES,
                origin=b.eid,
                seq=2**61,
                name="pbx2",
                items=(DeviceItem("PJSIP/204", 2, 1),),
            )
        ),
    )
    assert c.stats.rejected.get("unsigned") == 1
    assert not any(d in c.devices for d in ("PJSIP/202", "PJSIP/203", "PJSIP/204"))
    assert c.devices.cluster_state("PJSIP/201") is S.RINGING
    # Each reason is logged once per origin, not once per frame.
    _inject(c, good)
    assert c.stats.rejected.get("replay") == 2
    assert caplog.text.count("reason=replay") == 1


async def test_replay_protection_survives_a_receiver_restart(site) -> None:
    s, (a, _b, c) = site
    seen: list[bytes] = []
    real = c.transport._deliver

    def tap(event) -> None:
        if isinstance(event, Message):
            seen.append(event.data)
        real(event)

    c.transport._deliver = tap  # type: ignore[method-assign]
    a.publish_device("PJSIP/150", S.INUSE)
    await wait_for(lambda: c.devices.cluster_state("PJSIP/150") is S.INUSE)
    old = next(
        d
        for d in reversed(seen)
        if wire.decode(d).type is FrameType.CHANGES and wire.decode(d).origin == a.eid
    )
    await c.close()  # the receiver restarts
    again = s.node("pbx3")
    await again.start()
    try:
        _inject(again, old)
        assert again.stats.rejected.get("replay") == 1
    finally:
        await again.close()


def test_keys_and_eids(tmp_path: Path) -> None:
    public = keygen(tmp_path / "k")
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    key = load_private_key(tmp_path / "k")
    assert eid_for_key(key.public_key()) == eid_for_key(parse_public_key(public))
    with pytest.raises(StateError, match="exists"):
        keygen(tmp_path / "k")
    with pytest.raises(StateError, match="32 bytes"):
        parse_public_key("AAAA")
    (tmp_path / "bad").write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM private key"):
        load_private_key(tmp_path / "bad")


def test_guard_configuration_errors(tmp_path: Path) -> None:
    public = keygen(tmp_path / "k")
    key = load_private_key(tmp_path / "k")
    eid = eid_for_key(key.public_key())
    with pytest.raises(ConfigError, match="no key"):
        build_guard(SecurityConfig(peers=(PeerConfig("x", public),)), eid, "x", tmp_path)
    with pytest.raises(ConfigError, match="public_key"):
        build_guard(
            SecurityConfig(key=tmp_path / "k", peers=(PeerConfig("x", "!!"),)), eid, "x", tmp_path
        )
    other = eid_for_key(parse_public_key(keygen(tmp_path / "k2")))
    with pytest.raises(ConfigError, match="comes from its key"):
        build_guard(SecurityConfig(key=tmp_path / "k"), other, "x", tmp_path)
    (tmp_path / "replay.json").write_text("{broken")
    with pytest.raises(ConfigError, match="replay state is unreadable"):
        build_guard(SecurityConfig(key=tmp_path / "k"), eid, "x", tmp_path)


def test_security_error_carries_its_reason() -> None:
    err = SecurityError("replay", "old frame")
    assert err.reason == "replay" and str(err) == "old frame"


async def test_a_revoked_node_and_a_narrowed_grant_stop_counting_at_once(site) -> None:
    """SIGHUP that removes a node from [security.peers], or narrows its grant, drops what it
    may no longer assert on the node that applies it, while that node is still a member."""
    s, (a, b, c) = site
    a.publish_device("PJSIP/100", S.INUSE)
    b.publish_device("PJSIP/201", S.BUSY)
    b.publish_device("PJSIP/222", S.RINGING)
    for device in ("PJSIP/100", "PJSIP/201", "PJSIP/222"):
        await wait_for(lambda d=device: c.devices.cluster_state(d) is not None)
    guard = c.guard
    assert guard is not None
    peers = [
        PeerConfig("pbx2", s.public["pbx2"], devices=("PJSIP/22*",), mailboxes=()),
        PeerConfig("pbx3", s.public["pbx3"], devices=("*",), mailboxes=("*",)),
    ]

    built, require = build_peers(
        SecurityConfig(key=s.root / "pbx3" / "node.key", peers=tuple(peers)), "pbx3"
    )
    guard.replace_peers(built, require, "pbx3")  # what the daemon's SIGHUP does, then:
    assert c.revoke() == 2
    assert c.devices.cluster_state("PJSIP/100") is None  # pbx1 is no longer listed
    assert c.devices.cluster_state("PJSIP/201") is None  # outside pbx2's new grant
    assert c.devices.cluster_state("PJSIP/222") is S.RINGING  # still granted
    assert a.eid in {e for m in c.members() for e in m.eids}  # pbx1 is still a member
    assert c.revoke() == 0
    # Its next frames are refused as they come.
    a.publish_device("PJSIP/101", S.INUSE)
    b.publish_device("PJSIP/223", S.INUSE)
    await wait_for(lambda: c.devices.cluster_state("PJSIP/223") is S.INUSE)
    assert "PJSIP/101" not in c.devices
