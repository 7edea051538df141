"""The pbxmesh frame: what nodes send each other over any transport.

Theory of operation
-------------------
Every frame is one message of the transport. Layout (all integers big-endian)::

    magic    2   b"PX"
    version  1   WIRE_VERSION (1)
    type     1   FrameType
    flags    1   bit 0: SIGNED (a 64-byte Ed25519 signature ends the frame)
    reserved 1   0
    length   4   the whole frame's length, signature included
    origin   6   EID of the node that originated everything in the frame
    seq      8   the origin's frame sequence (its clock at send time): replay protection
    name     1+n the origin's node name, UTF-8, at most 64 bytes
    channel  1+n the event channel the frame travels on (as ais.conf named them), UTF-8
    body         per type, below
    [sig     64] Ed25519 over every byte before it

Bodies::

    CHANGES       count:u16, item*
    SNAPSHOT      as_of:u64, part:u16, parts:u16, kinds:u8, count:u16, item*
    SYNC_REQUEST  (empty): "re-announce your state"
    HEARTBEAT     interval_ms:u32
    LEAVE         (empty): the origin leaves cleanly

    item = kind:u8 (1 device, 2 mwi, 3 presence)
      device:   name_len:u8 name  state:u8  version:u64
      mwi:      id_len:u8 "mailbox@context"  new:u32  old:u32  version:u64
      presence: id_len:u8 "CustomPresence:NAME"  state:u8  version:u64
                subtype_len:u8 subtype  message_len:u8 message

A SNAPSHOT is an origin's complete state at version ``as_of`` for the item kinds in ``kinds``
(bit 0 device states, bit 1 MWI, bit 2 presence), split in ``parts`` frames that a receiver
gathers before merging (``store.merge_snapshot``). Frame types and item kinds are
append-only. Presence (kind 3, snapshot bit 2) came after the first release: a sender puts it in
frames of its own, so that a node that does not know it rejects only those frames. The codec
is sans-IO and never raises anything but RemoteProtocolError on decode.
Signing is not done here: :func:`encode` can leave room for a signature computed over
:func:`signed_part` by the security layer, and :func:`decode` returns the signature it found.
"""

from __future__ import annotations

import abc
import enum
import re
import struct
from dataclasses import dataclass, field
from typing import ClassVar, Final

from ..eid import EID
from ..errors import LocalProtocolError, RemoteProtocolError, StateError
from ..presence import PROVIDER, check_presence_text, check_presentity

__all__ = [
    "SIGNATURE_SIZE",
    "SNAP_DEVICES",
    "SNAP_MWI",
    "SNAP_PRESENCE",
    "WIRE_VERSION",
    "DeviceItem",
    "Frame",
    "FrameType",
    "Item",
    "ItemKind",
    "MwiItem",
    "PresenceItem",
    "decode",
    "encode",
    "signed_part",
]

# WARNING: the wire version, frame types and item kinds are append-only. Never renumber.
MAGIC: Final = b"PX"
WIRE_VERSION: Final = 1
FLAG_SIGNED: Final = 0x01
SIGNATURE_SIZE: Final = 64
MAX_NAME: Final = 64
MAX_ITEMS: Final = 0xFFFF


class FrameType(enum.IntEnum):
    """WARNING: append-only."""

    CHANGES = 1
    SNAPSHOT = 2
    SYNC_REQUEST = 3
    HEARTBEAT = 4
    LEAVE = 5


class ItemKind(enum.IntEnum):
    """The kind byte of an item; WARNING: append-only."""

    DEVICE = 1
    MWI = 2
    PRESENCE = 3


KIND_DEVICE: Final = int(ItemKind.DEVICE)
KIND_MWI: Final = int(ItemKind.MWI)
KIND_PRESENCE: Final = int(ItemKind.PRESENCE)
SNAP_DEVICES: Final = 0x01
SNAP_MWI: Final = 0x02
SNAP_PRESENCE: Final = 0x04

_HEADER: Final = struct.Struct(">2sBBBBI6sQ")  # 24 bytes
_DEVICE_TAIL: Final = struct.Struct(">BQ")
_MWI_TAIL: Final = struct.Struct(">IIQ")
_PRESENCE_HEAD: Final = struct.Struct(">BQ")  # state, version; then two short strings
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_SNAP: Final = struct.Struct(">QHHB")
_MAX_U64: Final = (1 << 64) - 1


