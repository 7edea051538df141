"""The snapshot protocol: how an origin announces all it has, and how parts are gathered.

Theory of operation
-------------------
On every membership change with a join (and on a SYNC_REQUEST, and after a reload of the
channels) a node re-announces its own origin: one complete SNAPSHOT per channel, carrying
what that channel publishes (``kinds``: devices, MWI or both), split into ``parts`` under the
transport's message size. Every part carries the same ``as_of`` version, taken from the clock
before the slots were read.

Presence travels in a snapshot of its own per channel (``kinds`` = presence only), sent after
the devices' and mailboxes' one, so that a node older than presence rejects only that one.

A receiver gathers the parts per ``(origin, channel, kinds)``. A part of a newer snapshot (higher
``as_of``) discards the parts gathered so far; a part of an older one is ignored. Once every
part is in, the node merges the whole with ``DeviceStore.merge_snapshot(complete_as_of=as_of)``,
which also retracts the slots the origin no longer has and ignores later-arriving changes
older than ``as_of`` (they are already reflected). The parts of an origin that leaves are
forgotten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from ..clock import HybridClock
from ..eid import EID
from ..presence import PresenceStore
from ..store import DeviceStore, MwiStore
from ..wire import frame as wire
from ..wire.frame import DeviceItem, Frame, FrameType, Item, MwiItem, PresenceItem
from .config import ChannelConfig
from .outbound import Outbound

__all__ = ["CatchUp", "SnapshotGatherer", "send_snapshots"]


async def send_snapshots(
    out: Outbound,
    clock: HybridClock,
    eid: EID,
    devices: DeviceStore,
    mwi: MwiStore,
    channels: list[ChannelConfig],
    presence: PresenceStore | None = None,
) -> None:
    """Send a complete snapshot of origin ``eid`` on every channel that publishes something."""
    as_of = clock.tick()
    own_devices = [DeviceItem(d, int(s), v) for d, s, v in devices.snapshot(eid)]
    own_mwi = [MwiItem(r.mailbox, r.new, r.old, r.version) for r in mwi.written_by(eid)]
    own_presence: list[Item] = [
        PresenceItem(r.presentity, int(r.state), r.subtype, r.message, r.version)
        for r in (presence.written_by(eid) if presence is not None else ())
    ]
    limit = out.items_per_frame()
    for channel in channels:
        items: list[Item] = []
        kinds = 0
        if "device_state" in channel.publish:
            items += own_devices
            kinds |= wire.SNAP_DEVICES
        if "mwi" in channel.publish:
            items += own_mwi
            kinds |= wire.SNAP_MWI
        if kinds:
            await _send_parts(out, eid, channel.name, as_of, kinds, items, limit)
        if "presence_state" in channel.publish and presence is not None:
            per_frame = out.presence_limit()
            only = wire.SNAP_PRESENCE
            await _send_parts(out, eid, channel.name, as_of, only, own_presence, per_frame)


async def _send_parts(
    out: Outbound, eid: EID, channel: str, as_of: int, kinds: int, items: list[Item], limit: int
) -> None:
    chunks = [items[i : i + limit] for i in range(0, len(items), limit)] or [[]]
    for part, chunk in enumerate(chunks):
        await out.send_frame(
            Frame(
                type=FrameType.SNAPSHOT,
                origin=eid,
                seq=0,
                channel=channel,
                items=tuple(chunk),
                as_of=as_of,
                part=part,
                parts=len(chunks),
                kinds=kinds,
            )
        )


class SnapshotGatherer:
    """Collects the parts of other origins' snapshots until each is whole."""

    def __init__(self) -> None:
        self._pending: dict[tuple[EID, str, int], tuple[int, dict[int, Frame]]] = {}

    def add(self, f: Frame, items: tuple[Item, ...]) -> list[Item] | None:
        """Take one part (``items``: those the guard kept); the whole snapshot's items once
        every part is in, else None."""
        key = (f.origin, f.channel, f.kinds)
        as_of, parts = self._pending.get(key, (f.as_of, {}))
        if f.as_of != as_of:
            if f.as_of < as_of:
                return None  # a part of an older snapshot than the one being gathered
            parts = {}
        parts[f.part] = Frame(
            type=f.type, origin=f.origin, seq=f.seq, items=items, kinds=f.kinds, parts=f.parts
        )
        if len(parts) < f.parts:
            self._pending[key] = (f.as_of, parts)
            return None
        self._pending.pop(key, None)
        return [i for p in sorted(parts) for i in parts[p].items]

    def forget(self, origin: EID) -> None:
        """Drop the parts gathered from an origin that left."""
        for key in [k for k in self._pending if k[0] == origin]:
            del self._pending[key]


class CatchUp:
    """Which members' complete snapshots a node still awaits after it joined (see
    :meth:`~pbxmesh.node.core.Node.wait_caught_up`)."""

    def __init__(self) -> None:
        #: the other members in the view we joined, and the snapshot kinds still awaited
        self._awaited: dict[str, int] = {}
        self.done = asyncio.Event()

    @staticmethod
    def kinds_wanted(channels: Iterable[ChannelConfig]) -> int:
        """The snapshot kinds a node with these channels waits for."""
        want = 0
        for ch in channels:
            if "device_state" in ch.subscribe or "mwi" in ch.subscribe:
                want |= wire.SNAP_DEVICES | wire.SNAP_MWI
            if "presence_state" in ch.subscribe:
                want |= wire.SNAP_PRESENCE
        return want

    def joined(self, members: Iterable[str], want: int) -> None:
        """The view we joined: await ``want`` from each of ``members`` (ourselves excluded)."""
        self._awaited = dict.fromkeys(members, want) if want else {}

    def view(self, left: Iterable[str]) -> None:
        """A view: the members that ``left`` are no longer awaited."""
        for member in left:
            self._awaited.pop(member, None)
        if not self._awaited:
            self.done.set()

    def snapshot_from(self, member: str, kinds: int) -> None:
        """``member``'s complete snapshot of ``kinds`` is in."""
        left = self._awaited.get(member)
        if left is None:
            return
        if kinds & (wire.SNAP_DEVICES | wire.SNAP_MWI):
            left &= ~(wire.SNAP_DEVICES | wire.SNAP_MWI)
        if kinds & wire.SNAP_PRESENCE:
            left &= ~wire.SNAP_PRESENCE
        if left:
            self._awaited[member] = left
        else:
            del self._awaited[member]
            if not self._awaited:
                self.done.set()
