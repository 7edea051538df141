"""Heartbeats (a sans-IO codec) and the table of members they keep alive.

The module docstring of ``transport.py`` explains kinds, instances, epochs and views; this
module holds the parts that need no connection: the wire format of a heartbeat and the
:class:`PeerTable`, which turns heartbeats, frames and silence into membership changes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from ...errors import RemoteProtocolError
from ..base import Member, MembershipChange

__all__ = ["Heartbeat", "HeartbeatKind", "PeerTable", "decode_heartbeat", "encode_heartbeat"]


class HeartbeatKind(IntEnum):
    # WARNING: wire values, append-only; never renumber.
    ALIVE = 1
    PROBE = 2  # ALIVE, and "everyone answer with an ALIVE now"
    LEAVE = 3


# magic, version, kind, instance, epoch; then the UTF-8 node name (1..255 bytes)
_HB: Final = struct.Struct("!4sBBQI")
_HB_MAGIC: Final = b"PBXH"
# WARNING: bump only with a decoder that still reads version 1.
_HB_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One heartbeat message; validated on construction."""

    kind: HeartbeatKind
    instance: int  # random per transport object: a new one means the member restarted
    epoch: int  # +1 on every reconnect: a higher one means "I may have missed frames"
    name: str  # the node name (its token must match the subject's)

    def __post_init__(self) -> None:
        if not 0 <= self.instance < 1 << 64:
            raise ValueError(f"heartbeat instance {self.instance} is not a u64")
        if not 0 <= self.epoch < 1 << 32:
            raise ValueError(f"heartbeat epoch {self.epoch} is not a u32")
        if not 1 <= len(self.name.encode()) <= 255:
            raise ValueError(f"heartbeat name {self.name!r} must be 1..255 bytes of UTF-8")


def encode_heartbeat(hb: Heartbeat) -> bytes:
    return _HB.pack(_HB_MAGIC, _HB_VERSION, hb.kind, hb.instance, hb.epoch) + hb.name.encode()


def decode_heartbeat(data: bytes) -> Heartbeat:
    """Raises :class:`RemoteProtocolError` for anything that is not a heartbeat."""
    if len(data) <= _HB.size:
        raise RemoteProtocolError(f"heartbeat of {len(data)} bytes is too short")
    magic, version, kind, instance, epoch = _HB.unpack_from(data)
    if magic != _HB_MAGIC or version != _HB_VERSION:
        raise RemoteProtocolError(f"not a version {_HB_VERSION} heartbeat: {data[:5]!r}")
    try:
        return Heartbeat(HeartbeatKind(kind), instance, epoch, data[_HB.size :].decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise RemoteProtocolError(f"bad heartbeat: {exc}") from None


@dataclass(slots=True)
class _Peer:
    member: Member
    instance: int
    epoch: int
    last_seen: float


class PeerTable:
    """The other members we know, their incarnation and epoch, and when each was last heard.

    Pure bookkeeping: the transport feeds it what arrives and the time, and reports the
    :class:`MembershipChange` objects it returns.
    """

    def __init__(self, me: Member) -> None:
        self.me = me
        self.peers: dict[str, _Peer] = {}
        self.view = 0

    def change(
        self, joined: tuple[Member, ...] = (), left: tuple[Member, ...] = (), clean: bool = True
    ) -> MembershipChange:
        """The next view: us and every peer, with who joined and who left."""
        self.view += 1
        members = (self.me, *sorted((p.member for p in self.peers.values()), key=_mid))
        return MembershipChange(
            members=members,
            joined=joined,
            left=left,
            view=self.view,
            clean=tuple(clean for _ in left),
        )

    def seen(self, sender: str, now: float) -> None:
        """A frame from ``sender``: a sign of life."""
        peer = self.peers.get(sender)
        if peer is not None:
            peer.last_seen = now

    def heartbeat(
        self, sender: str, hb: Heartbeat, now: float, gathering: bool
    ) -> list[MembershipChange]:
        """A heartbeat of another member; the views it makes (none while ``gathering``)."""
        out: list[MembershipChange] = []
        peer = self.peers.get(sender)
        if hb.kind is HeartbeatKind.LEAVE:
            if peer is not None and peer.instance == hb.instance:
                del self.peers[sender]
                out.append(self.change(left=(peer.member,), clean=True))
            return out
        if peer is not None and peer.instance != hb.instance:
            # Restarted: the old incarnation failed. Report it gone first, so that the node
            # drops what it asserted, then the new one joins.
            del self.peers[sender]
            out.append(self.change(left=(peer.member,), clean=False))
            peer = None
        if peer is None:
            member = Member(member_id=sender, name=hb.name)
            self.peers[sender] = _Peer(member, hb.instance, hb.epoch, now)
            if not gathering:
                out.append(self.change(joined=(member,)))
        else:
            peer.last_seen = now
            if hb.epoch != peer.epoch:
                peer.epoch = hb.epoch
                if not gathering:
                    out.append(self.change(joined=(peer.member,)))  # it reconnected: resync
        return out

    def expire(self, now: float, failure_timeout: float) -> MembershipChange | None:
        """Members silent for longer than ``failure_timeout`` leave (not cleanly)."""
        dead = [p for p in self.peers.values() if now - p.last_seen > failure_timeout]
        for p in dead:
            del self.peers[p.member.member_id]
        return self.change(left=tuple(p.member for p in dead), clean=False) if dead else None

    def reset(self, now: float) -> None:
        """After a reconnect: everyone gets a full failure timeout to show up again."""
        for peer in self.peers.values():
            peer.last_seen = now

    def forgive(self, seconds: float) -> None:
        """Time our event loop did not run us does not count as anybody's silence."""
        for peer in self.peers.values():
            peer.last_seen += seconds

    def deadlines(self, failure_timeout: float) -> list[float]:
        return [p.last_seen + failure_timeout for p in self.peers.values()]

    def members(self) -> tuple[Member, ...]:
        return tuple(p.member for p in self.peers.values())


def _mid(m: Member) -> str:
    return m.member_id
