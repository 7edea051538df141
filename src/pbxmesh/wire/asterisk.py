"""Asterisk's ``ast_event`` binary format, as ``res_corosync`` multicasts it over CPG.

Theory of operation
-------------------
One CPG message is one event (reference §5.5)::

    event  = type:u16be  event_len:u16be  IE*        event_len counts the 4-byte header
    IE     = ie_type:u16be  payload_len:u16be  payload
    UINT   = u32 big-endian
    STR    = hash:u32 little-endian | UTF-8 bytes | NUL   (hash: djb2-xor, nobody reads it)
    EID    = 6 raw bytes

We encode exactly the IEs Asterisk sends, in its order, so that our frames are byte-identical
to Asterisk's (checked against captured vectors). We decode as Asterisk reads — the first IE of
a type wins, unknown IEs are skipped — but far more strictly than Asterisk does: lengths are
checked against the buffer, states must be 0..8, CACHABLE 0 or 1, the EID 6 bytes and not
zero, strings NUL-terminated UTF-8. Anything else is one :class:`RemoteProtocolError` with a
message that says what was wrong; nothing else escapes the decoder.

``decode_event`` takes one message; :class:`EventReader` reads a byte stream of events
(``receive_data``/``next_event``), for stream captures and for feeding input byte by byte.
This module does no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ..eid import EID
from ..errors import LocalProtocolError, RemoteProtocolError, StateError

__all__ = [
    "NEED_DATA",
    "AstClusterDiscovery",
    "AstDeviceState",
    "AstDeviceStateChange",
    "AstEvent",
    "AstMwi",
    "AstPing",
    "EventReader",
    "decode_event",
    "encode_event",
    "str_hash",
]

# WARNING: Asterisk's numbers (include/asterisk/event_defs.h); they never change.
EV_MWI: Final = 0x02
EV_DEVICE_STATE: Final = 0x05
EV_DEVICE_STATE_CHANGE: Final = 0x06
EV_PING: Final = 0x0C
EV_CLUSTER_DISCOVERY: Final = 0x0D

IE_NEWMSGS: Final = 0x0001
IE_OLDMSGS: Final = 0x0002
IE_MAILBOX: Final = 0x0003
IE_DEVICE: Final = 0x0007
IE_STATE: Final = 0x0008
IE_CONTEXT: Final = 0x0009
IE_EID: Final = 0x0021
IE_LOCAL_ADDR: Final = 0x002A
IE_CACHABLE: Final = 0x003D
IE_NODE_ID: Final = 0x003E

_STR_IES: Final = frozenset({IE_MAILBOX, IE_DEVICE, IE_CONTEXT, IE_LOCAL_ADDR})
_UINT_IES: Final = frozenset({IE_NEWMSGS, IE_OLDMSGS, IE_STATE, IE_CACHABLE, IE_NODE_ID})
_IE_NAMES: Final = {
    IE_NEWMSGS: "NEWMSGS",
    IE_OLDMSGS: "OLDMSGS",
    IE_MAILBOX: "MAILBOX",
    IE_DEVICE: "DEVICE",
    IE_STATE: "STATE",
    IE_CONTEXT: "CONTEXT",
    IE_EID: "EID",
    IE_LOCAL_ADDR: "LOCAL_ADDR",
    IE_CACHABLE: "CACHABLE",
    IE_NODE_ID: "NODE_ID",
}
_HDR: Final = struct.Struct(">HH")
_U32: Final = struct.Struct(">I")
_HASH: Final = struct.Struct("<I")
MAX_EVENT: Final = 0xFFFF


def str_hash(data: bytes) -> int:
    """Asterisk's ``ast_str_hash``: djb2 with XOR over unsigned bytes, masked to 31 bits."""
    h = 5381
    for b in data:
        h = ((h * 33) & 0xFFFFFFFF) ^ b
    return h & 0x7FFFFFFF


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise StateError(f"{name} {value} does not fit in 32 unsigned bits")


@dataclass(frozen=True, slots=True)
class AstDeviceStateChange:
    """Type 6: one server's own state for a device (what receivers apply)."""

    device: str
    state: int
    cachable: int
    eid: EID

    def __post_init__(self) -> None:
        if not 0 <= self.state <= 8:
            raise StateError(f"device state {self.state} is outside 0..8")
        if self.cachable not in (0, 1):
            raise StateError(f"CACHABLE must be 0 or 1, not {self.cachable}")


@dataclass(frozen=True, slots=True)
class AstDeviceState(AstDeviceStateChange):
    """Type 5: a node's recomputed aggregate, carrying its own EID. Receivers ignore it."""