_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def _check_name(what: str, name: str) -> None:
    # Names end up in AMI lines, logs and hints: no control characters, and one byte of
    # length on the wire. (Only names over 63 characters can exceed 255 bytes.)
    if _CONTROL.search(name):
        raise StateError(f"{what} {name[:40]!r} contains a control character")
    if len(name) > 63 and len(name.encode("utf-8", "surrogatepass")) > 255:
        raise StateError(f"{what} {name[:20]!r}… is longer than 255 bytes")


class Item(abc.ABC):
    """One origin's value for one thing, at a version: a device's state, a mailbox's counts or
    a presentity's presence. Every item knows its ``kind`` and its ``name`` (the device,
    ``mailbox@context`` or ``CustomPresence:NAME``), so code that does not care which kind it
    holds (queues, grants, logs) reads those instead of asking for the type."""

    __slots__ = ()

    kind: ClassVar[ItemKind]
    version: int

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The device, ``mailbox@context`` or ``CustomPresence:NAME``."""

    @property
    def key(self) -> tuple[int, str]:
        """``(kind, name)``: the thing this item is about; a newer item of the same key
        supersedes it."""
        return (int(self.kind), self.name)

    @abc.abstractmethod
    def encode_into(self, out: list[bytes]) -> None:
        """Append the item's encoding (module docstring) to ``out``."""


@dataclass(frozen=True, slots=True)
class DeviceItem(Item):
    """One origin's state for a device, at a version."""

    kind: ClassVar[ItemKind] = ItemKind.DEVICE

    device: str
    state: int
    version: int

    def __post_init__(self) -> None:
        if not 0 <= self.state <= 8:
            raise StateError(f"device state {self.state} is outside 0..8")
        if not 0 <= self.version <= _MAX_U64:
            raise StateError(f"version {self.version} does not fit in 64 bits")
        if not self.device:
            raise StateError("device name cannot be empty")
        _check_name("device name", self.device)

    @property
    def name(self) -> str:
        return self.device

    def encode_into(self, out: list[bytes]) -> None:
        out.append(b"\x01")
        out.append(_short_str(self.device, "device name"))
        out.append(_DEVICE_TAIL.pack(self.state, self.version))


@dataclass(frozen=True, slots=True)
class MwiItem(Item):
    """Message counts of one ``mailbox@context``, at a version."""

    kind: ClassVar[ItemKind] = ItemKind.MWI

    mailbox: str
    new: int
    old: int
    version: int

    def __post_init__(self) -> None:
        if not (0 <= self.new <= 0xFFFFFFFF and 0 <= self.old <= 0xFFFFFFFF):
            raise StateError(f"message counts {self.new}/{self.old} do not fit in 32 bits")
        if not 0 <= self.version <= _MAX_U64:
            raise StateError(f"version {self.version} does not fit in 64 bits")
        if "@" not in self.mailbox or self.mailbox.startswith("@"):
            raise StateError(f"mailbox {self.mailbox!r} is not MAILBOX@CONTEXT")
        _check_name("mailbox", self.mailbox)

    @property
    def name(self) -> str:
        return self.mailbox

    def encode_into(self, out: list[bytes]) -> None:
        out.append(b"\x02")
        out.append(_short_str(self.mailbox, "mailbox"))
        out.append(_MWI_TAIL.pack(self.new, self.old, self.version))


