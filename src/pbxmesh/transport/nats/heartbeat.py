"""Heartbeats (a sans-IO codec) and the table of members they keep alive.

The package docstring (``__init__.py``) explains kinds, instances, epochs and views; this
module holds the parts that need no connection: the wire format of a heartbeat and of a
*lost notice*, the :class:`PeerTable`, which turns heartbeats, frames and silence into
membership changes (and remembers whom it lost), and the :class:`UnheardWatch`, which tells a
member that others do not hear it although it hears them.

*Lost notices* (kind LOST, on the sender's heartbeat subject, so that the publish permissions
``pbxmesh nats-accounts`` writes allow them) list the members the sender declared failed and
has not heard since, each with the incarnation it lost. A member that reads itself in the
notices of another member for ``failure_timeout`` while it hears that member is on a one-way
path: its own messages do not get out of its server although everything comes in. That is what
nats-server 2.9's leaf-node interest defect does (docs/nats.md, "One-way paths"); the transport
then moves to another server.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from ...errors import RemoteProtocolError
from ..base import Member, MembershipChange

__all__ = [
    "LOST_MAX",
    "Heartbeat",
    "HeartbeatKind",
    "LostNotice",
    "PeerTable",
    "UnheardWatch",
    "decode_heartbeat",
    "encode_heartbeat",
    "encode_lost",
]


class HeartbeatKind(IntEnum):
    # WARNING: wire values, append-only; never renumber.
    ALIVE = 1
    PROBE = 2  # ALIVE, and "everyone answer with an ALIVE now"
    LEAVE = 3
    LOST = 4  # the members the sender lost and has not heard since (:class:`LostNotice`)


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


#: Most members one lost notice names (the most recently lost first).
LOST_MAX: Final = 64
# after the header: the sender's name (u8 length); then per lost member its instance and its
# member id (u16 length, ASCII: member ids are subject tokens)
_LOST_ENTRY: Final = struct.Struct("!QH")


@dataclass(frozen=True, slots=True)
class LostNotice:
    """The members ``name`` lost and has not heard since, as (member id, instance) pairs."""

    instance: int
    epoch: int
    name: str
    lost: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        Heartbeat(HeartbeatKind.LOST, self.instance, self.epoch, self.name)  # the same checks
        if len(self.lost) > LOST_MAX:
            raise ValueError(f"a lost notice names at most {LOST_MAX} members")
        for member_id, instance in self.lost:
            if not 0 <= instance < 1 << 64:
                raise ValueError(f"lost instance {instance} is not a u64")
            if not member_id or not member_id.isascii() or len(member_id) > 0xFFFF:
                raise ValueError(f"lost member id {member_id!r} is not a subject token")


def encode_heartbeat(hb: Heartbeat) -> bytes:
    if hb.kind is HeartbeatKind.LOST:
        raise ValueError("a LOST heartbeat is a LostNotice: use encode_lost")
    return _HB.pack(_HB_MAGIC, _HB_VERSION, hb.kind, hb.instance, hb.epoch) + hb.name.encode()


def encode_lost(notice: LostNotice) -> bytes:
    name = notice.name.encode()
    parts = [
        _HB.pack(_HB_MAGIC, _HB_VERSION, HeartbeatKind.LOST, notice.instance, notice.epoch),
        bytes((len(name),)),
        name,
    ]
    for member_id, instance in notice.lost:
        token = member_id.encode("ascii")
        parts += [_LOST_ENTRY.pack(instance, len(token)), token]
    return b"".join(parts)


def decode_heartbeat(data: bytes) -> Heartbeat | LostNotice:
    """A heartbeat, or a lost notice (kind LOST). Raises :class:`RemoteProtocolError` for
    anything that is neither."""
    if len(data) <= _HB.size:
        raise RemoteProtocolError(f"heartbeat of {len(data)} bytes is too short")
    magic, version, kind, instance, epoch = _HB.unpack_from(data)
    if magic != _HB_MAGIC or version != _HB_VERSION:
        raise RemoteProtocolError(f"not a version {_HB_VERSION} heartbeat: {data[:5]!r}")
    try:
        if kind == HeartbeatKind.LOST:
            return _decode_lost(data, instance, epoch)
        return Heartbeat(HeartbeatKind(kind), instance, epoch, data[_HB.size :].decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise RemoteProtocolError(f"bad heartbeat: {exc}") from None


def _decode_lost(data: bytes, instance: int, epoch: int) -> LostNotice:
    pos = _HB.size
    n = data[pos]
    name = data[pos + 1 : pos + 1 + n]
    if len(name) != n:
        raise ValueError("lost notice ends inside the sender's name")
    pos += 1 + n
    lost = []
    while pos < len(data):
        if len(data) - pos < _LOST_ENTRY.size:
            raise ValueError("lost notice ends inside an entry")
        member_instance, length = _LOST_ENTRY.unpack_from(data, pos)
        pos += _LOST_ENTRY.size
        token = data[pos : pos + length]
        if len(token) != length:
            raise ValueError("lost notice ends inside a member id")
        pos += length
        lost.append((token.decode("ascii"), member_instance))
    return LostNotice(instance, epoch, name.decode(), tuple(lost))


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
        #: members declared failed and not heard since: member id -> (instance, when)
        self.lost: dict[str, tuple[int, float]] = {}

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
        self.lost.pop(sender, None)  # heard again (or gone for good, cleanly)
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
            self.lost[p.member.member_id] = (p.instance, now)
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

    def lost_notice(self, now: float, keep: float) -> tuple[tuple[str, int], ...]:
        """The members to name in our next lost notice: those lost within ``keep`` seconds
        (older ones are forgotten), the most recently lost first, at most ``LOST_MAX``."""
        for member_id in [m for m, (_, t) in self.lost.items() if now - t > keep]:
            del self.lost[member_id]
        recent = sorted(self.lost.items(), key=lambda kv: -kv[1][1])[:LOST_MAX]
        return tuple((member_id, instance) for member_id, (instance, _) in recent)


class UnheardWatch:
    """Which members keep saying they lost us, and since when (all times on our clock).

    A notice that names us (our member id and this incarnation) starts or extends an episode
    for its sender; a notice from that sender without us ends it. :meth:`unheard` names the
    senders whose episode has lasted ``span`` seconds and is still current. Episodes belong to
    one connection: :meth:`reset` at every reconnect.
    """

    def __init__(self) -> None:
        self._episodes: dict[str, tuple[float, float]] = {}  # sender -> (first, last)

    def notice(self, sender: str, names_us: bool, now: float) -> bool:
        """Record a notice of ``sender``; True if it starts an episode (``sender`` has just
        declared us failed, and dropped what we asserted)."""
        if not names_us:
            self._episodes.pop(sender, None)
            return False
        first, _ = self._episodes.get(sender, (now, now))
        self._episodes[sender] = (first, now)
        return first == now

    def unheard(self, now: float, span: float, current: float) -> list[str]:
        """Senders whose notices have named us for ``span`` seconds, the last one less than
        ``current`` seconds ago."""
        return sorted(
            s
            for s, (first, last) in self._episodes.items()
            if last - first >= span and now - last <= current
        )

    def reset(self) -> None:
        self._episodes.clear()


def _mid(m: Member) -> str:
    return m.member_id
