"""Asterisk's ast_event codec against frames captured from a real res_corosync ring."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxmesh.eid import EID
from pbxmesh.errors import LocalProtocolError, RemoteProtocolError
from pbxmesh.wire.asterisk import (
    NEED_DATA,
    AstClusterDiscovery,
    AstDeviceState,
    AstDeviceStateChange,
    AstMwi,
    AstPing,
    EventReader,
    decode_event,
    encode_event,
    str_hash,
)

VECTORS = (
    Path(__file__).resolve().parents[2] / "shared" / "vectors" / "asterisk-corosync-frames.jsonl"
)
EID1 = EID.parse("00:11:22:33:44:55")


def _vectors() -> list[dict]:
    if not VECTORS.exists():
        pytest.skip("the captured vectors are not beside this checkout")
    return [json.loads(line) for line in VECTORS.read_text().splitlines() if line.strip()]


def _fields(event) -> dict:
    match event:
        case AstDeviceStateChange(device, state, cachable, eid):
            return {"device": device, "state": state, "cachable": cachable, "eid": str(eid)}
        case AstMwi(mailbox, context, new, old, eid):
            return {
                "mailbox": mailbox,
                "context": context,
                "newmsgs": new,
                "oldmsgs": old,
                "eid": str(eid),
            }
        case AstPing(eid):
            return {"eid": str(eid)}
        case AstClusterDiscovery(node_id, addr, eid):
            return {"node_id": node_id, "local_addr": addr, "eid": str(eid)}
    raise AssertionError(event)


_TYPES = {
    "DEVICE_STATE_CHANGE": AstDeviceStateChange,
    "DEVICE_STATE": AstDeviceState,
    "MWI": AstMwi,
    "PING": AstPing,
    "CLUSTER_DISCOVERY": AstClusterDiscovery,
}


def test_every_captured_frame_decodes_to_its_fields_and_re_encodes_byte_for_byte() -> None:
    vectors = _vectors()
    assert len(vectors) >= 90
    for v in vectors:
        raw = bytes.fromhex(v["hex"])
        event = decode_event(raw)
        assert type(event) is _TYPES[v["type"]], v["note"]
        want = {k: x for k, x in v["fields"].items() if k not in ("state_name", "str_hash")}
        assert _fields(event) == want, v["note"]
        assert encode_event(event) == raw, v["note"]
        for key, h in v["fields"].get("str_hash", {}).items():
            text = want[key].encode()
            assert str_hash(text) == h


def test_reference_examples_are_byte_exact() -> None:
    ev = AstDeviceStateChange("PJSIP/100", 2, 1, EID.parse("aa:bb:cc:dd:ee:ff"))
    assert encode_event(ev).hex() == (
        "000600300007000e6bb5f202504a5349502f3130300000080004000000020"
        "03d0004000000010021000 6aabbccddeeff".replace(" ", "")
    )
    assert encode_event(AstPing(EID1)).hex() == "000c000e00210006001122334455"
    assert encode_event(AstClusterDiscovery(1084766218, "10.0.0.1", EID1)).hex() == (
        "000d0027003e000440a8380a002a000d7bd5a16131302e302e302e310000210006001122334455"
    )
    mwi = encode_event(AstMwi("1000", "default", 3, 7, EID1))
    assert len(mwi) == 59 and mwi.startswith(
        bytes.fromhex("0002003b000300092 4ff537c".replace(" ", ""))
    )


def test_string_hash_is_djb2_xor_over_unsigned_bytes() -> None:
    assert str_hash(b"") == 5381
    assert str_hash("é".encode()) == (((5381 * 33) ^ 0xC3) * 33 & 0xFFFFFFFF ^ 0xA9) & 0x7FFFFFFF


@pytest.mark.parametrize(
    ("hexdata", "message"),
    [
        ("", "at least 4 bytes"),
        ("0006", "at least 4 bytes"),
        ("00060003", "smaller than the 4-byte header"),
        ("00060010", "does not match"),
        ("000e0004", "unsupported ast_event type 0x0e"),
        ("000c0004", "no EID IE"),
        ("000c000a00210002aabb", "EID IE has 2 bytes"),
        ("000c000e00210006000000000000", "not allowed"),
        ("000c000c00210006aabbccdd", "claims 6 bytes"),
        ("000c0006aabb", "truncated IE header"),
    ],
)
def test_malformed_events_give_one_clear_error(hexdata: str, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        decode_event(bytes.fromhex(hexdata))


def test_out_of_range_state_and_bad_strings_are_rejected() -> None:
    good = encode_event(AstDeviceStateChange("Custom:x", 2, 1, EID1))
    bad_state = good.replace(bytes.fromhex("0008000400000002"), bytes.fromhex("0008000400000009"))
    with pytest.raises(RemoteProtocolError, match=r"outside 0\.\.8"):
        decode_event(bad_state)
    no_nul = good.replace(b"Custom:x\x00", b"Custom:xy")
    with pytest.raises(RemoteProtocolError, match="NUL-terminated"):
        decode_event(no_nul)
    latin1 = good.replace(b"Custom:x", b"Custom:\xe9")
    with pytest.raises(RemoteProtocolError, match="UTF-8"):
        decode_event(latin1)


def test_encoder_refuses_what_asterisk_could_not_carry() -> None:
    with pytest.raises(LocalProtocolError, match="NUL"):
        encode_event(AstDeviceStateChange("a\x00b", 1, 1, EID1))
    with pytest.raises(LocalProtocolError, match="too long"):
        encode_event(AstDeviceStateChange("x" * 70000, 1, 1, EID1))


eids = st.binary(min_size=6, max_size=6).filter(lambda b: b != bytes(6)).map(EID)
text = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=100
)
events = st.one_of(
    st.builds(AstDeviceStateChange, text.filter(bool), st.integers(0, 8), st.integers(0, 1), eids),
    st.builds(AstDeviceState, text.filter(bool), st.integers(0, 8), st.integers(0, 1), eids),
    st.builds(AstMwi, text, text, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), eids),
    st.builds(AstPing, eids),
    st.builds(AstClusterDiscovery, st.integers(0, 2**32 - 1), text, eids),
)


@given(events)
def test_round_trip(event) -> None:
    assert decode_event(encode_event(event)) == event


@given(st.lists(events, max_size=5))
def test_stream_reader_whole_and_byte_by_byte(evs) -> None:
    data = b"".join(encode_event(e) for e in evs)
    whole = EventReader()
    whole.receive_data(data)
    got = []
    while (e := whole.next_event()) is not NEED_DATA:
        got.append(e)
    assert got == evs
    slow = EventReader()
    got = []
    for i in range(len(data)):
        slow.receive_data(data[i : i + 1])
        while (e := slow.next_event()) is not NEED_DATA:
            got.append(e)
    assert got == evs


@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_an_event_or_a_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_event(data)
    reader = EventReader()
    for i in range(len(data)):
        reader.receive_data(data[i : i + 1])
        try:
            while reader.next_event() is not NEED_DATA:
                pass
        except RemoteProtocolError:
            pass