@dataclass(frozen=True, slots=True)
class AstMwi:
    """Type 2: message counts of ``mailbox@context``, with the origin's EID."""

    mailbox: str
    context: str
    new: int
    old: int
    eid: EID

    def __post_init__(self) -> None:
        _check_u32("NEWMSGS", self.new)
        _check_u32("OLDMSGS", self.old)


@dataclass(frozen=True, slots=True)
class AstPing:
    """Type 12: just the sender's EID; receivers only log it."""

    eid: EID


@dataclass(frozen=True, slots=True)
class AstClusterDiscovery:
    """Type 13: a node announcing its corosync node id and first ring address."""

    node_id: int
    local_addr: str
    eid: EID

    def __post_init__(self) -> None:
        _check_u32("NODE_ID", self.node_id)


AstEvent = AstDeviceStateChange | AstDeviceState | AstMwi | AstPing | AstClusterDiscovery


# -- encoding -----------------------------------------------------------------------------------
def _ie_str(ie: int, value: str) -> bytes:
    raw = value.encode("utf-8")
    if b"\x00" in raw:
        raise LocalProtocolError(f"{_IE_NAMES[ie]} {value!r} contains a NUL byte")
    payload = _HASH.pack(str_hash(raw)) + raw + b"\x00"
    if len(payload) > 0xFFFF:
        raise LocalProtocolError(f"{_IE_NAMES[ie]} is too long for one IE")
    return _HDR.pack(ie, len(payload)) + payload


def _ie_u32(ie: int, value: int) -> bytes:
    return _HDR.pack(ie, 4) + _U32.pack(value)


def _ie_eid(eid: EID) -> bytes:
    return _HDR.pack(IE_EID, 6) + eid.raw


def encode_event(event: AstEvent) -> bytes:
    """Encode an event exactly as Asterisk does (IEs in Asterisk's order)."""
    match event:
        case AstDeviceState(device, state, cachable, eid):
            ev_type = EV_DEVICE_STATE
            body = _ie_str(IE_DEVICE, device) + _ie_u32(IE_STATE, state)
            body += _ie_u32(IE_CACHABLE, cachable) + _ie_eid(eid)
        case AstDeviceStateChange(device, state, cachable, eid):
            ev_type = EV_DEVICE_STATE_CHANGE
            body = _ie_str(IE_DEVICE, device) + _ie_u32(IE_STATE, state)
            body += _ie_u32(IE_CACHABLE, cachable) + _ie_eid(eid)
        case AstMwi(mailbox, context, new, old, eid):
            ev_type = EV_MWI
            body = _ie_str(IE_MAILBOX, mailbox) + _ie_str(IE_CONTEXT, context)
            body += _ie_u32(IE_NEWMSGS, new) + _ie_u32(IE_OLDMSGS, old) + _ie_eid(eid)
        case AstPing(eid):
            ev_type = EV_PING
            body = _ie_eid(eid)
        case AstClusterDiscovery(node_id, local_addr, eid):
            ev_type = EV_CLUSTER_DISCOVERY
            body = _ie_u32(IE_NODE_ID, node_id) + _ie_str(IE_LOCAL_ADDR, local_addr) + _ie_eid(eid)
        case _:
            raise LocalProtocolError(f"cannot encode {event!r} as an ast_event")
    if 4 + len(body) > MAX_EVENT:
        raise LocalProtocolError(f"event of {4 + len(body)} bytes exceeds Asterisk's 65535")
    return _HDR.pack(ev_type, 4 + len(body)) + body


# -- decoding -----------------------------------------------------------------------------------
_TYPE_NAMES: Final = {
    EV_MWI: "MWI",
    EV_DEVICE_STATE: "DEVICE_STATE",
    EV_DEVICE_STATE_CHANGE: "DEVICE_STATE_CHANGE",
    EV_PING: "PING",
    EV_CLUSTER_DISCOVERY: "CLUSTER_DISCOVERY",
}


def _parse_ies(data: bytes, end: int) -> dict[int, bytes]:
    ies: dict[int, bytes] = {}
    off = 4
    while off < end:
        if off + 4 > end:
            raise RemoteProtocolError(f"truncated IE header at byte {off} of {end}")
        ie, plen = _HDR.unpack_from(data, off)
        off += 4
        if off + plen > end:
            raise RemoteProtocolError(
                f"IE 0x{ie:04x} claims {plen} bytes but only {end - off} remain in the event"
            )
        ies.setdefault(ie, data[off : off + plen])  # the first occurrence wins, as in Asterisk
        off += plen
    return ies


def _get(ies: dict[int, bytes], ie: int, what: str) -> bytes:
    payload = ies.get(ie)
    if payload is None:
        raise RemoteProtocolError(f"{what} event has no {_IE_NAMES[ie]} IE")
    return payload


