"""The other origins' values: applying what their frames carry, and dropping them.

:class:`RemoteWrites` is the one writer of the other origins' slots, mailboxes and presence:
the items of an accepted CHANGES frame or of a whole SNAPSHOT (``snapshots.py``), an origin
that left or failed, and the device states a narrowed grant no longer covers (``revoke``).
Every change of a cluster value is told through the :class:`~pbxmesh.node.fanout.Fanout`.
Items are applied only on a channel this node has that subscribes to their kind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from ..eid import EID
from ..presence import PresenceState, PresenceStore
from ..store import DeviceStore, MwiStore
from ..wire import frame as wire
from ..wire.frame import DeviceItem, Item, ItemKind, MwiItem, PresenceItem
from .config import EVENT_TYPE_OF, ChannelConfig
from .fanout import Fanout
from .guard import FrameGuard
from .stats import NodeStats, count

__all__ = ["RemoteWrites"]

log = logging.getLogger(__name__)


class RemoteWrites:
    """Applies other origins' items to the stores and tells what changed."""

    def __init__(
        self,
        eid: EID,
        devices: DeviceStore,
        mwi: MwiStore,
        presence: PresenceStore,
        stats: NodeStats,
        fanout: Fanout,
        channels: Iterable[ChannelConfig],
    ) -> None:
        self.eid = eid
        self.devices = devices
        self.mwi = mwi
        self.presence = presence
        self._stats = stats
        self._fanout = fanout
        self._channels: dict[str, ChannelConfig] = {}
        self.set_channels(channels)
        #: when the last resync began (time.monotonic), for ``last_resync_seconds``
        self.resync_started = 0.0

    def set_channels(self, channels: Iterable[ChannelConfig]) -> None:
        """The channels whose subscriptions decide what is applied (replaced on reload)."""
        self._channels = {c.name: c for c in channels}

    def subscribes(self, channel: str, kind: str) -> bool:
        ch = self._channels.get(channel)
        return ch is not None and kind in ch.subscribe

    def apply(self, origin: EID, channel: str, items: Iterable[Item]) -> None:
        """Apply the items of one frame of ``origin`` on ``channel``."""
        wanted = {kind: self.subscribes(channel, EVENT_TYPE_OF[kind]) for kind in ItemKind}
        touched: list[str] = []
        n = 0
        for item in items:
            if not wanted[item.kind]:
                continue
            n += 1
            match item:
                case DeviceItem(device, state, version):
                    change = self.devices.apply(origin, device, state, version)
                    touched.append(device)
                    if change is not None:
                        self._fanout.device(change)
                case MwiItem(mailbox, new, old, version):
                    mchange = self.mwi.apply(origin, mailbox, new, old, version)
                    if mchange is not None:
                        self._fanout.mwi(mchange)
                case PresenceItem(presentity, state, subtype, message, version):
                    pstate = PresenceState(state)
                    pchange = self.presence.apply(
                        origin, presentity, pstate, subtype, message, version
                    )
                    if pchange is not None:
                        self._fanout.presence(pchange)
        if n:
            count(self._stats.changes_in, channel, n)  # n > 0 only for a channel we have
        self._fanout.touched(origin, touched)

    def merge_snapshot(
        self, origin: EID, channel: str, as_of: int, kinds: int, items: list[Item]
    ) -> None:
        """Merge a whole snapshot of ``origin`` (every part gathered)."""
        self._stats.snapshots_merged += 1
        if kinds & wire.SNAP_DEVICES and self.subscribes(channel, "device_state"):
            entries = [(i.device, i.state, i.version) for i in items if type(i) is DeviceItem]
            before = {d for d, _, _ in self.devices.snapshot(origin)}
            for change in self.devices.merge_snapshot(origin, entries, complete_as_of=as_of):
                self._fanout.device(change)
            self._fanout.touched(origin, before | {e[0] for e in entries})
            count(self._stats.changes_in, channel, len(entries))
        # MWI and presence are last-writer-wins: a snapshot's items are applied as changes.
        lww = [i for i in items if i.kind is not ItemKind.DEVICE]
        if lww:
            self.apply(origin, channel, lww)
        if self.resync_started:
            self._stats.last_resync_seconds = time.monotonic() - self.resync_started

    def revoke(self, guard: FrameGuard, name_of: Callable[[EID], str]) -> int:
        """Drop every device state another origin holds that ``guard`` no longer lets it
        assert; how many were dropped (see :meth:`~pbxmesh.node.core.Node.revoke`)."""
        dropped = 0
        for origin in self.devices.origins():
            if origin == self.eid:
                continue
            gone = [
                device
                for device, state, version in self.devices.snapshot(origin)
                if not guard.allows(origin, DeviceItem(device, int(state), version))
            ]
            for device in gone:
                change = self.devices.remove(origin, device)
                if change is not None:
                    self._fanout.device(change)
            if gone:
                self._fanout.touched(origin, gone)
                dropped += len(gone)
                log.warning(
                    "revoked eid=%s name=%s devices=%d: no longer granted to that node",
                    origin,
                    name_of(origin),
                    len(gone),
                )
        return dropped

    def drop(self, origin: EID) -> tuple[int, int]:
        """Drop every slot of an origin that left; ``(slots held, cluster values changed)``."""
        held = [d for d, _, _ in self.devices.snapshot(origin)]
        changes = self.devices.drop_origin(origin)
        for change in changes:
            self._fanout.device(change)
        self._fanout.touched(origin, held)
        self._fanout.origin_left(origin)
        return len(held), len(changes)