@dataclass(frozen=True, slots=True)
class PresenceItem(Item):
    """The presence of one ``CustomPresence:NAME``, at a version (``presence.py`` says what a
    name, subtype and message may hold; a peer's frame breaking those rules is rejected)."""

    kind: ClassVar[ItemKind] = ItemKind.PRESENCE

    presentity: str
    state: int
    subtype: str
    message: str
    version: int

    def __post_init__(self) -> None:
        if not 0 <= self.state <= 6:
            raise StateError(f"presence state {self.state} is outside 0..6")
        if not 0 <= self.version <= _MAX_U64:
            raise StateError(f"version {self.version} does not fit in 64 bits")
        if check_presentity(self.presentity) != self.presentity:
            raise StateError(f"presentity {self.presentity!r} is not spelt {PROVIDER}NAME")
        check_presence_text("subtype", self.subtype)
        check_presence_text("message", self.message)

    @property
    def name(self) -> str:
        return self.presentity

    def encode_into(self, out: list[bytes]) -> None:
        out.append(b"\x03")
        out.append(_short_str(self.presentity, "presentity"))
        out.append(_PRESENCE_HEAD.pack(self.state, self.version))
        out.append(_short_str(self.subtype, "presence subtype"))
        out.append(_short_str(self.message, "presence message"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """A decoded or to-be-encoded frame. Fields not used by ``type`` keep their defaults."""

    type: FrameType
    origin: EID
    seq: int
    name: str = ""
    channel: str = ""
    items: tuple[Item, ...] = ()
    as_of: int = 0
    part: int = 0
    parts: int = 1
    kinds: int = SNAP_DEVICES | SNAP_MWI
    interval_ms: int = 0
    signature: bytes | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.seq <= _MAX_U64:
            raise StateError(f"frame sequence {self.seq} does not fit in 64 bits")
        if len(self.name.encode("utf-8")) > MAX_NAME:
            raise StateError(f"node name {self.name!r} is longer than {MAX_NAME} bytes")
        if len(self.channel.encode("utf-8")) > MAX_NAME:
            raise StateError(f"channel name {self.channel!r} is longer than {MAX_NAME} bytes")
        if not 0 <= self.kinds <= 7:
            raise StateError(f"snapshot kinds {self.kinds} is not valid")
        if len(self.items) > MAX_ITEMS:
            raise StateError(f"a frame carries at most {MAX_ITEMS} items")
        if self.type is FrameType.SNAPSHOT and not 0 <= self.part < self.parts <= 0xFFFF:
            raise StateError(f"snapshot part {self.part} of {self.parts} is not valid")
        if self.items and self.type not in (FrameType.CHANGES, FrameType.SNAPSHOT):
            raise StateError(f"a {self.type.name} frame carries no items")
        if self.signature is not None and len(self.signature) != SIGNATURE_SIZE:
            raise StateError(f"a signature is {SIGNATURE_SIZE} bytes")


# -- encoding -----------------------------------------------------------------------------------
def _short_str(value: str, what: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise LocalProtocolError(f"{what} {value[:20]!r}… is longer than 255 bytes")
    return bytes((len(raw),)) + raw


def _encode_items(items: tuple[Item, ...], out: list[bytes]) -> None:
    out.append(_U16.pack(len(items)))
    for item in items:
        item.encode_into(out)


def encode(frame: Frame, *, signed: bool = False) -> bytes:
    """Encode a frame. With ``signed`` the SIGNED flag is set and ``frame.signature`` (or, if
    None, 64 zero bytes to be replaced after signing :func:`signed_part`) ends the frame."""
    body: list[bytes] = [_short_str(frame.name, "node name"), _short_str(frame.channel, "channel")]
    match frame.type:
        case FrameType.CHANGES:
            _encode_items(frame.items, body)
        case FrameType.SNAPSHOT:
            body.append(_SNAP.pack(frame.as_of, frame.part, frame.parts, frame.kinds))
            _encode_items(frame.items, body)
        case FrameType.HEARTBEAT:
            body.append(_U32.pack(frame.interval_ms))
        case FrameType.SYNC_REQUEST | FrameType.LEAVE:
            pass
    payload = b"".join(body)
    sig = b""
    if signed:
        sig = frame.signature if frame.signature is not None else bytes(SIGNATURE_SIZE)
    length = _HEADER.size + len(payload) + len(sig)
    if length > 0xFFFFFFFF:
        raise LocalProtocolError("frame too large")
    header = _HEADER.pack(
        MAGIC,
        WIRE_VERSION,
        int(frame.type),
        FLAG_SIGNED if signed else 0,
        0,
        length,
        frame.origin.raw,
        frame.seq,
    )
    return header + payload + sig


def signed_part(data: bytes) -> bytes:
    """The bytes a signature covers: everything before the trailing 64-byte signature."""
    return data[:-SIGNATURE_SIZE]


# -- decoding -----------------------------------------------------------------------------------
class _Reader:
    __slots__ = ("data", "end", "off")

    def __init__(self, data: bytes, off: int, end: int) -> None:
        self.data = data
        self.off = off
        self.end = end

    def take(self, n: int, what: str) -> bytes:
        if self.off + n > self.end:
            raise RemoteProtocolError(f"frame truncated in {what} at byte {self.off}")
        chunk = self.data[self.off : self.off + n]
        self.off += n
        return chunk

    def short_str(self, what: str) -> str:
        n = self.take(1, what)[0]
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError(f"{what} is not valid UTF-8") from None

    def unpack(self, st: struct.Struct, what: str) -> tuple[int, ...]:
        return st.unpack(self.take(st.size, what))


def _decode_items(r: _Reader) -> tuple[Item, ...]:
    # The hot path of every node (a snapshot is 100k items): offsets in locals, no helper
    # calls per field. Every length is checked against the end before it is read.
    (count,) = r.unpack(_U16, "item count")
    data, off, end = r.data, r.off, r.end
    items: list[Item] = []
    append = items.append
    unpack_device, unpack_mwi = _DEVICE_TAIL.unpack_from, _MWI_TAIL.unpack_from
    for i in range(count):
        if off + 2 > end:
            raise RemoteProtocolError(f"frame truncated in item {i} at byte {off}")
        kind, n = data[off], data[off + 1]
        off += 2
        if kind == KIND_DEVICE:
            tail = 9
        elif kind == KIND_MWI:
            tail = 16
        elif kind == KIND_PRESENCE:
            r.off = off - 2
            append(_decode_presence(r, i))
            off = r.off
            continue
        else:
            raise RemoteProtocolError(f"item {i} has unknown kind {kind}")
        if off + n + tail > end:
            raise RemoteProtocolError(f"frame truncated in item {i} at byte {off}")
        try:
            name = data[off : off + n].decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError(f"the name of item {i} is not valid UTF-8") from None
        off += n
        if kind == KIND_DEVICE:
            state, version = unpack_device(data, off)
            append(DeviceItem(name, state, version))
        else:
            new, old, version = unpack_mwi(data, off)
            append(MwiItem(name, new, old, version))
        off += tail
    r.off = off
    return tuple(items)


def _decode_presence(r: _Reader, i: int) -> PresenceItem:
    # Off the hot path (presence changes are few): the plain reader, field by field.
    r.take(1, f"item {i}")
    presentity = r.short_str(f"the name of item {i}")
    state, version = r.unpack(_PRESENCE_HEAD, f"item {i}")
    subtype = r.short_str(f"the subtype of item {i}")
    message = r.short_str(f"the message of item {i}")
    return PresenceItem(presentity, state, subtype, message, version)


def decode(data: bytes) -> Frame:
    """Decode one frame. Raises :class:`RemoteProtocolError`, and nothing else, if invalid."""
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise RemoteProtocolError(f"a frame is at least {_HEADER.size} bytes, got {len(data)}")
    magic, version, ftype, flags, _, length, origin, seq = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise RemoteProtocolError(f"not a pbxmesh frame (magic {magic!r})")
    if version != WIRE_VERSION:
        raise RemoteProtocolError(f"wire version {version} is not supported (this node speaks 1)")
    if length != len(data):
        raise RemoteProtocolError(f"frame length {length} does not match {len(data)} bytes")
    try:
        kind = FrameType(ftype)
    except ValueError:
        raise RemoteProtocolError(f"unknown frame type {ftype}") from None
    if flags & ~FLAG_SIGNED:
        raise RemoteProtocolError(f"unknown flags 0x{flags:02x}")
    signed = bool(flags & FLAG_SIGNED)
    end = length - (SIGNATURE_SIZE if signed else 0)
    if end < _HEADER.size:
        raise RemoteProtocolError("frame too short for its signature")
    r = _Reader(data, _HEADER.size, end)
    try:
        name = r.short_str("node name")
        channel = r.short_str("channel")
        items: tuple[Item, ...] = ()
        as_of = part = interval = 0
        parts = 1
        kinds = SNAP_DEVICES | SNAP_MWI
        if kind is FrameType.CHANGES:
            items = _decode_items(r)
        elif kind is FrameType.SNAPSHOT:
            as_of, part, parts, kinds = r.unpack(_SNAP, "snapshot header")
            items = _decode_items(r)
        elif kind is FrameType.HEARTBEAT:
            (interval,) = r.unpack(_U32, "heartbeat interval")
        if r.off != end:
            raise RemoteProtocolError(f"{end - r.off} unexpected bytes after the frame body")
        return Frame(
            type=kind,
            origin=EID(origin),
            seq=seq,
            name=name,
            channel=channel,
            items=items,
            as_of=as_of,
            part=part,
            parts=parts,
            kinds=kinds,
            interval_ms=interval,
            signature=data[end:] if signed else None,
        )
    except StateError as exc:
        raise RemoteProtocolError(f"{kind.name} frame: {exc}") from None
