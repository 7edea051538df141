"""The ring protocol (links/ring/protocol.py), sans-IO: frames captured from real Asterisk in,
Asterisk's frames out, and the rules of §5.8 and §12."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxmesh.eid import EID
from pbxmesh.links.ring import RingProtocol
from pbxmesh.states import DeviceState
from pbxmesh.wire.asterisk import (
    AstClusterDiscovery,
    AstDeviceStateChange,
    AstMwi,
    decode_event,
    encode_event,
)

S = DeviceState
ME = EID.parse("02:00:00:00:00:99")
A1 = EID.parse("0a:1b:2c:3d:4e:5f")  # node 1 of the captured ring
# Captured from Asterisk's res_corosync (../shared/vectors), node 1:
DISCOVERY_1 = bytes.fromhex(
    "000d0029003e000400000001002a000f5d2d862031302e3231352e302e3100002100060a1b2c3d4e5f"
)
CHANGE_A_NOT_INUSE = bytes.fromhex(
    "0006002f0007000dcdc7f61d437573746f6d3a61000008000400000001003d000400000001002100060a1b2c3d4e5f"
)
AGGREGATE_A = bytes.fromhex(
    "0005002f0007000dcdc7f61d437573746f6d3a61000008000400000001003d000400000001002100060a1b2c3d4e5f"
)
MWI_1000_3_1 = bytes.fromhex(
    "0002003b0003000924ff537c31303030000009000cce7de61c64656661756c74000001000400000003"
    "0002000400000001002100060a1b2c3d4e5f"
)
VECTORS = Path(__file__).resolve().parents[2] / "shared/vectors/asterisk-corosync-frames.jsonl"


def proto(is_bridge: set[EID] | None = None) -> RingProtocol:
    bridges = is_bridge or set()
    return RingProtocol(ME, 4, "10.215.0.4", lambda e: e in bridges)


def test_join_announces_us_and_dumps_what_we_offer() -> None:
    p = proto()
    p.set_remote("Custom:x", S.INUSE)
    fx = p.view([("4:100", 4)], [], "4:100")
    assert decode_event(fx.send[0]) == AstClusterDiscovery(4, "10.215.0.4", ME)
    assert fx.send[1] == bytes.fromhex("000c000e00210006") + ME.raw  # PING, as Asterisk's
    assert decode_event(fx.send[2]) == AstDeviceStateChange("Custom:x", 2, 1, ME)
    # Someone else joining: every member re-sends its cache, we too (no announcement).
    again = p.view([("1:7", 1)], [], "4:100")
    assert [decode_event(f) for f in again.send] == [AstDeviceStateChange("Custom:x", 2, 1, ME)]


def test_a_real_announcement_is_answered_once_and_a_real_state_learned() -> None:
    p = proto()
    fx = p.receive("1:7", DISCOVERY_1)
    assert [decode_event(f) for f in fx.send] == [AstClusterDiscovery(4, "10.215.0.4", ME)]
    assert p.receive("1:7", DISCOVERY_1).send == []  # a known node id: ignored, as Asterisk
    (peer,) = p.asterisks()
    assert (peer.node_id, peer.address, peer.eid) == (1, "10.215.0.1", A1)
    fx = p.receive("1:7", CHANGE_A_NOT_INUSE)
    assert fx.devices == [("Custom:a", S.NOT_INUSE)]
    assert p.slots.slots_of("Custom:a") == {A1: (S.NOT_INUSE, 1)}
    assert p.receive("1:7", AGGREGATE_A).devices == []  # type 5 is nobody's own state
    assert p.receive("1:7", MWI_1000_3_1).mwi == [("1000@default", 3, 1, A1)]
    assert p.receive("1:7", MWI_1000_3_1).mwi == []  # the same counts in a join dump
    assert p.malformed == 0


def test_a_leaving_member_takes_its_states_but_not_those_of_another_on_its_node() -> None:
    p = proto()
    p.receive("1:7", DISCOVERY_1)
    p.receive("1:7", CHANGE_A_NOT_INUSE)
    fx = p.view([], [("1:8", 1)], "4:100")  # a passive process on node 1, not the Asterisk
    assert fx.devices == [] and p.aggregate("Custom:a") is S.NOT_INUSE
    fx = p.view([], [("1:7", 1)], "4:100")
    assert fx.devices == [("Custom:a", S.INVALID)]
    assert p.asterisks() == []
    # Node 1 is forgotten, as Asterisk forgets it: its next announcement is answered again.
    assert len(p.receive("1:9", DISCOVERY_1).send) == 1


def test_offers_fold_the_cluster_and_direct_assertions_and_clear_with_invalid() -> None:
    p = proto()
    fx = p.set_remote("Custom:x", S.NOT_INUSE)
    assert fx.send == [encode_event(AstDeviceStateChange("Custom:x", 1, 1, ME))]
    fx = p.set_direct("Custom:x", S.RINGING)
    assert [decode_event(f).state for f in fx.send] == [S.RINGING]  # type: ignore[union-attr]
    assert p.set_remote("Custom:x", S.INUSE).send[0] == encode_event(
        AstDeviceStateChange("Custom:x", int(S.RINGINUSE), 1, ME)
    )
    assert p.set_remote("Custom:x", S.INUSE).send == []  # unchanged: nothing sent
    p.set_direct("Custom:x", S.INVALID)
    fx = p.set_remote("Custom:x", S.INVALID)
    assert [decode_event(f).state for f in fx.send] == [S.INVALID]  # type: ignore[union-attr]
    assert p.offered == {} and p.dump() == []


def test_nothing_asterisk_could_mishandle_is_ever_sent() -> None:
    p = proto()
    assert p.set_remote("Custom:" + "x" * 80, S.INUSE).send == []
    assert p.set_remote("Custom:a\x00b", S.INUSE).send == []
    assert p.offer_mwi("@box", 1, 1).send == []
    assert p.skipped == 3
    fx = p.offer_mwi("1000", 2**40, 1)  # clamped to what Asterisk keeps
    assert decode_event(fx.send[0]) == AstMwi("1000", "default", 0x7FFFFFFF, 1, ME)


def test_our_own_frames_and_another_bridges_are_ignored() -> None:
    other = EID.parse("02:00:00:00:00:77")
    p = proto({other})
    own = encode_event(AstDeviceStateChange("Custom:x", 2, 1, ME))
    assert p.receive("4:100", own).devices == []
    theirs = encode_event(AstDeviceStateChange("Custom:x", 2, 1, other))
    assert p.receive("5:1", theirs).devices == []
    assert other in p.bridges and p.aggregate("Custom:x") is S.INVALID


def test_a_bridge_learned_late_loses_what_was_taken_for_an_asterisks() -> None:
    other = EID.parse("02:00:00:00:00:77")
    p = proto()
    p.receive("5:1", encode_event(AstDeviceStateChange("Custom:x", 2, 1, other)))
    assert p.aggregate("Custom:x") is S.INUSE
    fx = p.learn_bridge(other)
    assert fx.devices == [("Custom:x", S.INVALID)] and p.asterisks() == []


@given(st.binary(max_size=120))
def test_arbitrary_bytes_give_effects_and_never_raise(data: bytes) -> None:
    p = proto()
    fx = p.receive("1:7", data)
    assert p.received == 1
    assert fx.send == [] or p.malformed == 0


def test_every_captured_frame_is_taken_without_complaint() -> None:
    if not VECTORS.exists():
        pytest.skip("the captured vectors are not beside this checkout")
    p = proto()
    frames = [bytes.fromhex(json.loads(line)["hex"]) for line in VECTORS.read_text().splitlines()]
    for i, frame in enumerate(frames):
        p.receive(f"{i % 3 + 1}:1", frame)
    assert p.malformed == 0 and p.received == len(frames)
    assert {peer.node_id for peer in p.asterisks()} <= {1, 2, 3, None}
    assert len(p.slots) >= 5


def test_a_member_leaving_our_own_node_makes_us_announce_and_resend() -> None:
    p = proto()
    p.set_remote("Custom:x", S.INUSE)
    fx = p.view([], [("4:555", 4)], "4:100")  # e.g. an Asterisk wrongly placed beside us
    assert [type(decode_event(f)).__name__ for f in fx.send] == [
        "AstClusterDiscovery",
        "AstDeviceStateChange",
    ]
    assert fx.notes and fx.notes[0][0] == "warning"
