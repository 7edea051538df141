"""The pbxmesh frame codec: round trips, strict decoding, and nothing but ProtocolError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxmesh.eid import EID
from pbxmesh.errors import RemoteProtocolError, StateError
from pbxmesh.wire.frame import (
    SIGNATURE_SIZE,
    DeviceItem,
    Frame,
    FrameType,
    MwiItem,
    decode,
    encode,
    signed_part,
)

EID1 = EID.parse("02:00:00:00:00:01")
U64 = st.integers(0, 2**64 - 1)
U32 = st.integers(0, 2**32 - 1)
printable = st.characters(blacklist_categories=("Cc", "Cs"))  # names carry no control chars
names = st.text(max_size=30).filter(lambda s: len(s.encode()) <= 64)
devices = st.text(printable, min_size=1, max_size=40).filter(lambda s: len(s.encode()) <= 255)
mailboxes = st.builds(
    lambda a, b: f"{a}@{b}",
    devices.filter(lambda s: not s.startswith("@")),
    st.text(printable, max_size=20),
).filter(lambda s: len(s.encode()) <= 255)
items = st.one_of(
    st.builds(DeviceItem, devices, st.integers(0, 8), U64),
    st.builds(MwiItem, mailboxes, U32, U32, U64),
)
eids = st.binary(min_size=6, max_size=6).filter(lambda b: b != bytes(6)).map(EID)


@st.composite
def frames(draw):
    kind = draw(st.sampled_from(list(FrameType)))
    kwargs = {
        "type": kind,
        "origin": draw(eids),
        "seq": draw(U64),
        "name": draw(names),
        "channel": draw(names),
    }
    if kind in (FrameType.CHANGES, FrameType.SNAPSHOT):
        kwargs["items"] = tuple(draw(st.lists(items, max_size=8)))
    if kind is FrameType.SNAPSHOT:
        parts = draw(st.integers(1, 0xFFFF))
        kwargs.update(
            as_of=draw(U64),
            parts=parts,
            part=draw(st.integers(0, parts - 1)),
            kinds=draw(st.integers(0, 3)),
        )
    if kind is FrameType.HEARTBEAT:
        kwargs["interval_ms"] = draw(U32)
    return Frame(**kwargs)


@given(frames())
def test_round_trip(frame: Frame) -> None:
    assert decode(encode(frame)) == frame


@given(frames(), st.binary(min_size=64, max_size=64))
def test_signed_round_trip_keeps_the_signature(frame: Frame, sig: bytes) -> None:
    data = encode(
        Frame(**{**{f: getattr(frame, f) for f in frame.__slots__}, "signature": sig}), signed=True
    )
    got = decode(data)
    assert got == frame and got.signature == sig
    assert signed_part(data) == data[:-SIGNATURE_SIZE]
    # The signed part alone is not a valid frame (its length field counts the signature).
    with pytest.raises(RemoteProtocolError):
        decode(signed_part(data))


def test_header_layout_is_stable() -> None:
    data = encode(Frame(type=FrameType.LEAVE, origin=EID1, seq=7, name="pbx1", channel="ds"))
    assert data.hex() == ("5058010500000000002002000000000100000000000000070470627831026473")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:10], "at least 24 bytes"),
        (lambda d: b"XX" + d[2:], "not a pbxmesh frame"),
        (lambda d: d[:2] + b"\x02" + d[3:], "wire version 2 is not supported"),
        (lambda d: d[:3] + b"\x09" + d[4:], "unknown frame type 9"),
        (lambda d: d[:4] + b"\x80" + d[5:], "unknown flags"),
        (lambda d: d + b"\x00", "does not match"),
        (lambda d: d[:10] + bytes(6) + d[16:], "not allowed"),
    ],
)
def test_malformed_frames_give_one_clear_error(mutate, message: str) -> None:
    data = encode(
        Frame(
            type=FrameType.CHANGES,
            origin=EID1,
            seq=1,
            name="n",
            items=(DeviceItem("Custom:a", 2, 5),),
        )
    )
    with pytest.raises(RemoteProtocolError, match=message):
        decode(mutate(data))


def test_bad_items_are_rejected_with_their_reason() -> None:
    data = bytearray(
        encode(
            Frame(
                type=FrameType.CHANGES, origin=EID1, seq=1, name="", items=(DeviceItem("d", 2, 5),)
            )
        )
    )
    state_at = data.index(b"d") + 1
    data[state_at] = 9
    with pytest.raises(RemoteProtocolError, match=r"outside 0\.\.8"):
        decode(bytes(data))
    data[state_at - 3] = 7  # the item kind
    with pytest.raises(RemoteProtocolError, match="unknown kind 7"):
        decode(bytes(data))


def test_constructors_refuse_invalid_frames() -> None:
    with pytest.raises(StateError):
        DeviceItem("d", 9, 1)
    with pytest.raises(StateError):
        MwiItem("nocontext", 1, 1, 1)
    with pytest.raises(StateError):
        Frame(type=FrameType.SNAPSHOT, origin=EID1, seq=1, parts=2, part=2)
    with pytest.raises(StateError):
        Frame(type=FrameType.HEARTBEAT, origin=EID1, seq=1, items=(DeviceItem("d", 1, 1),))
    with pytest.raises(StateError, match="longer than 255 bytes"):
        DeviceItem("é" * 200, 1, 1)
    with pytest.raises(StateError, match="control character"):
        MwiItem("10\r\nAction: Logoff@default", 1, 0, 1)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_frame_or_a_protocol_error(data: bytes) -> None:
    for i in range(len(data) + 1):  # every prefix, as if fed byte by byte
        with contextlib.suppress(RemoteProtocolError):
            decode(data[:i])


@given(frames(), st.data())
def test_mutated_frames_give_a_frame_or_a_protocol_error(frame: Frame, data) -> None:
    raw = bytearray(encode(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    with contextlib.suppress(RemoteProtocolError):
        decode(bytes(raw))