def _str(ies: dict[int, bytes], ie: int, what: str) -> str:
    p = _get(ies, ie, what)
    if len(p) < 5 or p[-1] != 0:
        raise RemoteProtocolError(f"{_IE_NAMES[ie]} IE is not a NUL-terminated string")
    raw = p[4:-1]
    if b"\x00" in raw:
        raise RemoteProtocolError(f"{_IE_NAMES[ie]} IE has a NUL byte inside the string")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"{_IE_NAMES[ie]} IE is not valid UTF-8: {exc.reason}") from None


def _u32(ies: dict[int, bytes], ie: int, what: str) -> int:
    p = _get(ies, ie, what)
    if len(p) != 4:
        raise RemoteProtocolError(f"{_IE_NAMES[ie]} IE has {len(p)} bytes, expected 4")
    value: int = _U32.unpack(p)[0]
    return value


def _eid(ies: dict[int, bytes], what: str) -> EID:
    p = _get(ies, IE_EID, what)
    if len(p) != 6:
        raise RemoteProtocolError(f"EID IE has {len(p)} bytes, expected 6")
    try:
        return EID(p)
    except StateError as exc:
        raise RemoteProtocolError(str(exc)) from None


def decode_event(data: bytes) -> AstEvent:
    """Decode one whole event. Raises :class:`RemoteProtocolError`, and nothing else, if invalid."""
    data = bytes(data)
    if len(data) < 4:
        raise RemoteProtocolError(f"an ast_event is at least 4 bytes, got {len(data)}")
    ev_type, ev_len = _HDR.unpack_from(data, 0)
    if ev_len < 4:
        raise RemoteProtocolError(f"event_len {ev_len} is smaller than the 4-byte header")
    if ev_len != len(data):
        raise RemoteProtocolError(
            f"event_len {ev_len} does not match the {len(data)} bytes received"
        )
    name = _TYPE_NAMES.get(ev_type)
    if name is None:
        raise RemoteProtocolError(f"unsupported ast_event type 0x{ev_type:02x}")
    ies = _parse_ies(data, ev_len)
    try:
        if ev_type in (EV_DEVICE_STATE_CHANGE, EV_DEVICE_STATE):
            device = _str(ies, IE_DEVICE, name)
            if not device:
                raise RemoteProtocolError(f"{name} event has an empty DEVICE")
            cls = AstDeviceStateChange if ev_type == EV_DEVICE_STATE_CHANGE else AstDeviceState
            return cls(
                device,
                _u32(ies, IE_STATE, name),
                # A missing CACHABLE reads as 0 in Asterisk (11.x peers): non-cachable.
                _u32(ies, IE_CACHABLE, name) if IE_CACHABLE in ies else 0,
                _eid(ies, name),
            )
        if ev_type == EV_MWI:
            # An empty MAILBOX (Asterisk sends one for the id "@box") decodes faithfully;
            # receivers drop it, as Asterisk's own do.
            return AstMwi(
                _str(ies, IE_MAILBOX, name),
                _str(ies, IE_CONTEXT, name),
                _u32(ies, IE_NEWMSGS, name) if IE_NEWMSGS in ies else 0,
                _u32(ies, IE_OLDMSGS, name) if IE_OLDMSGS in ies else 0,
                _eid(ies, name),
            )
        if ev_type == EV_PING:
            return AstPing(_eid(ies, name))
        return AstClusterDiscovery(
            _u32(ies, IE_NODE_ID, name), _str(ies, IE_LOCAL_ADDR, name), _eid(ies, name)
        )
    except StateError as exc:
        raise RemoteProtocolError(f"{name} event: {exc}") from None


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


class EventReader:
    """Reads a stream of back-to-back events: ``receive_data(b)``, then ``next_event()``.

    A well-framed but invalid event raises :class:`RemoteProtocolError` once and is skipped;
    a broken frame header (``event_len`` < 4) leaves the stream unreadable, and every later
    call raises again.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._broken: str | None = None

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def next_event(self) -> AstEvent | _NeedData:
        if self._broken is not None:
            raise RemoteProtocolError(self._broken)
        if len(self._buf) < 4:
            return NEED_DATA
        _, ev_len = _HDR.unpack_from(self._buf, 0)
        if ev_len < 4:
            self._broken = f"event_len {ev_len} is smaller than the 4-byte header; stream lost"
            raise RemoteProtocolError(self._broken)
        if len(self._buf) < ev_len:
            return NEED_DATA
        chunk = bytes(self._buf[:ev_len])
        del self._buf[:ev_len]
        return decode_event(chunk)
